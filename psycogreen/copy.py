"""COPY that cooperates: psycopg2's ``copy_expert``/``copy_from``/``copy_to`` as functions.

With a wait callback registered psycopg2 refuses COPY ("copy_from cannot be used with an asynchronous
callback"). Once ``psycogreen.patch()`` is active, ``cursor.copy_from()`` & co. on psycogreen's
cursors call these functions, so unchanged code just works; they can also be called directly on
any psycopg2 cursor::

    from psycogreen.copy import copy_expert
    copy_expert(cur, "COPY t FROM STDIN WITH (FORMAT csv)", open("t.csv"))

Semantics follow psycopg2 2.9: the same SQL for ``copy_from``/``copy_to`` (table and column names
quoted as identifiers), ``file.read(size)``/``file.write(data)``, text files encoded/decoded with the
connection encoding, ``BEGIN`` first when not in autocommit, ``rowcount`` set from the server's
``COPY n``. Data is streamed chunk by chunk, so memory stays flat whatever the size.

When the *file* fails the errors are psycopg2's: a ``read()`` that raises, or returns anything but
str/bytes (``None`` included), aborts COPY FROM on the server, nothing is loaded, and the server's
``QueryCanceled`` ("COPY from stdin failed: error in .read() call: ZeroDivisionError division by
zero") is raised with the file's exception as its ``__cause__``; a ``write()`` that raises
propagates its own exception and the connection is left idle (the rest of the COPY OUT is drained
in a transaction, as psycopg2 does, and cancelled in autocommit). Interruptions (timeouts,
``gevent.Timeout``, task cancellation) propagate as themselves. When no wait callback is registered
these functions simply call psycopg2's own methods.
"""

from __future__ import annotations

import codecs
import io
from typing import Any, Callable, Iterable, Optional

import psycopg2
import psycopg2.extensions as ext
import psycopg2.sql

from . import _deadline, _libpq, _members, _wait
from ._core import PQGen
from ._core.copy import BadChunk, CopyGen, CopyOutcome, copy

__all__ = ["copy_expert", "copy_from", "copy_to"]

DEFAULT_SIZE = 8192


def copy_expert(cur: Any, sql: Any, file: Any, size: int = DEFAULT_SIZE) -> None:
    """Run a user-composed ``COPY ... FROM STDIN`` / ``TO STDOUT`` with ``file`` (psycopg2's
    ``cursor.copy_expert``). ``sql`` may be ``str``, ``bytes`` or a :mod:`psycopg2.sql` object."""
    if not hasattr(file, "read") and not hasattr(file, "write"):
        raise TypeError(
            "file must be a readable file-like object for COPY FROM; a writable file-like object for COPY TO."
        )
    if _native():
        ext.cursor.copy_expert(cur, sql, file, size)
        return
    _check(cur, "copy_expert")
    _run(cur, _sql_bytes(cur, sql), file, size)


def copy_from(
    cur: Any,
    file: Any,
    table: str,
    sep: str = "\t",
    null: str = "\\N",
    size: int = DEFAULT_SIZE,
    columns: Optional[Iterable[str]] = None,
) -> None:
    """Load ``file`` (text format) into ``table`` (psycopg2's ``cursor.copy_from``).

    As in psycopg2 2.9 the table name is quoted as one identifier: for ``schema.table`` use
    :func:`copy_expert` with :mod:`psycopg2.sql`.
    """
    if not hasattr(file, "read"):
        raise TypeError("argument 1 must have a .read() method")
    _check_str("table", table)
    if _native():
        ext.cursor.copy_from(cur, file, table, sep, null, size, columns)
        return
    _check(cur, "copy_from")
    query = _compose(cur, "COPY {}{} FROM stdin WITH DELIMITER AS {} NULL AS {}", table, columns, sep, null)
    _run(cur, query, file, size)


