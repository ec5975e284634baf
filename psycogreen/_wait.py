"""The one wait loop: drives ``_core`` generators through the current waiter.

It owns the two things that must be written once: *deadlines* (``psycogreen.timeout()`` and connect
deadlines) and *interruption* (``gevent.Timeout``, ``GreenletExit``, ``eventlet.Timeout``,
``KeyboardInterrupt``, task cancellation). On either, the statement is cancelled on the server, the
generator is drained until libpq is idle again, and only then is the exception delivered — so the
server never keeps running a query nobody waits for, and the connection survives. Cancel and drain
share one bound, the cancel grace (:func:`psycogreen._deadline.cancel_grace`, 1 s by default): on a
dead network the connection is closed when it runs out, so a caller always gets control back within
its deadline plus the grace.

psycopg2 closes a connection whenever its wait callback raises. So for connections of psycogreen's
connection classes, the callback does *not* raise: it parks the exception on the connection and
returns; psycopg2 then sees the server's "canceling statement due to user request" (or a normal
result if the query won the race), and the connection method wrapper raises the parked exception.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Callable, Optional

import psycopg2

from . import _deadline, _guard, _libpq, _patch
from ._core import READ, RV, WRITE, PQGen
from ._core.generators import cancel_handle, cancel_nonblocking, poll_conn, poll_conn_after, send_cancel
from ._patch import current_waiter
from ._waiters import Waiter

logger = logging.getLogger("psycogreen")

_monotonic = time.monotonic


class Control:
    """Shared between a driver and the generator it drives.

    ``interrupt`` is set to the exception that stopped waiting, so a generator that can abort more
    cleverly than a server-side cancel (COPY FROM STDIN ends the copy with an error) can see it.
    """

    __slots__ = ("interrupt",)

    def __init__(self) -> None:
        self.interrupt: Optional[BaseException] = None


def deadline_error(seconds: float) -> BaseException:
    """The ``QueryTimeout`` of an expired ``timeout()`` deadline. What became of the statement is
    only known after the cancel: :func:`_settle` completes the message then."""
    from .errors import QueryTimeout

    exc = QueryTimeout(
        f"the operation did not complete within the {seconds:g} s deadline set by psycogreen.timeout()"
    )
    exc._pg_seconds = seconds  # type: ignore[attr-defined]
    return exc


def connect_deadline_error(seconds: float, target: str) -> BaseException:
    """A ``timeout()`` deadline that expired while connecting: nothing ran, nothing to cancel."""
    from .errors import QueryTimeout

    return QueryTimeout(
        f"connection to {target} failed: connect timed out: no connection within the {seconds:g} s "
        "deadline set by psycogreen.timeout() (the attempt was abandoned; raise the timeout if the "
        "server is slow to accept)"
    )


def _settle(exc: BaseException, outcome: str) -> None:
    """Complete the message of a ``QueryTimeout`` made by :func:`deadline_error` with what happened
    after the deadline (other interrupts are the caller's own objects and stay untouched)."""
    seconds = getattr(exc, "_pg_seconds", None)
    if seconds is None:
        return
    exc.args = (f"{exc.args[0]}; {outcome}",)
    exc._pg_seconds = None  # type: ignore[attr-defined]


_CANCELLED = (
    "it was cancelled on the server and the connection is still usable (roll back if a transaction "
    "was open); raise the timeout if the work needs longer"
)


def _not_confirmed(grace: float) -> str:
    return (
        f"the server did not confirm the cancel within {grace:g} s (is the network down?), so the "
        "connection was closed: open a new one (a pool replaces it by itself); "
        "PSYCOGREEN_CANCEL_GRACE or psycogreen.set_cancel_grace() waits longer"
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
    timeout: Optional[float] = None,
    idle: bool = False,
) -> RV:
    """Run ``gen`` to completion, waiting cooperatively; return its value.

    On an interrupt or an expired ``timeout()`` deadline: cancel on the server (``on_interrupt``, by
    default a non-blocking cancel of ``conn``), drain ``gen`` within the cancel grace period, then
    raise the exception — or, with ``keep=True``, park it on ``conn`` and return normally (see the
    module docstring and the table in :func:`_interrupted`).

    ``timeout`` bounds the wait itself, for callers with a budget of their own (``notifies()``, the
    keepalive of ``consume_stream``): when it passes first, the generator is sent 0 (nothing ready)
    and must return. ``idle=True`` says no statement runs on the server (the connection waits for
    the server to speak: a notification, a replication message), so an interrupt or an expired
    deadline ends the wait at once: nothing to cancel, nothing to drain.
    """
    if waiter is None:
        waiter = current_waiter()
    wait_fd = waiter.wait_fd
    limit = _deadline.current()
    fd = -1
    events = 0
    try:
        fd, events = next(gen)
        if limit is None and timeout is None:
            while True:
                ready = wait_fd(fd, events)
                fd, events = gen.send(ready)
        else:
            deadline, seconds = _bound(limit, timeout)
            while True:
                remaining = deadline - _monotonic()
                ready = wait_fd(fd, events, remaining) if remaining > 0 else 0
                if not ready and seconds is not None:
                    raise deadline_error(seconds)
                fd, events = gen.send(ready)
    except StopIteration as stop:
        rv: RV = stop.value
        return rv
    except BaseException as exc:  # noqa: BLE001 - an interrupt of any kind
        if isinstance(exc, psycopg2.Error) and not _is_timeout(exc):
            raise  # the conversation itself failed: nothing to cancel
        if not events:
            raise  # raised before the generator's first yield: nothing was waited on
        late: RV = _interrupted(
            gen, conn, exc, waiter, control, on_interrupt, keep, in_callback, fd, events, idle
        )
        return late


def _bound(limit: Optional[tuple[float, float]], timeout: Optional[float]) -> tuple[float, Optional[float]]:
    """When :func:`drive`'s waits end, and the seconds of the ``timeout()`` deadline that ends them
    (for its ``QueryTimeout``), or None when the caller's own ``timeout`` comes first."""
    if timeout is not None:
        own = _monotonic() + timeout
        if limit is None or own < limit[0]:
            return own, None
    assert limit is not None
    return limit


def _is_timeout(exc: BaseException) -> bool:
    """True for the psycopg2 errors that are interrupts rather than a failed conversation: an expired
    deadline, or a wait a waiter refused (``psycogreen_interrupt``: psycogreen.aio's MisuseError for
    a blocking wait on the loop's thread), so they are cancelled and drained like any interrupt."""
    from .errors import QueryTimeout

    return isinstance(exc, QueryTimeout) or getattr(exc, "psycogreen_interrupt", False) is True


_IDLE = "no statement was running, so there was nothing to cancel; the connection is still usable"


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
    idle: bool = False,
) -> Any:
    """Deliver ``exc`` (an interrupt, an expired deadline) that stopped :func:`drive` mid-wait.

    Everything happens within the cancel grace, so a dead network costs the caller at most the
    grace after its deadline. The interrupt table:

    =============================  ==============================  =================================
    what happened                  the connection                  ``exc`` is
    =============================  ==============================  =================================
    before the first yield         untouched (in :func:`drive`)    raised
    idle wait (``idle=True``)      untouched, usable               raised at once
    cancel sent, drain finished    idle again, usable              parked (``keep``) or raised
    drain broke or grace ran out   untrusted: closed               raised (``in_callback``: psycopg2
                                                                   closes it; with ``keep`` parked
                                                                   and the failure raised)
    =============================  ==============================  =================================
    """
    if control is not None:
        control.interrupt = exc
    failure: Optional[BaseException] = None
    try:
        if idle:
            gen.close()
            _settle(exc, _IDLE)
            raise exc
        grace = _deadline.cancel_grace()
        grace_end = _deadline.grace_end()
        logger.debug("interrupted by %r: cancelling on the server", exc)
        _send_cancel(conn, waiter, on_interrupt, grace_end)
        failure = _drain(gen, waiter, fd, events, grace_end, grace, exc)
        if failure is None:
            _settle(exc, _CANCELLED)
            if keep:
                _guard.park(conn, exc)
                return None
            raise exc
        # The connection cannot be trusted any more.
        if in_callback:
            # Raising from psycopg2's wait callback makes psycopg2 close the connection itself.
            if keep:
                _guard.park(conn, exc)
                raise failure
            raise exc
        _close_quietly(conn)
        raise exc
    finally:
        # No local may keep the exception (and through its traceback, this frame) alive.
        del exc, failure


