"""Clients waiting for a connection: parked on their waiter, served first come, first served.

A waiting client is a :class:`Client` in the pool's FIFO plus a parking token of the waiter it
waits through (``park_token``/``park``/``unpark``, see ``psycogreen._waiters``): no Event and no
timer of its own. Every change of a client's state happens under the pool's lock, exactly once:

- served: a returned (or new) connection is set on the first client of the queue, which leaves the
  queue and is unparked with it;
- timed out: the pool's one scheduler finds its deadline passed, takes it out of the queue and
  unparks it with ``None``;
- failed: ``close()`` or a ``fork()`` unparks it with the error to raise;
- interrupted (killed, ``gevent.Timeout``, task cancelled) while parked: it takes itself out of
  the queue, or, if it was already served, passes the connection on to the next client.

So a connection is never lost and never handed to a client that is gone.
"""

from __future__ import annotations

from typing import Any, Optional

from ..errors import PoolTimeout, QueryTimeout
from ._conn import Meta, monotonic


class PoolDeadline(PoolTimeout, QueryTimeout):
    """The enclosing ``psycogreen.timeout()`` expired while waiting for a pooled connection.

    Both a :class:`PoolTimeout` (the time went in waiting for the pool) and a
    :class:`QueryTimeout` (what every other operation in a ``timeout()`` block raises on expiry), so
    handlers written for either catch it.
    """


class Client:
    """One waiting checkout."""

    __slots__ = ("waiter", "token", "deadline", "since", "meta", "gone", "queued")

    def __init__(self, waiter: Any, deadline: float) -> None:
        self.waiter = waiter
        self.token = waiter.park_token()
        self.deadline = deadline
        self.since = monotonic()
        self.meta: Optional[Meta] = None  # the connection it was served
        self.gone = False  # timed out, failed or interrupted: never serve it
        self.queued = 0  # clients waiting (this one included) when it timed out

    def serve(self, meta: Meta) -> None:
        self.meta = meta
        self.waiter.unpark(self.token, meta)

    def fail(self, value: Optional[BaseException]) -> None:
        """Wake it with an error to raise, or ``None`` for "your deadline passed"."""
        self.gone = True
        self.waiter.unpark(self.token, value)


def timeout_error(
    pool: Any, client: Client, timeout: float, outer: Optional[tuple[float, float]]
) -> PoolTimeout:
    """Say why no connection came: the pool cannot connect (chain that error, advise on the
    connection), it is busy (advise on sizing), or an enclosing deadline expired first."""
    waiting = max(client.queued, 1)
    cause = pool._last_connect_error
    if outer is not None:
        head = (
            f"couldn't get a connection from pool {pool.name!r} within the enclosing "
            f"psycogreen.timeout({outer[1]:.2f}) (waited {monotonic() - client.since:.2f} sec of the "
            f"pool's {timeout:.2f})"
        )
    else:
        head = f"couldn't get a connection after {timeout:.2f} sec from pool {pool.name!r}"
    state = f"size {pool._nconns}, max_size={pool.max_size}, {waiting} waiting"
    if cause is not None:
        reason = str(cause).strip().replace("\n", " ") or type(cause).__name__
        msg = (
            f"{head}: the pool cannot connect to the server ({pool._safe}): {reason} ({state}); "
            "fix the connection settings (host, port, dbname, user, password) or the server: "
            "the pool keeps retrying in the background"
        )
    elif outer is not None:
        msg = f"{head} ({state}); raise max_size or the deadline, or return connections sooner"
    else:
        msg = f"{head} ({state}); raise max_size or the timeout, or return connections sooner"
    err: PoolTimeout = PoolDeadline(msg) if outer is not None else PoolTimeout(msg)
    err.__cause__ = cause
    return err
