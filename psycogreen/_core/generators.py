"""Generators for the conversations every connection has: polling and cancelling."""

from __future__ import annotations

from typing import Any, Optional

import psycopg2
from psycopg2.extensions import POLL_OK, POLL_READ, POLL_WRITE

from .. import _libpq
from . import READ, WRITE, PQGen


def poll_conn(conn: Any) -> PQGen[None]:
    """Drive ``conn.poll()`` until psycopg2 says the current operation (connect, query) is done.

    This is all psycopg2's green mode asks of a wait callback. The fd is read on every round
    because it can change while connecting to a multi-host DSN.
    """
    poll = conn.poll
    while True:
        state = poll()
        if state == POLL_OK:
            return
        if state == POLL_READ:
            yield conn.fileno(), READ
        elif state == POLL_WRITE:
            yield conn.fileno(), WRITE
        else:
            raise psycopg2.OperationalError(f"bad result from poll: {state!r}")


def wait_socket(fd: int, events: int) -> PQGen[int]:
    """One wait for ``fd``, through the driver (so deadlines and interrupts apply): the events that
    became ready, or 0 when the driver's own ``timeout`` passed first. For the waits where nothing
    runs on the server and nothing is to be polled yet (``notifies()``, ``consume_stream``)."""
    ready: int = yield fd, events
    return ready


def poll_conn_after(conn: Any, fd: int, events: int) -> PQGen[None]:
    """:func:`poll_conn` resumed at a wait for ``(fd, events)``: the hand-over point of the wait
    callback's inlined fast path when something unusual (an interrupt) happens mid-wait."""
    yield fd, events
    yield from poll_conn(conn)


def cancel_nonblocking(pgconn_ptr: int) -> PQGen[None]:
    """Send a cancel request with libpq >= 17's ``PQcancelStart``/``PQcancelPoll``.

    The cancel travels on a new connection to the server; nothing here blocks. Errors are raised as
    ``OperationalError``; the caller decides whether they matter.
    """
    lib = _libpq.lib
    cconn = lib.PQcancelCreate(pgconn_ptr)
    if not cconn:
        raise psycopg2.OperationalError("cannot cancel: out of memory creating the cancel connection")
    try:
        if not lib.PQcancelStart(cconn):
            raise psycopg2.OperationalError(_cancel_error(cconn))
        while True:
            status = lib.PQcancelPoll(cconn)
            if status == _libpq.PGRES_POLLING_OK:
                return
            if status == _libpq.PGRES_POLLING_READING:
                yield lib.PQcancelSocket(cconn), READ
            elif status == _libpq.PGRES_POLLING_WRITING:
                yield lib.PQcancelSocket(cconn), WRITE
            else:
                raise psycopg2.OperationalError(_cancel_error(cconn))
    finally:
        lib.PQcancelFinish(cconn)


def cancel_blocking(pgconn_ptr: int) -> None:
    """libpq < 17: the blocking ``PQcancel``. Run it in a native thread so no hub freezes.

    ctypes releases the GIL for the call, unlike psycopg2's own ``connection.cancel()``.
    """
    error = send_cancel(cancel_handle(pgconn_ptr))
    if error is not None:
        raise psycopg2.OperationalError(error)


def cancel_handle(pgconn_ptr: int) -> int:
    """libpq's ``PGcancel`` for a connection: a copy of what a cancel request needs (address, backend
    key), independent of the connection from then on — so a thread may still be sending the cancel
    after the connection itself was closed. Free it with :func:`send_cancel`."""
    handle: int = _libpq.lib.PQgetCancel(pgconn_ptr)
    if not handle:
        raise psycopg2.OperationalError("cannot cancel: the connection is not open")
    return handle


def send_cancel(handle: int) -> Optional[str]:
    """Send the cancel request of ``handle`` with the blocking ``PQcancel`` and free the handle.

    Return None on success, else libpq's error message. libpq gives ``PQcancel`` no time limit of its
    own (only the connection's ``keepalives*`` and ``tcp_user_timeout`` settings reach its socket),
    so on a dead network this call returns only when TCP gives up: run it where that cannot hurt.
    """
    import ctypes

    lib = _libpq.lib
    try:
        buf = ctypes.create_string_buffer(256)
        if lib.PQcancel(handle, buf, 256):
            return None
        return "cancel request failed: " + buf.value.decode("utf-8", "replace").strip()
    finally:
        lib.PQfreeCancel(handle)


def _cancel_error(cconn: int) -> str:
    raw = _libpq.lib.PQcancelErrorMessage(cconn) or b"unknown error"
    return "cancel request failed: " + raw.decode("utf-8", "replace").strip()
