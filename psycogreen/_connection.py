"""The connection and cursor classes that ``psycopg2.connect()`` returns once patched.

They subclass whatever the user asked for (``connection_factory``/``cursor_factory``, e.g.
``DictConnection`` or ``RealDictCursor``), so ``isinstance`` checks and custom methods keep working.
They add three things around every method that may wait on the server:

- *concurrent use*: a second greenlet/task on the same OS thread entering while another is inside
  gets :class:`~psycogreen.errors.ConcurrentUseError` at once (psycopg2 would answer with a cryptic
  "asynchronous query is underway" or hang); a second OS thread waits its turn, as psycopg2
  serialises threads without a wait callback;
- *interrupt delivery*: the wait callback parks an interrupt (gevent.Timeout, kill, Ctrl-C, a
  ``timeout()`` deadline) on the connection after cancelling the statement on the server, so that
  psycopg2 does not close the connection; the wrapper re-raises it here, unchanged;
- ``cancel()`` that does not freeze the hub;
- *no frozen process*: psycopg2 holds the connection's mutex for the whole of a call in green mode,
  so a second greenlet of the same OS thread taking it (``close()``, the ``autocommit``/
  ``isolation_level``/``readonly``/``deferrable`` setters) would block the thread, and with it the
  greenlet that holds the mutex, forever. ``close()`` from another greenlet/task/thread cancels the
  running statement, lets the owner's call end (with an ``OperationalError`` saying the connection
  was closed by someone else) and then closes; the setters raise ``ConcurrentUseError`` like every
  other guarded method. Everything else callable on a busy connection does not take the mutex
  (``closed``, ``fileno()``, ``info``, ``get_transaction_status()``, ``get_parameter_status()``,
  ``server_version``, ``notifies``, a client-side cursor's ``close()`` and garbage collection).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Optional

import psycopg2
import psycopg2._psycopg as _psycopg
import psycopg2.extensions as ext

from .errors import ConcurrentUseError, QueryTimeout

try:
    from greenlet import getcurrent as _getcurrent
except ImportError:  # pragma: no cover
    _getcurrent = threading.current_thread  # type: ignore[assignment]


def _thread_of(g: Any) -> Any:
    """The OS thread a greenlet belongs to, as its root greenlet (``threading.get_ident`` is
    per-greenlet once gevent/eventlet monkey-patch, so it cannot tell threads apart)."""
    parent = getattr(g, "parent", None)
    while parent is not None:
        g, parent = parent, parent.parent
    return g


__all__ = [
    "GreenConnectionMixin",
    "GreenCursorMixin",
    "green_connection_class",
    "green_cursor_class",
    "in_use_by_other",
]

logger = logging.getLogger("psycogreen")


def _enter(conn: Any) -> bool:
    """Mark ``conn`` as used by the caller. Another greenlet/task of this OS thread inside gets
    ConcurrentUseError; another OS thread inside makes the caller wait its turn (see
    :func:`_wait_turn`)."""
    me = _getcurrent()
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
    if _thread_of(owner) is not _thread_of(me):
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
    delay = 50e-6
    while True:
        owner = conn._pg_owner
        if owner is None and conn._pg_pending is None:
            return _enter(conn)
        if owner is not None and _thread_of(owner) is _thread_of(me):
            return _enter(conn)  # a greenlet of this thread got it meanwhile: ConcurrentUseError
        time.sleep(delay)
        delay = min(delay * 2, 1e-3)


def _leave(conn: Any, entered: bool, error: Optional[BaseException] = None) -> None:
    """Undo :func:`_enter`; raise an interrupt the wait callback parked during the call."""
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


_HOW_CANCELLED = "the statement was cancelled on the server, then the connection closed"
_HOW_IDLE = "no statement was running; the socket was shut down and the connection closed"
_HOW_SHUT_DOWN = (
    "the server did not confirm the cancel (is the network down?), so the socket was shut down and "
    "the connection closed"
)


class GreenConnectionMixin(ext.connection):  # type: ignore[misc]
    """Sits between a user's connection class and psycopg2's C class in the MRO.

    ``green_connection_class(DictConnection)`` is ``class (DictConnection, GreenConnectionMixin)``,
    whose MRO is DictConnection -> GreenConnectionMixin -> connection: the user's overrides run
    first and their ``super()`` calls land here, right before the C implementation. No ``__slots__``
    entries, so it adds nothing to the C layout and combines with C subclasses such as
    ``ReplicationConnection``.
    """

    __slots__ = ()

    _pg_owner: Any = None
    _pg_thread: Any = None
    _pg_depth: int = 0
    _pg_pending: Optional[BaseException] = None
    #: Who is closing this connection while another greenlet/thread is inside a call on it.
    _pg_closing: Any = None
    _pg_close_how: str = _HOW_CANCELLED
    _pg_close_who: str = "?"

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        factory = kwargs.get("cursor_factory") or self.cursor_factory
        named = bool(args[0] if args else kwargs.get("name"))
        kwargs["cursor_factory"] = green_cursor_class(factory or ext.cursor, named)
        return super().cursor(*args, **kwargs)

    def commit(self) -> None:
        entered = _enter(self)
        try:
            super().commit()
        except BaseException as e:
            _leave(self, entered, e)
            raise
        _leave(self, entered)

    def rollback(self) -> None:
        entered = _enter(self)
        try:
            super().rollback()
        except BaseException as e:
            _leave(self, entered, e)
            raise
        _leave(self, entered)

    def __exit__(self, *exc_info: Any) -> Any:
        entered = _enter(self)
        try:
            rv = super().__exit__(*exc_info)
        except BaseException as e:
            _leave(self, entered, e)
            raise
        _leave(self, entered)
        return rv

    def cancel(self) -> None:
        """Cancel the running statement without blocking the hub (psycopg2's holds the GIL in
        ``PQcancel``). May be called from any greenlet, which is its point."""
        from . import _wait

        if self.closed:
            raise psycopg2.InterfaceError("connection already closed")
        if self.status == ext.STATUS_PREPARED:
            raise psycopg2.ProgrammingError("cancel cannot be used with a prepared two-phase transaction")
        _wait.cancel(self)

    def close(self) -> None:
        """Close the connection; if another greenlet/task/thread is inside a call on it, cancel its
        statement and let that call end first (see :func:`stop_other_user`)."""
        from . import _wait

        if self._pg_owner is not None:
            stop_other_user(self)
        if not self.closed:
            try:
                fd = self.fileno()
            except psycopg2.Error:
                fd = -1
            if fd >= 0 and _wait.state.waiter is not None:
                _wait.state.waiter.forget_fd(fd)
        super().close()


def _closed_under_call(closer: str, how: str) -> psycopg2.OperationalError:
    return psycopg2.OperationalError(
        f"the connection was closed by {closer} (another greenlet, task or thread) while this call "
        f"was running: {how}; open a new connection (a pool does it for you)"
    )


def in_use_by_other(conn: Any) -> bool:
    """True when another greenlet, task or thread is inside a call on ``conn`` right now.

    For code that must not touch such a connection (a pool's ``putconn`` of a connection still in
    use elsewhere): closing it cancels the other user's statement, and most other methods raise
    ``ConcurrentUseError``. Costs two attribute reads; never blocks.
    """
    owner = getattr(conn, "_pg_owner", None)
    return owner is not None and owner is not _getcurrent()


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
    from . import _deadline, _wait

    owner = conn._pg_owner
    me = _getcurrent()
    if owner is None or owner is me or conn.closed:
        return
    waiter = _wait.current_waiter()
    if waiter.name in ("threads", "asyncio") and _thread_of(owner) is _thread_of(me):
        raise ConcurrentUseError(
            f"cannot close the connection: {owner!r} is inside a call on it and this code cannot wait "
            "for it without blocking the thread it runs on; close it from a greenlet, with "
            "`await conn.close()` (psycogreen.aio) or inside psycogreen.aio.run_sync()"
        )
    grace = _deadline.cancel_grace()
    conn._pg_closing = me
    conn._pg_close_who = _describe_caller(me, waiter)
    conn._pg_close_how = _HOW_CANCELLED
    try:
        if conn.get_transaction_status() != ext.TRANSACTION_STATUS_ACTIVE:
            # No statement on the server (a notifies() loop waiting for the socket): nothing to
            # cancel, so end the wait at once.
            conn._pg_close_how = _HOW_IDLE
            _shutdown_socket(conn)
            if _owner_gone(conn, waiter, time.monotonic() + grace):
                return
        elif _cancel_and_wait(conn, waiter, grace):
            return
        else:
            logger.warning(
                "%r was still inside a call %g s after its statement was cancelled (is the network down?); "
                "shutting its socket down to close the connection",
                conn._pg_owner,
                grace,
            )
            conn._pg_close_how = _HOW_SHUT_DOWN
            _shutdown_socket(conn)
            if _owner_gone(conn, waiter, time.monotonic() + grace):
                return
        raise ConcurrentUseError(
            f"cannot close the connection: {conn._pg_owner!r} is still inside a call on it after its "
            "statement was cancelled and its socket shut down; kill or cancel that greenlet/task first"
        )
    except BaseException:
        conn._pg_closing = None
        raise


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


def _guarded_setter(name: str) -> property:
    """A property whose setter runs psycopg2's inside :func:`_enter`/:func:`_leave`: psycopg2's
    setters take the connection's mutex (``conn_set_session``), so from a second greenlet while
    another is inside a call they would freeze the thread; here they raise ConcurrentUseError."""
    base = ext.connection.__dict__[name]

    def fset(self: Any, value: Any) -> None:
        entered = _enter(self)
        try:
            base.__set__(self, value)
        except BaseException as e:
            _leave(self, entered, e)
            raise
        _leave(self, entered)

    return property(base.__get__, fset, doc=base.__doc__)


for _attr in ("autocommit", "isolation_level", "readonly", "deferrable"):
    setattr(GreenConnectionMixin, _attr, _guarded_setter(_attr))


def _install_guards(owner: type, names: tuple[str, ...]) -> None:
    """Give ``owner`` methods that run the next class's method of the same name inside
    :func:`_enter`/:func:`_leave` on the connection (for the less hot methods)."""
    for name in names:

        def method(self: Any, *args: Any, __name: str = name, **kwargs: Any) -> Any:
            conn = self if isinstance(self, GreenConnectionMixin) else self.connection
            entered = _enter(conn)
            try:
                rv = getattr(super(owner, self), __name)(*args, **kwargs)
            except BaseException as e:
                _leave(conn, entered, e)
                raise
            _leave(conn, entered)
            return rv

        method.__name__ = method.__qualname__ = name
        setattr(owner, name, method)


_install_guards(
    GreenConnectionMixin,
    (
        "reset",
        "set_session",
        "set_isolation_level",
        "set_client_encoding",
        "tpc_begin",
        "tpc_prepare",
        "tpc_commit",
        "tpc_rollback",
        "tpc_recover",
    ),
)


class GreenCursorMixin(ext.cursor):  # type: ignore[misc]
    """Guards the cursor methods that talk to the server (placed like GreenConnectionMixin)."""

    __slots__ = ()

    def execute(self, query: Any, vars: Any = None) -> None:
        # The busiest method of all, so the common case (connection free, nothing parked) has
        # _enter()/_leave() inlined and calls the C method directly: in any class built by
        # green_cursor_class() this mixin comes right before ext.cursor in the MRO, so that *is*
        # what super() would find. Everything else takes the general path.
        conn: Any = self.connection
        if conn._pg_owner is not None or conn._pg_pending is not None:
            entered = _enter(conn)
            try:
                _cursor_execute(self, query, vars)
            except BaseException as e:
                _leave(conn, entered, e)
                raise
            _leave(conn, entered)
            return
        conn._pg_owner = _getcurrent()
        conn._pg_depth = 1
        try:
            _cursor_execute(self, query, vars)
        except BaseException as e:
            _leave(conn, True, e)
            raise
        conn._pg_depth = 0
        conn._pg_owner = None
        if conn._pg_pending is not None:  # an interrupt parked by the wait callback
            conn._pg_depth = 1
            _leave(conn, True)


_cursor_execute = ext.cursor.execute


_install_guards(GreenCursorMixin, ("executemany", "callproc"))


class GreenNamedCursorMixin(GreenCursorMixin):
    """Named (server-side) cursors also talk to the server when fetching, scrolling and closing."""

    __slots__ = ()

    def __next__(self) -> Any:
        conn = self.connection
        entered = _enter(conn)
        try:
            rv = super().__next__()
        except BaseException as e:
            _leave(conn, entered, e)
            raise
        _leave(conn, entered)
        return rv

    def __iter__(self) -> Any:
        return self


_install_guards(GreenNamedCursorMixin, ("fetchone", "fetchmany", "fetchall", "scroll", "close"))


_conn_classes: dict[Any, type] = {}
_cursor_classes: dict[tuple[Any, bool], type] = {}


def green_connection_class(base: Any) -> Any:
    """A psycogreen subclass of the connection class ``base`` (cached; idempotent)."""
    if not isinstance(base, type) or not issubclass(base, ext.connection):
        return base  # a plain factory callable: used as given
    if issubclass(base, GreenConnectionMixin):
        return base
    klass = _conn_classes.get(base)
    if klass is None:
        bases = (GreenConnectionMixin,) if base is ext.connection else (base, GreenConnectionMixin)
        klass = type(base.__name__, bases, {"__module__": base.__module__})
        klass.__doc__ = base.__doc__
        _conn_classes[base] = klass
    return klass


def green_cursor_class(base: Any, named: bool = False) -> Any:
    """A psycogreen subclass of the cursor class ``base`` (cached)."""
    if not isinstance(base, type) or not issubclass(base, ext.cursor):
        return base
    mixin = GreenNamedCursorMixin if named else GreenCursorMixin
    if issubclass(base, mixin):
        return base
    key = (base, named)
    klass = _cursor_classes.get(key)
    if klass is None:
        bases = (mixin,) if base is ext.cursor else (base, mixin)
        if issubclass(base, _psycopg.ReplicationCursor):
            # Its streaming methods are C methods of that class: override them from the front.
            from .replication import GreenReplicationMixin

            bases = (GreenReplicationMixin, *bases)
        klass = type(base.__name__, bases, {"__module__": base.__module__})
        klass.__doc__ = base.__doc__
        _cursor_classes[key] = klass
    return klass


# -- COPY and large objects: psycopg2 refuses them in green mode; psycogreen.copy/lobject do them ----


def _copy_method(name: str) -> Any:
    def method(self: Any, *args: Any, **kwargs: Any) -> None:
        from . import copy as _copy

        conn = self.connection
        entered = _enter(conn)
        try:
            getattr(_copy, name)(self, *args, **kwargs)
        except BaseException as e:
            _leave(conn, entered, e)
            raise
        _leave(conn, entered)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"psycopg2's ``cursor.{name}``, cooperative (see :mod:`psycogreen.copy`)."
    return method


for _name in ("copy_expert", "copy_from", "copy_to"):
    setattr(GreenCursorMixin, _name, _copy_method(_name))


def _lobject(
    self: Any,
    oid: int = 0,
    mode: Optional[str] = "",
    new_oid: int = 0,
    new_file: Optional[str] = None,
    lobject_factory: Any = None,
) -> Any:
    """psycopg2's ``connection.lobject``, cooperative (see :mod:`psycogreen.lobject`)."""
    from .lobject import open_lobject

    entered = _enter(self)
    try:
        rv = open_lobject(self, oid, mode, new_oid, new_file, lobject_factory)
    except BaseException as e:
        _leave(self, entered, e)
        raise
    _leave(self, entered)
    return rv


_lobject.__name__ = _lobject.__qualname__ = "lobject"
setattr(GreenConnectionMixin, "lobject", _lobject)  # noqa: B010 - mypy: assigning over a C method
