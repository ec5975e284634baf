"""The COPY sub-protocol as generators, spoken through libpq on psycopg2's ``PGconn *``.

psycopg2 refuses COPY when a wait callback is registered, because its implementation calls the
blocking ``PQgetCopyData``/``PQputCopyData``. The connection is already non-blocking in green mode,
so the same conversation can be held with libpq's asynchronous calls, yielding ``(fd, events)``
whenever libpq would block. The protocol takes and gives *bytes*: it yields :data:`NEED_DATA` for
the next chunk of COPY FROM STDIN and ``bytes`` of COPY TO STDOUT rows, and the driver
(:mod:`psycogreen.copy`) does the file I/O and sends back the data or the file's exception — the
protocol never calls user code, so it never waits on a file (as in psycopg 3's generators).

The generators never raise the *file's* exceptions: a file that fails or an interruption (seen
through :class:`psycogreen._wait.Control`) ends the copy cleanly on the server first — COPY IN with
``PQputCopyEnd(errormsg)``, COPY OUT by a cancel and a drain — and is reported in the returned
:class:`CopyOutcome`, so the driver never sends a stray cancel to an idle connection. Server errors
are raised as the psycopg2 error class psycopg2 itself would raise.
"""

from __future__ import annotations

import codecs
import ctypes
import time
from typing import Any, Generator, Optional, Union

import psycopg2
import psycopg2.errors

from .. import _libpq, _pgerror
from . import READ, RV, WRITE, PQGen, Wait
from .generators import cancel_nonblocking

__all__ = [
    "NEED_DATA",
    "BadChunk",
    "CopyGen",
    "CopyOutcome",
    "CopyRequest",
    "copy",
    "drain_results",
    "error_from_result",
    "fetch_result",
    "send_query",
]

#: Longest stretch (seconds) a copy runs without giving other greenlets a turn when the socket
#: never makes it wait (loopback, fast server).
TURN = 0.002

_monotonic = time.monotonic

PG_DIAG_SQLSTATE = ord("C")
PG_DIAG_MESSAGE_PRIMARY = ord("M")

#: psycopg2's fallback classes for SQLSTATEs psycopg2.errors does not know, by class (2 chars).
_CLASS_FALLBACK: dict[str, type[psycopg2.Error]] = {
    "0A": psycopg2.NotSupportedError,
    "08": psycopg2.OperationalError,
    "20": psycopg2.ProgrammingError,
    "21": psycopg2.ProgrammingError,
    "22": psycopg2.DataError,
    "23": psycopg2.IntegrityError,
    "24": psycopg2.InternalError,
    "25": psycopg2.InternalError,
    "26": psycopg2.InternalError,
    "27": psycopg2.InternalError,
    "28": psycopg2.OperationalError,
    "2B": psycopg2.InternalError,
    "2D": psycopg2.InternalError,
    "2F": psycopg2.InternalError,
    "34": psycopg2.InternalError,
    "3D": psycopg2.ProgrammingError,
    "3F": psycopg2.ProgrammingError,
    "40": psycopg2.extensions.TransactionRollbackError,
    "42": psycopg2.ProgrammingError,
    "44": psycopg2.ProgrammingError,
    "53": psycopg2.OperationalError,
    "54": psycopg2.OperationalError,
    "55": psycopg2.OperationalError,
    "57": psycopg2.OperationalError,
    "58": psycopg2.OperationalError,
    "F0": psycopg2.InternalError,
    "HV": psycopg2.OperationalError,
    "P0": psycopg2.InternalError,
    "XX": psycopg2.InternalError,
}


class CopyOutcome:
    """What a COPY ended with: the server's row count and, if the copy was aborted on our side, why.

    ``error`` is the exception raised by the file's ``read()``/``write()`` or the interruption that
    stopped the copy; the caller decides how to surface it once the connection is idle again.
    """

    __slots__ = ("direction", "error", "failed_in", "rowcount", "server_error", "status")

    def __init__(self) -> None:
        self.rowcount: int = -1
        self.status: str = ""
        #: "in" or "out" once the server has started the COPY ("" before, or for other statements)
        self.direction: str = ""
        self.error: Optional[BaseException] = None
        #: the server's answer to an aborted COPY (psycopg2 raises it: QueryCanceled for COPY FROM)
        self.server_error: Optional[psycopg2.Error] = None
        #: "read" or "write" when ``error`` was raised by the file's method (an ``Exception``, not an
        #: interruption): psycopg2 reports the two differently, see :func:`psycogreen.copy._raise`
        self.failed_in: str = ""


