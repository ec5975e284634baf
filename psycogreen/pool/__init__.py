"""A cooperative connection pool for psycopg2, shaped like psycopg_pool's.

``psycopg2.pool`` raises ``PoolError`` when it is exhausted instead of waiting, and pools built on
``queue.Queue`` lose connections when a ``gevent.Timeout`` hits a waiting client. This pool waits,
serves clients first-come first-served, and never hands a connection to a client that already gave
up — whatever exception ended its wait.

The waiting contract (one implementation for every framework)
------------------------------------------------------------
All the logic lives in :class:`ConnectionPool` (``_policy``), a plain synchronous class. It never
imports gevent, eventlet or blocking ``threading`` primitives: every wait goes through the
primitives of ``psycogreen._patch.current_waiter()``, resolved *at call time*:

- ``park_token()`` / ``park(token)`` / ``unpark(token, value)`` — the hand-off (``_waiting``): a
  client that finds no idle connection queues itself (FIFO) and parks; a returned connection is
  handed straight to the first parked client, which wakes up holding it. No Event, no timer and no
  heap entry per waiting client: the pool's one scheduler times clients out;
- ``spawn(fn)`` and one ``Event`` — the background (``_background``): a few workers (connect,
  replace) and the scheduler (reconnect backoff, the idle sweep, clients' deadlines), started on
  demand, finished when there is nothing left to do, and joined by ``close()``.

Decisions are made under one lock, the C ``RLock`` (never a green one). No I/O and no wait ever
happens while it is held, so it never switches green threads: on one hub it is never contended,
and it is what several OS threads sharing a pool need.

What a borrower gets and leaves
-------------------------------
Every checkout looks at the connection's socket (``poll`` with no timeout, then a one-byte
non-blocking peek if anything arrived: a terminated backend's ErrorResponse or EOF is seen without
a round trip), so a connection whose backend is
already gone is never handed out. Every return rolls back, runs ``reset``, and puts back the
psycopg2-side settings the connection had after ``configure`` (autocommit, isolation level,
read-only, deferrable, client encoding, cursor factory; notices and notifies emptied), paying only
for what changed (``_conn``).
A connection another green thread is inside a call on cannot be returned (``ProgrammingError``):
closing it to discard it would wait on that call and freeze the process. After ``os.fork()`` a
child's pools start afresh without touching the parent's sessions.

So under gevent or eventlet a waiting client parks its greenlet, under plain threads it blocks its
thread, and inside an asyncio bridge greenlet (``psycogreen.aio``) the bridge's waiter turns the same
calls into awaits: the async pool is this class run through that waiter, not a second copy.

Background workers and the scheduler hold the pool through a ``weakref``: they never keep a pool
alive, and threads are daemons, so they never keep a process alive either. ``get_stats()`` keys are
listed in ``_stats``. Logging goes to the ``psycogreen.pool`` logger; connection strings are logged
without passwords.
"""

from __future__ import annotations

from ..errors import PoolClosed, PoolTimeout, TooManyRequests
from ._conn import HOUSEKEEPING_TIMEOUT, safe_conninfo  # noqa: F401 - importable as before
from ._policy import ConnectionPool, NullConnectionPool

__all__ = ["ConnectionPool", "NullConnectionPool", "PoolClosed", "PoolTimeout", "TooManyRequests"]