def copy_to(
    cur: Any,
    file: Any,
    table: str,
    sep: str = "\t",
    null: str = "\\N",
    columns: Optional[Iterable[str]] = None,
) -> None:
    """Write ``table`` (text format) to ``file`` (psycopg2's ``cursor.copy_to``)."""
    if not hasattr(file, "write"):
        raise TypeError("argument 1 must have a .write() method")
    _check_str("table", table)
    if _native():
        ext.cursor.copy_to(cur, file, table, sep, null, columns)
        return
    _check(cur, "copy_to")
    query = _compose(cur, "COPY {}{} TO stdout WITH DELIMITER AS {} NULL AS {}", table, columns, sep, null)
    _run(cur, query, file, 0)


# -- internals -------------------------------------------------------------------------------------


def _native() -> bool:
    """No wait callback: psycopg2's blocking COPY is allowed and exactly right."""
    return ext.get_wait_callback() is None


def _check_str(what: str, value: Any) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be str, not {type(value).__name__}")


def _check(cur: Any, name: str) -> None:
    if cur.closed or cur.connection.closed:
        raise psycopg2.InterfaceError("cursor already closed")
    if cur.connection.status == ext.STATUS_PREPARED:
        raise psycopg2.ProgrammingError(f"{name} cannot be used during a two-phase transaction")


def _compose(cur: Any, template: str, table: str, columns: Any, sep: str, null: str) -> bytes:
    """psycopg2's COPY statement, built from quoted parts (never pasted strings)."""
    for what, value in (("sep", sep), ("null", null)):
        _check_str(what, value)
    cols: psycopg2.sql.Composable = psycopg2.sql.SQL("")
    if columns is not None:
        names = [psycopg2.sql.Identifier(_as_str(c)) for c in columns]
        if names:
            cols = psycopg2.sql.SQL("({})").format(psycopg2.sql.SQL(",").join(names))
    query = psycopg2.sql.SQL(template).format(
        psycopg2.sql.Identifier(table), cols, psycopg2.sql.Literal(sep), psycopg2.sql.Literal(null)
    )
    return _sql_bytes(cur, query)


def _as_str(col: Any) -> str:
    if isinstance(col, bytes):
        return col.decode()
    if not isinstance(col, str):
        raise TypeError(f"column names must be str, not {type(col).__name__}")
    return col


def _codec(conn: Any) -> str:
    return codecs.lookup(ext.encodings.get(conn.encoding, conn.encoding)).name


def _sql_bytes(cur: Any, sql: Any) -> bytes:
    if isinstance(sql, psycopg2.sql.Composable):
        sql = sql.as_string(cur)
    if isinstance(sql, str):
        return sql.encode(_codec(cur.connection))
    if isinstance(sql, bytes):
        return sql
    raise TypeError(f"argument 1 must be a string or unicode object: got {type(sql).__name__} instead")


def begin_if_needed(conn: Any) -> None:
    """Open the transaction psycopg2 would open before a statement, *through psycopg2*, so its
    view (``status``, ``commit()``, ``rollback()``, isolation options) stays right."""
    if not conn.autocommit and conn.status == ext.STATUS_READY:
        ext.cursor(conn).execute("SELECT 1")


def _run(cur: Any, query: bytes, file: Any, size: int) -> None:
    conn = cur.connection
    codec = _codec(conn)
    begin_if_needed(conn)
    source = _make_source(file, size, codec) if hasattr(file, "read") else None
    sink = _make_sink(file, codec) if hasattr(file, "write") else None
    _members.set_member(cur, "query", query)
    _members.set_member(cur, "description", None)
    _members.set_member(cur, "rowcount", -1)
    outcome = run_copy(conn, query, source, sink, cancel_on_error=bool(conn.autocommit))
    _members.set_member(cur, "rowcount", outcome.rowcount)
    _members.set_member(cur, "statusmessage", "")
    _raise(outcome)


