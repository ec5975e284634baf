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
- ``Lock()`` — taken once, at construction (and again in a forked child). It guards *decisions
  only*: no I/O and no wait ever happens while it is held, so it never switches green threads and
  any lock that is safe for OS threads is correct for greenlets on one thread too.

What a borrower gets and leaves
-------------------------------
Every checkout looks at the connection's socket (a one-byte non-blocking peek: a terminated
backend's ErrorResponse or EOF is seen without a round trip), so a connection whose backend is
already gone is never handed out. Every return rolls back, runs ``reset``, and puts back the
psycopg2-side settings the connection had after ``configure`` (autocommit, isolation level,
read-only, deferrable, client encoding, cursor factory; notices and notifies emptied), paying only
for what changed.
A connection another green thread is inside a call on cannot be returned (``ProgrammingError``):
closing it to discard it would wait on that call and freeze the process. After ``os.fork()`` a
child's pools start afresh without touching the parent's sessions.

So under gevent or eventlet a waiting client parks its greenlet, under plain threads it blocks its
thread, and inside an asyncio bridge greenlet (``psycogreen.aio``) the bridge's waiter turns the same
calls into awaits: the async pool is this class run through that waiter, not a second copy.

Background workers and the scheduler hold the pool through a ``weakref``: they never keep a pool
alive, and threads are daemons, so they never keep a process alive either.

