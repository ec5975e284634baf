"""A cooperative connection pool for psycopg2, shaped like psycopg_pool's.

``psycopg2.pool`` raises ``PoolError`` when it is exhausted instead of waiting, and pools built on
``queue.Queue`` lose connections when a ``gevent.Timeout`` hits a waiting client. This pool waits,
serves clients first-come first-served, and never hands a connection to a client that already gave
up — whatever exception ended its wait.

The waiting contract (one implementation for every framework)
------------------------------------------------------------
All the logic lives in :class:`ConnectionPool`, a plain synchronous class. It never imports gevent,
eventlet or blocking ``threading`` primitives: every wait goes through the primitives of
``psycogreen._wait.current_waiter()``, resolved *at call time*:

- ``Event()`` — each waiting client gets its own and blocks only in ``Event.wait()``; the pool's
  scheduler (one background task, itself waiting in ``Event.wait(timeout)``) sets the events of
  clients whose deadline passed, so there is one timer for all waiting clients, not one each;
- ``spawn(fn, *args)`` — background workers (connect, replace, shrink) and the scheduler, started
  on demand and finished when there is nothing left to do;
- ``sleep(seconds)`` — only in ``close()`` while workers finish;
- ``Lock()`` — taken once, at construction. It guards *decisions only*: no I/O and no wait ever
  happens while it is held, so it never switches green threads and any lock that is safe for OS
  threads is correct for greenlets on one thread too.

So under gevent or eventlet a waiting client parks its greenlet, under plain threads it blocks its
thread, and inside an asyncio bridge greenlet (``psycogreen.aio``) the bridge's waiter turns the same
calls into awaits: the async pool is this class run through that waiter, not a second copy.

Background workers and the scheduler hold the pool through a ``weakref``: they never keep a pool
alive, and threads are daemons, so they never keep a process alive either.

Logging goes to the ``psycogreen.pool`` logger; connection strings are logged without passwords.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import time
import weakref
from collections import deque
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Callable, Iterator, Optional, TypeVar

import psycopg2
import psycopg2.extensions as ext

from . import _deadline, _libpq
from ._patch import ensure_patched
from ._wait import current_waiter
from .errors import PoolClosed, PoolTimeout, TooManyRequests

__all__ = ["ConnectionPool", "NullConnectionPool", "PoolClosed", "PoolTimeout", "TooManyRequests"]

logger = logging.getLogger("psycogreen.pool")

_monotonic = time.monotonic
_Self = TypeVar("_Self", bound="ConnectionPool")

# Reconnection backoff: first retry after ~INITIAL s, doubling, each delay jittered by +-JITTER.
_INITIAL_DELAY = 0.5
_MAX_DELAY = 10.0
_DELAY_JITTER = 0.1

_IDLE = ext.TRANSACTION_STATUS_IDLE
_INTRANS = ext.TRANSACTION_STATUS_INTRANS
_INERROR = ext.TRANSACTION_STATUS_INERROR

_counter = itertools.count(1)

#: Bound on the pool's own round trips (checkout check, rollback and reset on return). They run
#: under this deadline instead of the caller's ``psycogreen.timeout()``: a caller whose deadline just
#: expired still gets its connection rolled back and reused rather than thrown away.
HOUSEKEEPING_TIMEOUT = 10.0


#: A connection returned less than this many seconds ago is handed out without any check (under
#: load that is every checkout: the hot path stays free of syscalls); older ones get a non-blocking
#: read of their socket, which sees a terminated backend's FATAL message and EOF.
FRESH_FOR = 0.1


@contextmanager
def _own_deadline(seconds: float = HOUSEKEEPING_TIMEOUT) -> Iterator[None]:
    token = _deadline._op_deadline.set((_monotonic() + seconds, seconds))
    try:
        yield
    finally:
        _deadline._op_deadline.reset(token)


class _ConnectionContext:
    """What :meth:`ConnectionPool.connection` returns (a class, not a generator: it is the hot path)."""

    __slots__ = ("pool", "timeout", "conn")

    def __init__(self, pool: ConnectionPool, timeout: Optional[float]) -> None:
        self.pool = pool
        self.timeout = timeout
        self.conn: Any = None

    def __enter__(self) -> Any:
        self.conn = self.pool.getconn(self.timeout)
        return self.conn

    def __exit__(
        self, et: Optional[type[BaseException]], ev: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        conn, self.conn = self.conn, None
        if et is None:
            try:
                if not conn.closed and conn.get_transaction_status() == _INTRANS:
                    conn.commit()
            except BaseException:
                self.pool._putconn(conn, rollback_expected=True)
                raise
            self.pool._putconn(conn)
        else:
            self.pool._putconn(conn, rollback_expected=True)


def safe_conninfo(conninfo: str, kwargs: Optional[dict[str, Any]] = None) -> str:
    """``conninfo`` + ``kwargs`` as ``key=value`` pairs without the password, for logs and errors."""
    try:
        params = dict(ext.parse_dsn(conninfo)) if conninfo else {}
    except psycopg2.Error:
        return "<unparsable conninfo>"
    params.update({k: v for k, v in (kwargs or {}).items() if v is not None})
    params.pop("password", None)
    return " ".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "connection_factory")


class _Meta:
    """The pool's bookkeeping for one connection it owns (psycopg2 connections take no attributes)."""

    __slots__ = ("conn", "created", "expire_at", "idle_limit", "returned_at", "out_since")

    def __init__(self, conn: Any, max_lifetime: float, max_idle: float) -> None:
        now = _monotonic()
        self.conn = conn
        self.created = now
        # Jitter: connections made together must not all expire together.
        self.expire_at = now + max_lifetime * random.uniform(0.9, 1.0)
        self.idle_limit = max_idle * random.uniform(0.9, 1.0)
        self.returned_at = now
        self.out_since = 0.0


