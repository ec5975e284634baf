"""The COPY sub-protocol as generators, spoken through libpq on psycopg2's ``PGconn *``.

psycopg2 refuses COPY when a wait callback is registered, because its implementation calls the
blocking ``PQgetCopyData``/``PQputCopyData``. The connection is already non-blocking in green mode,
so the same conversation can be held with libpq's asynchronous calls, yielding ``(fd, events)``
whenever libpq would block. The generators never raise the *file's* exceptions: a file that fails
or an interruption (seen through :class:`psycogreen._wait.Control`) ends the copy cleanly on the
server first — COPY IN with ``PQputCopyEnd(errormsg)``, COPY OUT by a cancel and a drain — and is
reported in the returned :class:`CopyOutcome`, so the driver never sends a stray cancel to an idle
connection. Server errors are raised as the psycopg2 error class psycopg2 itself would raise.
"""

from __future__ import annotations

import codecs
import ctypes
import time
from typing import Any, Callable, Optional

import psycopg2
import psycopg2.errors

from .. import _libpq, _pgerror
from . import READ, WRITE, PQGen
from .generators import cancel_nonblocking

__all__ = [
    "BadChunk",
    "CopyOutcome",
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
    fn = _libpq.lib.PQparameterStatus
    fn.restype, fn.argtypes = ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_char_p]
    raw = fn(ptr, b"client_encoding")
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


Source = Callable[[], bytes]
Sink = Callable[[bytes], Any]


def copy(
    ptr: int,
    sql: bytes,
    source: Optional[Source],
    sink: Optional[Sink],
    control: Any,
    outcome: Optional[CopyOutcome] = None,
    cancel_on_error: bool = True,
) -> PQGen[CopyOutcome]:
    """Run one COPY statement: ``source()`` feeds COPY FROM STDIN (``b""`` ends it), ``sink(data)``
    receives COPY TO STDOUT rows, whole rows batched up to ``BATCH`` bytes. Returns the outcome
    once libpq is idle again.

    A statement that turns out not to be a COPY runs to completion (psycopg2 lets ``copy_expert``
    run any statement); a COPY in a direction we have no file method for ends with psycopg2's
    ProgrammingError. Server errors are raised *after* the conversation is finished.

    ``cancel_on_error=False`` makes a failing ``sink`` drain the rest of COPY OUT instead of
    cancelling it, which keeps the surrounding transaction alive (psycopg2's behaviour).
    """
    lib = _libpq.lib
    if outcome is None:
        outcome = CopyOutcome()
    yield from send_query(ptr, sql)
    res = yield from fetch_result(ptr)
    if not res:
        return outcome
    misuse: Optional[psycopg2.Error] = None
    first_error: Optional[psycopg2.Error] = None
    try:
        status = lib.PQresultStatus(res)
        if status == _libpq.PGRES_FATAL_ERROR:
            first_error = error_from_result(res, ptr)
            res = 0  # the error owns it now
        elif status in (_libpq.PGRES_COMMAND_OK, _libpq.PGRES_TUPLES_OK):
            outcome.rowcount = _rowcount(res)
            outcome.status = (lib.PQcmdStatus(res) or b"").decode("ascii", "replace")
    finally:
        lib.PQclear(res)
    if status == _libpq.PGRES_COPY_IN:
        if source is None:
            misuse = psycopg2.ProgrammingError("can't execute COPY FROM: use the copy_from() method instead")
            lib.PQputCopyEnd(ptr, b"can't execute COPY FROM: use the copy_from() method instead")
            yield from flush(ptr)
        else:
            outcome.direction = "in"
            yield from _copy_in(ptr, source, control, outcome)
    elif status == _libpq.PGRES_COPY_OUT:
        if sink is None:
            misuse = psycopg2.ProgrammingError("can't execute COPY TO: use the copy_to() method instead")
            yield from discard_copy_data(ptr)
        else:
            outcome.direction = "out"
            yield from _copy_out(ptr, sink, control, outcome, cancel_on_error)
    error = yield from drain_results(ptr, outcome)
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


def _copy_in(ptr: int, source: Source, control: Any, outcome: CopyOutcome) -> PQGen[None]:
    lib = _libpq.lib
    put = lib.PQputCopyData
    consume = lib.PQconsumeInput
    fd = lib.PQsocket(ptr)
    next_turn = _monotonic() + TURN
    ended_by_server = False
    while True:
        if control is not None and control.interrupt is not None:
            outcome.error = control.interrupt
            break
        try:
            data = source()
        except BaseException as e:  # noqa: BLE001 - reported in the outcome once the copy has ended
            outcome.error = e
            if isinstance(e, Exception):
                outcome.failed_in = "read"
            break
        if not data:
            break
        while True:
            rv = put(ptr, data, len(data))
            if rv == 1:
                break
            if rv < 0:
                # The server left COPY mode (an error: bad row, terminated backend) or the
                # connection broke: its answer, read below, says which.
                ended_by_server = True
                break
            yield fd, WRITE  # 0: libpq's buffer is full, wait for the socket
            consume(ptr)
        if ended_by_server:
            break
        if lib.PQflush(ptr) == 1:
            yield from flush(ptr)
        elif _monotonic() >= next_turn:
            # Loopback sockets are always writable: without this the hub would starve.
            yield fd, WRITE
            next_turn = _monotonic() + TURN
            # Read what the server said meanwhile: an early error ends the copy now (libpq then
            # refuses more data) instead of after the whole file was sent.
            if not consume(ptr):
                ended_by_server = True
                break
    if ended_by_server:
        return  # the results say why (libpq reports a broken connection as a result too)
    if outcome.error is None:
        rv = lib.PQputCopyEnd(ptr, None)
    else:
        rv = lib.PQputCopyEnd(ptr, _abort_message(outcome.error))
    if rv < 0:
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


