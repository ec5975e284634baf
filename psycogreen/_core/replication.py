"""The streaming replication sub-protocol (CopyBoth) as generators.

After ``START_REPLICATION`` the server streams CopyData messages: ``'w'`` XLogData (WAL start, WAL
end, send time, payload) and ``'k'`` primary keepalives (WAL end, send time, reply-requested). The
client answers with ``'r'`` standby status updates (write/flush/apply LSNs, its clock, reply flag).
psycopg2 implements this in C with blocking calls; the same bookkeeping (including its rule for
moving ``flush_lsn`` forward on keepalives) is written here once, non-blocking, so every waiter can
drive it.
"""

from __future__ import annotations

import ctypes
import struct
import time
from typing import Any, Optional

import psycopg2

from .. import _libpq
from . import WRITE, PQGen
from .copy import discard_copy_data, error_from_result, fetch_result, flush, send_query

__all__ = ["ReplState", "RawMessage", "read_message", "send_feedback", "start"]

#: Seconds between the Unix epoch and PostgreSQL's (2000-01-01).
PG_EPOCH_OFFSET = 946684800

_XLOG = struct.Struct("!QQq")  # dataStart, walEnd, sendTime (after the 'w')
_KEEPALIVE = struct.Struct("!QqB")  # walEnd, sendTime, replyRequested (after the 'k')
_STATUS = struct.Struct("!cQQQqB")  # 'r', write, flush, apply, clock, reply


class ReplState:
    """What psycopg2 keeps in its ``replicationCursorObject``, per cursor."""

    __slots__ = (
        "apply_lsn",
        "consuming",
        "decode",
        "explicitly_flushed_lsn",
        "flush_lsn",
        "last_feedback",
        "last_io",
        "last_msg_data_start",
        "started",
        "status_interval",
        "wal_end",
        "write_lsn",
    )

    def __init__(self) -> None:
        self.write_lsn = 0
        self.flush_lsn = 0
        self.apply_lsn = 0
        self.explicitly_flushed_lsn = 0
        self.last_msg_data_start = 0
        self.wal_end = 0
        self.last_feedback = 0.0  # wall clock (time.time), as psycopg2's gettimeofday
        self.last_io = 0.0
        self.status_interval = 10.0
        self.decode = False
        self.started = False
        self.consuming = False


class RawMessage:
    """One XLogData message, before the payload is decoded."""

    __slots__ = ("data_start", "payload", "send_time", "wal_end")

    def __init__(self, data_start: int, wal_end: int, send_time: int, payload: bytes) -> None:
        self.data_start = data_start
        self.wal_end = wal_end
        self.send_time = send_time  # microseconds since 2000-01-01 UTC
        self.payload = payload


def start(ptr: int, command: bytes, control: Any = None) -> PQGen[None]:
    """Send ``START_REPLICATION ...`` and wait until the server enters CopyBoth mode.

    If the driver interrupted us (and cancelled the command), the server's answer is expected and
    not raised: the driver re-raises the interrupt itself.
    """
    lib = _libpq.lib
    yield from send_query(ptr, command)
    res = yield from fetch_result(ptr)
    if not res:
        raise psycopg2.ProgrammingError("the replication command returned no result")
    try:
        status = lib.PQresultStatus(res)
        error = None
        if status == _libpq.PGRES_FATAL_ERROR:
            error = error_from_result(res, ptr)
            res = 0  # the error owns it now
    finally:
        lib.PQclear(res)
    if status == _libpq.PGRES_COPY_BOTH:
        if control is not None and control.interrupt is not None:
            end_copy(ptr)  # interrupted just as streaming began: leave CopyBoth again
            while (yield from _drain_copy_both(ptr)):
                pass
        return
    # Not a streaming command: finish it like psycopg2 would and report.
    while True:
        more = yield from fetch_result(ptr)
        if not more:
            break
        lib.PQclear(more)
    if control is not None and control.interrupt is not None:
        return
    if error is not None:
        raise error
    raise psycopg2.ProgrammingError(
        "start_replication_expert: the command did not start streaming replication "
        "(expected START_REPLICATION ...)"
    )