Logging goes to the ``psycogreen.pool`` logger; connection strings are logged without passwords.
"""

from __future__ import annotations

import ctypes
import errno
import heapq
import itertools
import logging
import os
import random
import socket
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
from .errors import PoolClosed, PoolTimeout, QueryTimeout, TooManyRequests

try:
    from greenlet import getcurrent as _getcurrent
except ImportError:  # pragma: no cover - greenlet ships with every supported framework
    import threading

    _getcurrent = threading.current_thread  # type: ignore[assignment]

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

#: Every live pool, so that a forked child can make each of them its own (see _after_fork_in_child).
_pools: weakref.WeakSet[ConnectionPool] = weakref.WeakSet()


class _PoolDeadline(PoolTimeout, QueryTimeout):
    """The enclosing ``psycogreen.timeout()`` expired while waiting for a pooled connection.

    Both a :class:`PoolTimeout` (the time went in waiting for the pool) and a
    :class:`QueryTimeout` (what every other operation in a ``timeout()`` block raises on expiry), so
    handlers written for either catch it.
    """


def _used_elsewhere(conn: Any) -> Any:
    """The greenlet/thread inside a call on ``conn`` right now if it is not the caller, else None.

    Read from the guard state psycogreen's connection classes keep (``_pg_owner``); plain psycopg2
    connections have none and are never reported busy.
    """
    owner = getattr(conn, "_pg_owner", None)
    if owner is None or owner is _getcurrent():
        return None
    return owner


def _settings(conn: Any) -> tuple[Any, ...]:
    """The psycopg2-side session settings a borrower can change, read without a round trip."""
    return (
        conn.autocommit,
        conn.isolation_level,
        conn.readonly,
        conn.deferrable,
        conn.encoding,
        conn.cursor_factory,
    )


def _norm_encoding(name: Optional[str]) -> str:
    return "".join(ch for ch in (name or "") if ch.isalnum()).upper()


def _encoding_agrees(conn: Any) -> bool:
    """Does the server's ``client_encoding`` (as last reported to libpq) match psycopg2's belief?"""
    server, believed = conn.get_parameter_status("client_encoding"), conn.encoding
    if server is None:  # not reported (a proxy that hides it): nothing to compare, nothing to do
        return True
    return bool(server == believed or _norm_encoding(server) == _norm_encoding(believed))


def _libc_peek() -> Any:
    """libc's ``recv`` for a one-byte ``MSG_PEEK | MSG_DONTWAIT`` look at a socket (None where that
    is not available): the cheapest way to learn that nothing arrived on an idle connection.
    Called through ctypes, so monkey-patching never turns it into a green wait."""
    flags = getattr(socket, "MSG_PEEK", 0) | getattr(socket, "MSG_DONTWAIT", 0)
    if not getattr(socket, "MSG_DONTWAIT", 0):
        return None
    try:
        recv = ctypes.CDLL(None, use_errno=True).recv
    except (OSError, AttributeError):
        return None
    recv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    recv.restype = ctypes.c_ssize_t
    shared = ctypes.create_string_buffer(1)  # for the common look, whose byte is never read

    def peek(fd: int, want_byte: bool = False) -> tuple[int, bytes]:
        if not want_byte:
            return recv(fd, shared, 1, flags), b""
        own = ctypes.create_string_buffer(1)
        n = recv(fd, own, 1, flags)
        return n, own.raw

    return peek


_peek = _libc_peek()
_NOTHING_YET = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR)


def _detach(conn: Any) -> None:
    """Close this process's copy of a connection inherited through ``fork()`` without telling the
    server: the parent still uses that session, and ``close()`` would send it a Terminate message.

    The socket's descriptor is first pointed at /dev/null (``dup2``), so whatever libpq writes while
    closing goes nowhere and the descriptor number is released with it.
    """
    try:
        fd = conn.fileno()
    except Exception:  # noqa: BLE001 - closed already
        fd = -1
    if fd >= 0:
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)
    _close_quietly(conn)


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

    __slots__ = ("conn", "created", "expire_at", "idle_limit", "returned_at", "out_since", "settings")

    def __init__(self, conn: Any, max_lifetime: float, max_idle: float) -> None:
        now = _monotonic()
        self.conn = conn
        self.created = now
        # Jitter: connections made together must not all expire together.
        self.expire_at = now + max_lifetime * random.uniform(0.9, 1.0)
        self.idle_limit = max_idle * random.uniform(0.9, 1.0)
        self.returned_at = now
        self.out_since = 0.0
        # As configured: what every borrower must find (restored on return when changed).
        self.settings = _settings(conn)


class _Client:
    """A client waiting for a connection; it owns its Event, so it is woken alone and in order."""

    __slots__ = ("event", "meta", "error", "gone", "since", "queued")

    def __init__(self, event: Any) -> None:
        self.since = _monotonic()
        self.event = event
        self.meta: Optional[_Meta] = None
        self.error: Optional[BaseException] = None
        self.gone = False  # timed out or interrupted: never hand it anything
        self.queued = 0  # clients waiting (this one included) when it timed out


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
        # psycopg2.pool's keyed checkouts: key -> connection, id(connection) -> key.
        self._keyed: dict[Any, Any] = {}
        self._key_of: dict[int, Any] = {}
        # The last failed connection attempt, until one succeeds: why clients time out.
        self._last_connect_error: Optional[BaseException] = None
        # fork(): connections a child inherited checked out (id -> connection); its own generation
        # number, so that background tasks copied from the parent (gevent) stand down.
        self._inherited: dict[int, Any] = {}
        self._gen = 0
        _pools.add(self)
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

    def closeall(self) -> None:
        """psycopg2.pool's ``closeall()``: close the pool *and* the connections checked out of it.

        As with ``psycopg2.pool``, a connection a client still holds is closed under it (its next
        use raises ``InterfaceError``). One that another greenlet is inside a call on right now is
        left to be closed when it is returned: closing it would wait on that call and freeze the
        process. Use :meth:`close` to let checked-out connections finish their work.
        """
        self.close()
        with self._lock:
            out = [m for m in self._owned.values() if m.out_since]
        for m in out:
            if _used_elsewhere(m.conn) is None:
                _close_quietly(m.conn)
            else:
                logger.warning("pool %r: closeall(): a connection in use closes on return", self.name)

    def connection(self, timeout: Optional[float] = None) -> _ConnectionContext:
        """A connection for the ``with`` block: committed on success, rolled back on an exception,
        returned to the pool in both cases."""
        return _ConnectionContext(self, timeout)

    def getconn(
        self, key_or_timeout: Any = None, /, timeout: Optional[float] = None, *, key: Any = None
    ) -> Any:
        """Take a connection, waiting at most ``timeout`` (default: the pool's) seconds for one.

        Both call shapes work: psycopg_pool's ``getconn(timeout=2.0)`` or ``getconn(2.0)`` (a
        positional *number* is a timeout) and psycopg2.pool's ``getconn(key)`` (any other
        positional value is a key; pass a numeric key as ``key=7``). While a connection taken with
        a key is checked out, the same key returns the same connection, as in psycopg2.pool.
        An enclosing ``psycogreen.timeout()`` bounds the wait too: the tighter of the two wins.
        """
        if key_or_timeout is not None:
            if isinstance(key_or_timeout, (int, float)) and not isinstance(key_or_timeout, bool):
                if timeout is None:
                    timeout = float(key_or_timeout)
            elif key is None:
                key = key_or_timeout
        if key is not None:
            with self._lock:
                self._require_open()
                self._after_fork_check_locked()
                held = self._keyed.get(key)
            if held is not None:
                return held
        conn = self._checkout(self.timeout if timeout is None else timeout)
        if key is not None:
            with self._lock:
                held = self._keyed.get(key)
                if held is None:
                    self._keyed[key] = conn
                    self._key_of[id(conn)] = key
            if held is not None:  # another green thread took this key meanwhile: share its one
                self._putconn(conn)
                return held
        return conn

    def _checkout(self, timeout: float) -> Any:
        t0 = _monotonic()
        deadline = t0 + timeout
        outer = _deadline.current()
        by_deadline = outer is not None and outer[0] < deadline
        if by_deadline:
            assert outer is not None
            deadline = outer[0]
        counted = False
        stats = self._stats
        while True:
            client = None
            meta: Optional[_Meta] = None
            with self._lock:
                self._require_open()
                self._after_fork_check_locked()
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
                meta = self._wait_for(client, t0, timeout, outer if by_deadline else None)
            assert meta is not None
            if self._prepare(meta):
                break
        meta.out_since = _monotonic()
        return meta.conn

    def putconn(self, conn: Any, key: Any = None, close: bool = False) -> None:
        """Give back a connection from :meth:`getconn`. An open transaction is rolled back and the
        session settings the connection had when configured are restored; a broken connection, or
        one in an unknown state, is closed and replaced in the background.

        psycopg2.pool's shapes work: ``key`` (optional; found from the connection when omitted)
        and ``close=True``, which closes the connection instead of keeping it (the pool replaces
        it as needed). Returning a connection that another greenlet is using right now raises
        ``ProgrammingError`` and changes nothing: return it once that call has finished.
        """
        if key is not None and self._keyed.get(key) is not conn:
            raise ValueError(
                f"putconn(): the connection {conn!r} was not taken from pool {self.name!r} with "
                f"key {key!r}; pass the key it was taken with, or none"
            )
        self._putconn(conn, close=close)

    def _putconn(self, conn: Any, rollback_expected: bool = False, close: bool = False) -> None:
        meta = self._owned.get(id(conn))
        if meta is None or meta.conn is not conn:
            if self._inherited.pop(id(conn), None) is conn:
                _detach(conn)  # checked out in the parent before a fork(): not this process's
                return
            raise ValueError(f"putconn(): the connection {conn!r} does not belong to pool {self.name!r}")
        if not meta.out_since:
            raise ValueError(
                f"putconn(): the connection {conn!r} was already returned to pool {self.name!r}; "
                "return each connection once"
            )
        user = _used_elsewhere(conn)
        if user is not None:
            who = "another thread" if getattr(user, "parent", False) is None else repr(user)
            raise psycopg2.ProgrammingError(
                f"putconn(): the connection is in use by {who} right now (inside a query or "
                f"another call), so pool {self.name!r} cannot take it back; it stays checked out. "
                "Return it from that greenlet/thread once its call has finished (cancel a long "
                "query first with conn.cancel())"
            )
        now = _monotonic()
        usage = int((now - meta.out_since) * 1000)
        meta.out_since = 0.0
        key = self._key_of.pop(id(conn), None)
        if key is not None:
            self._keyed.pop(key, None)
        if conn.closed or close:
            ok = False
        elif (
            self._reset is None
            and conn.get_transaction_status() == _IDLE
            and _settings(conn) == meta.settings
            and not conn.notifies
            and not conn.notices
            and _encoding_agrees(conn)
        ):
            ok = getattr(conn, "_pg_pending", None) is None
        else:
            try:
                with _own_deadline():
                    ok = self._reset_for_reuse(conn, meta.settings, rollback_expected)
            except BaseException:
                self._count("usage_ms", usage)
                self._discard(meta)
                raise
            now = _monotonic()
        if not ok or not self._reuse:
            self._count("usage_ms", usage)
            if not ok and not close:
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

        It drops temporary tables, prepared statements, ``SET`` parameters (``SET ROLE``,
        ``search_path``...), advisory locks and ``LISTEN`` registrations, so the next client starts
        from a clean session. It costs one round trip per return. It also resets the server's
        ``client_encoding``; the pool then re-establishes the encoding psycopg2 decodes with (the
        one the connection had after ``configure``), so text never comes back mis-decoded.

        Behind PgBouncer in transaction pooling mode the server session is not yours: each
        transaction may run on another server connection, so this cleans a session other clients
        share. PgBouncer does *not* run its ``server_reset_query`` in transaction mode (only with
        ``server_reset_query_always = 1``), so there a session-level ``SET`` leaks to other clients
        whatever this pool does: use ``SET LOCAL`` inside transactions instead.
        """
        was = conn.autocommit
        conn.autocommit = True
        try:
            conn.cursor().execute("DISCARD ALL")
        finally:
            conn.autocommit = was

    # ------------------------------------------------------------------ checkout and return

    def _wait_for(
        self, client: _Client, t0: float, timeout: float, outer: Optional[tuple[float, float]]
    ) -> _Meta:
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
            raise self._timeout_error(client, t0, timeout, outer)
        return meta

    def _timeout_error(
        self, client: _Client, t0: float, timeout: float, outer: Optional[tuple[float, float]]
    ) -> PoolTimeout:
        """Say why no connection came: the pool cannot connect (chain that error, advise on the
        connection), it is busy (advise on sizing), or an enclosing deadline expired first."""
        waiting = max(client.queued, 1)
        cause = self._last_connect_error
        if outer is not None:
            head = (
                f"couldn't get a connection from pool {self.name!r} within the enclosing "
                f"psycogreen.timeout({outer[1]:.2f}) (waited {_monotonic() - t0:.2f} sec of the "
                f"pool's {timeout:.2f})"
            )
        else:
            head = f"couldn't get a connection after {timeout:.2f} sec from pool {self.name!r}"
        state = f"size {self._nconns}, max_size={self._max_size}, {waiting} waiting"
        if cause is not None:
            reason = str(cause).strip().replace("\n", " ") or type(cause).__name__
            msg = (
                f"{head}: the pool cannot connect to the server ({self._safe}): {reason} ({state}); "
                "fix the connection settings (host, port, dbname, user, password) or the server: "
                "the pool keeps retrying in the background"
            )
        elif outer is not None:
            msg = f"{head} ({state}); raise max_size or the deadline, or return connections sooner"
        else:
            msg = f"{head} ({state}); raise max_size or the timeout, or return connections sooner"
        err: PoolTimeout = _PoolDeadline(msg) if outer is not None else PoolTimeout(msg)
        err.__cause__ = cause
        return err

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
        # Every checkout looks at the socket (two non-blocking reads, no round trip, ~1-2 us): a
        # connection whose backend was terminated a moment ago is never handed out.
        try:
            roundtrip = now - meta.returned_at > self.stale_after
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

    @staticmethod
    def _socket_alive(conn: Any) -> bool:
        """Look at what the server sent while the connection sat idle, without a round trip and
        without ever waiting: a terminated backend leaves its FATAL message, then EOF.

        First a one-byte peek (one syscall, a few us): nothing arrived is the common case and ends
        here; an ErrorResponse (``E``, unencrypted connections) means the server is ending the
        session. Anything else is read by libpq (``PQconsumeInput``, twice: the FATAL message, then
        the EOF) and ``PQstatus`` says whether the connection survived.
        """
        try:
            ptr = _libpq.pgconn(conn)
        except psycopg2.Error:
            return False
        if _peek is not None:
            try:
                fd = conn.fileno()
            except psycopg2.Error:
                return False
            n, _ = _peek(fd)
            if n < 0 and ctypes.get_errno() in _NOTHING_YET:
                return True
            if n == 0:
                return False  # EOF: the server closed the connection
            if n > 0 and conn.info.ssl_in_use is False and _peek(fd, True)[1] == b"E":
                # An ErrorResponse to an idle session is the server ending it ("terminating
                # connection due to administrator command"); its EOF may still be on the way.
                return False
        for _ in range(2):
            if not _libpq.lib.PQconsumeInput(ptr) or _libpq.lib.PQstatus(ptr) != 0:
                return False
        return True

    def _alive(self, conn: Any, roundtrip: bool) -> bool:
        if conn.closed:
            return False
        if not self._socket_alive(conn):
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
        except Exception as e:  # noqa: BLE001 - a check() bug rejects the connection, not the client
            logger.warning(
                "pool %r: check() raised %s: %s; discarding the connection and trying another",
                self.name,
                type(e).__name__,
                e,
            )
            return False
        return not conn.closed

    def _reset_for_reuse(self, conn: Any, settings: tuple[Any, ...], rollback_expected: bool = False) -> bool:
        """Bring a returned connection back to idle and as configured; False if it cannot be
        trusted any more."""
        if conn.closed:
            return False
        if getattr(conn, "_pg_depth", 0) or getattr(conn, "_pg_pending", None) is not None:
            return False  # an interrupt is parked on it: its state is unknown
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
                _reapply_characteristics(conn)
            _restore_settings(conn, settings)
            if conn.get_transaction_status() != _IDLE:
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
        self._run_locked(_Connect(self._gen))

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

    def _connected(self, job: _Connect, conn: Any) -> None:
        meta = _Meta(conn, self.max_lifetime, self.max_idle)
        fill: list[Any] = []
        with self._lock:
            if job.gen != self._gen:  # started in the parent before a fork(): not ours
                stale = True
            else:
                stale = False
                self._last_connect_error = None
        if stale:
            _detach(conn)
            return
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
            if job.gen != self._gen:
                return
            self._last_connect_error = error.with_traceback(None)  # its frames would hold the pool
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
            current_waiter().spawn(_worker, weakref.ref(self), self._gen)

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
        queued = len(self._clients)  # before this batch leaves: each timed-out client saw them all
        while expiry:
            deadline, _, client = expiry[0]
            if client.meta is not None or client.gone:
                heapq.heappop(expiry)  # served or gone already
            elif deadline <= now:
                heapq.heappop(expiry)
                client.gone = True
                client.queued = queued
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

    # ------------------------------------------------------------------ fork

    def _after_fork_in_child(self) -> None:
        """In a child process right after ``fork()``: forget the parent's connections and tasks.

        The parent's sockets are shared with the child: a connection used by both would mix two
        conversations, and closing one the normal way would end the parent's session. So idle
        connections are detached (see :func:`_detach`), connections checked out at the fork are
        remembered as inherited (``putconn`` detaches them), and the child opens its own, lazily, on
        first use. Background threads do not survive a fork; gevent/eventlet copies of them stand
        down (they see another generation). Clients still waiting (green threads copied into the
        child) are failed at once rather than left waiting on tasks that are gone.
        """
        self._lock = current_waiter().Lock()
        self._gen += 1
        idle = list(self._idle)
        self._inherited = {id(m.conn): m.conn for m in self._owned.values() if m.out_since}
        self._idle.clear()
        self._owned.clear()
        self._keyed.clear()
        self._key_of.clear()
        self._nconns = self._connecting = self._nworkers = 0
        self._jobs.clear()
        self._sched.clear()
        self._expiry.clear()
        self._sched_running = False
        clients, self._clients = list(self._clients), deque()
        fill, self._fill_events = self._fill_events, []
        self._last_connect_error = None
        self._stats = {}
        if not self._closed:
            self._sched_event = current_waiter().Event()
            weakref.finalize(self, self._sched_event.set)
        self._refill = not self._closed
        for m in idle:
            _detach(m.conn)
        err = PoolClosed(
            f"pool {self.name!r}: the process forked while this client waited for a connection; "
            "the child's pool starts afresh: retry"
        )
        for c in clients:
            c.gone = True
            c.error = err
            c.event.set()
        for ev in fill:
            ev.set()

    _refill = False

    def _after_fork_check_locked(self) -> None:
        """First use in a forked child: start the child's own connections and maintenance."""
        if self._refill:
            self._refill = False
            if not self._closed:
                self._grow_locked()
                self._schedule_locked(self._sweep_period(), _Sweep())

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

    __slots__ = ("delay", "first_failure", "gen")

    def __init__(self, gen: int) -> None:
        self.delay = 0.0
        self.first_failure: Optional[float] = None
        self.gen = gen

    def __call__(self, pool: ConnectionPool) -> None:
        if pool._closed or self.gen != pool._gen:
            with pool._lock:
                if self.gen == pool._gen:
                    pool._nconns -= 1
                    pool._connecting -= 1
            return
        try:
            conn = pool._connect()
        except Exception as e:  # noqa: BLE001 - any failure to connect is retried with backoff
            pool._connect_failed(self, e)
            return
        pool._connected(self, conn)