def error_from_result(res: int, ptr: int, cursor: Any = None) -> psycopg2.Error:
    """The psycopg2 exception for a failed ``PGresult``, the class psycopg2 would pick, with
    ``pgerror``, ``pgcode`` and a ``diag`` filled from the result as psycopg2 fills its own.

    **Takes ownership of** ``res``: the error keeps it for ``diag`` and psycopg2 frees it with the
    error (see :mod:`psycogreen._pgerror`); the caller must not ``PQclear`` it afterwards.
    """
    lib = _libpq.lib
    raw = lib.PQresultErrorMessage(res) if res else None
    if not raw:
        raw = lib.PQerrorMessage(ptr) or b"unknown error (no message from libpq)"
    msg = raw.decode("utf-8", "replace")
    code_raw = lib.PQresultErrorField(res, PG_DIAG_SQLSTATE) if res else None
    code = code_raw.decode("ascii", "replace") if code_raw else None
    err = make_error(msg, code)
    if res:
        _pgerror.attach_result(err, res, _decoder(ptr))
    return err


def _decoder(ptr: int) -> Any:
    """The decoder psycopg2 would use for this connection's messages (its client encoding)."""
    raw = _libpq.lib.PQparameterStatus(ptr, b"client_encoding")
    name = raw.decode("ascii", "replace") if raw else "UTF8"
    try:
        return codecs.getdecoder(psycopg2.extensions.encodings.get(name, name))
    except LookupError:
        return codecs.getdecoder("utf-8")


def make_error(msg: str, code: Optional[str]) -> psycopg2.Error:
    cls: type[psycopg2.Error]
    if code is None:
        cls = psycopg2.OperationalError
    else:
        try:
            cls = psycopg2.errors.lookup(code)
        except KeyError:
            cls = _CLASS_FALLBACK.get(code[:2], psycopg2.DatabaseError)
    text = msg[8:] if len(msg) > 8 and msg[:8] in ("ERROR:  ", "FATAL:  ", "PANIC:  ") else msg
    err = cls(text)
    try:
        err.__setstate__({"pgerror": msg, "pgcode": code})  # type: ignore[no-untyped-call]
    except Exception:  # noqa: BLE001 - a psycopg2 without __setstate__: the message still says it all
        pass
    return err


def send_query(ptr: int, sql: bytes) -> PQGen[None]:
    """``PQsendQuery`` then flush the output, waiting for the socket as needed."""
    lib = _libpq.lib
    if not lib.PQsendQuery(ptr, sql):
        raise psycopg2.OperationalError(_libpq.error_message(ptr))
    yield from flush(ptr)


def flush(ptr: int) -> PQGen[None]:
    """Send what libpq buffered, waiting for writability only (waiters report the events asked
    for, not the ones that happened, and eventlet's waits on one direction); reading whatever
    arrived after each wait keeps a chatty server from deadlocking us."""
    lib = _libpq.lib
    fd = lib.PQsocket(ptr)
    while True:
        rv = lib.PQflush(ptr)
        if rv == 0:
            return
        if rv < 0:
            raise psycopg2.OperationalError(_libpq.error_message(ptr))
        yield fd, WRITE
        if not lib.PQconsumeInput(ptr):
            raise psycopg2.OperationalError(_libpq.error_message(ptr))


def fetch_result(ptr: int) -> PQGen[int]:
    """The next ``PGresult *`` (0 when the query is complete), reading until libpq has it."""
    lib = _libpq.lib
    fd = lib.PQsocket(ptr)
    while lib.PQisBusy(ptr):
        yield fd, READ
        if not lib.PQconsumeInput(ptr):
            raise psycopg2.OperationalError(_libpq.error_message(ptr))
    res: int = lib.PQgetResult(ptr) or 0
    return res


