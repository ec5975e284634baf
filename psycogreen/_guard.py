"""The green state of a connection, in one place: who is inside a call on it, and what is parked.

Every method of psycogreen's connection classes that may wait on the server runs inside
``with using(conn):``. That buys three things (see :mod:`psycogreen._connection`):

- *concurrent use*: a second greenlet/task of the same OS thread entering while another is inside
  gets :class:`~psycogreen.errors.ConcurrentUseError` at once; a second OS thread waits its turn,
  as psycopg2 serialises threads without a wait callback;
- *interrupt delivery*: the wait callback cannot raise without psycopg2 closing the connection, so
  it :func:`park`\\ s the interrupt here and the outermost ``using`` block re-raises it on the way out;
- *closing under a call*: :func:`stop_other_user` makes another user's call end before a close.

The state is three attributes on the connection (``_pg_owner``, ``_pg_depth``, ``_pg_pending``),
plus the closing fields; they are read and written only in this module, and in the inlined fast
path of ``cursor.execute`` in :mod:`psycogreen._connection` (kept beside the general path, with a
test that the two agree).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from types import TracebackType
from typing import Any, Optional

import psycopg2
import psycopg2.extensions as ext

from .errors import ConcurrentUseError, QueryTimeout

try:
    from greenlet import getcurrent
except ImportError:  # pragma: no cover - greenlet ships with gevent and eventlet
    getcurrent = threading.current_thread

__all__ = [
    "GreenState",
    "busy",
    "getcurrent",
    "enter",
    "in_use",
    "in_use_by_other",
    "other_user",
    "inside",
    "is_green",
    "leave",
    "owner",
    "park",
    "parked",
    "stop_other_user",
    "thread_of",
    "using",
]

logger = logging.getLogger("psycogreen")

HOW_CANCELLED = "the statement was cancelled on the server, then the connection closed"
HOW_IDLE = "no statement was running; the socket was shut down and the connection closed"
HOW_SHUT_DOWN = (
    "the server did not confirm the cancel (is the network down?), so the socket was shut down and "
    "the connection closed"
)


class GreenState:
    """The guard state's defaults, as class attributes of every psycogreen connection class.

    No ``__slots__`` entries, so it adds nothing to the C layout of ``ext.connection`` subclasses;
    the concrete classes psycogreen creates add the slots (:data:`SLOTS`), other subclasses keep
    the values in the instance ``__dict__`` once written. ``isinstance(conn, GreenState)``
    is what "is this a psycogreen connection" means: :func:`is_green`.
    """

    __slots__ = ()

    _pg_owner: Any = None
    _pg_depth: int = 0
    _pg_pending: Optional[BaseException] = None
    #: Who is closing this connection while another greenlet/thread is inside a call on it.
    _pg_closing: Any = None
    _pg_close_how: str = HOW_CANCELLED
    _pg_close_who: str = "?"


#: The guard state's attributes. The concrete connection classes keep them in ``__slots__`` (see
#: ``_connection.green_connection_class``): reading and writing a slot is cheaper than the instance
#: ``__dict__`` on every guarded call. Slots have no class default, so :func:`init_state` sets them
#: all when the connection is created.
SLOTS = ("_pg_owner", "_pg_depth", "_pg_pending", "_pg_closing", "_pg_close_how", "_pg_close_who")


def init_state(conn: Any) -> None:
    """Give a new connection the defaults of :class:`GreenState` (before it connects: the wait
    callback reads them while connecting)."""
    for name in SLOTS:
        setattr(conn, name, getattr(GreenState, name))


def is_green(conn: Any) -> bool:
    """True for connections of psycogreen's classes (the only ones with a guard state)."""
    return isinstance(conn, GreenState)


def thread_of(g: Any) -> Any:
    """The OS thread a greenlet belongs to, as its root greenlet (``threading.get_ident`` is
    per-greenlet once gevent/eventlet monkey-patch, so it cannot tell threads apart)."""
    parent = getattr(g, "parent", None)
    while parent is not None:
        g, parent = parent, parent.parent
    return g


# -- entering and leaving ---------------------------------------------------------------------------


def enter(conn: Any) -> bool:
    """Mark ``conn`` as used by the caller. Another greenlet/task of this OS thread inside gets
    ConcurrentUseError; another OS thread inside makes the caller wait its turn (see
    :func:`_wait_turn`). Return whether :func:`leave` has something to undo (always True here;
    :class:`using` passes False for connections that are not green)."""
    me = getcurrent()
    owner = conn._pg_owner
    if owner is None:
        if conn._pg_closing is not None and conn._pg_closing is not me:
            raise psycopg2.InterfaceError(f"connection already closed (being closed by {conn._pg_close_who})")
        conn._pg_owner = me
        conn._pg_depth = 1
        conn._pg_pending = None
        return True
    if owner is me:
        conn._pg_depth += 1
        return True
    # Only on a conflict: which OS thread each greenlet belongs to (a walk up its parents, which
    # the per-query path need not pay).
    if thread_of(owner) is not thread_of(me):
        return _wait_turn(conn, me)
    raise ConcurrentUseError(
        f"connection is already in use by {owner!r}; a connection carries one conversation at a "
        "time: use one connection per greenlet/task, or a pool (psycogreen.pool.ConnectionPool)"
    )