class _Sweep:
    __slots__ = ()

    def __call__(self, pool: ConnectionPool) -> None:
        pool._sweep()


def _worker(ref: weakref.ReferenceType[ConnectionPool], gen: int) -> None:
    """Run queued jobs until there are none; holds the pool only while running one."""
    while True:
        pool = ref()
        if pool is None:
            return
        with pool._lock:
            if pool._gen != gen:
                return  # a copy of the parent's worker in a forked child: the child has its own
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
            if pool._sched_event is not event:
                return  # a copy of the parent's scheduler in a forked child: the child has its own
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
            if pool is not None and pool._sched_event is event:
                with pool._lock:
                    pool._sched_running = False
                    if not pool._closed and (pool._clients or pool._sched):
                        pool._wake_scheduler_locked(_monotonic())
            raise


def _restore_settings(conn: Any, settings: tuple[Any, ...]) -> None:
    """Put back what a borrower changed on the psycopg2 connection: autocommit first (psycopg2
    applies the transaction characteristics differently in and out of autocommit), then isolation
    level, read-only and deferrable, the client encoding, the cursor factory, and empty
    notices/notifies. Each costs
    nothing unless it changed (a ``SET`` round trip at most)."""
    autocommit, isolation, readonly, deferrable, encoding, cursor_factory = settings
    if conn.autocommit != autocommit:
        conn.autocommit = autocommit
    if conn.isolation_level != isolation:
        conn.isolation_level = isolation
    if conn.readonly != readonly:
        conn.readonly = readonly
    if conn.deferrable != deferrable:
        conn.deferrable = deferrable
    if _norm_encoding(conn.encoding) != _norm_encoding(encoding):
        conn.set_client_encoding(encoding)
    if not _encoding_agrees(conn):
        # The server's encoding changed behind psycopg2 (DISCARD ALL, RESET ALL, a raw SET):
        # psycopg2 would decode with the wrong codec. Tell the server what psycopg2 believes.
        was = conn.autocommit
        conn.autocommit = True
        try:
            conn.cursor().execute(
                "SELECT pg_catalog.set_config('client_encoding', %s, false)", (conn.encoding,)
            )
        finally:
            conn.autocommit = was
    if conn.cursor_factory is not cursor_factory:
        conn.cursor_factory = cursor_factory
    if conn.notices:
        conn.notices.clear()
    if conn.notifies:
        conn.notifies.clear()


def _reapply_characteristics(conn: Any) -> None:
    """After a ``reset`` (``DISCARD ALL``, ``RESET ALL``): in autocommit, psycopg2 applies isolation
    level, read-only and deferrable as session defaults on the server (``default_transaction_*``),
    which the reset just cleared while psycopg2 still believes them set. Apply them again."""
    if not conn.autocommit:
        return  # outside autocommit they go with each BEGIN: nothing on the server to lose
    for name in ("isolation_level", "readonly", "deferrable"):
        value = getattr(conn, name)
        if value is not None:
            setattr(conn, name, None)  # psycopg2 skips a set to the value it believes in
            setattr(conn, name, value)


def _after_fork_in_child() -> None:
    for pool in list(_pools):
        try:
            pool._after_fork_in_child()
        except Exception:  # noqa: BLE001 - never break the child's fork
            logger.exception("pool %r: could not reset after fork", pool.name)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


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
