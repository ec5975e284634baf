"""The pool's upkeep: making connections for it (and what happens when that fails), the idle
sweep, and starting afresh in a forked child. A mixin of :class:`._policy.ConnectionPool`, kept
apart from the checkout/return policy; its decisions are made under the pool's lock too."""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Optional, cast

from ..errors import PoolClosed
from ._background import Background
from ._conn import Meta, close_quietly, detach, monotonic
from ._jobs import Connect, Sweep

if TYPE_CHECKING:
    from ._policy import ConnectionPool
    from ._waiting import Client

logger = logging.getLogger("psycogreen.pool")


class Upkeep:
    """Growing, replacing, sweeping and fork handling of a :class:`ConnectionPool`."""

    # The pool's state this part works on (set up by ConnectionPool._init_state).
    name: str
    num_workers: int
    max_lifetime: float
    max_idle: float
    reconnect_timeout: float
    _safe: str
    _lock: Any
    _closed: bool
    _min_size: int
    _max_size: int
    _nconns: int
    _connecting: int
    _idle: deque[Meta]
    _clients: deque[Client]
    _owned: dict[int, Meta]
    _fill_events: list[Any]
    _bg: Optional[Background]
    _inherited: dict[int, Any]
    _last_connect_error: Optional[BaseException]
    _reconnect_failed: Optional[Callable[[ConnectionPool], None]]
    _gen = 0  # bumped in a forked child: jobs queued before the fork stand down
    _refill = False  # a forked child's pool fills again on first use

    def _init_state(self) -> None:
        raise NotImplementedError

    def _hand_over_locked(self, meta: Meta) -> bool:
        raise NotImplementedError

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
        assert self._bg is not None
        self._bg.run_locked(Connect(self._gen))

    def _connect_abandoned(self, job: Connect) -> None:
        """A queued connect that is not needed any more (pool closed, or queued before a fork)."""
        with self._lock:
            if job.gen == self._gen:
                self._nconns -= 1
                self._connecting -= 1

    def _connected(self, job: Connect, conn: Any) -> None:
        meta = Meta(conn, self.max_lifetime, self.max_idle)
        fill: list[Any] = []
        with self._lock:
            stale = job.gen != self._gen  # started in the parent before a fork(): not ours
            if not stale:
                self._last_connect_error = None
                self._connecting -= 1
                if self._closed:
                    self._nconns -= 1
                else:
                    self._owned[id(conn)] = meta
                    self._hand_over_locked(meta)
                    if len(self._owned) >= self._min_size:
                        fill, self._fill_events = self._fill_events, []
            closed = self._closed
        if stale:
            detach(conn)
            return
        for ev in fill:
            ev.set()
        if closed:
            close_quietly(conn)

    def _connect_failed(self, job: Connect, error: BaseException) -> None:
        now = monotonic()
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
                assert self._bg is not None
                self._bg.schedule_locked(job.next_delay(), job)
            closed = self._closed
        if not closed:
            self._report_connect_failure(error, give_up)

    def _report_connect_failure(self, error: BaseException, give_up: bool) -> None:
        logger.warning(
            "pool %r: connection attempt to %s failed: %s", self.name, self._safe, str(error).strip()
        )
        if not give_up:
            return
        logger.error(
            "pool %r: could not reconnect to %s for %.1f sec (reconnect_timeout)",
            self.name,
            self._safe,
            self.reconnect_timeout,
        )
        if self._reconnect_failed is not None:
            try:
                self._reconnect_failed(cast("ConnectionPool", self))
            except Exception:
                logger.exception("pool %r: reconnect_failed callback failed", self.name)

    def _sweep_period(self) -> float:
        return min(30.0, max(0.05, min(self.max_idle, self.max_lifetime) / 4))

    def _sweep(self) -> None:
        """Close idle connections past max_lifetime, or past max_idle above min_size; refill."""
        now = monotonic()
        doomed: list[Meta] = []
        with self._lock:
            if self._closed:
                return
            keep: deque[Meta] = deque()
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
            assert self._bg is not None
            self._bg.schedule_locked(self._sweep_period(), Sweep())
        if doomed:
            logger.debug("pool %r: recycling %d idle connections", self.name, len(doomed))
        for m in doomed:
            close_quietly(m.conn)

    # ------------------------------------------------------------------ fork

    def _after_fork_in_child(self) -> None:
        """In a child process right after ``fork()``: forget the parent's connections and tasks.

        The parent's sockets are shared with the child: a connection used by both would mix two
        conversations, and closing one the normal way would end the parent's session. So idle
        connections are detached (see :func:`._conn.detach`), connections checked out at the fork
        are remembered as inherited (``putconn`` detaches them), and the child opens its own,
        lazily, on first use. Background threads do not survive a fork; gevent/eventlet copies of
        them stand down (their Background is not the pool's any more). Clients still waiting
        (green threads copied into the child) are failed at once rather than left waiting on tasks
        that are gone.
        """
        idle = list(self._idle)
        inherited = {id(m.conn): m.conn for m in self._owned.values() if m.out_since}
        clients, fill = list(self._clients), self._fill_events
        if self._bg is not None:
            self._bg.abandon()
        self._init_state()
        self._gen += 1
        self._inherited = inherited
        if not self._closed:
            self._bg = Background(cast("ConnectionPool", self), self.num_workers)
        self._refill = not self._closed
        for m in idle:
            detach(m.conn)
        err = PoolClosed(
            f"pool {self.name!r}: the process forked while this client waited for a connection; "
            "the child's pool starts afresh: retry"
        )
        for c in clients:
            c.fail(err)
        for ev in fill:
            ev.set()

    def _after_fork_check_locked(self) -> None:
        """First use in a forked child: start the child's own connections and maintenance."""
        if self._refill:
            self._refill = False
            if not self._closed:
                assert self._bg is not None
                self._grow_locked()
                self._bg.schedule_locked(self._sweep_period(), Sweep())
