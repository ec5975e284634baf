"""Large objects that cooperate: psycopg2's ``connection.lobject()`` rebuilt on server functions.

psycopg2 refuses ``lobject()`` in green mode because its implementation calls libpq's blocking
``lo_*`` client functions. Every one of those is a thin wrapper around a server-side SQL function
(``lo_open``, ``loread``, ``lowrite``, ``lo_lseek64``...), so running those functions through
psycopg2's own ``execute`` gives the same behaviour, cooperatively, with psycopg2's transaction
handling (``BEGIN`` first, errors, interrupts) for free. ``lo_import``/``lo_export`` are *client*
file operations in psycopg2; here they stream the local file through ``lowrite``/``loread`` in
chunks, so memory stays flat.

psycopg2 invalidates a large object when its transaction ends ("lobject isn't valid anymore");
descriptors are per transaction on the server too. We remember the transaction's start time
(``now()``) and every statement checks it on the server, so a descriptor number reused by a later
transaction is never touched by mistake.
"""

from __future__ import annotations

import codecs
from typing import Any, Optional

import psycopg2
import psycopg2.extensions as ext

from . import _guard, _pgerror
from ._classes import derived

__all__ = ["LargeObject", "green_lobject_class", "open_lobject"]

INV_WRITE = 0x20000
INV_READ = 0x40000

_READ, _WRITE, _BINARY, _TEXT = 1, 2, 4, 8

#: Chunk size for reads of unknown length and for import/export (one ``loread``/``lowrite`` each).
CHUNK = 1 << 20


def _parse_mode(mode: str) -> int:
    """psycopg2's mode grammar: ``[r|w|rw|n][t|b]``, default read, text."""
    rv, pos = 0, 0
    if mode.startswith("rw"):
        rv, pos = _READ | _WRITE, 2
    elif mode[:1] == "r":
        rv, pos = _READ, 1
    elif mode[:1] == "w":
        rv, pos = _WRITE, 1
    elif mode[:1] == "n":
        pos = 1
    else:
        rv = _READ
    if mode[pos : pos + 1] == "t":
        rv, pos = rv | _TEXT, pos + 1
    elif mode[pos : pos + 1] == "b":
        rv, pos = rv | _BINARY, pos + 1
    else:
        rv |= _TEXT
    if pos != len(mode):
        raise ValueError(f"bad mode for lobject: '{mode}'")
    return rv


def _unparse_mode(mode: int) -> str:
    s = ""
    if mode & _READ:
        s += "r"
    if mode & _WRITE:
        s += "w"
    if not s:
        return "n"
    return s + ("t" if mode & _TEXT else "b")


