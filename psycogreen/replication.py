"""Streaming replication that cooperates: psycopg2's ``ReplicationCursor`` under ``patch()``.

psycopg2 refuses ``start_replication_expert``, ``consume_stream`` and ``read_message`` in green mode
because its C loop calls ``select()``. Once patched, cursors of ``LogicalReplicationConnection`` /
``PhysicalReplicationConnection`` get :class:`GreenReplicationMixin` first in their MRO, so the
unchanged calls (``start_replication``, ``consume_stream``, ``read_message``, ``send_feedback``,
``wal_end``, ``io_timestamp``, ``feedback_timestamp``) run the CopyBoth protocol from
:mod:`psycogreen._core.replication`, waiting through the current waiter.

Messages are :class:`ReplicationMessage` objects of this module with the attributes of psycopg2's
(``payload``, ``data_size``, ``data_start``, ``wal_end``, ``send_time``, ``cursor``): psycopg2's own
class can be instantiated from Python but its ``send_time`` cannot be set.

``consume_stream`` lets other greenlets run while it waits, sends feedback every
``keepalive_interval`` seconds, and when its greenlet is killed (or a consumer raises, e.g.
``StopReplication``) the exception propagates at once. The stream stays open on the server, exactly
as after psycopg2's own loop is interrupted: call ``consume_stream`` again to resume, or close the
connection.
"""

from __future__ import annotations

import contextlib
import datetime
import time
from typing import Any, Callable, Iterator, Optional

import psycopg2
import psycopg2._psycopg as _psycopg
import psycopg2.extensions as ext

from . import _guard, _libpq, _wait
from ._classes import derived
from ._core import READ
from ._core import replication as _repl
from ._core.generators import wait_socket

__all__ = ["AsyncReplicationMixin", "GreenReplicationMixin", "ReplicationMessage"]


class ReplicationMessage:
    """A replication message, with psycopg2's ``ReplicationMessage`` attributes."""

    __slots__ = ("_send_time", "cursor", "data_size", "data_start", "payload", "wal_end")

    def __init__(self, cursor: Any, payload: Any, raw: _repl.RawMessage, size: int) -> None:
        self.cursor = cursor
        self.payload = payload
        self.data_size = size
        self.data_start = raw.data_start
        self.wal_end = raw.wal_end
        self._send_time = raw.send_time

    @property
    def send_time(self) -> datetime.datetime:
        """When the server sent the message, as psycopg2 gives it: a naive local datetime."""
        return datetime.datetime.fromtimestamp(self._send_time / 1_000_000 + _repl.PG_EPOCH_OFFSET)

    def __repr__(self) -> str:
        return (
            f"<ReplicationMessage object at {id(self):#x}; data_size: {self.data_size}; "
            f"data_start: {_lsn(self.data_start)}; wal_end: {_lsn(self.wal_end)}; "
            f"send_time: {self._send_time}>"
        )


def _lsn(v: int) -> str:
    return f"{v >> 32:X}/{v & 0xFFFFFFFF:08X}"


