"""A ctypes view of *the* libpq psycopg2 is linked with.

psycopg2 exposes ``connection.pgconn_ptr`` (the raw ``PGconn *``) but not the libpq functions that
green mode needs and psycopg2 does not wrap (non-blocking cancel, the COPY sub-protocol). Loading the
extension module itself with ``ctypes.CDLL`` resolves symbols through its own dependencies, so we
reach the very libpq psycopg2 uses: the one bundled by psycopg2-binary (libpq 17 today) or the
system one. Features are detected, never assumed: Debian's libpq 15 has no ``PQcancelStart``.

ctypes releases the GIL around foreign calls, which matters for the blocking fallbacks run in a
native thread pool.
"""

from __future__ import annotations

import ctypes
import os
from ctypes import c_char_p, c_int, c_void_p
from typing import Any

import psycopg2._psycopg as _psycopg

__all__ = [
    "HAS_NONBLOCKING_CANCEL",
    "LIBPQ_VERSION",
    "lib",
    "hot_function",
    "hot_pointer",
    "pgconn",
]

lib: Any = ctypes.CDLL(_psycopg.__file__)

# PostgresPollingStatusType
PGRES_POLLING_FAILED = 0
PGRES_POLLING_READING = 1
PGRES_POLLING_WRITING = 2
PGRES_POLLING_OK = 3

# ExecStatusType
PGRES_EMPTY_QUERY = 0
PGRES_COMMAND_OK = 1
PGRES_TUPLES_OK = 2
PGRES_COPY_OUT = 3
PGRES_COPY_IN = 4
PGRES_BAD_RESPONSE = 5
PGRES_NONFATAL_ERROR = 6
PGRES_FATAL_ERROR = 7
PGRES_COPY_BOTH = 8

# PGTransactionStatusType
PQTRANS_IDLE = 0
PQTRANS_ACTIVE = 1
PQTRANS_INTRANS = 2
PQTRANS_INERROR = 3
PQTRANS_UNKNOWN = 4


def _bind(name: str, restype: Any, argtypes: list[Any]) -> bool:
    fn = getattr(lib, name, None)
    if fn is None:
        return False
    fn.restype = restype
    fn.argtypes = argtypes
    return True


_bind("PQlibVersion", c_int, [])
_bind("PQsocket", c_int, [c_void_p])
_bind("PQstatus", c_int, [c_void_p])
_bind("PQerrorMessage", c_char_p, [c_void_p])
_bind("PQisBusy", c_int, [c_void_p])
_bind("PQconsumeInput", c_int, [c_void_p])
_bind("PQflush", c_int, [c_void_p])
_bind("PQsendQuery", c_int, [c_void_p, c_char_p])
_bind("PQgetResult", c_void_p, [c_void_p])
_bind("PQresultStatus", c_int, [c_void_p])
_bind("PQresultErrorMessage", c_char_p, [c_void_p])
_bind("PQresultErrorField", c_char_p, [c_void_p, c_int])
_bind("PQcmdTuples", c_char_p, [c_void_p])
_bind("PQcmdStatus", c_char_p, [c_void_p])
_bind("PQclear", None, [c_void_p])
_bind("PQputCopyData", c_int, [c_void_p, c_char_p, c_int])
_bind("PQputCopyEnd", c_int, [c_void_p, c_char_p])
_bind("PQgetCopyData", c_int, [c_void_p, ctypes.POINTER(c_void_p), c_int])
_bind("PQfreemem", None, [c_void_p])
_bind("PQgetlineAsync", c_int, [c_void_p, c_void_p, c_int])
_bind("PQparameterStatus", c_char_p, [c_void_p, c_char_p])
_bind("PQgetCancel", c_void_p, [c_void_p])
_bind("PQfreeCancel", None, [c_void_p])
_bind("PQcancel", c_int, [c_void_p, c_char_p, c_int])

_has_cancel_api = all(
    [
        _bind("PQcancelCreate", c_void_p, [c_void_p]),
        _bind("PQcancelStart", c_int, [c_void_p]),
        _bind("PQcancelPoll", c_int, [c_void_p]),
        _bind("PQcancelSocket", c_int, [c_void_p]),
        _bind("PQcancelErrorMessage", c_char_p, [c_void_p]),
        _bind("PQcancelFinish", None, [c_void_p]),
    ]
)


def hot_function(name: str, restype: Any) -> Any:
    """libpq function ``name`` for a hot loop, from the same library handle: no ``argtypes``
    (ctypes then skips converting each argument, most of the cost of a call) and the GIL kept
    during the call (releasing and retaking it costs more than a libpq call that only copies
    memory). Only for calls that never block, with ready-made ctypes objects or small ints as
    arguments: a wrong argument is not caught.
    """
    address: int = ctypes.cast(getattr(lib, name), c_void_p).value or 0
    return ctypes.PYFUNCTYPE(restype)(address)


def hot_pointer(address: int) -> Any:
    """``address`` as a ready-made pointer argument for :func:`hot_function` calls: ctypes passes
    it as is, where a ``c_void_p`` would be converted again on every call."""
    return c_void_p.from_param(address)


LIBPQ_VERSION: int = lib.PQlibVersion()

#: libpq >= 17 can cancel without blocking (``PQcancelStart``/``PQcancelPoll``).
#: ``PSYCOGREEN_CANCEL=thread`` forces the thread-pool fallback (to test the libpq < 17 path).
HAS_NONBLOCKING_CANCEL: bool = _has_cancel_api and os.environ.get("PSYCOGREEN_CANCEL") != "thread"


def pgconn(conn: Any) -> int:
    """The ``PGconn *`` of a psycopg2 connection, as an integer address."""
    ptr: int = conn.pgconn_ptr
    if not ptr:
        raise psycopg2_interface_error("connection already closed")
    return ptr


def psycopg2_interface_error(msg: str) -> Exception:
    import psycopg2

    return psycopg2.InterfaceError(msg)


def error_message(ptr: int) -> str:
    """libpq's last error message for a connection, decoded leniently."""
    raw = lib.PQerrorMessage(ptr) or b""
    return str(raw.decode("utf-8", "replace"))