def _send_cancel(
    conn: Any, waiter: Waiter, on_interrupt: Optional[Callable[[], None]], grace_end: float
) -> None:
    """Cancel on the server (or whatever ``on_interrupt`` does instead); a cancel that cannot be
    sent is logged, not raised: draining decides what becomes of the connection."""
    try:
        if on_interrupt is not None:
            on_interrupt()
        elif conn is not None:
            cancel(conn, waiter, grace_end)
    except BaseException as e:  # noqa: BLE001 - the cancel could not be sent: draining decides
        logger.debug("could not send the cancel: %r", e)


def _drain(
    gen: PQGen[Any], waiter: Waiter, fd: int, events: int, grace_end: float, grace: float, exc: BaseException
) -> Optional[BaseException]:
    """Let libpq read the outcome of the cancelled statement until the connection is idle again;
    return None then, or the error that says why the connection cannot be trusted. A second
    interrupt while draining is ignored (draining is what makes the first one safe)."""
    try:
        while True:
            ready = wait_shielded(waiter, fd, events, grace_end)
            if not ready:
                break
            fd, events = gen.send(ready)
    except StopIteration:
        return None
    except psycopg2.Error as e:
        _settle(exc, f"the connection failed while the statement was being cancelled: {_first_line(e)}")
        return e  # the conversation broke while draining
    gen.close()
    logger.warning(
        "the server did not confirm the cancel within %g s after %r; closing the connection", grace, exc
    )
    _settle(exc, _not_confirmed(grace))
    return psycopg2.OperationalError(f"{_not_confirmed(grace)} (after {type(exc).__name__})")