class _Client:
    """A client waiting for a connection; it owns its Event, so it is woken alone and in order."""

    __slots__ = ("event", "meta", "error", "gone", "since")

    def __init__(self, event: Any) -> None:
        self.since = _monotonic()
        self.event = event
        self.meta: Optional[_Meta] = None
        self.error: Optional[BaseException] = None
        self.gone = False  # timed out or interrupted: never hand it anything


class ConnectionPool:
    """A pool of psycopg2 connections that waits cooperatively (gevent, eventlet, threads, asyncio).

    See the module docstring for the waiting contract and ``docs/pooling.md`` for usage.
    """

    #: A connection idle longer than this (seconds) gets a ``select 1`` round trip on checkout;
    #: fresher ones only get a non-blocking read of their socket (which sees terminated backends).
    stale_after: float = 2.0
    _reuse = True

    def __init__(
        self,
        conninfo: str = "",
        *,
        connection_factory: Optional[Callable[..., Any]] = None,
        kwargs: Optional[dict[str, Any]] = None,
        min_size: int = 4,
        max_size: Optional[int] = None,
        open: bool = True,
        configure: Optional[Callable[[Any], None]] = None,
        check: Optional[Callable[[Any], None]] = None,
        reset: Optional[Callable[[Any], None]] = None,
        name: Optional[str] = None,
        timeout: float = 30.0,
        max_waiting: int = 0,
        max_lifetime: float = 3600.0,
        max_idle: float = 600.0,
        reconnect_timeout: float = 300.0,
        reconnect_failed: Optional[Callable[[ConnectionPool], None]] = None,
        num_workers: int = 3,
    ) -> None:
        if max_size is None:
            max_size = min_size
        if min_size < 0 or max_size < min_size or (max_size == 0 and self._reuse):
            raise ValueError(
                f"invalid pool sizes min_size={min_size} max_size={max_size}: "
                "need 0 <= min_size <= max_size and max_size > 0"
            )
        if num_workers < 1:
            raise ValueError(f"num_workers must be at least 1, got {num_workers}")
        self.conninfo = conninfo
        self.kwargs: dict[str, Any] = dict(kwargs or {})
        self.connection_factory = connection_factory
        self.name = name or f"pool-{next(_counter)}"
        self.timeout = timeout
        self.max_waiting = max_waiting
        self.max_lifetime = max_lifetime
        self.max_idle = max_idle
        self.reconnect_timeout = reconnect_timeout
        self.num_workers = num_workers
        self._min_size = min_size
        self._max_size = max_size
        self._configure = configure
        self._check = check
        self._reset = reset
        self._reconnect_failed = reconnect_failed

        ensure_patched()  # a pool of blocking connections would serialise a gevent/eventlet process
        self._lock = current_waiter().Lock()
        self._idle: deque[_Meta] = deque()  # LIFO: append and pop on the right
        self._clients: deque[_Client] = deque()  # FIFO
        self._owned: dict[int, _Meta] = {}  # id(conn) -> meta, idle and checked out
        self._nconns = 0  # owned + being connected
        self._connecting = 0
        self._closed = True
        self._opened = False
        self._fill_events: list[Any] = []  # wait() callers
        self._jobs: deque[Callable[[ConnectionPool], None]] = deque()
        self._nworkers = 0
        self._sched: list[tuple[float, int, Callable[[ConnectionPool], None]]] = []
        self._sched_seq = itertools.count()
        self._sched_event: Any = None
        self._sched_running = False
        self._sched_wake_at = 0.0  # when the running scheduler means to wake next
        # (deadline, seq, client) of waiting clients; entries of served clients are dropped lazily.
        self._expiry: list[tuple[float, int, _Client]] = []
        self._stats: dict[str, int] = {}
        self._safe = safe_conninfo(conninfo, self.kwargs)
        if open:
            self.open()

    # ------------------------------------------------------------------ public API

    @property
    def min_size(self) -> int:
        return self._min_size

    @property
    def max_size(self) -> int:
        return self._max_size

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<{type(self).__name__} {self.name!r} {state} size={self._nconns} "
            f"idle={len(self._idle)} in_use={len(self._owned) - len(self._idle)} "
            f"waiting={len(self._clients)} min={self._min_size} max={self._max_size}>"
        )

    def __enter__(self: _Self) -> _Self:
        if self._closed:
            self.open()
        return self

    def __exit__(
        self, et: Optional[type[BaseException]], ev: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        self.close()

    def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        """Start filling the pool to ``min_size`` in the background; ``wait=True`` waits for it."""
        with self._lock:
            if not self._closed:
                return
            if self._opened:
                raise PoolClosed(f"pool {self.name!r} was closed and cannot be reopened; create a new one")
            self._closed = False
            self._opened = True
            self._sched_event = current_waiter().Event()
            weakref.finalize(self, self._sched_event.set)
            for _ in range(self._min_size):
                self._start_connect_locked()
            self._schedule_locked(self._sweep_period(), _Sweep())
        logger.info(
            "pool %r opened for %s (min %d, max %d)", self.name, self._safe, self._min_size, self._max_size
        )
        if wait:
            self.wait(timeout)

    def wait(self, timeout: float = 30.0) -> None:
        """Wait until ``min_size`` connections are ready; else close the pool and raise PoolTimeout."""
        ev = None
        with self._lock:
            self._require_open()
            if len(self._owned) < self._min_size:
                ev = current_waiter().Event()
                self._fill_events.append(ev)
        if ev is not None and not ev.wait(timeout):
            with self._lock:
                ready = len(self._owned)
            self.close()
            raise PoolTimeout(
                f"pool {self.name!r} initialization incomplete after {timeout:.2f} sec: "
                f"{ready} of min_size={self._min_size} connections ready; check that the server is "
                f"reachable ({self._safe}) or raise the timeout"
            )

    def close(self, timeout: float = 5.0) -> None:
        """Close idle connections, fail waiting clients with PoolClosed, stop background work.

        Connections checked out stay usable; they are closed when returned.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            idle = list(self._idle)
            self._idle.clear()
            for m in idle:
                self._owned.pop(id(m.conn), None)
            self._nconns -= len(idle)
            clients = list(self._clients)
            self._clients.clear()
            self._expiry.clear()
            self._jobs.clear()
            self._sched.clear()
            sched_event = self._sched_event
            fill = self._fill_events
            self._fill_events = []
        err = PoolClosed(f"pool {self.name!r} was closed while waiting for a connection")
        for c in clients:
            c.error = err
            c.event.set()
        for ev in fill:
            ev.set()
        if sched_event is not None:
            sched_event.set()
        for m in idle:
            _close_quietly(m.conn)
        deadline = _monotonic() + timeout
        waiter = current_waiter()
        while self._nworkers and _monotonic() < deadline:
            waiter.sleep(0.01)
        if self._nworkers:
            logger.warning(
                "pool %r: %d workers still busy after %.2f sec", self.name, self._nworkers, timeout
            )
        logger.info("pool %r closed", self.name)

    #: psycopg2.pool compatibility: ``closeall()`` closes the pool.
    def closeall(self) -> None:
        self.close()

    def connection(self, timeout: Optional[float] = None) -> _ConnectionContext:
        """A connection for the ``with`` block: committed on success, rolled back on an exception,
        returned to the pool in both cases."""
        return _ConnectionContext(self, timeout)

    def getconn(self, timeout: Optional[float] = None) -> Any:
        """Take a connection, waiting at most ``timeout`` (default: the pool's) seconds for one."""
        if timeout is None:
            timeout = self.timeout
        t0 = _monotonic()
        deadline = t0 + timeout
        counted = False
        stats = self._stats
        while True:
            client = None
            meta: Optional[_Meta] = None
            with self._lock:
                self._require_open()
                if not counted:
                    stats["requests_num"] = stats.get("requests_num", 0) + 1
                    counted = True
                if self._idle and not self._clients:
                    meta = self._idle.pop()
                if meta is None:
                    if self.max_waiting and len(self._clients) >= self.max_waiting:
                        self._count("requests_errors")
                        raise TooManyRequests(
                            f"pool {self.name!r} already has {len(self._clients)} clients waiting "
                            f"(max_waiting={self.max_waiting}); retry later or raise max_waiting"
                        )
                    client = _Client(current_waiter().Event())
                    self._clients.append(client)
                    self._expire_at_locked(client, deadline)
                    if self._nconns < self._max_size and self._connecting < len(self._clients):
                        self._start_connect_locked()
            if client is not None:
                meta = self._wait_for(client, deadline, timeout)
            assert meta is not None
            if self._prepare(meta):
                break
        meta.out_since = _monotonic()
        return meta.conn

    def putconn(self, conn: Any) -> None:
        """Give back a connection from :meth:`getconn`. An open transaction is rolled back; a broken
        connection, or one in an unknown state, is closed and replaced in the background."""
        self._putconn(conn)

    def _putconn(self, conn: Any, rollback_expected: bool = False) -> None:
        meta = self._owned.get(id(conn))
        if meta is None or meta.conn is not conn:
            raise ValueError(f"putconn(): the connection {conn!r} does not belong to pool {self.name!r}")
        if not meta.out_since:
            raise ValueError(
                f"putconn(): the connection {conn!r} was already returned to pool {self.name!r}; "
                "return each connection once"
            )
        now = _monotonic()
        usage = int((now - meta.out_since) * 1000)
        meta.out_since = 0.0
        if conn.closed:
            ok = False
        elif conn.get_transaction_status() == _IDLE and self._reset is None:
            ok = getattr(conn, "_pg_depth", 0) == 0 and getattr(conn, "_pg_pending", None) is None
        else:
            try:
                with _own_deadline():
                    ok = self._reset_for_reuse(conn, rollback_expected)
            except BaseException:
                self._count("usage_ms", usage)
                self._discard(meta)
                raise
            now = _monotonic()
        if not ok or not self._reuse:
            self._count("usage_ms", usage)
            if not ok:
                self._count("returns_bad")
            self._discard(meta)
            return
        if now >= meta.expire_at:
            logger.debug("pool %r: connection past max_lifetime, replacing it", self.name)
            self._count("usage_ms", usage)
            self._discard(meta)
            return
        meta.returned_at = now
        with self._lock:
            self._stats["usage_ms"] = self._stats.get("usage_ms", 0) + usage
            if self._closed or self._nconns > self._max_size:
                to_close = True
            else:
                to_close = False
                self._hand_over_locked(meta)
        if to_close:
            self._discard(meta)

    def resize(self, min_size: int, max_size: Optional[int] = None) -> None:
        """Change the sizes; the pool grows at once and shrinks as connections come back or idle."""
        if max_size is None:
            max_size = min_size
        if min_size < 0 or max_size < min_size or max_size == 0:
            raise ValueError(f"invalid pool sizes min_size={min_size} max_size={max_size}")
        surplus: list[_Meta] = []
        with self._lock:
            self._min_size = min_size
            self._max_size = max_size
            while self._idle and self._nconns > max_size:
                m = self._idle.popleft()  # the coldest first
                self._owned.pop(id(m.conn), None)
                self._nconns -= 1
                surplus.append(m)
            if not self._closed:
                self._grow_locked()
        for m in surplus:
            _close_quietly(m.conn)
        logger.info("pool %r resized to min %d, max %d", self.name, min_size, max_size)

    def check(self) -> None:
        """Check every idle connection now (``select 1`` and the ``check`` callback); replace bad ones."""
        with self._lock:
            self._require_open()
            batch = list(self._idle)
            self._idle.clear()
        for m in batch:
            try:
                with _own_deadline():
                    good = self._alive(m.conn, roundtrip=True)
            except BaseException:
                self._discard(m)
                raise
            if good:
                with self._lock:
                    if self._closed:
                        good = False
                    else:
                        self._hand_over_locked(m)
            if not good:
                self._discard(m)

    def get_stats(self) -> dict[str, int]:
        """Gauges (pool_min, pool_max, pool_size, pool_available, requests_queued) and counters."""
        with self._lock:
            stats = dict(self._stats)
            stats.update(
                pool_min=self._min_size,
                pool_max=self._max_size,
                pool_size=self._nconns,
                pool_available=len(self._idle),
                requests_queued=len(self._clients),
            )
        return stats

    def pop_stats(self) -> dict[str, int]:
        """Like :meth:`get_stats`, and reset the counters."""
        with self._lock:
            stats = self.get_stats()
            self._stats = {}
        return stats

    @staticmethod
    def discard_all(conn: Any) -> None:
        """A ``reset=`` callback that leaves no session state behind: ``DISCARD ALL``.

        It drops temporary tables, prepared statements, ``SET`` parameters, advisory locks and
        ``LISTEN`` registrations, so the next client starts from a clean session. It costs one round
        trip per return. Do not use it behind PgBouncer in transaction pooling mode (the server
        session is not yours there; PgBouncer runs its own ``server_reset_query``).
        """
        was = conn.autocommit
        conn.autocommit = True
        try:
            conn.cursor().execute("DISCARD ALL")
        finally:
            conn.autocommit = was

    # ------------------------------------------------------------------ checkout and return

    def _wait_for(self, client: _Client, deadline: float, timeout: float) -> _Meta:
        try:
            # No timeout here: the scheduler wakes clients whose deadline passed (see
            # _expire_at_locked) — one timer for all waiting clients instead of one each.
            client.event.wait()
        except BaseException:
            # Killed while waiting (GreenletExit, gevent.Timeout, KeyboardInterrupt...): a connection
            # handed over meanwhile goes to the next client, never with this one.
            self._abandon(client)
            raise
        meta = client.meta
        if meta is not None:
            return meta  # set under the lock before the event; only this client takes it back
        with self._lock:
            meta = client.meta
            if meta is None:
                client.gone = True
                try:
                    self._clients.remove(client)
                except ValueError:
                    pass
        if client.error is not None:
            raise client.error
        if meta is None:
            self._count("requests_errors")
            raise PoolTimeout(
                f"couldn't get a connection after {timeout:.2f} sec from pool {self.name!r} "
                f"(size {self._nconns}, max_size={self._max_size}, {len(self._clients)} waiting); "
                "raise max_size or the timeout, or return connections sooner"
            )
        return meta

    def _abandon(self, client: _Client) -> None:
        with self._lock:
            client.gone = True
            meta, client.meta = client.meta, None
            try:
                self._clients.remove(client)
            except ValueError:
                pass
            if meta is not None:
                if self._closed:
                    to_close: Optional[_Meta] = meta
                else:
                    to_close = None
                    self._hand_over_locked(meta)
            else:
                to_close = None
        self._count("requests_errors")
        if to_close is not None:
            self._discard(to_close)

    def _prepare(self, meta: _Meta) -> bool:
        """Outside the lock: is this connection fit to hand out? If not, discard it (and replace)."""
        now = _monotonic()
        if now >= meta.expire_at or meta.conn.closed:
            self._discard(meta)
            return False
        idle_for = now - meta.returned_at
        if idle_for < FRESH_FOR and self._check is None:
            return True
        try:
            roundtrip = idle_for > self.stale_after
            if roundtrip or self._check is not None:
                with _own_deadline():
                    good = self._alive(meta.conn, roundtrip)
            else:
                good = self._alive(meta.conn, False)
        except BaseException:
            self._discard(meta)
            raise
        if not good:
            self._count("connections_lost")
            logger.warning("pool %r: discarding a broken connection found on checkout", self.name)
            self._discard(meta)
        return good

    def _alive(self, conn: Any, roundtrip: bool) -> bool:
        if conn.closed:
            return False
        # A non-blocking read of whatever the server sent while the connection sat idle: a terminated
        # backend's FATAL message, then EOF. Two reads see both; neither ever waits.
        try:
            ptr = _libpq.pgconn(conn)
        except psycopg2.Error:
            return False
        for _ in range(2):
            if not _libpq.lib.PQconsumeInput(ptr) or _libpq.lib.PQstatus(ptr) != 0:
                return False
        try:
            if roundtrip:
                was = conn.autocommit
                conn.autocommit = True
                try:
                    conn.cursor().execute("select 1")
                finally:
                    if not conn.closed:
                        conn.autocommit = was
            if self._check is not None:
                self._check(conn)
        except psycopg2.Error as e:
            logger.info("pool %r: connection failed its check: %s", self.name, e)
            return False
        return not conn.closed

    def _reset_for_reuse(self, conn: Any, rollback_expected: bool = False) -> bool:
        """Bring a returned connection back to idle; False if it cannot be trusted any more."""
        if conn.closed:
            return False
        if getattr(conn, "_pg_depth", 0) or getattr(conn, "_pg_pending", None) is not None:
            return False  # another greenlet is inside a call on it, or an interrupt is parked
        status = conn.get_transaction_status()
        try:
            if status in (_INTRANS, _INERROR):
                if status == _INTRANS and not rollback_expected:
                    logger.warning("pool %r: rolling back a connection returned in a transaction", self.name)
                conn.rollback()
            elif status != _IDLE:
                logger.warning("pool %r: discarding a connection returned in state %s", self.name, status)
                return False
            if self._reset is not None:
                self._reset(conn)
                if conn.get_transaction_status() != _IDLE:
                    logger.warning("pool %r: reset() left a transaction open; discarding", self.name)
                    return False
        except psycopg2.Error as e:
            logger.warning("pool %r: discarding a connection that failed its reset: %s", self.name, e)
            return False
        return not conn.closed

    def _hand_over_locked(self, meta: _Meta) -> bool:
        """To the first client still waiting (True), else back on the idle stack (LIFO)."""
        while self._clients:
            client = self._clients.popleft()
            if client.gone:
                continue
            client.meta = meta
            client.event.set()
            stats = self._stats
            stats["requests_waiting"] = stats.get("requests_waiting", 0) + 1
            waited_ms = int((_monotonic() - client.since) * 1000)
            stats["requests_wait_ms"] = stats.get("requests_wait_ms", 0) + waited_ms
            return True
        self._idle.append(meta)
        return False

    def _discard(self, meta: _Meta) -> None:
        with self._lock:
            if self._owned.pop(id(meta.conn), None) is not None:
                self._nconns -= 1
            if not self._closed:
                self._grow_locked()
        _close_quietly(meta.conn)

    # ------------------------------------------------------------------ growing

    def _grow_locked(self) -> None:
        """Start connecting up to min_size, and for waiting clients up to max_size."""
        while self._nconns < self._min_size or (
            self._nconns < self._max_size and self._connecting < len(self._clients)
        ):
            self._start_connect_locked()

    def _start_connect_locked(self) -> None:
        self._nconns += 1
        self._connecting += 1
        self._run_locked(_Connect())

    def _connect(self) -> Any:
        """Make one connection: ``psycopg2.connect`` (green once psycogreen is patched) + configure."""
        t0 = _monotonic()
        kwargs = dict(self.kwargs)
        if self.connection_factory is not None:
            kwargs["connection_factory"] = self.connection_factory
        try:
            conn = psycopg2.connect(self.conninfo, **kwargs)
        except BaseException:
            self._count("connections_errors")
            raise
        self._count("connections_num")
        self._count("connections_ms", int((_monotonic() - t0) * 1000))
        try:
            if self._configure is not None:
                self._configure(conn)
            status = conn.get_transaction_status()
            if status != _IDLE:
                raise psycopg2.ProgrammingError(
                    f"configure() left the connection in transaction status {status}; "
                    "commit or set autocommit in configure()"
                )
        except BaseException:
            _close_quietly(conn)
            raise
        return conn

    def _connected(self, conn: Any) -> None:
        meta = _Meta(conn, self.max_lifetime, self.max_idle)
        fill: list[Any] = []
        with self._lock:
            self._connecting -= 1
            if self._closed:
                self._nconns -= 1
                closed = True
            else:
                closed = False
                self._owned[id(conn)] = meta
                self._hand_over_locked(meta)
                if len(self._owned) >= self._min_size:
                    fill, self._fill_events = self._fill_events, []
        for ev in fill:
            ev.set()
        if closed:
            _close_quietly(conn)

    def _connect_failed(self, job: _Connect, error: BaseException) -> None:
        now = _monotonic()
        if job.first_failure is None:
            job.first_failure = now
        with self._lock:
            give_up = self._closed or now - job.first_failure >= self.reconnect_timeout
            # Not needed any more (no one waits, enough connections): let the slot go.
            needed = self._nconns <= self._min_size or self._connecting <= len(self._clients)
            if give_up or not needed:
                self._nconns -= 1
                self._connecting -= 1
            else:
                job.delay = min(_MAX_DELAY, job.delay * 2) if job.delay else _INITIAL_DELAY
                self._schedule_locked(job.delay * random.uniform(1 - _DELAY_JITTER, 1 + _DELAY_JITTER), job)
            closed = self._closed
        if closed:
            return
        logger.warning(
            "pool %r: connection attempt to %s failed: %s", self.name, self._safe, str(error).strip()
        )
        if give_up:
            logger.error(
                "pool %r: could not reconnect to %s for %.1f sec (reconnect_timeout)",
                self.name,
                self._safe,
                self.reconnect_timeout,
            )
            if self._reconnect_failed is not None:
                try:
                    self._reconnect_failed(self)
                except Exception:
                    logger.exception("pool %r: reconnect_failed callback failed", self.name)

    # ------------------------------------------------------------------ background work

    def _run_locked(self, job: Callable[[ConnectionPool], None]) -> None:
        """Queue a job; start a worker if fewer than num_workers are running."""
        self._jobs.append(job)
        if self._nworkers < self.num_workers:
            self._nworkers += 1
            current_waiter().spawn(_worker, weakref.ref(self))

    def _schedule_locked(self, delay: float, job: Callable[[ConnectionPool], None]) -> None:
        when = _monotonic() + delay
        heapq.heappush(self._sched, (when, next(self._sched_seq), job))
        self._wake_scheduler_locked(when)

    def _expire_at_locked(self, client: _Client, deadline: float) -> None:
        """Have the scheduler time ``client`` out at ``deadline`` unless it is served first."""
        expiry = self._expiry
        if len(expiry) > 2 * len(self._clients) + 256:
            # Drop the entries of clients served long ago (bounded memory, amortised O(1)).
            expiry[:] = [e for e in expiry if e[2].meta is None and not e[2].gone]
            heapq.heapify(expiry)
        heapq.heappush(expiry, (deadline, next(self._sched_seq), client))
        self._wake_scheduler_locked(deadline)

    def _wake_scheduler_locked(self, when: float) -> None:
        if not self._sched_running:
            self._sched_running = True
            self._sched_wake_at = when
            current_waiter().spawn(_scheduler, weakref.ref(self), self._sched_event)
        elif when < self._sched_wake_at:
            self._sched_wake_at = when
            self._sched_event.set()

    def _expire_clients_locked(self, now: float) -> float:
        """Time out the clients whose deadline passed; return the next live client's deadline."""
        expiry = self._expiry
        while expiry:
            deadline, _, client = expiry[0]
            if client.meta is not None or client.gone:
                heapq.heappop(expiry)  # served or gone already
            elif deadline <= now:
                heapq.heappop(expiry)
                client.gone = True
                try:
                    self._clients.remove(client)
                except ValueError:
                    pass
                client.event.set()
            else:
                return deadline
        return float("inf")

    def _sweep_period(self) -> float:
        return min(30.0, max(0.05, min(self.max_idle, self.max_lifetime) / 4))

    def _sweep(self) -> None:
        """Close idle connections past max_lifetime, or past max_idle above min_size; refill."""
        now = _monotonic()
        doomed: list[_Meta] = []
        with self._lock:
            if self._closed:
                return
            keep: deque[_Meta] = deque()
            for m in self._idle:  # coldest first
                if now >= m.expire_at or (
                    now - m.returned_at >= m.idle_limit and self._nconns - len(doomed) > self._min_size
                ):
                    doomed.append(m)
                else:
                    keep.append(m)
            self._idle = keep
            for m in doomed:
                self._owned.pop(id(m.conn), None)
            self._nconns -= len(doomed)
            self._grow_locked()
            self._schedule_locked(self._sweep_period(), _Sweep())
        if doomed:
            logger.debug("pool %r: recycling %d idle connections", self.name, len(doomed))
        for m in doomed:
            _close_quietly(m.conn)

    # ------------------------------------------------------------------ helpers

    def _require_open(self) -> None:
        if self._closed:
            what = "closed" if self._opened else "not open yet (call open())"
            raise PoolClosed(f"pool {self.name!r} is {what}")

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._stats[key] = self._stats.get(key, 0) + n


class _Connect:
    """Background job: make one connection, retrying with backoff while it is still needed."""

    __slots__ = ("delay", "first_failure")

    def __init__(self) -> None:
        self.delay = 0.0
        self.first_failure: Optional[float] = None

    def __call__(self, pool: ConnectionPool) -> None:
        if pool._closed:
            with pool._lock:
                pool._nconns -= 1
                pool._connecting -= 1
            return
        try:
            conn = pool._connect()
        except Exception as e:  # noqa: BLE001 - any failure to connect is retried with backoff
            pool._connect_failed(self, e)
            return
        pool._connected(conn)


class _Sweep:
    __slots__ = ()

    def __call__(self, pool: ConnectionPool) -> None:
        pool._sweep()


def _worker(ref: weakref.ReferenceType[ConnectionPool]) -> None:
    """Run queued jobs until there are none; holds the pool only while running one."""
    while True:
        pool = ref()
        if pool is None:
            return
        with pool._lock:
            if not pool._jobs:
                pool._nworkers -= 1
                return
            job = pool._jobs.popleft()
        try:
            job(pool)
        except BaseException as e:  # noqa: BLE001 - a worker must survive a failing job
            logger.exception("pool %r: background job %r failed: %s", pool.name, job, e)
        del pool, job


def _scheduler(ref: weakref.ReferenceType[ConnectionPool], event: Any) -> None:
    """Hand due jobs to the workers; sleep on ``event`` (never on the pool) until the next one."""
    while True:
        pool = ref()
        if pool is None:
            return
        with pool._lock:
            now = _monotonic()
            next_client = pool._expire_clients_locked(now)
            if pool._closed or (not pool._sched and next_client == float("inf")):
                pool._sched_running = False
                return
            while pool._sched and pool._sched[0][0] <= now:
                pool._run_locked(heapq.heappop(pool._sched)[2])
            wake_at = min(next_client, pool._sched[0][0] if pool._sched else now + 5.0, now + 5.0)
            pool._sched_wake_at = wake_at
            event.clear()
        del pool
        try:
            event.wait(max(0.0, wake_at - now))
        except BaseException:
            # Killed (e.g. gevent.killall at shutdown): waiting clients rely on this task to time
            # them out, so hand the job to a new scheduler while the pool is open, then stop.
            pool = ref()
            if pool is not None:
                with pool._lock:
                    pool._sched_running = False
                    if not pool._closed and (pool._clients or pool._sched):
                        pool._wake_scheduler_locked(_monotonic())
            raise


def _close_quietly(conn: Any) -> None:
    try:
        conn.close()
    except Exception:  # noqa: BLE001 - a broken connection may fail to close; it is gone anyway
        pass


class NullConnectionPool(ConnectionPool):
    """No reuse: every checkout gets a fresh connection, closed on return. ``max_size`` still caps
    how many are open at once (clients beyond it wait, in order). For deployments where an external
    pooler (PgBouncer) already pools, or where sessions must never be shared."""

    _reuse = False

    def __init__(
        self, conninfo: str = "", *, min_size: int = 0, max_size: Optional[int] = None, **kw: Any
    ) -> None:
        if min_size:
            raise ValueError("NullConnectionPool keeps no idle connections: min_size must be 0")
        if max_size is None:
            max_size = 1 << 30
        super().__init__(conninfo, min_size=0, max_size=max_size, **kw)