class GreenReplicationMixin:
    """Placed *before* psycopg2's C ``ReplicationCursor`` in the MRO (its methods are C methods of
    that class, so a mixin after it could not override them)."""

    __slots__ = ()

    def _pg_repl(self) -> _repl.ReplState:
        st: Optional[_repl.ReplState] = self.__dict__.get("_pg_repl_state")
        if st is None:
            st = self.__dict__["_pg_repl_state"] = _repl.ReplState()
        return st

    def start_replication_expert(
        self, command: Any, decode: bool = False, status_interval: float = 10
    ) -> None:
        """Send a ``START_REPLICATION`` command and enter streaming mode (psycopg2's semantics)."""
        cur: Any = self
        if ext.get_wait_callback() is None:
            super().start_replication_expert(command, decode, status_interval)  # type: ignore[misc]
            return
        _check_open(cur)
        from .copy import _sql_bytes

        sql = _sql_bytes(cur, command)
        if status_interval < 1.0:
            raise psycopg2.ProgrammingError("status_interval must be >= 1 (sec)")
        conn = cur.connection
        with _guard.using(conn):
            ptr = _libpq.pgconn(conn)
            control = _wait.Control()
            _wait.drive(_repl.start(ptr, sql, control), conn, control=control)
            st = _repl.ReplState()
            st.status_interval = float(status_interval)
            st.decode = bool(decode)
            st.started = True
            st.last_io = time.time()
            self.__dict__["_pg_repl_state"] = st

    def read_message(self) -> Optional[ReplicationMessage]:
        """The next message if one is available without waiting, else None (psycopg2's)."""
        cur: Any = self
        if ext.get_wait_callback() is None:
            return super().read_message()  # type: ignore[misc,no-any-return]
        _check_open(cur)
        conn = cur.connection
        with _guard.using(conn):
            msg = self._read(conn)
        return msg

    def _read(self, conn: Any) -> Optional[ReplicationMessage]:
        st = self._pg_repl()
        ptr = _libpq.pgconn(conn)
        raw = _wait.drive(_repl.read_message(ptr, st), conn, on_interrupt=_no_cancel)
        if raw is None:
            return None
        payload: Any = raw.payload
        if st.decode:
            payload = payload.decode(_codec(conn))
        return ReplicationMessage(self, payload, raw, len(raw.payload))

    def consume_stream(
        self, consume: Callable[[ReplicationMessage], Any], keepalive_interval: Optional[float] = None
    ) -> None:
        """Call ``consume(msg)`` for every message, forever, waiting cooperatively in between.

        Ends when the server ends the stream; a consumer's exception (``StopReplication``) or an
        interrupt of the calling greenlet propagates immediately, leaving the stream resumable.
        """
        cur: Any = self
        if ext.get_wait_callback() is None:
            super().consume_stream(consume, keepalive_interval)  # type: ignore[misc]
            return
        _check_open(cur)
        if keepalive_interval is not None:
            if not isinstance(keepalive_interval, (int, float)):
                raise psycopg2.ProgrammingError("keepalive_interval must be int or float")
            if keepalive_interval < 1.0:
                raise psycopg2.ProgrammingError("keepalive_interval must be >= 1 (sec)")
        st = self._pg_repl()
        if st.consuming:
            raise psycopg2.ProgrammingError("consume_stream cannot be used when already in the consume loop")
        if not st.started:
            raise psycopg2.ProgrammingError("consume_stream: not replicating, call start_replication first")
        if not callable(consume):
            raise TypeError("consume_stream: the consumer must be callable")
        if keepalive_interval:
            st.status_interval = float(keepalive_interval)
        conn = cur.connection
        with _guard.using(conn):
            st.consuming = True
            try:
                self._consume(conn, st, consume)
            finally:
                st.consuming = False

    def _consume(self, conn: Any, st: _repl.ReplState, consume: Callable[[ReplicationMessage], Any]) -> None:
        while True:
            msg = self._read(conn)
            if msg is not None:
                consume(msg)
                continue
            if not st.started:
                return  # the server ended the stream
            timeout = st.last_feedback + st.status_interval - time.time()
            if timeout > 0:
                # One cooperative wait (through the driver: timeout() bounds it); the loop above
                # decides what to do next.
                _wait.drive(wait_socket(conn.fileno(), READ), conn, timeout=timeout, idle=True)

    def send_feedback(
        self,
        write_lsn: int = 0,
        flush_lsn: int = 0,
        apply_lsn: int = 0,
        reply: bool = False,
        force: bool = False,
    ) -> None:
        """Record the LSNs (they only move forward); send now if ``reply`` or ``force``."""
        cur: Any = self
        if ext.get_wait_callback() is None:
            super().send_feedback(write_lsn, flush_lsn, apply_lsn, reply, force)  # type: ignore[misc]
            return
        _check_open(cur)
        st = self._pg_repl()
        st.write_lsn = max(st.write_lsn, write_lsn)
        st.explicitly_flushed_lsn = max(st.explicitly_flushed_lsn, flush_lsn)
        st.flush_lsn = max(st.flush_lsn, flush_lsn)
        st.apply_lsn = max(st.apply_lsn, apply_lsn)
        if force or reply:
            conn = cur.connection
            with _guard.using(conn):
                ptr = _libpq.pgconn(conn)
                _wait.drive(_repl.send_feedback(ptr, st, reply), conn, on_interrupt=_no_cancel)

    @property
    def wal_end(self) -> int:
        """LSN of the current end of WAL on the server, as last reported."""
        if ext.get_wait_callback() is None and "_pg_repl_state" not in self.__dict__:
            return int(_psycopg.ReplicationCursor.wal_end.__get__(self))
        return self._pg_repl().wal_end

    @property
    def io_timestamp(self) -> datetime.datetime:
        """When we last received data from the server."""
        _check_open(self)
        return datetime.datetime.fromtimestamp(self._pg_repl().last_io)

    @property
    def feedback_timestamp(self) -> datetime.datetime:
        """When we last sent feedback to the server."""
        _check_open(self)
        return datetime.datetime.fromtimestamp(self._pg_repl().last_feedback)