def wait_shielded(waiter: Waiter, fd: int, events: int, end: float) -> int:
    """Wait for ``fd`` until the monotonic time ``end``, through any interrupt: the one wait of the
    work that makes an interrupt safe (sending the cancel, draining its outcome), which a second
    interrupt must not cut short; ``end`` (the cancel grace) bounds it instead. Returns the events
    that happened, 0 when ``end`` passed first."""
    wait_fd = waiter.wait_fd
    while True:
        remaining = end - _monotonic()
        if remaining <= 0:
            return 0
        try:
            ready = wait_fd(fd, events, remaining, True)
        except BaseException:  # noqa: BLE001 - shielded: a second interrupt does not stop this work
            continue
        if ready:
            return ready


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _close_quietly(conn: Any) -> None:
    if conn is None:
        return
    try:
        conn.close()
    except Exception:  # noqa: BLE001
        pass


def cancel(conn: Any, waiter: Optional[Waiter] = None, deadline: Optional[float] = None) -> None:
    """Cancel the statement running on ``conn`` without blocking the hub/loop.

    libpq >= 17: the non-blocking cancel protocol, driven by the waiter. Older libpq (or
    ``PSYCOGREEN_CANCEL=thread``): the blocking ``PQcancel`` in a native thread, with the GIL released.
    Either way the caller gets control back by ``deadline`` (default: the cancel grace from now):
    a cancel that cannot reach the server raises ``OperationalError`` then.
    """
    if waiter is None:
        waiter = current_waiter()
    if deadline is None:
        deadline = _deadline.grace_end()
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
                ready = wait_shielded(waiter, fd, events, deadline)
                if not ready:
                    raise _cancel_timed_out()
                fd, events = gen.send(ready)
        except StopIteration:
            return
        finally:
            if fd >= 0:
                waiter.forget_fd(fd)  # closed by gen.close(): nothing may stay cached for it
            gen.close()
    else:
        _cancel_in_thread(cancel_handle(ptr), waiter, deadline)


