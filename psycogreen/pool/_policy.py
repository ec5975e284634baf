"""The pool's policy: who gets which connection, when connections are made, checked and dropped.

Decisions are made under one lock and never wait or do I/O while holding it; waiting happens
through the current waiter's primitives, resolved at call time (see the package docstring).
"""

from __future__ import annotations

import _thread
import itertools
import logging
import os
import weakref
from collections import deque
from types import TracebackType
from typing import Any, Callable, Optional, TypeVar

import psycopg2

from .. import _deadline, _guard
from .._patch import current_waiter, ensure_patched
from ..errors import PoolClosed, PoolTimeout, TooManyRequests
from . import _stats as S
from ._background import Background
from ._conn import (
    IDLE,
    INERROR,
    INTRANS,
    Meta,
    close_quietly,
    detach,
    monotonic,
    own_deadline,
    reapply_characteristics,
    restore_settings,
    returned_clean,
    safe_conninfo,
    select_one,
    socket_alive,
)
from ._jobs import Sweep
from ._upkeep import Upkeep
from ._waiting import Client, timeout_error

logger = logging.getLogger("psycogreen.pool")

_Self = TypeVar("_Self", bound="ConnectionPool")
_counter = itertools.count(1)

#: Every live pool, so that a forked child can make each of them its own (see _after_fork_in_child).
_pools: weakref.WeakSet[ConnectionPool] = weakref.WeakSet()


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
                if not conn.closed and conn.get_transaction_status() == INTRANS:
                    conn.commit()
            except BaseException:
                self.pool._putconn(conn, rollback_expected=True)
                raise
            self.pool._putconn(conn)
        else:
            self.pool._putconn(conn, rollback_expected=True)