def _no_cancel() -> None:
    """Replication messages are not statements: an interrupt needs no cancel on the server."""


def _check_open(cur: Any) -> None:
    if cur.closed or cur.connection.closed:
        raise psycopg2.InterfaceError("cursor already closed")


def _codec(conn: Any) -> str:
    import codecs

    return codecs.lookup(ext.encodings.get(conn.encoding, conn.encoding)).name


# -- async_=1 replication connections ------------------------------------------------------------


@contextlib.contextmanager
def _wait_callback_suspended() -> Iterator[None]:
    """psycopg2 refuses its replication methods whenever *any* wait callback is registered, even
    on an ``async_=1`` connection, where they never wait (the caller polls). Such a call is one
    non-blocking C call with no switch inside, so unregistering the callback around it hides it
    from nobody else in this thread."""
    callback = ext.get_wait_callback()
    ext.set_wait_callback(None)
    try:
        yield
    finally:
        ext.set_wait_callback(callback)


class AsyncReplicationMixin:
    """For the cursors of ``async_=1`` replication connections under ``patch()``: psycopg2's own
    asynchronous streaming (``start_replication``, ``read_message``; ``consume_stream`` raises
    psycopg2's "not in asynchronous mode" error), as without patching."""

    __slots__ = ()

    def start_replication_expert(
        self, command: Any, decode: bool = False, status_interval: float = 10
    ) -> Any:
        with _wait_callback_suspended():
            return super().start_replication_expert(command, decode, status_interval)  # type: ignore[misc]

    def read_message(self) -> Any:
        with _wait_callback_suspended():
            return super().read_message()  # type: ignore[misc]

    def consume_stream(self, consume: Any, keepalive_interval: Any = None) -> Any:
        with _wait_callback_suspended():
            return super().consume_stream(consume, keepalive_interval)  # type: ignore[misc]


_async_cursor_classes: dict[type, type] = {}


def async_replication_cursor_class(base: Any) -> Any:
    """``base`` (a ``ReplicationCursor`` class) with :class:`AsyncReplicationMixin` first (cached)."""
    if not isinstance(base, type) or not issubclass(base, _psycopg.ReplicationCursor):
        return base
    if issubclass(base, AsyncReplicationMixin):
        return base
    return derived(_async_cursor_classes, base, base, (AsyncReplicationMixin, base))


def prepare_async(conn: Any) -> Any:
    """Called by ``psycopg2.connect`` once patched for ``async_=1`` connections: a replication
    connection's cursors get :class:`AsyncReplicationMixin`; anything else is left alone."""
    if isinstance(conn, _psycopg.ReplicationConnection):
        base: Any = conn.cursor_factory
        conn.cursor_factory = async_replication_cursor_class(base or _psycopg.ReplicationCursor)
    return conn
