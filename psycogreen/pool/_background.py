"""A pool's background work: a few workers running queued jobs, and one scheduler for everything
timed (reconnect backoff, the idle sweep, waiting clients' deadlines).

The object holds its pool through a ``weakref``, so background tasks never keep a pool alive (and
threads are daemons, so they never keep a process alive either). Workers and the scheduler are
started on demand through the current waiter's ``spawn`` and end when there is nothing to do;
:meth:`Background.stop` wakes the scheduler and waits for them on one event (a join, no polling).

Jobs are callables taking the pool. Decisions are made under the pool's lock (shared with it);
jobs run outside it.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Optional

from .._patch import current_waiter
from ._conn import monotonic

if TYPE_CHECKING:
    from ._policy import ConnectionPool

logger = logging.getLogger("psycogreen.pool")

Job = Callable[["ConnectionPool"], None]

#: The scheduler wakes at least this often while it runs (cheap: a look at the clock and queues).
_MAX_NAP = 5.0


class Background:
    """Workers and the scheduler of one pool (one generation of it: a forked child makes its own)."""

    def __init__(self, pool: ConnectionPool, num_workers: int) -> None:
        self._ref = weakref.ref(pool)
        self._lock = pool._lock
        self.num_workers = num_workers
        self.jobs: deque[Job] = deque()
        self.timed: list[tuple[float, int, Job]] = []
        self._seq = itertools.count()
        self.running = 0  # workers + scheduler
        self._nworkers = 0
        self._event = current_waiter().Event()
        weakref.finalize(pool, self._event.set)  # a collected pool wakes its scheduler to end
        self._sched_running = False
        self.wake_at = float("inf")  # when the running scheduler means to wake next
        self._stopped = False
        self._joined: Any = None
        self._inside: set[object] = set()  # identities of running tasks (close() from a job)
        self._mine = 0  # of the tasks stop() waits for, the caller itself (0 or 1)

    # ------------------------------------------------------------------ queueing (lock held)

    def run_locked(self, job: Job) -> None:
        """Queue a job; start a worker if fewer than num_workers are running."""
        self.jobs.append(job)
        if self._nworkers < self.num_workers and not self._stopped:
            self._nworkers += 1
            self.running += 1
            current_waiter().spawn(self._work)

    def schedule_locked(self, delay: float, job: Job) -> None:
        """Run ``job`` after ``delay`` seconds."""
        when = monotonic() + delay
        heapq.heappush(self.timed, (when, next(self._seq), job))
        self.wake_locked(when)

    def wake_locked(self, when: float) -> None:
        """Make sure the scheduler looks again by ``when`` (a client's deadline, a timed job)."""
        if self._stopped:
            return
        if not self._sched_running:
            self._sched_running = True
            self.running += 1
            self.wake_at = when
            current_waiter().spawn(self._schedule)
        elif when < self.wake_at:
            self.wake_at = when
            self._event.set()

    # ------------------------------------------------------------------ stopping

    def stop(self, timeout: float) -> bool:
        """Drop queued work, wake the scheduler and wait until every task has ended (True), at most
        ``timeout`` seconds. A job calling this (a ``reconnect_failed`` callback closing the pool)
        does not wait for itself."""
        waiter = current_waiter()
        with self._lock:
            self._stopped = True
            self.jobs.clear()
            self.timed.clear()
            mine = 1 if waiter.current() in self._inside else 0
            if self.running <= mine:
                joined = None
            else:
                joined = self._joined = waiter.Event()
                self._mine = mine
        self._event.set()
        return joined is None or bool(joined.wait(timeout))

    def abandon(self) -> None:
        """In a forked child: this generation's tasks (gevent copies them) must stand down."""
        self._stopped = True
        self.jobs.clear()
        self.timed.clear()

    def _ended_locked(self) -> None:
        self.running -= 1
        if self._joined is not None and self.running <= self._mine:
            self._joined.set()

    # ------------------------------------------------------------------ the tasks

    def _current_pool(self) -> Optional[ConnectionPool]:
        pool = self._ref()
        if pool is None or pool._bg is not self:
            return None  # collected, or a copy of the parent's task in a forked child
        return pool

    def _work(self) -> None:
        """Run queued jobs until there are none; holds the pool only while running one."""
        me = current_waiter().current()
        self._inside.add(me)
        try:
            while self._work_one():
                pass
        finally:
            self._inside.discard(me)

    def _work_one(self) -> bool:
        pool = self._current_pool()
        with self._lock:
            if pool is None or not self.jobs:
                self._nworkers -= 1
                self._ended_locked()
                return False
            job = self.jobs.popleft()
        try:
            job(pool)
        except BaseException as e:  # noqa: BLE001 - a worker must survive a failing job
            logger.exception("pool %r: background job %r failed: %s", pool.name, job, e)
        return True

    def _schedule(self) -> None:
        """Hand due jobs to the workers and time clients out; sleep on the event until next."""
        try:
            while True:
                nap = self._tick()
                if nap is None:
                    return
                self._event.wait(nap)
        except BaseException:
            # Killed (e.g. gevent.killall at shutdown): waiting clients rely on this task to time
            # them out, so hand the job to a new scheduler while the pool is open, then stop.
            with self._lock:
                self._sched_running = False
                self.wake_at = float("inf")
                self._ended_locked()
                if self._current_pool() is not None and not self._stopped:
                    self.wake_locked(monotonic())
            raise

    def _tick(self) -> Optional[float]:
        """One look: how long to sleep, or None to end (stopped, or nothing left to time)."""
        pool = self._current_pool()
        with self._lock:
            now = monotonic()
            next_client = float("inf") if pool is None else pool._expire_clients_locked(now)
            if pool is None or self._stopped or (not self.timed and next_client == float("inf")):
                self._sched_running = False
                self.wake_at = float("inf")
                self._ended_locked()
                return None
            while self.timed and self.timed[0][0] <= now:
                self.run_locked(heapq.heappop(self.timed)[2])
            first_job = self.timed[0][0] if self.timed else float("inf")
            self.wake_at = min(next_client, first_job, now + _MAX_NAP)
            self._event.clear()
        return max(0.0, self.wake_at - now)