class ConnectionPool(Upkeep):
    """A pool of psycopg2 connections that waits cooperatively (gevent, eventlet, threads, asyncio).

    See the package docstring for the waiting contract and ``docs/pooling.md`` for usage.
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
        self._safe = safe_conninfo(conninfo, self.kwargs)
        ensure_patched()  # a pool of blocking connections would serialise a gevent/eventlet process
        self._init_state()
        self._closed = True
        self._opened = False
        _pools.add(self)
        if open:
            self.open()

    def _init_state(self) -> None:
        """The state a pool starts with, and a forked child starts again from."""
        # The C lock, never a green one (monkey-patching leaves ``_thread.RLock`` alone): it guards
        # decisions only, never a wait, so it never blocks a greenlet; between OS threads it is the
        # lock they need. Acquiring it costs a few tens of ns.
        self._lock = _thread.RLock()
        self._idle: deque[Meta] = deque()  # LIFO: append and pop on the right
        self._clients: deque[Client] = deque()  # FIFO of waiting clients (see _waiting)
        self._owned: dict[int, Meta] = {}  # id(conn) -> meta, idle and checked out
        self._nconns = 0  # owned + being connected
        self._connecting = 0
        self._fill_events: list[Any] = []  # wait() callers
        self._counters = S.Counters()
        self._bg: Optional[Background] = None  # created by open(): its event is the opener's kind
        # psycopg2.pool's keyed checkouts: key -> connection, id(connection) -> key.
        self._keyed: dict[Any, Any] = {}
        self._key_of: dict[int, Any] = {}
        # The last failed connection attempt, until one succeeds: why clients time out.
        self._last_connect_error: Optional[BaseException] = None
        # fork(): connections a child inherited checked out (id -> connection).
        self._inherited: dict[int, Any] = {}

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
            self._bg = Background(self, self.num_workers)
            for _ in range(self._min_size):
                self._start_connect_locked()
            self._bg.schedule_locked(self._sweep_period(), Sweep())
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
        """Close idle connections, fail waiting clients with PoolClosed, stop background work and
        wait (at most ``timeout`` seconds) for the tasks doing it to end.

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
            clients, self._clients = self._clients, deque()
            fill, self._fill_events = self._fill_events, []
            err = PoolClosed(f"pool {self.name!r} was closed while waiting for a connection")
            for c in clients:
                c.fail(err)
        for ev in fill:
            ev.set()
        for m in idle:
            close_quietly(m.conn)
        if self._bg is not None and not self._bg.stop(timeout):
            logger.warning("pool %r: background tasks still busy after %.2f sec", self.name, timeout)
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
            if _guard.other_user(m.conn) is None:
                close_quietly(m.conn)
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
        if key is None:
            return self._checkout(self.timeout if timeout is None else timeout)
        return self._keyed_checkout(key, self.timeout if timeout is None else timeout)

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

    def resize(self, min_size: int, max_size: Optional[int] = None) -> None:
        """Change the sizes; the pool grows at once and shrinks as connections come back or idle."""
        if max_size is None:
            max_size = min_size
        if min_size < 0 or max_size < min_size or max_size == 0:
            raise ValueError(f"invalid pool sizes min_size={min_size} max_size={max_size}")
        surplus: list[Meta] = []
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
            close_quietly(m.conn)
        logger.info("pool %r resized to min %d, max %d", self.name, min_size, max_size)

    def check(self) -> None:
        """Check every idle connection now (``select 1`` and the ``check`` callback); replace bad ones."""
        with self._lock:
            self._require_open()
            batch = list(self._idle)
            self._idle.clear()
        for m in batch:
            try:
                with own_deadline():
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
        """Gauges (pool_min, pool_max, pool_size, pool_available, requests_queued) and the
        counters that moved (see ``psycogreen.pool._stats`` for what each one counts)."""
        with self._lock:
            stats = self._counters.snapshot()
            stats[S.POOL_MIN] = self._min_size
            stats[S.POOL_MAX] = self._max_size
            stats[S.POOL_SIZE] = self._nconns
            stats[S.POOL_AVAILABLE] = len(self._idle)
            stats[S.REQUESTS_QUEUED] = len(self._clients)
        return stats

    def pop_stats(self) -> dict[str, int]:
        """Like :meth:`get_stats`, and reset the counters."""
        with self._lock:
            stats = self.get_stats()
            self._counters.reset()
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

    # ------------------------------------------------------------------ checkout

    def _keyed_checkout(self, key: Any, timeout: float) -> Any:
        """psycopg2.pool's ``getconn(key)``: the connection already held under ``key``, or a new one."""
        with self._lock:
            self._require_open()
            self._after_fork_check_locked()
            held = self._keyed.get(key)
        if held is not None:
            return held
        conn = self._checkout(timeout)
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
        """Take the warmest idle connection, or park until one is handed over; then look at it."""
        deadline = monotonic() + timeout
        outer = _deadline.current()
        if outer is not None and outer[0] < deadline:
            deadline = outer[0]
        else:
            outer = None
        counted = False
        while True:
            with self._lock:
                if self._closed:
                    self._require_open()
                if self._refill:
                    self._after_fork_check_locked()
                if not counted:
                    self._counters.values[S.REQUESTS_NUM] += 1
                    counted = True
                if self._idle and not self._clients:
                    meta: Optional[Meta] = self._idle.pop()
                    client = None
                else:
                    meta, client = None, self._enqueue_locked(deadline)
            if client is not None:
                meta = self._wait_for(client, timeout, outer)
            assert meta is not None
            if self._prepare(meta):
                meta.out_since = monotonic()
                return meta.conn

    def _enqueue_locked(self, deadline: float) -> Client:
        """Queue the caller (FIFO); have the scheduler time it out; connect for it if there is room."""
        clients = self._clients
        if self.max_waiting and len(clients) >= self.max_waiting:
            self._counters.add(S.REQUESTS_ERRORS)
            raise TooManyRequests(
                f"pool {self.name!r} already has {len(clients)} clients waiting "
                f"(max_waiting={self.max_waiting}); retry later or raise max_waiting"
            )
        client = Client(current_waiter(), deadline)
        clients.append(client)
        bg = self._bg
        assert bg is not None
        if deadline < bg.wake_at:
            bg.wake_locked(deadline)
        if self._nconns < self._max_size and self._connecting < len(clients):
            self._start_connect_locked()
        return client

    def _wait_for(self, client: Client, timeout: float, outer: Optional[tuple[float, float]]) -> Meta:
        """Park until served (the connection), timed out (PoolTimeout) or failed (PoolClosed)."""
        try:
            got = client.waiter.park(client.token)
        except BaseException:
            # Killed while waiting (GreenletExit, gevent.Timeout, KeyboardInterrupt, a cancelled
            # task...): a connection handed over meanwhile goes to the next client.
            self._abandon(client)
            raise
        if isinstance(got, Meta):
            return got
        if got is None:
            self._count(S.REQUESTS_ERRORS)
            raise timeout_error(self, client, timeout, outer)
        raise got

    def _abandon(self, client: Client) -> None:
        """An interrupted client leaves the queue; if it was served already, the next one is."""
        to_close: Optional[Meta] = None
        with self._lock:
            self._counters.add(S.REQUESTS_ERRORS)
            meta, client.meta = client.meta, None
            if client.gone:
                return  # timed out or failed already: nothing of the pool's is with it
            client.gone = True
            if meta is None:
                try:
                    self._clients.remove(client)
                except ValueError:
                    pass
            elif self._closed:
                to_close = meta
            else:
                self._hand_over_locked(meta)
        if to_close is not None:
            self._discard(to_close)

    def _expire_clients_locked(self, now: float) -> float:
        """For the scheduler: time out the clients whose deadline passed; return the earliest
        deadline of those still waiting (a scan of the queue, once per timer, not per client)."""
        clients = self._clients
        if not clients:
            return float("inf")
        queued = len(clients)  # before this batch leaves: each timed-out client saw them all
        due = [c for c in clients if c.deadline <= now]
        for c in due:
            clients.remove(c)
            c.queued = queued
            c.fail(None)
        return min((c.deadline for c in clients), default=float("inf"))

    def _prepare(self, meta: Meta) -> bool:
        """Outside the lock: is this connection fit to hand out? If not, discard it (and replace)."""
        now = monotonic()
        if now >= meta.expire_at or meta.conn.closed:
            self._discard(meta)
            return False
        # Every checkout looks at the socket (a non-blocking peek, no round trip, ~1-2 us): a
        # connection whose backend was terminated a moment ago is never handed out.
        try:
            roundtrip = now - meta.returned_at > self.stale_after
            if roundtrip or self._check is not None:
                with own_deadline():
                    good = self._alive(meta.conn, roundtrip)
            elif meta.poller is not None and not meta.poller.poll(0):
                good = not meta.conn.closed  # nothing arrived while idle: the common case, one C call
            else:
                good = not meta.conn.closed and socket_alive(meta.conn)
        except BaseException:
            self._discard(meta)
            raise
        if not good:
            self._count(S.CONNECTIONS_LOST)
            logger.warning("pool %r: discarding a broken connection found on checkout", self.name)
            self._discard(meta)
        return good

    def _alive(self, conn: Any, roundtrip: bool) -> bool:
        """The socket look, then (stale or asked) ``select 1`` and the user's ``check``."""
        if conn.closed or not socket_alive(conn):
            return False
        try:
            if roundtrip:
                select_one(conn)
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

    # ------------------------------------------------------------------ return

    def _putconn(self, conn: Any, rollback_expected: bool = False, close: bool = False) -> None:
        meta = self._returning(conn)
        if meta is None:
            return
        usage = int((monotonic() - meta.out_since) * 1000)
        meta.out_since = 0.0
        try:
            if not close and self._reset is None and not conn.closed and returned_clean(conn, meta):
                ok = True  # came back as configured: the common case, no call to _restore
            else:
                ok = self._restore(meta, rollback_expected, close)
        except BaseException:
            self._returned(meta, usage, False, True)  # dropped, not counted as returned bad
            raise
        self._returned(meta, usage, ok, close)

    def _returning(self, conn: Any) -> Optional[Meta]:
        """Check the caller may give ``conn`` back now; its bookkeeping (None: not ours to keep)."""
        meta = self._owned.get(id(conn))
        if meta is None or meta.conn is not conn:
            if self._inherited.pop(id(conn), None) is conn:
                detach(conn)  # checked out in the parent before a fork(): not this process's
                return None
            raise ValueError(f"putconn(): the connection {conn!r} does not belong to pool {self.name!r}")
        if not meta.out_since:
            raise ValueError(
                f"putconn(): the connection {conn!r} was already returned to pool {self.name!r}; "
                "return each connection once"
            )
        user = _guard.other_user(conn)
        if user is not None:
            who = "another thread" if getattr(user, "parent", False) is None else repr(user)
            raise psycopg2.ProgrammingError(
                f"putconn(): the connection is in use by {who} right now (inside a query or "
                f"another call), so pool {self.name!r} cannot take it back; it stays checked out. "
                "Return it from that greenlet/thread once its call has finished (cancel a long "
                "query first with conn.cancel())"
            )
        if self._key_of:
            key = self._key_of.pop(id(conn), None)
            if key is not None:
                self._keyed.pop(key, None)
        return meta

    def _restore(self, meta: Meta, rollback_expected: bool, close: bool) -> bool:
        """Make a returned connection reusable (round trips only for what changed); False to drop it."""
        conn = meta.conn
        if conn.closed or close:
            return False
        if self._reset is None and returned_clean(conn, meta):
            return True
        with own_deadline():
            return self._reset_for_reuse(conn, meta.settings, rollback_expected)

    def _returned(self, meta: Meta, usage: int, ok: bool, close: bool) -> None:
        """Count the use once, then keep the connection (to the first waiting client, else idle)
        or drop it (broken, past max_lifetime, above max_size, pool closed, no reuse)."""
        now = monotonic()
        keep = ok and self._reuse and now < meta.expire_at
        if ok and self._reuse and not keep:
            logger.debug("pool %r: connection past max_lifetime, replacing it", self.name)
        meta.returned_at = now
        with self._lock:
            c = self._counters.values
            c[S.USAGE_MS] += usage
            if not ok and not close:
                c[S.RETURNS_BAD] += 1
            if keep and not self._closed and self._nconns <= self._max_size:
                self._hand_over_locked(meta)
                return
        self._discard(meta)

    def _reset_for_reuse(self, conn: Any, settings: tuple[Any, ...], rollback_expected: bool = False) -> bool:
        """Bring a returned connection back to idle and as configured; False if it cannot be
        trusted any more."""
        if _guard.busy(conn):
            return False  # an interrupt is parked on it: its state is unknown
        status = conn.get_transaction_status()
        try:
            if status in (INTRANS, INERROR):
                if status == INTRANS and not rollback_expected:
                    logger.warning("pool %r: rolling back a connection returned in a transaction", self.name)
                conn.rollback()
            elif status != IDLE:
                logger.warning("pool %r: discarding a connection returned in state %s", self.name, status)
                return False
            if self._reset is not None:
                self._reset(conn)
                if conn.get_transaction_status() != IDLE:
                    logger.warning("pool %r: reset() left a transaction open; discarding", self.name)
                    return False
                reapply_characteristics(conn)
            restore_settings(conn, settings)
            if conn.get_transaction_status() != IDLE:
                return False
        except psycopg2.Error as e:
            logger.warning("pool %r: discarding a connection that failed its reset: %s", self.name, e)
            return False
        return not conn.closed

    def _hand_over_locked(self, meta: Meta) -> bool:
        """To the first client still waiting (True), else back on the idle stack (LIFO)."""
        clients = self._clients
        while clients:
            client = clients.popleft()
            if client.gone:
                continue
            c = self._counters.values
            c[S.REQUESTS_WAITING] += 1
            c[S.REQUESTS_WAIT_MS] += int((monotonic() - client.since) * 1000)
            client.serve(meta)
            return True
        self._idle.append(meta)
        return False

    def _discard(self, meta: Meta) -> None:
        with self._lock:
            if self._owned.pop(id(meta.conn), None) is not None:
                self._nconns -= 1
            if not self._closed:
                self._grow_locked()
        close_quietly(meta.conn)

    # ------------------------------------------------------------------ helpers

    def _require_open(self) -> None:
        if self._closed:
            what = "closed" if self._opened else "not open yet (call open())"
            raise PoolClosed(f"pool {self.name!r} is {what}")

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counters.add(key, n)


def _after_fork_in_child() -> None:
    for pool in list(_pools):
        try:
            pool._after_fork_in_child()
        except Exception:  # noqa: BLE001 - never break the child's fork
            logger.exception("pool %r: could not reset after fork", pool.name)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


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
