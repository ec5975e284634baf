"""Drop-in replacement for psycogreen 1.0.2's ``psycogreen.gevent``.

``patch_psycopg()`` now also brings connect deadlines, interrupts that cancel on the server and keep
the connection, non-blocking ``cancel()`` and the rest of psycogreen 2; see :func:`psycogreen.patch`.
"""

from __future__ import annotations

import socket
from typing import Any, Optional

from . import _patch, _wait
from ._core.generators import poll_conn

__all__ = ["gevent_wait_callback", "patch_psycopg"]

_waiter: Any = None


def _gevent_waiter() -> Any:
    """The same waiter ``patch("gevent")`` uses (one choice, in ``_patch``), looked up once."""
    global _waiter
    if _waiter is None:
        _waiter = _patch.waiter_for("gevent")
    return _waiter


def patch_psycopg() -> None:
    """Configure psycopg2 to be used with gevent in non-blocking way."""
    _patch._require_wait_callback()
    _patch.patch("gevent")


def gevent_wait_callback(conn: Any, timeout: Optional[float] = None) -> None:
    """A wait callback useful to allow gevent to work with psycopg2.

    With ``timeout`` (seconds, per wait), behaves as in psycopg2 1.0.2: ``socket.timeout`` is raised
    (and psycopg2 closes the connection). Prefer :func:`psycogreen.timeout`, which cancels the query
    and keeps the connection.
    """
    waiter = _gevent_waiter()
    if timeout is None:
        _wait.wait_callback(conn, waiter)
        return
    gen = poll_conn(conn)
    try:
        fd, events = next(gen)
        while True:
            ready = waiter.wait_fd(fd, events, timeout)
            if not ready:
                raise socket.timeout("timed out")
            fd, events = gen.send(ready)
    except StopIteration:
        return