def drain_results(ptr: int, outcome: Optional[CopyOutcome] = None) -> PQGen[Optional[psycopg2.Error]]:
    """Collect every remaining result; return the first error (not raised: the caller decides)."""
    lib = _libpq.lib
    error: Optional[psycopg2.Error] = None
    while True:
        res = yield from fetch_result(ptr)
        if not res:
            return error
        try:
            status = lib.PQresultStatus(res)
            if status == _libpq.PGRES_FATAL_ERROR:
                if error is None:
                    error = error_from_result(res, ptr)
                    res = 0  # the error owns it now
            elif status in (_libpq.PGRES_COPY_IN, _libpq.PGRES_COPY_BOTH):
                # A second COPY in the same string: end it, psycopg2 does not support it either.
                lib.PQputCopyEnd(ptr, b"psycogreen: only one COPY per statement is supported")
                yield from flush(ptr)
            elif status == _libpq.PGRES_COPY_OUT:
                yield from discard_copy_data(ptr)
            elif outcome is not None:
                outcome.rowcount = _rowcount(res)
                outcome.status = (lib.PQcmdStatus(res) or b"").decode("ascii", "replace")
        finally:
            lib.PQclear(res)


def _rowcount(res: int) -> int:
    raw = _libpq.lib.PQcmdTuples(res)
    return int(raw) if raw else -1