def send_feedback(ptr: int, st: ReplState, reply: bool = False) -> PQGen[None]:
    """Queue and flush a standby status update with the cursor's current LSNs."""
    now = time.time()
    clock = int((now - PG_EPOCH_OFFSET) * 1_000_000)
    msg = _STATUS.pack(b"r", st.write_lsn, st.flush_lsn, st.apply_lsn, clock, 1 if reply else 0)
    lib = _libpq.lib
    fd = lib.PQsocket(ptr)
    while True:
        rv = lib.PQputCopyData(ptr, msg, len(msg))
        if rv == 1:
            break
        if rv < 0:
            raise psycopg2.OperationalError(_libpq.error_message(ptr))
        yield fd, WRITE
        lib.PQconsumeInput(ptr)
    yield from flush(ptr)
    st.last_feedback = st.last_io = time.time()


def read_message(ptr: int, st: ReplState) -> PQGen[Optional[RawMessage]]:
    """psycopg2's ``read_message()``: the next XLogData if one can be had without waiting for the
    server, else None. Keepalives are handled here (answered when asked); feedback is sent when
    ``status_interval`` has passed. It yields only to flush feedback."""
    lib = _libpq.lib
    if time.time() >= st.last_feedback + st.status_interval:
        yield from send_feedback(ptr, st)
    buf = ctypes.c_void_p()
    consumed = False
    while True:
        n = lib.PQgetCopyData(ptr, ctypes.byref(buf), 1)
        if n == 0:
            if consumed:
                return None
            # Read only when nothing is buffered, so a busy server cannot make us buffer unboundedly.
            if not lib.PQconsumeInput(ptr):
                raise psycopg2.OperationalError(_libpq.error_message(ptr))
            consumed = True
            continue
        if n == -2:
            raise psycopg2.OperationalError(_libpq.error_message(ptr))
        if n == -1:
            yield from _stream_ended(ptr, st)
            return None
        try:
            data = ctypes.string_at(buf, n)
        finally:
            lib.PQfreemem(buf)
        consumed = True
        st.last_io = time.time()
        kind = data[:1]
        if kind == b"w":
            return _xlog_data(data, st)
        if kind == b"k":
            if _keepalive(data, st):
                yield from send_feedback(ptr, st)
            continue
        raise psycopg2.OperationalError("unrecognized replication message type")


def _stream_ended(ptr: int, st: ReplState) -> PQGen[None]:
    """The server ended the CopyBoth stream: collect its results, raising the first error."""
    lib = _libpq.lib
    st.started = False
    error = None
    res = yield from fetch_result(ptr)
    while res:
        if lib.PQresultStatus(res) == _libpq.PGRES_FATAL_ERROR and error is None:
            error = error_from_result(res, ptr)  # owns res now
        else:
            lib.PQclear(res)
        res = yield from fetch_result(ptr)
    if error is not None:
        raise error


def _xlog_data(data: bytes, st: ReplState) -> RawMessage:
    """An XLogData message ('w'): WAL start, WAL end, send time, payload."""
    if len(data) < 1 + _XLOG.size + 1:
        raise psycopg2.OperationalError("data message header too small")
    data_start, wal_end, send_time = _XLOG.unpack_from(data, 1)
    st.wal_end = wal_end
    st.last_msg_data_start = data_start
    return RawMessage(data_start, wal_end, send_time, data[1 + _XLOG.size :])


def _keepalive(data: bytes, st: ReplState) -> bool:
    """A primary keepalive ('k'): note the server's WAL end; return whether it asks for a reply."""
    if len(data) < 1 + _KEEPALIVE.size:
        raise psycopg2.OperationalError("keepalive message header too small")
    wal_end, _send_time, reply = _KEEPALIVE.unpack_from(data, 1)
    st.wal_end = wal_end
    # psycopg2's rule: once the client confirmed the last XLogData, flush_lsn may follow the
    # server's WAL end, so an idle slot does not hold back WAL.
    if (
        st.explicitly_flushed_lsn >= st.last_msg_data_start
        and wal_end > st.explicitly_flushed_lsn
        and wal_end > st.flush_lsn
    ):
        st.flush_lsn = wal_end
    return bool(reply)


def _drain_copy_both(ptr: int) -> PQGen[bool]:
    """Read and discard until libpq has no more results; True while something was read."""
    lib = _libpq.lib
    yield from discard_copy_data(ptr)
    res = yield from fetch_result(ptr)
    if not res:
        return False
    lib.PQclear(res)
    return True


def end_copy(ptr: int) -> None:
    """Best effort, never waits: tell the server we stop streaming (used when interrupted)."""
    lib = _libpq.lib
    lib.PQputCopyEnd(ptr, None)
    lib.PQflush(ptr)
