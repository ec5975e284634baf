"""Side-by-side comparisons with blocking psycopg2 inside a test process patched for threads."""

from __future__ import annotations

import contextlib
from typing import Iterator

import psycogreen


@contextlib.contextmanager
def unpatched() -> Iterator[None]:
    """Plain blocking psycopg2 for the block (connections made here are psycopg2's own classes),
    then patched for threads again."""
    psycogreen.unpatch()
    try:
        yield
    finally:
        psycogreen.patch("threads")