def _cancel_timed_out() -> psycopg2.OperationalError:
    return psycopg2.OperationalError(
        "the cancel request got no answer from the server in time (is the network down?)"
    )


def _cancel_in_thread(handle: int, waiter: Waiter, deadline: float) -> None:
    """Send a cancel with the blocking ``PQcancel`` in a native thread of its own and wait for it
    cooperatively, at most until ``deadline``.

    libpq < 17's ``PQcancel`` has no time limit: on a dead network it returns when TCP gives up
    (bounded only by the connection's ``keepalives*``/``tcp_user_timeout``). A pool thread stuck
    there would be lost to the pool, and waiting for it would hang the caller; so the thread is our
    own, it owns the cancel handle (independent of the connection, which may be closed meanwhile)
    and the write end of a pipe it signals on, and the caller stops waiting at the deadline.
    """
    r, w = os.pipe()
    outcome: list[Optional[str]] = []

    def run() -> None:
        try:
            outcome.append(send_cancel(handle))
        except BaseException as e:  # noqa: BLE001 - reported to the waiting side
            outcome.append(f"cancel request failed: {e!r}")
        finally:
            try:
                _raw_write(w, b"x")
            except OSError:  # the waiting side gave up and closed its end
                pass
            _raw_close(w)

    try:
        _start_native_thread(run)
    except BaseException:
        _raw_close(w)
        os.close(r)
        raise
    try:
        while not outcome:
            if not wait_shielded(waiter, r, READ, deadline):
                logger.debug("PQcancel still blocked in its thread at the deadline; not waiting for it")
                raise _cancel_timed_out()
    finally:
        waiter.forget_fd(r)
        os.close(r)
    if outcome[0] is not None:
        raise psycopg2.OperationalError(outcome[0])


try:  # os.write may be monkey-patched (eventlet); the thread writes with the real system call
    from posix import close as _raw_close
    from posix import write as _raw_write
except ImportError:  # pragma: no cover - not POSIX
    _raw_close, _raw_write = os.close, os.write


def _start_native_thread(fn: Callable[[], None]) -> None:
    """Start ``fn`` in a real OS thread, even where gevent/eventlet patched ``_thread``."""
    start: Any = None
    if "gevent.monkey" in sys.modules:
        from gevent import monkey

        start = monkey.get_original("_thread", "start_new_thread")
    elif "eventlet.patcher" in sys.modules:
        from eventlet import patcher

        start = patcher.original("_thread").start_new_thread
    if start is None:
        import _thread

        start = _thread.start_new_thread
    start(fn, ())


def wait_callback(conn: Any, waiter: Optional[Waiter] = None) -> None:
    """The process-wide psycopg2 wait callback installed by ``psycogreen.patch()``.

    While connecting it enforces the connect deadline; otherwise it drives ``conn.poll()`` through
    :func:`drive`, parking interrupts on psycogreen connections inside a guarded call.
    """
    connecting = _deadline.connect_deadline()
    if connecting is None and conn.status == _STATUS_SETUP:
        connecting = _NO_DEADLINE  # a connection made outside psycopg2.connect()
    if waiter is None:
        waiter = current_waiter()
    if connecting is not None:
        _connect_wait(conn, connecting, waiter)
        return
    if _deadline.current() is not None:
        drive(poll_conn(conn), conn, keep=_guard.inside(conn), waiter=waiter, in_callback=True)
        return
    accel = getattr(waiter, "accel_poll", None)
    if accel is not None:
        # The same loop in C (psycogreen._speedups, see psycogreen._accel): None when done, else the
        # state reached, handed over exactly as the Python loop hands it over.
        handover = accel(conn)
        if handover is not None:
            _accel_handover(conn, waiter, handover)
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
    except BaseException as exc:  # noqa: BLE001 - an interrupt: drive() semantics from here on
        if not events or (isinstance(exc, psycopg2.Error) and not _is_timeout(exc)):
            raise
        _hand_over(conn, waiter, fd, events, exc)
        return
    drive(poll_conn(conn), conn, keep=_guard.inside(conn), waiter=waiter, in_callback=True)