def _wait_turn(conn: Any, me: Any) -> bool:
    """Serialise OS threads sharing ``conn``, as psycopg2 does without a wait callback.

    In green mode psycopg2 releases its connection mutex while the wait callback waits, so a
    second OS thread would get "an asynchronous query is underway"; instead it waits here until the
    connection is free (and no interrupt is parked for the previous user), sleeping with
    ``time.sleep`` (the current thread's hub under monkey-patching, a real sleep otherwise).
    """
    if getattr(me, "psycogreen_waiter", None) is not None:
        # A bridge greenlet (psycogreen.aio): sleeping here would freeze its event loop.
        from .aio._runtime import other_loop_error

        raise other_loop_error(conn._pg_owner)
    delay = 50e-6
    while True:
        owner = conn._pg_owner
        if owner is None and conn._pg_pending is None:
            return enter(conn)
        if owner is not None and thread_of(owner) is thread_of(me):
            return enter(conn)  # a greenlet of this thread got it meanwhile: ConcurrentUseError
        time.sleep(delay)
        delay = min(delay * 2, 1e-3)


def leave(conn: Any, entered: bool, error: Optional[BaseException] = None) -> None:
    """Undo :func:`enter`; raise an interrupt the wait callback parked during the call.

    ``error`` is the exception the call is ending with, if any: a parked ``QueryTimeout`` is
    chained to it, and a call ended by someone else's ``close()`` says so.
    """
    if not entered:
        return
    conn._pg_depth -= 1
    if conn._pg_depth:
        return
    conn._pg_owner = None
    pending = conn._pg_pending
    if pending is None and error is not None and conn._pg_closing is not None:
        raise _closed_under_call(conn._pg_close_who, conn._pg_close_how) from error
    if pending is not None:
        conn._pg_pending = None
        try:
            if isinstance(pending, QueryTimeout) and error is not None and error is not pending:
                raise pending from error
            raise pending
        finally:
            # Drop the local: the exception's traceback holds this frame, and a frame that held the
            # exception would make a cycle keeping the connection alive until the next gc run.
            del pending, conn


