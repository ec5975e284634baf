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

from typing import Any, Optional

import psycopg2
import psycopg2._psycopg as _psycopg
import psycopg2.extensions as ext

from . import _guard, _patch
from ._classes import derived
from ._guard import GreenState, in_use_by_other, stop_other_user, using
from ._guard import getcurrent as _getcurrent

__all__ = [
    "GreenConnectionMixin",
    "GreenCursorMixin",
    "green_connection_class",
    "green_cursor_class",
    "in_use_by_other",
]

#: Compatibility names for code written against the guard's old home (the pool reaches for them);
#: new code uses :mod:`psycogreen._guard`.
_enter = _guard.enter
_leave = _guard.leave
_thread_of = _guard.thread_of


class GreenConnectionMixin(ext.connection, GreenState):
    """Sits between a user's connection class and psycopg2's C class in the MRO.

    ``green_connection_class(DictConnection)`` is ``class (DictConnection, GreenConnectionMixin)``,
    whose MRO is DictConnection -> GreenConnectionMixin -> connection: the user's overrides run
    first and their ``super()`` calls land here, right before the C implementation. No ``__slots__``
    entries, so it adds nothing to the C layout and combines with C subclasses such as
    ``ReplicationConnection``.
    """

    __slots__ = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        # The guard state's slots have no class default: set them before anything can read them
        # (in __new__, not __init__: the C ReplicationConnection's init skips Python overrides).
        self = super().__new__(cls, *args, **kwargs)
        _guard.init_state(self)
        return self

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        factory = kwargs.get("cursor_factory") or self.cursor_factory
        named = bool(args[0] if args else kwargs.get("name"))
        kwargs["cursor_factory"] = green_cursor_class(factory or ext.cursor, named)
        return super().cursor(*args, **kwargs)

    def commit(self) -> None:
        with using(self):
            super().commit()

    def rollback(self) -> None:
        with using(self):
            super().rollback()

    def __exit__(self, *exc_info: Any) -> Any:
        with using(self):
            rv = super().__exit__(*exc_info)
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
        if _guard.in_use(self):
            stop_other_user(self)
        if not self.closed:
            try:
                fd = self.fileno()
            except psycopg2.Error:
                fd = -1
            waiter = _patch.chosen_waiter()
            if fd >= 0 and waiter is not None:
                waiter.forget_fd(fd)
        super().close()


def _guarded_setter(name: str) -> property:
    """A property whose setter runs psycopg2's inside :func:`psycogreen._guard.using`: psycopg2's
    setters take the connection's mutex (``conn_set_session``), so from a second greenlet while
    another is inside a call they would freeze the thread; here they raise ConcurrentUseError."""
    base = ext.connection.__dict__[name]

    def fset(self: Any, value: Any) -> None:
        with using(self):
            base.__set__(self, value)

    return property(base.__get__, fset, doc=base.__doc__)


for _attr in ("autocommit", "isolation_level", "readonly", "deferrable"):
    setattr(GreenConnectionMixin, _attr, _guarded_setter(_attr))


def _install_guards(owner: type, names: tuple[str, ...]) -> None:
    """Give ``owner`` methods that run the next class's method of the same name inside
    :func:`psycogreen._guard.using` on the connection (for the less hot methods)."""
    for name in names:

        def method(self: Any, *args: Any, __name: str = name, **kwargs: Any) -> Any:
            conn = self if isinstance(self, GreenConnectionMixin) else self.connection
            with using(conn):
                rv = getattr(super(owner, self), __name)(*args, **kwargs)
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


class GreenCursorMixin(ext.cursor):
    """Guards the cursor methods that talk to the server (placed like GreenConnectionMixin)."""

    __slots__ = ()

    def execute(self, query: Any, vars: Any = None) -> None:
        # The busiest method of all, so the common case (connection free, nothing parked) has
        # _guard.enter()/leave() inlined and calls the C method directly: in any class built by
        # green_cursor_class() this mixin comes right before ext.cursor in the MRO, so that *is*
        # what super() would find. Everything else takes the general path.
        conn: Any = self.connection
        if conn._pg_owner is not None or conn._pg_pending is not None:
            with using(conn):
                _cursor_execute(self, query, vars)
            return
        conn._pg_owner = _getcurrent()
        conn._pg_depth = 1
        try:
            _cursor_execute(self, query, vars)
        except BaseException as e:
            _guard.leave(conn, True, e)
            raise
        conn._pg_depth = 0
        conn._pg_owner = None
        if conn._pg_pending is not None:  # an interrupt parked by the wait callback
            conn._pg_depth = 1
            _guard.leave(conn, True)


_cursor_execute = ext.cursor.execute

#: The pure-Python ``execute`` above: the reference, and where the C version sends every case but
#: the common one.
execute_python = GreenCursorMixin.__dict__["execute"]


def _accelerate_execute() -> None:
    """With the C accelerator, ``cursor.execute`` runs the same fast path in C (see ``_accel``)."""
    from . import _accel

    if _accel.speedups is None:
        return
    # psycopg2's own execute (not the module global, which tests may replace for a while).
    _accel.speedups.setup_guard(ext.cursor.execute, execute_python, _guard.leave)
    setattr(GreenCursorMixin, "execute", _accel.speedups.execute_method)  # noqa: B010 - mypy: a method


_accelerate_execute()


_install_guards(GreenCursorMixin, ("executemany", "callproc"))


class GreenNamedCursorMixin(GreenCursorMixin):
    """Named (server-side) cursors also talk to the server when fetching, scrolling and closing."""

    __slots__ = ()

    def __next__(self) -> Any:
        conn = self.connection
        with using(conn):
            rv = super().__next__()
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
    bases = (GreenConnectionMixin,) if base is ext.connection else (base, GreenConnectionMixin)
    # The guard state in slots (faster on every call than the instance dict); a ``__dict__`` too
    # where the base has none, so attributes set by applications (Django, pools) still work.
    slots = _guard.SLOTS + (() if base.__dictoffset__ else ("__dict__",))
    return derived(_conn_classes, base, base, bases, slots)


def green_cursor_class(base: Any, named: bool = False) -> Any:
    """A psycogreen subclass of the cursor class ``base`` (cached)."""
    if not isinstance(base, type) or not issubclass(base, ext.cursor):
        return base
    mixin = GreenNamedCursorMixin if named else GreenCursorMixin
    if issubclass(base, mixin):
        return base
    klass = _cursor_classes.get((base, named))
    if klass is not None:
        return klass
    bases = (mixin,) if base is ext.cursor else (base, mixin)
    if issubclass(base, _psycopg.ReplicationCursor):
        # Its streaming methods are C methods of that class: override them from the front.
        # (Imported here, not at the top: most processes never load replication.)
        from .replication import GreenReplicationMixin

        bases = (GreenReplicationMixin, *bases)
    return derived(_cursor_classes, (base, named), base, bases)


# -- COPY and large objects: psycopg2 refuses them in green mode; psycogreen.copy/lobject do them ----


def _copy_method(name: str) -> Any:
    def method(self: Any, *args: Any, **kwargs: Any) -> None:
        from . import copy as _copy

        conn = self.connection
        with using(conn):
            getattr(_copy, name)(self, *args, **kwargs)

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
    from .lobject import open_lobject  # loaded on first use: most processes never need it

    with using(self):
        rv = open_lobject(self, oid, mode, new_oid, new_file, lobject_factory)
    return rv


_lobject.__name__ = _lobject.__qualname__ = "lobject"
setattr(GreenConnectionMixin, "lobject", _lobject)  # noqa: B010 - mypy: assigning over a C method