def _accel_handover(conn: Any, waiter: Waiter, handover: tuple[int, int, Optional[BaseException]]) -> None:
    """Continue from where the C poll loop stopped: ``(fd, events, None)`` after an unexpected poll
    state (drive a poll generator, as the Python loop's ``break`` does), ``(fd, events, exc)``
    after an interrupt while waiting (:func:`_hand_over`)."""
    fd, events, exc = handover
    del handover
    if exc is None:
        drive(poll_conn(conn), conn, keep=_guard.inside(conn), waiter=waiter, in_callback=True)
        return
    try:
        _hand_over(conn, waiter, fd, events, exc)
    finally:
        del exc  # the exception's traceback holds this frame


def installed_callback(waiter: Optional[Waiter] = None) -> Callable[[Any], None]:
    """What ``patch()`` registers with psycopg2 for ``waiter``: with the C accelerator and a waiter
    that has a C poll loop (gevent, eventlet), the C entry (the same checks, then the C poll loop;
    every other case calls :func:`wait_callback`); else :func:`wait_callback` itself, which costs a
    waiter without a C loop (threads) nothing more than before."""
    if _c_callback is not None and getattr(waiter, "accel_poll", None) is not None:
        return _c_callback
    return wait_callback


def is_ours(callback: Any) -> bool:
    """Whether ``callback`` is one of psycogreen's wait callbacks."""
    return callback is not None and (callback is wait_callback or callback is _c_callback)


def _hand_over(conn: Any, waiter: Waiter, fd: int, events: int, exc: BaseException) -> None:
    """An interrupt stopped the hot poll loop (Python's or C's) waiting for ``events`` on ``fd``:
    continue as :func:`drive` would from there (cancel, drain, park or raise)."""
    gen = poll_conn_after(conn, fd, events)
    next(gen)
    keep = _guard.inside(conn)
    try:
        _interrupted(gen, conn, exc, waiter, None, None, keep, True, fd, events, False)
    finally:
        del exc


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
    limit = _deadline.current()
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
                        raise connect_deadline_error(limit[1], connecting.target)
                    raise psycopg2.OperationalError(
                        f"connection to {connecting.target} failed: timeout expired\n"
                    )
            fd, events = gen.send(ready)
    except StopIteration:
        return
    except BaseException as e:
        if sock is not None:
            waiter.forget_fd(sock[0])  # the attempt failed: its socket is (about to be) closed
        if not isinstance(e, psycopg2.OperationalError):
            raise
        failed = str(e)
        if _is_timeout(e) or failed.startswith("connection to "):
            raise
    finally:
        gen.close()
    # Raised outside the except block: no context chain keeps the failed connection alive.
    raise psycopg2.OperationalError(f"connection to {_failed_target(conn, connecting)} failed: {failed}")


def _failed_target(conn: Any, connecting: _deadline.ConnectDeadline) -> str:
    """How blocking libpq names the server in a failed attempt's message. libpq's non-blocking connect
    (green mode) leaves the prefix out of the errors it detects after the first poll (refused, server
    errors such as a bad password or an unknown database), so psycogreen adds it back."""
    if connecting.target != _NO_DEADLINE.target:
        return connecting.target
    from ._connect import _target

    try:
        info = conn.info
        host, port = info.host or "", str(info.port or "")
        addr = getattr(info, "hostaddr", None) or None
    except psycopg2.Error:
        return "server"
    if not host or not port:
        return "server"
    return _target(host, addr, port)


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


def _accelerate_callback() -> Optional[Callable[[Any], None]]:
    """The C accelerator's wait callback, set up with what it reads (see ``_speedups.c``)."""
    from . import _accel

    if _accel.speedups is None:
        return None
    connecting, deadline = _deadline.context_vars()
    # The chosen waiter is read from where _patch keeps it (the module's ``_chosen``).
    _accel.speedups.setup_callback(
        connecting, deadline, _STATUS_SETUP, _patch, wait_callback, _accel_handover
    )
    return _accel.speedups.wait_callback  # type: ignore[no-any-return]


_c_callback: Optional[Callable[[Any], None]] = _accelerate_callback()