class LargeObject:
    """psycopg2's ``lobject`` API: ``read``, ``write``, ``seek``, ``tell``, ``truncate``, ``close``,
    ``unlink``, ``export``; ``oid``, ``mode``, ``closed``. Offsets beyond 2 GB use the ``*64``
    server functions. Subclass it and pass ``lobject_factory=`` to add behaviour."""

    def __init__(
        self,
        conn: Any,
        oid: int = 0,
        mode: Optional[str] = "",
        new_oid: int = 0,
        new_file: Optional[str] = None,
    ) -> None:
        self.fd = -1
        self.oid = 0
        self.mode = ""
        self._conn = conn
        self._txn: Any = None
        if conn.closed:
            raise psycopg2.InterfaceError("connection already closed")
        if conn.autocommit:
            raise psycopg2.ProgrammingError("can't use a lobject outside of transactions")
        parsed = _parse_mode(mode or "")  # None: psycopg2's default mode, like ""
        self._cur = ext.cursor(conn)
        self._codec = codecs.lookup(ext.encodings.get(conn.encoding, conn.encoding)).name
        if not oid:
            if new_file:
                oid = self._import(new_file)
            elif new_oid:
                oid = self._one("SELECT lo_create(%s)", (new_oid,))
            else:
                oid = self._one("SELECT lo_creat(-1)")
            parsed = (parsed & ~_READ) | _WRITE
        self.oid = int(oid)
        pgmode = (INV_READ if parsed & _READ else 0) | (INV_WRITE if parsed & _WRITE else 0)
        if pgmode:
            row = self._row("SELECT lo_open(%s, %s), now()", (self.oid, pgmode))
            self.fd, self._txn = row[0], row[1]
        else:
            self._txn = self._one("SELECT now()")
        self._mode = parsed
        self.mode = _unparse_mode(parsed)

    # -- psycopg2's API ----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return bool(self.fd < 0 or self._conn.closed)

    def read(self, size: int = -1) -> Any:
        """Read at most ``size`` bytes (all to the end when negative): ``str`` in text mode."""
        self._check()
        if size < 0:
            where = self._op("lo_tell64(%s)", ())
            end = self._op("lo_lseek64(%s, 0, 2)", ())
            self._op("lo_lseek64(%s, %s, 0)", (where,))
            size = end - where
        parts = []
        while size > 0:
            n = min(size, 0x7FFFFFFF)
            data = bytes(self._op("loread(%s, %s)", (n,)))
            parts.append(data)
            size -= n
            if len(data) < n:
                break
        raw = b"".join(parts)
        if self._mode & _BINARY:
            return raw
        return raw.decode(self._codec)

    def write(self, data: Any) -> int:
        """Write ``str`` (encoded with the connection encoding) or ``bytes``; return bytes written."""
        self._check()
        if isinstance(data, str):
            data = data.encode(self._codec)
        elif not isinstance(data, bytes):
            raise TypeError(f"lobject.write requires a string; got {type(data).__name__} instead")
        return int(self._op("lowrite(%s, %s)", (psycopg2.Binary(data),)))

    def seek(self, offset: int, whence: int = 0) -> int:
        self._check()
        return int(self._op("lo_lseek64(%s, %s, %s)", (offset, whence)))

    def tell(self) -> int:
        self._check()
        return int(self._op("lo_tell64(%s)", ()))

    def truncate(self, len: int = 0) -> None:
        self._check()
        self._op("lo_truncate64(%s, %s)", (len,))

    def close(self) -> None:
        """Close the descriptor; closing twice, or after the transaction ended, is a no-op."""
        if self.closed or self._conn.autocommit or not self._same_txn_local():
            return  # as psycopg2: the transaction's end closed it on the server already
        fd, self.fd = self.fd, -1
        self._run("SELECT CASE WHEN now() = %s THEN lo_close(%s) END", (self._txn, fd))

    def unlink(self) -> None:
        """Close, then delete the large object on the server."""
        self._level0()
        self.close()
        self._run("SELECT lo_unlink(%s)", (self.oid,))

    def export(self, filename: str) -> None:
        """Write the large object's content to the *client* file ``filename`` (like libpq's
        ``lo_export``), streamed in chunks through a descriptor of its own."""
        self._level0()
        fd = self._one("SELECT lo_open(%s, %s)", (self.oid, INV_READ))
        try:
            with open(filename, "wb") as f:
                while True:
                    data = bytes(self._one("SELECT loread(%s, %s)", (fd, CHUNK)))
                    if not data:
                        break
                    f.write(data)
        finally:
            if not self._conn.closed and self._conn.status != ext.STATUS_READY:
                self._run("SELECT lo_close(%s)", (fd,))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} object at {id(self):#x}; closed: {int(self.closed)}>"

    __str__ = __repr__

    # -- helpers -----------------------------------------------------------------------------------

    def _import(self, filename: str) -> int:
        with open(filename, "rb") as f:
            oid = int(self._one("SELECT lo_creat(-1)"))
            fd = self._one("SELECT lo_open(%s, %s)", (oid, INV_WRITE))
            while True:
                data = f.read(CHUNK)
                if not data:
                    break
                self._run("SELECT lowrite(%s, %s)", (fd, psycopg2.Binary(data)))
            self._run("SELECT lo_close(%s)", (fd,))
        return oid

    def _level0(self) -> None:
        if self._conn.autocommit:
            raise psycopg2.ProgrammingError("can't use a lobject outside of transactions")

    def _same_txn_local(self) -> bool:
        """False when psycopg2 itself knows the transaction ended (no round trip needed); a
        prepared two-phase transaction counts as ended, as psycopg2 invalidates lobjects then."""
        return self._conn.status not in (ext.STATUS_READY, ext.STATUS_PREPARED)

    def _check(self) -> None:
        if self.closed:
            raise psycopg2.InterfaceError("lobject already closed")
        self._level0()
        if not self._same_txn_local():
            raise psycopg2.ProgrammingError("lobject isn't valid anymore")

    def _op(self, expr: str, args: tuple[Any, ...]) -> Any:
        """``expr`` on this descriptor, run only if still in the transaction that opened it."""
        row = self._row(f"SELECT CASE WHEN now() = %s THEN {expr} END", (self._txn, self.fd, *args))
        if row[0] is None:
            raise psycopg2.ProgrammingError("lobject isn't valid anymore")
        return row[0]

    def _one(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        return self._row(sql, args)[0]

    def _row(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        self._run(sql, args)
        return self._cur.fetchone()

    def _run(self, sql: str, args: tuple[Any, ...] = ()) -> None:
        conn = self._conn
        with _guard.using(conn):
            try:
                self._cur.execute(sql, args)
            except psycopg2.extensions.QueryCanceledError:
                raise  # a timeout() deadline or an interrupt: keep its class
            except psycopg2.DatabaseError as e:
                if type(e) is psycopg2.OperationalError:
                    raise
                # psycopg2's lo_* wrappers report every server error as a plain OperationalError.
                raise _as_operational(e) from e


def _as_operational(e: psycopg2.Error) -> psycopg2.OperationalError:
    """psycopg2's class for a failed ``lo_*`` call, keeping the server's fields: ``pgcode`` and a
    ``diag`` (handed over from ``e``, which stays the ``__cause__``)."""
    err = psycopg2.OperationalError(e.pgerror or str(e))  # psycopg2 keeps "ERROR:  " here
    try:
        err.__setstate__({"pgerror": e.pgerror, "pgcode": e.pgcode})  # type: ignore[no-untyped-call]
    except Exception:  # noqa: BLE001
        pass
    _pgerror.move_result(e, err)
    return err


def open_lobject(
    conn: Any,
    oid: int = 0,
    mode: Optional[str] = "",
    new_oid: int = 0,
    new_file: Optional[str] = None,
    lobject_factory: Any = None,
) -> Any:
    """What ``connection.lobject()`` does once patched; without a wait callback, psycopg2's own.

    ``lobject_factory`` may subclass :class:`LargeObject` or psycopg2's C ``lobject``: the latter
    is combined with :class:`LargeObject` (see :func:`green_lobject_class`), so ``isinstance``
    holds and the subclass's own methods keep working on top of cooperative I/O.
    """
    if ext.get_wait_callback() is None and (lobject_factory is None or not _is_ours(lobject_factory)):
        return ext.connection.lobject(conn, oid, mode, new_oid, new_file, lobject_factory or ext.lobject)
    if conn.status == ext.STATUS_PREPARED:
        raise psycopg2.ProgrammingError("lobject cannot be used with a prepared two-phase transaction")
    factory = green_lobject_class(lobject_factory or LargeObject)
    if not _is_ours(factory):
        raise psycopg2.NotSupportedError(
            f"lobject_factory={factory!r} is not a class: psycogreen can only make classes cooperative "
            "(subclasses of psycopg2.extensions.lobject or psycogreen.lobject.LargeObject)"
        )
    return factory(conn, oid, mode, new_oid, new_file)


def _is_ours(factory: Any) -> bool:
    return isinstance(factory, type) and issubclass(factory, LargeObject)


class _GreenCLargeObject(LargeObject, ext.lobject):
    """:class:`LargeObject` that is also a psycopg2 C ``lobject``: the base of the classes made for
    ``lobject_factory=`` subclasses of psycopg2's lobject. Every method and attribute psycopg2's
    lobject has is defined by :class:`LargeObject`, which comes first in the MRO, so the C part is
    never initialised or called (its ``__init__`` would run the blocking ``lo_open``).
    """

    # Plain class attributes shadow the C type's read-only getters, so instances can set them.
    oid: int = 0
    mode: str = ""


_GreenCLargeObject.__name__ = _GreenCLargeObject.__qualname__ = "lobject"

_lobject_classes: dict[type, type] = {}


def green_lobject_class(factory: Any) -> Any:
    """The cooperative class for ``lobject_factory``: itself if it already is one, a subclass of it
    and :class:`_GreenCLargeObject` (cached) if it subclasses psycopg2's C ``lobject``; any other
    value is returned unchanged (and refused by :func:`open_lobject`)."""
    if not isinstance(factory, type) or _is_ours(factory) or not issubclass(factory, ext.lobject):
        return factory
    if factory is ext.lobject:
        return _GreenCLargeObject
    return derived(_lobject_classes, factory, factory, (factory, _GreenCLargeObject))