class using:  # noqa: N801 - used as ``with guard.using(conn):``, like a function
    """``with using(conn): ...`` runs the block as a guarded call on ``conn``.

    Connections that are not psycogreen's (a plain psycopg2 connection handed to ``notifies()`` or
    a large object) have no guard state: the block runs unguarded. A class rather than a
    ``contextlib.contextmanager``: no generator to create and resume per call.
    """

    __slots__ = ("conn", "entered")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.entered = enter(conn) if isinstance(conn, GreenState) else False

    def __enter__(self) -> Any:
        return self.conn

    def __exit__(
        self, et: Optional[type[BaseException]], e: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        leave(self.conn, self.entered, e)  # may raise the parked interrupt instead of ``e``


# -- reading and parking ----------------------------------------------------------------------------


def in_use(conn: Any) -> bool:
    """True while some greenlet, task or thread is inside a guarded call on ``conn``."""
    return getattr(conn, "_pg_owner", None) is not None


def in_use_by_other(conn: Any) -> bool:
    """True when another greenlet, task or thread is inside a call on ``conn`` right now.

    For code that must not touch such a connection (a pool's ``putconn`` of a connection still in
    use elsewhere): closing it cancels the other user's statement, and most other methods raise
    ``ConcurrentUseError``. Costs two attribute reads; never blocks.
    """
    return other_user(conn) is not None


def other_user(conn: Any) -> Any:
    """The greenlet/task/thread inside a call on ``conn`` right now if it is not the caller, else
    None (for messages that name it). Plain psycopg2 connections have no guard state: never busy."""
    owner = getattr(conn, "_pg_owner", None)
    if owner is None or owner is getcurrent():
        return None
    return owner


def owner(conn: Any) -> Any:
    """The greenlet/task/thread inside a call on ``conn``, or None (for messages and pools)."""
    return getattr(conn, "_pg_owner", None)


def inside(conn: Any) -> bool:
    """True when the caller runs inside a guarded call on ``conn`` (so an interrupt can be parked
    and re-raised by that call's :func:`leave`, instead of psycopg2 closing the connection)."""
    return getattr(conn, "_pg_depth", 0) > 0


def parked(conn: Any) -> bool:
    """True when an interrupt is parked on ``conn``, waiting to be raised by its user's call."""
    return getattr(conn, "_pg_pending", None) is not None


def busy(conn: Any) -> bool:
    """In a call, or with an interrupt still to deliver: not a connection to hand to anyone."""
    return getattr(conn, "_pg_depth", 0) > 0 or getattr(conn, "_pg_pending", None) is not None


def park(conn: Any, exc: BaseException) -> None:
    """Park ``exc`` on ``conn``: the outermost guarded call raises it on the way out."""
    conn._pg_pending = exc


# -- closing a connection another user is inside ------------------------------------------------------


def _closed_under_call(closer: str, how: str) -> psycopg2.OperationalError:
    return psycopg2.OperationalError(
        f"the connection was closed by {closer} (another greenlet, task or thread) while this call "
        f"was running: {how}; open a new connection (a pool does it for you)"
    )


_CLOSE_POLL = 0.005


def stop_other_user(conn: Any) -> None:
    """Make the call another greenlet/task/thread is running on ``conn`` end, before closing it.

    psycopg2's ``close()`` takes the connection's mutex, which the other user holds for its whole
    call: from a greenlet of the same OS thread that would block the thread forever (every greenlet
    and the hub with it); from another thread it would wait for the query to finish, however long.
    So: refuse newcomers, send a cancel, and wait (cooperatively) for the owner to leave — its call
    raises an ``OperationalError`` saying the connection was closed by someone else. If it has not
    left within the cancel grace (a dead network, the server never answers), shut the socket down,
    which ends any wait at once. Returns with nobody inside (the caller closes), or raises
    ``ConcurrentUseError`` when waiting is impossible here.
    """
    from . import _deadline, _patch

    owner = getattr(conn, "_pg_owner", None)
    me = getcurrent()
    if owner is None or owner is me or conn.closed:
        return
    waiter = _patch.current_waiter()
    if waiter.name in ("threads", "asyncio") and thread_of(owner) is thread_of(me):
        raise ConcurrentUseError(
            f"cannot close the connection: {owner!r} is inside a call on it and this code cannot wait "
            "for it without blocking the thread it runs on; close it from a greenlet, with "
            "`await conn.close()` (psycogreen.aio) or inside psycogreen.aio.run_sync()"
        )
    grace = _deadline.cancel_grace()
    conn._pg_closing = me
    conn._pg_close_who = _describe_caller(me, waiter)
    try:
        if _stop(conn, waiter, grace):
            return
        raise ConcurrentUseError(
            f"cannot close the connection: {conn._pg_owner!r} is still inside a call on it after its "
            "statement was cancelled and its socket shut down; kill or cancel that greenlet/task first"
        )
    except BaseException:
        conn._pg_closing = None
        raise


def _stop(conn: Any, waiter: Any, grace: float) -> bool:
    """Cancel (or, with nothing running, shut the socket down) and wait for the owner to leave;
    True once it has."""
    conn._pg_close_how = HOW_CANCELLED
    if conn.get_transaction_status() != ext.TRANSACTION_STATUS_ACTIVE:
        # No statement on the server (a notifies() loop waiting for the socket): nothing to
        # cancel, so end the wait at once.
        conn._pg_close_how = HOW_IDLE
        _shutdown_socket(conn)
        return _owner_gone(conn, waiter, time.monotonic() + grace)
    if _cancel_and_wait(conn, waiter, grace):
        return True
    logger.warning(
        "%r was still inside a call %g s after its statement was cancelled (is the network down?); "
        "shutting its socket down to close the connection",
        conn._pg_owner,
        grace,
    )
    conn._pg_close_how = HOW_SHUT_DOWN
    _shutdown_socket(conn)
    return _owner_gone(conn, waiter, time.monotonic() + grace)


def _describe_caller(me: Any, waiter: Any) -> str:
    """Who is closing, in words a user recognises: a thread's name, a task's name, a greenlet."""
    if getattr(me, "parent", 0) is None:  # the main greenlet of an OS thread: the thread itself
        return f"thread {threading.current_thread().name!r}"
    who = waiter.current()
    get_name = getattr(who, "get_name", None)  # an asyncio task
    if callable(get_name):
        return f"task {get_name()!r}"
    name = getattr(who, "name", None)  # a trio task
    if isinstance(name, str) and not isinstance(who, threading.Thread):
        return f"task {name!r}"
    return repr(who)


def _cancel_and_wait(conn: Any, waiter: Any, grace: float) -> bool:
    """Cancel the statement of whoever is inside a call on ``conn`` (again if a newcomer slipped in)
    and wait for the connection to be free, up to ``grace`` seconds; True if it is."""
    from . import _wait

    end = time.monotonic() + grace
    cancelled: Any = None
    while True:
        owner = conn._pg_owner
        if owner is None or conn.closed:
            return True
        if owner is not cancelled:
            cancelled = owner
            try:
                _wait.cancel(conn, waiter, end)
            except psycopg2.Error as e:
                logger.debug("cancel before close failed: %r", e)
        if time.monotonic() >= end:
            return False
        waiter.sleep(_CLOSE_POLL)


def _owner_gone(conn: Any, waiter: Any, end: float) -> bool:
    while conn._pg_owner is not None and not conn.closed:
        if time.monotonic() >= end:
            return False
        waiter.sleep(_CLOSE_POLL)
    return True


def _shutdown_socket(conn: Any) -> None:
    """``shutdown(2)`` the connection's socket: every wait on it ends (readable, EOF) and libpq
    reports the connection lost. The socket itself stays open until psycopg2 closes it."""
    import _socket

    try:
        fd = conn.fileno()
    except psycopg2.Error:
        return
    if fd < 0:
        return
    try:
        sock = _socket.socket(fileno=os.dup(fd))
    except OSError:
        return
    try:
        sock.shutdown(_socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()
