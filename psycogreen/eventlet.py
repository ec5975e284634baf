"""Drop-in replacement for psycogreen 1.0.2's ``psycogreen.eventlet``.

``patch_psycopg()`` now also brings connect deadlines, interrupts that cancel on the server and keep
the connection, non-blocking ``cancel()`` and the rest of psycogreen 2; see :func:`psycogreen.patch`.
"""

from __future__ import annotations

from typing import Any

from . import _patch, _wait

__all__ = ["eventlet_wait_callback", "patch_psycopg"]

_waiter: Any = None


def patch_psycopg() -> None:
    """Configure psycopg2 to be used with eventlet in non-blocking way."""
    _patch._require_wait_callback()
    _patch.patch("eventlet")


def eventlet_wait_callback(conn: Any, timeout: float = -1) -> None:
    """A wait callback useful to allow eventlet to work with psycopg2.

    ``timeout`` is accepted and ignored, as in psycopg2 1.0.2; use :func:`psycogreen.timeout`.
    """
    global _waiter
    if _waiter is None:
        _waiter = _patch.waiter_for("eventlet")  # the waiter patch("eventlet") uses: one choice
    _wait.wait_callback(conn, _waiter)