class _NeedData:
    """The type of :data:`NEED_DATA` (a singleton with a readable repr)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


#: Yielded by COPY FROM STDIN: "the next chunk, please". The driver sends back ``bytes`` (``b""``
#: ends the data) or the exception the file raised, and the copy is then aborted on the server.
NEED_DATA = _NeedData()

#: What a COPY generator yields: a wait ``(fd, events)`` like every ``_core`` generator,
#: :data:`NEED_DATA`, or ``bytes`` — COPY TO STDOUT rows for the file (whole rows, about
#: :data:`BATCH` bytes at a time), answered with ``None`` or the exception the file raised.
CopyRequest = Union[Wait, bytes, _NeedData]
CopyGen = Generator[CopyRequest, Any, RV]


def copy(
    ptr: int,
    sql: bytes,
    control: Any,
    outcome: Optional[CopyOutcome] = None,
    *,
    reads: bool = True,
    writes: bool = True,
    cancel_on_error: bool = True,
) -> CopyGen[CopyOutcome]:
    """Run one COPY statement, asking the driver for the data of COPY FROM STDIN and handing it the
    rows of COPY TO STDOUT (see :data:`CopyRequest`); the protocol itself never touches a file, so
    it never waits on one. ``reads``/``writes`` say whether the caller has a file to read from or
    to write to. Returns the outcome once libpq is idle again.

    A statement that turns out not to be a COPY runs to completion (psycopg2 lets ``copy_expert``
    run any statement); a COPY in a direction without a file ends with psycopg2's
    ProgrammingError. Server errors are raised *after* the conversation is finished.

    ``cancel_on_error=False`` makes a failing write drain the rest of COPY OUT instead of
    cancelling it, which keeps the surrounding transaction alive (psycopg2's behaviour).
    """
    if outcome is None:
        outcome = CopyOutcome()
    yield from send_query(ptr, sql)
    status, first_error = yield from _first_result(ptr, outcome)
    misuse: Optional[psycopg2.Error] = None
    if status == _libpq.PGRES_COPY_IN:
        if not reads:
            misuse = psycopg2.ProgrammingError("can't execute COPY FROM: use the copy_from() method instead")
            _libpq.lib.PQputCopyEnd(ptr, b"can't execute COPY FROM: use the copy_from() method instead")
            yield from flush(ptr)
        else:
            outcome.direction = "in"
            yield from _copy_in(ptr, control, outcome)
    elif status == _libpq.PGRES_COPY_OUT:
        if not writes:
            misuse = psycopg2.ProgrammingError("can't execute COPY TO: use the copy_to() method instead")
            yield from discard_copy_data(ptr)
        else:
            outcome.direction = "out"
            yield from _copy_out(ptr, control, outcome, cancel_on_error)
    error = yield from drain_results(ptr, outcome)
    return _conclude(outcome, control, first_error, misuse, error)


def _first_result(ptr: int, outcome: CopyOutcome) -> PQGen[tuple[int, Optional[psycopg2.Error]]]:
    """The statement's first result status (-1 if none) and its error, if it failed at once."""
    lib = _libpq.lib
    res = yield from fetch_result(ptr)
    if not res:
        return -1, None
    try:
        status: int = lib.PQresultStatus(res)
        if status == _libpq.PGRES_FATAL_ERROR:
            error = error_from_result(res, ptr)
            res = 0  # the error owns it now
            return status, error
        if status in (_libpq.PGRES_COMMAND_OK, _libpq.PGRES_TUPLES_OK):
            outcome.rowcount = _rowcount(res)
            outcome.status = (lib.PQcmdStatus(res) or b"").decode("ascii", "replace")
        return status, None
    finally:
        lib.PQclear(res)


def _conclude(
    outcome: CopyOutcome,
    control: Any,
    first_error: Optional[psycopg2.Error],
    misuse: Optional[psycopg2.Error],
    error: Optional[psycopg2.Error],
) -> CopyOutcome:
    """Raise what the conversation ended with, or return the outcome for the driver to surface."""
    if control is not None and control.interrupt is not None:
        # Interrupted and cancelled: the server's "canceling statement" is the expected answer, and
        # raising it would tell the driver the connection broke. The interrupt is the story.
        outcome.error = control.interrupt
        outcome.server_error = first_error or error
        return outcome
    if first_error is not None:
        raise first_error
    if misuse is not None:
        raise misuse
    if error is not None:
        if outcome.error is None:
            raise error
        outcome.server_error = error
    return outcome


def _copy_in(ptr: int, control: Any, outcome: CopyOutcome) -> CopyGen[None]:
    lib = _libpq.lib
    fd = lib.PQsocket(ptr)
    next_turn = _monotonic() + TURN
    while True:
        if control is not None and control.interrupt is not None:
            outcome.error = control.interrupt
            break
        data = yield NEED_DATA
        if isinstance(data, BaseException):  # the file failed (or was interrupted inside read())
            outcome.error = data
            if isinstance(data, Exception):
                outcome.failed_in = "read"
            break
        if not data:
            break
        if not (yield from _put(ptr, fd, data)):
            # The server left COPY mode (an error: bad row, terminated backend) or the connection
            # broke: the results say which (libpq reports a broken connection as a result too).
            return
        if lib.PQflush(ptr) == 1:
            yield from flush(ptr)
        elif _monotonic() >= next_turn:
            # Loopback sockets are always writable: without this the hub would starve.
            yield fd, WRITE
            next_turn = _monotonic() + TURN
            # Read what the server said meanwhile: an early error ends the copy now (libpq then
            # refuses more data) instead of after the whole file was sent.
            if not lib.PQconsumeInput(ptr):
                return
    yield from _end_copy_in(ptr, outcome)


def _put(ptr: int, fd: int, data: bytes) -> PQGen[bool]:
    """Queue ``data`` in libpq, waiting while its buffer is full; False if the server ended COPY."""
    lib = _libpq.lib
    while True:
        rv = lib.PQputCopyData(ptr, data, len(data))
        if rv == 1:
            return True
        if rv < 0:
            return False
        yield fd, WRITE  # 0: libpq's buffer is full, wait for the socket
        lib.PQconsumeInput(ptr)


def _end_copy_in(ptr: int, outcome: CopyOutcome) -> PQGen[None]:
    """End COPY FROM STDIN: normally, or with an error message that makes the server roll it back."""
    lib = _libpq.lib
    message = None if outcome.error is None else _abort_message(outcome.error)
    if lib.PQputCopyEnd(ptr, message) < 0:
        if lib.PQstatus(ptr) == CONNECTION_BAD:
            raise psycopg2.OperationalError(_libpq.error_message(ptr))
        return  # the server already ended the copy: the results say why
    yield from flush(ptr)


CONNECTION_BAD = 1


class BadChunk(TypeError):
    """``file.read()`` returned something that is neither str nor bytes (``None`` included)."""


def _abort_message(exc: BaseException) -> bytes:
    """psycopg2's wording for an aborted COPY FROM: the server echoes it in the QueryCanceled the
    user gets, and server logs read the same as with blocking psycopg2."""
    if not isinstance(exc, Exception):
        return f"interrupted by {type(exc).__name__}".encode("utf-8", "replace")
    if isinstance(exc, BadChunk):
        return b"error in .read() call"  # psycopg2's exact text when read() returns a non-string
    return f"error in .read() call: {type(exc).__name__} {exc}".encode("utf-8", "replace")[:1000]


#: Bytes of COPY TO rows gathered before they are handed over for one ``file.write()``.
BATCH = 1 << 16

#: Room offered to each ``PQgetlineAsync`` call: a longer row takes the slow path (:func:`_long_row`).
ROOM = 1 << 16

#: Initial size of the buffer COPY TO rows are read into: a batch plus the room for one more row,
#: so the room offered never changes while a batch fills. It doubles for a row that does not fit
#: (a row is never split between two writes: text files decode each write on its own).
BUFFER = BATCH + ROOM


def _copy_out(ptr: int, control: Any, outcome: CopyOutcome, cancel_on_error: bool = True) -> CopyGen[None]:
    """COPY TO STDOUT: the hot loop is one ``PQgetlineAsync`` per row (all buffered rows in one
    call with the C accelerator), straight into a buffer that holds the batch (no per-row object,
    free or copy); batches are handed over as ``bytes``. ``PQgetlineAsync`` returns a row's length,
    0 when no complete row is buffered, -1 at the end of the copy (protocol 3 sends no ``\\.``) and,
    when the room offered is smaller than the row, the part that fits (see :func:`_long_row`).
    Interrupts only arrive while suspended, so they are checked after each wait."""
    get, getlines, byref = _getline, _getlines, ctypes.byref
    consume = _libpq.lib.PQconsumeInput
    room, batch = ROOM, BATCH  # locals: the per-row path reads them
    cptr = _libpq.hot_pointer(ptr)
    fd = _libpq.lib.PQsocket(ptr)
    buf: Any = ctypes.create_string_buffer(BUFFER)  # buf[:n] is bytes (ctypes' stubs say list)
    pos = 0  # bytes in buf, whole rows; < batch whenever a row is read, so room always fits
    idle_pos = -1  # pos when libpq last read the socket: nothing new since, if still equal
    next_turn = _monotonic() + TURN
    reply: Any = None
    while True:
        if getlines is not None:
            # C: every buffered row that fits, in one call; the last PQgetlineAsync result is left
            # to the branches below, as the Python loop leaves it.
            pos, n = getlines(ptr, ctypes.addressof(buf), pos, room, batch)
        else:
            n = get(cptr, byref(buf, pos), room)
            if 0 < n < room:  # a whole row: the per-row path, keep it short
                pos += n
                if pos < batch:
                    continue
        if n >= room:  # a row longer than the room: read the rest of it
            reply, buf, pos = yield from _long_row(cptr, buf, pos, n)
            if reply is not None:
                break
        elif n == 0:
            if pos != idle_pos:  # rows came since libpq last read: ask it to read again first
                if not consume(ptr):
                    raise psycopg2.OperationalError(_libpq.error_message(ptr))
                idle_pos = pos
                continue
            if pos:
                reply = yield buf[:pos]
                if reply is not None:
                    break
                pos = 0
            if (yield from _read_socket(ptr, fd, control)):
                break  # the driver has cancelled the statement
            next_turn = _monotonic() + TURN
            idle_pos = pos
            continue
        elif n < 0:  # the end of the copy (or of the connection: the results say which)
            yield from _last_batch(buf, pos, outcome)
            return
        # A batch is full (or a long row was read): hand it over.
        reply = yield buf[:pos]
        if reply is not None:
            break
        pos = 0
        if _monotonic() >= next_turn:
            if (yield from _hub_turn(fd, control)):
                break
            next_turn = _monotonic() + TURN
    yield from _abort_copy_out(ptr, control, outcome, reply, cancel_on_error)


def _read_socket(ptr: int, fd: int, control: Any) -> CopyGen[bool]:
    """Nothing new since libpq last read: wait for the socket, then have libpq read it. True when
    the driver cancelled the statement meanwhile."""
    yield fd, READ
    if control is not None and control.interrupt is not None:
        return True
    if not _libpq.lib.PQconsumeInput(ptr):
        raise psycopg2.OperationalError(_libpq.error_message(ptr))
    return False


def _hub_turn(fd: int, control: Any) -> CopyGen[bool]:
    """A fast server keeps libpq's buffer full: give the hub a turn now and then (waiting for
    writability returns at once; waiting for reads could wait forever for data already buffered).
    True when the driver cancelled the statement meanwhile."""
    yield fd, WRITE
    return control is not None and control.interrupt is not None


def _last_batch(buf: Any, pos: int, outcome: CopyOutcome) -> CopyGen[None]:
    """The copy ended: hand over the rows left. A last write that fails after the server sent
    everything has nothing to stop: it is only recorded."""
    if pos:
        reply = yield buf[:pos]
        if reply is not None:
            _file_failed(outcome, reply)


def _long_row(cptr: Any, buf: Any, pos: int, n: int) -> CopyGen[tuple[Any, Any, int]]:
    """The rest of a row longer than the room offered: ``PQgetlineAsync`` gave its first ``n``
    bytes (the rest is already in libpq's buffer). Hands the whole rows before it over and keeps
    the row's start, or doubles the buffer when the row alone fills it, until the row is complete
    — a row is never split between two writes (text files decode each write on its own).
    Returns the driver's reply (None, or the file's exception), the buffer and its fill (whole
    rows only).

    A row that exactly fills the room looks the same as a partial one; treating it as partial
    only means asking for more: the next call then starts a new row (kept with this one) or
    says 0 or -1.
    """
    start = pos  # where the long row begins
    pos += n
    if pos < len(buf):  # room left in buf: ask for the rest there first
        n = _getline(cptr, ctypes.byref(buf, pos), len(buf) - pos)
        if n != len(buf) - pos:
            return None, buf, pos + max(n, 0)
        pos += n
    while True:
        if start:
            reply = yield buf[:start]
            if reply is not None:
                return reply, buf, pos
            ctypes.memmove(buf, ctypes.byref(buf, start), pos - start)
            pos -= start
            start = 0
        else:
            bigger = ctypes.create_string_buffer(2 * len(buf))
            ctypes.memmove(bigger, buf, pos)
            buf = bigger
        space = len(buf) - pos
        n = _getline(cptr, ctypes.byref(buf, pos), space)
        if n != space:  # the row is complete (or it was, and libpq has nothing more yet: 0, -1)
            return None, buf, pos + max(n, 0)
        pos += n


def _file_failed(outcome: CopyOutcome, exc: BaseException) -> None:
    outcome.error = exc
    if isinstance(exc, Exception):
        outcome.failed_in = "write"


def _abort_copy_out(
    ptr: int, control: Any, outcome: CopyOutcome, reply: Any, cancel_on_error: bool
) -> PQGen[None]:
    """COPY OUT stopped early by the file (``reply``) or an interrupt: stop the server (unless the
    driver did), then drain. In a transaction a failed write() only drains, as psycopg2 does, so
    the transaction survives."""
    if reply is not None:
        _file_failed(outcome, reply)
    else:
        outcome.error = control.interrupt
    if cancel_on_error and (control is None or control.interrupt is None):
        if _libpq.HAS_NONBLOCKING_CANCEL:
            try:
                yield from cancel_nonblocking(ptr)
            except psycopg2.Error:
                pass  # then drain it all: slower, same end state
    yield from discard_copy_data(ptr)


#: ``PQgetlineAsync`` for the per-row loop (see :func:`psycogreen._libpq.hot_function`): it never
#: blocks, it only copies a buffered row.
_getline: Any = _libpq.hot_function("PQgetlineAsync", ctypes.c_int)


def _accel_getlines() -> Any:
    """``psycogreen._speedups.getlines``: the per-row loop of :func:`_copy_out` in C (every row
    libpq has buffered, in one call); None when the accelerator is off (see ``psycogreen._accel``)."""
    from .. import _accel

    return None if _accel.speedups is None else _accel.speedups.getlines


_getlines: Any = _accel_getlines()


def discard_copy_data(ptr: int) -> PQGen[None]:
    """Read and drop COPY data until libpq reports the end of the stream (COPY OUT or BOTH)."""
    consume = _libpq.lib.PQconsumeInput
    cptr = _libpq.hot_pointer(ptr)
    buf = ctypes.create_string_buffer(BATCH)
    ref = ctypes.byref(buf)
    fd = _libpq.lib.PQsocket(ptr)
    while True:
        n = _getline(cptr, ref, BATCH)  # a longer row comes in parts: all dropped alike
        if n == 0:
            yield fd, READ
            if not consume(ptr):
                raise psycopg2.OperationalError(_libpq.error_message(ptr))
        elif n < 0:
            return