def _raise(outcome: CopyOutcome) -> None:
    """Surface a COPY aborted on our side the way blocking psycopg2 does.

    - ``read()`` failed: the server's QueryCanceled (it names the file's exception), chained
      ``from`` the file's exception so nothing is lost and ``except psycopg2.Error`` catches it;
    - ``write()`` failed: the file's own exception (psycopg2 raises it unchanged);
    - an interruption: itself, the server's answer as its ``__context__``.
    """
    error = outcome.error
    if error is None:
        return
    server = outcome.server_error
    if outcome.failed_in == "read" and server is not None:
        raise server from error
    if server is not None and error.__context__ is None:
        error.__context__ = server
    raise error


def run_copy(
    conn: Any,
    query: bytes,
    source: Optional[Callable[[], bytes]],
    sink: Optional[Callable[[bytes], Any]],
    cancel_on_error: bool = True,
) -> CopyOutcome:
    """Drive one COPY on ``conn`` cooperatively. Interrupts end COPY IN with ``PQputCopyEnd(err)``
    (no cancel needed) and cancel COPY OUT on the server; either way the connection stays usable
    and the interrupt is re-raised by :func:`psycogreen._wait.drive`."""
    ptr = _libpq.pgconn(conn)
    control = _wait.Control()
    outcome = CopyOutcome()

    def on_interrupt() -> None:
        # COPY FROM STDIN ends itself with an error message; anything else is cancelled.
        if outcome.direction != "in":
            _wait.cancel(conn, None, _deadline.grace_end())

    protocol = copy(
        ptr,
        query,
        control,
        outcome,
        reads=source is not None,
        writes=sink is not None,
        cancel_on_error=cancel_on_error,
    )
    return _wait.drive(with_file(protocol, source, sink), conn, control=control, on_interrupt=on_interrupt)


def with_file(
    protocol: CopyGen[CopyOutcome],
    source: Optional[Callable[[], bytes]],
    sink: Optional[Callable[[bytes], Any]],
) -> PQGen[CopyOutcome]:
    """The driver's half of a COPY: answer the protocol's requests for data (``source()``) and
    hand its rows to the file (``sink(rows)``) here, and pass its waits on to
    :func:`psycogreen._wait.drive`, which owns deadlines and interruptions.

    Whatever the file raises — its own error, or an interruption delivered inside ``read()`` /
    ``write()`` (``gevent.Timeout``, task cancellation while an async file awaits) — is sent back
    to the protocol as a value, which ends the COPY on the server and reports it in the outcome.
    """
    send = protocol.send
    try:
        request = next(protocol)
        while True:
            if isinstance(request, tuple):
                ready = yield request
                request = send(ready)
            elif isinstance(request, bytes):
                request = send(_write(sink, request))
            else:  # NEED_DATA: the next chunk
                request = send(_read(source))
    except StopIteration as stop:
        outcome: CopyOutcome = stop.value
        return outcome
    finally:
        protocol.close()


def _read(source: Any) -> Any:
    """The next chunk, or the exception the file raised (the protocol decides what it means)."""
    try:
        return source()
    except BaseException as e:  # noqa: BLE001 - an interruption inside the file is the file's failure too
        return e


def _write(sink: Any, rows: bytes) -> Optional[BaseException]:
    """None once ``rows`` are written, or the exception the file raised."""
    try:
        sink(rows)
    except BaseException as e:  # noqa: BLE001 - as in _read
        return e
    return None


def _make_source(file: Any, size: int, codec: str) -> Callable[[], bytes]:
    read = file.read

    def source() -> bytes:
        data = read(size)
        if isinstance(data, str):
            return data.encode(codec)
        if isinstance(data, (bytes, bytearray, memoryview)):
            return bytes(data)
        # psycopg2 aborts the COPY for None too: loading a partial file silently is never right
        raise BadChunk(
            f"file.read() returned {type(data).__name__}, expected str or bytes "
            "(an empty string or bytes marks the end of the file)"
        )

    return source


def _make_sink(file: Any, codec: str) -> Callable[[bytes], Any]:
    write = file.write
    if isinstance(file, io.TextIOBase):
        decode = codecs.getdecoder(codec)

        def sink(data: bytes) -> Any:
            return write(decode(data)[0])

        return sink
    return write  # type: ignore[no-any-return]
