"""``psycogreen.notifies()``: wait for LISTEN/NOTIFY notifications without blocking the hub.

psycopg2 documents the loop ``select([conn], [], [], t); conn.poll(); while conn.notifies: ...``. A
``select`` freezes gevent/eventlet unless monkey-patched, and everybody rewrites the loop slightly
wrong (forgetting notifications already queued by earlier queries, or the time budget). This is that
loop once, waiting through the current waiter (so the asyncio bridge gets it for free).
"""

from __future__ import annotations

import time
from typing import Any, Iterator, Optional

from . import _guard, _wait
from ._core import READ
from ._core.generators import wait_socket

__all__ = ["notifies"]


def notifies(
    conn: Any, *, timeout: Optional[float] = None, stop_after: Optional[int] = None
) -> Iterator[Any]:
    """Yield psycopg2 ``Notify`` objects received on ``conn`` as they arrive.

    Notifications already in ``conn.notifies`` (queued while earlier queries ran) come first; each
    one is removed from ``conn.notifies`` as it is yielded, so the list keeps psycopg2's meaning
    ("received, not yet handled"). ``timeout`` is the total time budget in seconds: when it is
    spent the generator simply ends (no exception: "nothing more arrived" is a normal outcome).
    ``stop_after`` ends it after that many notifications. With neither, it runs until the consumer
    stops iterating or the greenlet is killed. Notifications are delivered by the server only
    outside transactions: use an autocommit connection (``conn.autocommit = True``) to listen.
    """
    if timeout is not None and (timeout != timeout or timeout < 0):
        raise ValueError(f"notifies(timeout=...) must be None or a number of seconds >= 0, got {timeout!r}")
    if stop_after is not None and stop_after < 1:
        raise ValueError(f"notifies(stop_after=...) must be None or >= 1, got {stop_after!r}")
    deadline = None if timeout is None else time.monotonic() + timeout
    count = 0
    while True:
        queue = conn.notifies
        while queue:
            yield queue.pop(0)
            count += 1
            if stop_after is not None and count >= stop_after:
                return
        if deadline is None:
            remaining = None
        else:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
        _wait_and_poll(conn, remaining)


def _wait_and_poll(conn: Any, remaining: Optional[float]) -> None:
    """One cooperative wait for the socket, then ``conn.poll()`` to read what arrived. The wait goes
    through the driver, so an enclosing ``psycogreen.timeout()`` bounds it (``QueryTimeout``; there is
    no statement to cancel, so the connection stays usable) as well as the loop's own budget."""
    with _guard.using(conn):
        if _wait.drive(wait_socket(conn.fileno(), READ), conn, timeout=remaining, idle=True):
            conn.poll()
