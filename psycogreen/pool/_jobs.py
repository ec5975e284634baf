"""The pool's background jobs: tiny callables run by :class:`~._background.Background` workers."""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING, Any, Optional

import psycopg2

from . import _stats as S
from ._conn import IDLE, close_quietly, monotonic

if TYPE_CHECKING:
    from ._policy import ConnectionPool

logger = logging.getLogger("psycogreen.pool")

# Reconnection backoff: first retry after ~INITIAL s, doubling, each delay jittered by +-JITTER.
INITIAL_DELAY = 0.5
MAX_DELAY = 10.0
DELAY_JITTER = 0.1


class Connect:
    """Make one connection, retrying with backoff while it is still needed.

    ``gen`` is the pool's generation when the job was queued: a job started in the parent before
    a ``fork()`` (a gevent copy in the child) must not hand its connection to the child's pool.
    """

    __slots__ = ("delay", "first_failure", "gen")

    def __init__(self, gen: int) -> None:
        self.delay = 0.0
        self.first_failure: Optional[float] = None
        self.gen = gen

    def __call__(self, pool: ConnectionPool) -> None:
        if pool._closed or self.gen != pool._gen:
            pool._connect_abandoned(self)
            return
        try:
            conn = make_connection(pool)
        except Exception as e:  # noqa: BLE001 - any failure to connect is retried with backoff
            pool._connect_failed(self, e)
            return
        pool._connected(self, conn)

    def next_delay(self) -> float:
        """The backoff before the next attempt: doubling up to MAX_DELAY, jittered."""
        self.delay = min(MAX_DELAY, self.delay * 2) if self.delay else INITIAL_DELAY
        return self.delay * random.uniform(1 - DELAY_JITTER, 1 + DELAY_JITTER)


class Sweep:
    """Close idle connections past their lifetime or idle limit; refill; schedule the next sweep."""

    __slots__ = ()

    def __call__(self, pool: ConnectionPool) -> None:
        pool._sweep()


def make_connection(pool: ConnectionPool) -> Any:
    """``psycopg2.connect`` (green once psycogreen is patched), then ``configure``."""
    t0 = monotonic()
    kwargs = dict(pool.kwargs)
    if pool.connection_factory is not None:
        kwargs["connection_factory"] = pool.connection_factory
    try:
        conn = psycopg2.connect(pool.conninfo, **kwargs)
    except BaseException:
        pool._count(S.CONNECTIONS_ERRORS)
        raise
    pool._count(S.CONNECTIONS_NUM)
    pool._count(S.CONNECTIONS_MS, int((monotonic() - t0) * 1000))
    try:
        if pool._configure is not None:
            pool._configure(conn)
        status = conn.get_transaction_status()
        if status != IDLE:
            raise psycopg2.ProgrammingError(
                f"configure() left the connection in transaction status {status}; "
                "commit or set autocommit in configure()"
            )
    except BaseException:
        close_quietly(conn)
        raise
    return conn