def _copy_out(
    ptr: int, sink: Sink, control: Any, outcome: CopyOutcome, cancel_on_error: bool = True
) -> PQGen[None]:
    # The hot loop of COPY TO: one libpq call, one copy into a bytes and one free per row. Rows are
    # handed to the file in batches of about BATCH bytes (one ``write()`` per row costs more than
    # the rest of the loop for narrow rows). Interrupts only arrive while suspended, so they are
    # checked after each yield.
    lib = _libpq.lib
    get = _raw.PQgetCopyData  # unprototyped, called with ready-made ctypes objects: half the cost
    freemem = _raw.PQfreemem
    string_at = _string_at
    consume = lib.PQconsumeInput
    cptr = ctypes.c_void_p(ptr)
    buf = ctypes.c_void_p()
    pbuf = ctypes.byref(buf)
    fd = lib.PQsocket(ptr)
    batch: list[bytes] = []
    append = batch.append
    size = 0
    ended = False
    next_turn = _monotonic() + TURN
    try:
        while True:
            n = get(cptr, pbuf, 1)
            if n > 0:
                append(string_at(buf, n))
                freemem(buf)
                size += n
                if size < BATCH:
                    continue
                sink(b"".join(batch))
                batch.clear()
                size = 0
                if _monotonic() >= next_turn:
                    # A fast server keeps libpq's buffer full: give the hub a turn now and then
                    # (waiting for writability returns at once; waiting for reads could wait
                    # forever for data that is already buffered).
                    yield fd, WRITE
                    next_turn = _monotonic() + TURN
                    if control is not None and control.interrupt is not None:
                        outcome.error = control.interrupt
                        break
            elif n == 0:
                if batch:
                    sink(b"".join(batch))
                    batch.clear()
                    size = 0
                yield fd, READ
                next_turn = _monotonic() + TURN
                if control is not None and control.interrupt is not None:
                    outcome.error = control.interrupt  # the driver has cancelled the statement
                    break
                if not consume(ptr):
                    raise psycopg2.OperationalError(_libpq.error_message(ptr))
            elif n == -1:
                ended = True
                if batch:
                    sink(b"".join(batch))
                return
            else:
                raise psycopg2.OperationalError(_libpq.error_message(ptr))
    except psycopg2.Error:
        raise
    except BaseException as e:  # noqa: BLE001 - the file failed: reported in the outcome once drained
        outcome.error = e
        if isinstance(e, Exception):
            outcome.failed_in = "write"
    if ended:
        return  # the last write failed after the server had sent everything: nothing to stop
    # Aborted by the file or an interrupt: stop the server (if the driver did not), then drain.
    # In a transaction a failed write() only drains, as psycopg2 does, so the transaction survives.
    if cancel_on_error and (control is None or control.interrupt is None):
        if _libpq.HAS_NONBLOCKING_CANCEL:
            try:
                yield from cancel_nonblocking(ptr)
            except psycopg2.Error:
                pass  # then drain it all: slower, same end state
    yield from discard_copy_data(ptr)


# The same functions without argtypes: ctypes then skips per-argument conversion, which is most of
# the cost of a call; only used where every argument is already a ctypes object or a small int.
_raw: Any = ctypes.CDLL(_libpq.lib._name)
_raw.PQgetCopyData.restype = ctypes.c_int
_raw.PQfreemem.restype = None

#: Bytes of COPY TO rows gathered before one ``file.write()``.
BATCH = 1 << 16


try:
    _string_at: Any = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_void_p, ctypes.c_ssize_t)(
        ctypes._string_at_addr  # type: ignore[attr-defined]
    )
except AttributeError:  # pragma: no cover - another ctypes: the public wrapper is just slower
    _string_at = ctypes.string_at


def discard_copy_data(ptr: int) -> PQGen[None]:
    """Read and drop COPY data until libpq reports the end of the stream (COPY OUT or BOTH)."""
    lib = _libpq.lib
    buf = ctypes.c_void_p()
    fd = lib.PQsocket(ptr)
    while True:
        n = lib.PQgetCopyData(ptr, ctypes.byref(buf), 1)
        if n > 0:
            lib.PQfreemem(buf)
        elif n == 0:
            yield fd, READ
            if not lib.PQconsumeInput(ptr):
                raise psycopg2.OperationalError(_libpq.error_message(ptr))
        elif n == -1:
            return
        else:
            raise psycopg2.OperationalError(_libpq.error_message(ptr))
