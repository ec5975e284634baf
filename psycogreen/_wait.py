"""The one wait loop: drives ``_core`` generators through the current waiter.

It owns the two things that must be written once: *deadlines* (``psycogreen.timeout()`` and connect
deadlines) and *interruption* (``gevent.Timeout``, ``GreenletExit``, ``eventlet.Timeout``,
``KeyboardInterrupt``, task cancellation). On either, the statement is cancelled on the server, the
generator is drained until libpq is idle again, and only then is the exception delivered — so the
server never keeps running a query nobody waits for, and the connection survives.

psycopg2 closes a connection whenever its wait callback raises. So for connections of psycogreen's
connection classes, the callback does *not* raise: it parks the exception on the connection and
returns; psycopg2 then sees the server's "canceling statement due to user request" (or a normal
result if the query won the race), and the connection method wrapper raises the parked exception.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Optional

import psycopg2

from . import _deadline, _libpq
from ._core import READ, RV, WRITE, PQGen
from ._core.generators import cancel_blocking, cancel_nonblocking, poll_conn, poll_conn_after
from ._waiters import Waiter

try:
    from greenlet import getcurrent as _getcurrent
except ImportError:  # pragma: no cover - greenlet ships with gevent and eventlet
    _getcurrent = None  # type: ignore[assignment]

logger = logging.getLogger("psycogreen")

_monotonic = time.monotonic


class _State:
    """The process-wide choice made by ``patch()``."""

    waiter: Optional[Waiter] = None
    cancel_grace: float = _deadline.DEFAULT_CANCEL_GRACE


state = _State()


def current_waiter() -> Waiter:
    """The waiter for the running context: a bridge greenlet carries its own, else the patched one."""
    if _getcurrent is not None:
        w = getattr(_getcurrent(), "psycogreen_waiter", None)
        if w is not None:
            return w  # type: ignore[no-any-return]
    w = state.waiter
    if w is None:
        from ._waiters.blocking import BlockingWaiter

        w = state.waiter = BlockingWaiter()
    return w


class Control:
    """Shared between a driver and the generator it drives.

    ``interrupt`` is set to the exception that stopped waiting, so a generator that can abort more
    cleverly than a server-side cancel (COPY FROM STDIN ends the copy with an error) can see it.
    """

    __slots__ = ("interrupt",)

    def __init__(self) -> None:
        self.interrupt: Optional[BaseException] = None


def deadline_error(seconds: float) -> BaseException:
    from .errors import QueryTimeout

    return QueryTimeout(
        f"the operation did not complete within the {seconds:g} s deadline set by "
        "psycogreen.timeout() and was cancelled on the server; the connection is still usable "
        "(roll back if a transaction was open); raise the timeout if the work needs longer"
    )


def drive(
    gen: PQGen[RV],
    conn: Any = None,
    *,
    control: Optional[Control] = None,
    on_interrupt: Optional[Callable[[], None]] = None,
    keep: bool = False,
    waiter: Optional[Waiter] = None,
    in_callback: bool = False,
) -> RV:
    """Run ``gen`` to completion, waiting cooperatively; return its value.

    On an interrupt or an expired ``timeout()`` deadline: cancel on the server (``on_interrupt``, by
    default a non-blocking cancel of ``conn``), drain ``gen`` within the cancel grace period, then
    raise the exception — or, with ``keep=True``, park it on ``conn`` and return normally (see the
    module docstring).
    """
    if waiter is None:
        waiter = current_waiter()
    wait_fd = waiter.wait_fd
    limit = _deadline._op_deadline.get()
    try:
        fd, events = next(gen)
        if limit is None:
            while True:
                ready = wait_fd(fd, events)
                fd, events = gen.send(ready)
        else:
            deadline = limit[0]
            while True:
                remaining = deadline - _monotonic()
                ready = wait_fd(fd, events, remaining) if remaining > 0 else 0
                if not ready:
                    raise deadline_error(limit[1])
                fd, events = gen.send(ready)
    except StopIteration as stop:
        rv: RV = stop.value
        return rv
    except BaseException as exc:  # noqa: BLE001 - an interrupt of any kind
        if isinstance(exc, psycopg2.Error) and not _is_timeout(exc):
            raise  # the conversation itself failed: nothing to cancel
        late: RV = _interrupted(gen, conn, exc, waiter, control, on_interrupt, keep, in_callback, fd, events)
        return late


def _is_timeout(exc: BaseException) -> bool:
    from .errors import QueryTimeout

    return isinstance(exc, QueryTimeout)


def _interrupted(
    gen: PQGen[Any],
    conn: Any,
    exc: BaseException,
    waiter: Waiter,
    control: Optional[Control],
    on_interrupt: Optional[Callable[[], None]],
    keep: bool,
    in_callback: bool,
    fd: int,
    events: int,
) -> Any:
    grace = state.cancel_grace
    grace_end = _monotonic() + grace
    if control is not None:
        control.interrupt = exc
    logger.debug("interrupted by %r: cancelling on the server", exc)
    try:
        if on_interrupt is not None:
            on_interrupt()
        elif conn is not None:
            cancel(conn, waiter, grace_end)
    except BaseException as e:  # noqa: BLE001 - the cancel could not be sent: draining decides
        logger.debug("could not send the cancel: %r", e)
    failure: Optional[BaseException] = None
    try:
        # Drain: let libpq read the outcome so the connection is idle again.
        while True:
            remaining = grace_end - _monotonic()
            if remaining <= 0:
                raise _GraceExpired()
            try:
                ready = waiter.wait_fd(fd, events, remaining, True)
            except BaseException:  # noqa: BLE001 - a second interrupt while draining: keep draining
                continue
            if ready:
                fd, events = gen.send(ready)
    except StopIteration:
        pass
    except _GraceExpired:
        gen.close()
        logger.warning(
            "the server did not confirm the cancel within %.1f s after %r; closing the connection",
            grace,
            exc,
        )
        failure = psycopg2.OperationalError(
            f"the server did not confirm the cancel within {grace:g} s (is the network down?); "
            "the connection was closed; set PSYCOGREEN_CANCEL_GRACE to wait longer"
        )
    except psycopg2.Error as e:
        failure = e  # the conversation broke while draining
    try:
        if failure is None:
            if keep:
                conn._pg_pending = exc
                return None
            raise exc
        # The connection cannot be trusted any more.
        if in_callback:
            # Raising from psycopg2's wait callback makes psycopg2 close the connection itself.
            if keep:
                conn._pg_pending = exc
                raise failure
            raise exc
        _close_quietly(conn)
        raise exc
    finally:
        # No local may keep the exception (and through its traceback, this frame) alive.
        del exc, failure


class _GraceExpired(Exception):
    pass


def _close_quietly(conn: Any) -> None:
    if conn is None:
        return
    try:
        conn.close()
    except Exception:  # noqa: BLE001
        pass


def cancel(conn: Any, waiter: Optional[Waiter] = None, deadline: Optional[float] = None) -> None:
    """Cancel the statement running on ``conn`` without blocking the hub/loop.

    libpq >= 17: the non-blocking cancel protocol, driven by the waiter. Older libpq: the blocking
    ``PQcancel`` in the framework's native thread pool, with the GIL released.
    """
    if waiter is None:
        waiter = current_waiter()
    try:
        ptr = _libpq.pgconn(conn)
    except psycopg2.Error:
        return
    if _libpq.HAS_NONBLOCKING_CANCEL:
        gen = cancel_nonblocking(ptr)
        fd = -1
        try:
            fd, events = next(gen)
            waiter.forget_fd(fd)  # the cancel's own new socket: see _adopt()
            while True:
                remaining = None if deadline is None else deadline - _monotonic()
                if remaining is not None and remaining <= 0:
                    raise psycopg2.OperationalError("cancel request timed out")
                try:
                    ready = waiter.wait_fd(fd, events, remaining, True)
                except BaseException:  # noqa: BLE001 - shielded: finish sending the cancel
                    continue
                if ready:
                    fd, events = gen.send(ready)
        except StopIteration:
            return
        finally:
            if fd >= 0:
                waiter.forget_fd(fd)  # closed by gen.close(): nothing may stay cached for it
            gen.close()
    else:
        try:
            waiter.run_in_thread(cancel_blocking, ptr)
        except psycopg2.Error:
            raise
        except BaseException as e:  # noqa: BLE001
            logger.debug("interrupted while sending a cancel: %r", e)


def wait_callback(conn: Any, waiter: Optional[Waiter] = None) -> None:
    """The process-wide psycopg2 wait callback installed by ``psycogreen.patch()``.

    While connecting it enforces the connect deadline; otherwise it drives ``conn.poll()`` through
    :func:`drive`, parking interrupts on psycogreen connections inside a guarded call.
    """
    connecting = _deadline._connecting.get()
    if connecting is None and conn.status == _STATUS_SETUP:
        connecting = _NO_DEADLINE  # a connection made outside psycopg2.connect()
    if waiter is None:
        waiter = current_waiter()
    if connecting is not None:
        _connect_wait(conn, connecting, waiter)
        return
    if _deadline._op_deadline.get() is not None:
        drive(poll_conn(conn), conn, keep=getattr(conn, "_pg_depth", 0) > 0, waiter=waiter, in_callback=True)
        return
    # The hot path (every query, no deadline): the trivial poll loop of poll_conn(), inlined, because
    # creating, resuming and finishing a generator plus drive()'s bookkeeping cost a measurable part
    # of the client CPU per query (see docs/benchmarks.md). Everything else (an unexpected poll
    # state, an interrupt) is handed to the general machinery in the state reached, so the protocol
    # and interrupt logic stay written once.
    wait_fd = waiter.wait_fd
    poll = conn.poll
    fd = events = 0
    try:
        while True:
            polled = poll()
            if polled == _POLL_OK:
                return
            if polled == _POLL_READ:
                events = READ
            elif polled == _POLL_WRITE:
                events = WRITE
            else:
                break
            fd = conn.fileno()
            wait_fd(fd, events)
    except psycopg2.Error:
        raise
    except BaseException as exc:  # noqa: BLE001 - an interrupt: drive() semantics from here on
        if not events:
            raise
        gen = poll_conn_after(conn, fd, events)
        next(gen)
        keep = getattr(conn, "_pg_depth", 0) > 0
        _interrupted(gen, conn, exc, waiter, None, None, keep, True, fd, events)
        return
    drive(poll_conn(conn), conn, keep=getattr(conn, "_pg_depth", 0) > 0, waiter=waiter, in_callback=True)


_POLL_OK = psycopg2.extensions.POLL_OK
_POLL_READ = psycopg2.extensions.POLL_READ
_POLL_WRITE = psycopg2.extensions.POLL_WRITE


_STATUS_SETUP = psycopg2.extensions.STATUS_SETUP
_NO_DEADLINE = _deadline.ConnectDeadline(None, "server")


def _connect_wait(conn: Any, connecting: _deadline.ConnectDeadline, waiter: Waiter) -> None:
    """Wait while connecting. There is nothing to cancel yet, so an interrupt simply propagates and
    psycopg2 closes the half-open connection. The deadline is the earlier of connect_timeout and
    timeout(). Exceptions are built at the raise so no frame keeps one alive (and with it the socket).

    Every socket libpq opens is first seen here, so this is where the waiter is told to forget what
    it cached for that fd number (see :func:`_adopt`); and when the attempt fails, the socket
    psycopg2 is about to close is forgotten too."""
    deadline = connecting.deadline
    limit = _deadline._op_deadline.get()
    by_timeout = limit is not None and (deadline is None or limit[0] < deadline)
    if by_timeout:
        assert limit is not None
        deadline = limit[0]
    gen = poll_conn(conn)
    sock: Optional[tuple[int, object]] = None
    try:
        fd, events = next(gen)
        while True:
            sock = _adopt(waiter, fd, sock)
            if deadline is None:
                ready = waiter.wait_fd(fd, events)
            else:
                remaining = deadline - _monotonic()
                ready = waiter.wait_fd(fd, events, remaining) if remaining > 0 else 0
                if not ready:
                    if by_timeout:
                        assert limit is not None
                        raise deadline_error(limit[1])
                    raise psycopg2.OperationalError(
                        f"connection to {connecting.target} failed: timeout expired\n"
                    )
            fd, events = gen.send(ready)
    except StopIteration:
        return
    except BaseException:
        if sock is not None:
            waiter.forget_fd(sock[0])  # the attempt failed: its socket is (about to be) closed
        raise
    finally:
        gen.close()


def _socket_identity(fd: int) -> object:
    """What tells two sockets with the same fd number apart (device and inode of the socket)."""
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _adopt(waiter: Waiter, fd: int, known: Optional[tuple[int, object]]) -> tuple[int, object]:
    """Note the socket a connect is waiting on; on a socket not seen before, make the waiter forget
    its fd number.

    The OS hands out the lowest free fd number, so a new socket very often gets the number of one
    just closed: by a refused attempt, by libpq moving on to the next host or address inside
    ``PQconnectPoll`` (the number may even stay the same), by a connection dropped by the garbage
    collector. Whatever a waiter cached for that number (a gevent watcher, a loop reader) belongs to
    the dead socket. Sockets are born only here and in a cancel, so checking here costs the
    per-query path nothing; the ``fstat`` runs once per connect wait.
    """
    ident = _socket_identity(fd)
    if known is not None:
        if known[0] == fd and known[1] == ident:
            return known
        if known[0] != fd:
            waiter.forget_fd(known[0])  # libpq closed the previous attempt's socket
    waiter.forget_fd(fd)
    return (fd, ident)
