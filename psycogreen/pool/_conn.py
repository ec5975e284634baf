"""What the pool knows and does about one connection, outside any decision: its bookkeeping
(:class:`Meta`), the liveness look on checkout, the restore on return, detaching after ``fork()``."""

from __future__ import annotations

import ctypes
import errno
import operator
import os
import random
import select
import socket
import sys
import time
from contextlib import contextmanager
from types import BuiltinFunctionType
from typing import Any, Callable, Iterator, Optional

import psycopg2
import psycopg2.extensions as ext

from .. import _deadline, _guard, _libpq

monotonic = time.monotonic

IDLE = ext.TRANSACTION_STATUS_IDLE
INTRANS = ext.TRANSACTION_STATUS_INTRANS
INERROR = ext.TRANSACTION_STATUS_INERROR

#: Bound on the pool's own round trips (checkout check, rollback and reset on return). They run
#: under this deadline instead of the caller's ``psycogreen.timeout()``: a caller whose deadline just
#: expired still gets its connection rolled back and reused rather than thrown away.
HOUSEKEEPING_TIMEOUT = 10.0


class Meta:
    """The pool's bookkeeping for one connection it owns (psycopg2 connections take no attributes)."""

    __slots__ = (
        "conn",
        "created",
        "expire_at",
        "idle_limit",
        "returned_at",
        "out_since",
        "settings",
        "poller",
    )

    def __init__(self, conn: Any, max_lifetime: float, max_idle: float) -> None:
        now = monotonic()
        self.conn = conn
        self.created = now
        # Jitter: connections made together must not all expire together.
        self.expire_at = now + max_lifetime * random.uniform(0.9, 1.0)
        self.idle_limit = max_idle * random.uniform(0.9, 1.0)
        self.returned_at = now
        self.out_since = 0.0
        # As configured: what every borrower must find (restored on return when changed).
        self.settings = settings_of(conn)
        self.poller = idle_poller(conn)


#: The psycopg2-side session settings a borrower can change, read without a round trip, as a
#: tuple (``settings_of(conn)``). An ``attrgetter``: one C call, as it runs on every return.
settings_of: Callable[[Any], tuple[Any, ...]] = operator.attrgetter(
    "autocommit", "isolation_level", "readonly", "deferrable", "encoding", "cursor_factory"
)


def _norm_encoding(name: Optional[str]) -> str:
    return "".join(ch for ch in (name or "") if ch.isalnum()).upper()


def encoding_agrees(conn: Any) -> bool:
    """Does the server's ``client_encoding`` (as last reported to libpq) match psycopg2's belief?"""
    server, believed = conn.get_parameter_status("client_encoding"), conn.encoding
    if server is None:  # not reported (a proxy that hides it): nothing to compare, nothing to do
        return True
    return bool(server == believed or _norm_encoding(server) == _norm_encoding(believed))


def returned_clean(conn: Any, meta: Meta) -> bool:
    """Came back exactly as configured (the common case): nothing to roll back or restore.
    (The encoding's usual case is compared inline: this runs on every return.)"""
    return (
        conn.get_transaction_status() == IDLE
        and settings_of(conn) == meta.settings
        and not conn.notifies
        and not conn.notices
        and (conn.get_parameter_status("client_encoding") == conn.encoding or encoding_agrees(conn))
        and not _guard.parked(conn)
    )


def _libc_peek() -> Any:
    """libc's ``recv`` for a one-byte ``MSG_PEEK | MSG_DONTWAIT`` look at a socket (None where that
    is not available): the cheapest way to learn that nothing arrived on an idle connection.
    Called through ctypes, so monkey-patching never turns it into a green wait."""
    flags = getattr(socket, "MSG_PEEK", 0) | getattr(socket, "MSG_DONTWAIT", 0)
    if not getattr(socket, "MSG_DONTWAIT", 0):
        return None
    try:
        recv = ctypes.CDLL(None, use_errno=True).recv
    except (OSError, AttributeError):
        return None
    recv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    recv.restype = ctypes.c_ssize_t
    shared = ctypes.create_string_buffer(1)  # for the common look, whose byte is never read

    def peek(fd: int, want_byte: bool = False) -> tuple[int, bytes]:
        if not want_byte:
            return recv(fd, shared, 1, flags), b""
        own = ctypes.create_string_buffer(1)
        n = recv(fd, own, 1, flags)
        return n, own.raw

    return peek


_peek = _libc_peek()
_NOTHING_YET = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR)


def _c_poll() -> Any:
    """``select.poll`` as CPython made it: gevent replaces it and eventlet removes it when they
    monkey-patch, so ask them for the original (None if it cannot be had: the peek alone is used)."""
    poll = getattr(select, "poll", None)
    if isinstance(poll, BuiltinFunctionType):
        return poll
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None:
        poll = monkey.get_original("select", "poll")
    else:
        patcher = sys.modules.get("eventlet.patcher")
        poll = None if patcher is None else getattr(patcher.original("select"), "poll", None)
    return poll if isinstance(poll, BuiltinFunctionType) else None


_POLL_ANY = getattr(select, "POLLIN", 1) | getattr(select, "POLLPRI", 2)


def idle_poller(conn: Any) -> Any:
    """A C ``poll`` object watching the connection's socket, for the cheapest "did anything
    arrive?" look (one C call, no ctypes); None where there is no C poll."""
    poll = _c_poll()
    if poll is None:
        return None
    try:
        poller = poll()
        poller.register(conn.fileno(), _POLL_ANY)
    except (OSError, ValueError, psycopg2.Error):
        return None
    return poller


def socket_alive(conn: Any, poller: Any = None) -> bool:
    """Look at what the server sent while the connection sat idle, without a round trip and
    without ever waiting: a terminated backend leaves its FATAL message, then EOF.

    With the connection's ``poller`` (see :func:`idle_poller`), a ``poll`` with no timeout says
    "nothing arrived, no EOF, no error" in one C call: the common case ends there. Otherwise, a
    one-byte peek (one syscall, a few us): nothing arrived is the common case and ends
    here; an ErrorResponse (``E``, unencrypted connections) means the server is ending the
    session. Anything else is read by libpq (``PQconsumeInput``, twice: the FATAL message, then
    the EOF) and ``PQstatus`` says whether the connection survived.
    """
    if poller is not None and not poller.poll(0):
        return True
    try:
        ptr = _libpq.pgconn(conn)
    except psycopg2.Error:
        return False
    if _peek is not None:
        try:
            fd = conn.fileno()
        except psycopg2.Error:
            return False
        n, _ = _peek(fd)
        if n < 0 and ctypes.get_errno() in _NOTHING_YET:
            return True
        if n == 0:
            return False  # EOF: the server closed the connection
        if n > 0 and conn.info.ssl_in_use is False and _peek(fd, True)[1] == b"E":
            # An ErrorResponse to an idle session is the server ending it ("terminating
            # connection due to administrator command"); its EOF may still be on the way.
            return False
    for _ in range(2):
        if not _libpq.lib.PQconsumeInput(ptr) or _libpq.lib.PQstatus(ptr) != 0:
            return False
    return True


def select_one(conn: Any) -> None:
    """One round trip outside any transaction, leaving autocommit as it was."""
    was = conn.autocommit
    conn.autocommit = True
    try:
        conn.cursor().execute("select 1")
    finally:
        if not conn.closed:
            conn.autocommit = was


def detach(conn: Any) -> None:
    """Close this process's copy of a connection inherited through ``fork()`` without telling the
    server: the parent still uses that session, and ``close()`` would send it a Terminate message.

    The socket's descriptor is first pointed at /dev/null (``dup2``), so whatever libpq writes while
    closing goes nowhere and the descriptor number is released with it.
    """
    try:
        fd = conn.fileno()
    except Exception:  # noqa: BLE001 - closed already
        fd = -1
    if fd >= 0:
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)
    close_quietly(conn)


def close_quietly(conn: Any) -> None:
    try:
        conn.close()
    except Exception:  # noqa: BLE001 - a broken connection may fail to close; it is gone anyway
        pass


@contextmanager
def own_deadline(seconds: float = HOUSEKEEPING_TIMEOUT) -> Iterator[None]:
    """The pool's own round trips run under their own deadline, not the caller's."""
    with _deadline.override(seconds):
        yield


def safe_conninfo(conninfo: str, kwargs: Optional[dict[str, Any]] = None) -> str:
    """``conninfo`` + ``kwargs`` as ``key=value`` pairs without the password, for logs and errors."""
    try:
        params = dict(ext.parse_dsn(conninfo)) if conninfo else {}
    except psycopg2.Error:
        return "<unparsable conninfo>"
    params.update({k: v for k, v in (kwargs or {}).items() if v is not None})
    params.pop("password", None)
    return " ".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "connection_factory")


def restore_settings(conn: Any, settings: tuple[Any, ...]) -> None:
    """Put back what a borrower changed on the psycopg2 connection: autocommit first (psycopg2
    applies the transaction characteristics differently in and out of autocommit), then isolation
    level, read-only and deferrable, the client encoding, the cursor factory, and empty
    notices/notifies. Each costs nothing unless it changed (a ``SET`` round trip at most)."""
    autocommit, isolation, readonly, deferrable, encoding, cursor_factory = settings
    if conn.autocommit != autocommit:
        conn.autocommit = autocommit
    if conn.isolation_level != isolation:
        conn.isolation_level = isolation
    if conn.readonly != readonly:
        conn.readonly = readonly
    if conn.deferrable != deferrable:
        conn.deferrable = deferrable
    if _norm_encoding(conn.encoding) != _norm_encoding(encoding):
        conn.set_client_encoding(encoding)
    if not encoding_agrees(conn):
        # The server's encoding changed behind psycopg2 (DISCARD ALL, RESET ALL, a raw SET):
        # psycopg2 would decode with the wrong codec. Tell the server what psycopg2 believes.
        was = conn.autocommit
        conn.autocommit = True
        try:
            conn.cursor().execute(
                "SELECT pg_catalog.set_config('client_encoding', %s, false)", (conn.encoding,)
            )
        finally:
            conn.autocommit = was
    if conn.cursor_factory is not cursor_factory:
        conn.cursor_factory = cursor_factory
    if conn.notices:
        conn.notices.clear()
    if conn.notifies:
        conn.notifies.clear()


def reapply_characteristics(conn: Any) -> None:
    """After a ``reset`` (``DISCARD ALL``, ``RESET ALL``): in autocommit, psycopg2 applies isolation
    level, read-only and deferrable as session defaults on the server (``default_transaction_*``),
    which the reset just cleared while psycopg2 still believes them set. Apply them again."""
    if not conn.autocommit:
        return  # outside autocommit they go with each BEGIN: nothing on the server to lose
    for name in ("isolation_level", "readonly", "deferrable"):
        value = getattr(conn, name)
        if value is not None:
            setattr(conn, name, None)  # psycopg2 skips a set to the value it believes in
            setattr(conn, name, value)
