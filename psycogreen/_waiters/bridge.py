"""The greenlet bridge: synchronous psycopg2 code, run from asyncio (any loop, uvloop too) and trio tasks.

psycopg2 is synchronous all the way down, and green mode only lets us choose *how it waits*. So an
awaiting task runs the synchronous call in a greenlet (:func:`call`); whenever the call has to wait,
the greenlet's waiter (:class:`BridgeWaiter`, found by ``current_waiter()`` through the greenlet's
``psycogreen_waiter`` attribute) switches back to the task with a *request*. The task awaits the
request on its event loop and switches back with the answer, or throws the exception it got (a task
cancellation, say) into the greenlet, where :func:`psycogreen._wait.drive` handles it like any other
interrupt: cancel on the server, drain, re-raise. Two kinds of request cross the bridge:

- a tuple ``(fd, events, timeout, shield)``: wait for a socket, the hot path, served without any
  allocation beyond one future on asyncio and uvloop (through the bridge's own epoll, whose fd is
  the only one the loop watches: see :class:`_EpollHub`) and with anyio on trio;
- an awaitable (``sleep``, ``Event.wait``, ``run_in_thread``, name resolution): awaited as is.

Idle greenlets are kept per thread and reused: a call costs two greenlet switches plus one per wait.
The greenlet runs in the task's own ``contextvars`` context, so ``psycogreen.timeout()`` set around
an ``await`` is seen by the waits inside the call.

Shielded waits (the cancel and drain after an interrupt) are really shielded: on trio a cancelled
scope would otherwise raise again at every checkpoint; on asyncio a second ``cancel()`` is remembered
and delivered when the call ends.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import threading
import weakref
from typing import Any, Awaitable, Callable, Optional, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread
from greenlet import getcurrent, greenlet

from .._core import READ, WRITE
from . import _parking
from .loop import _sniffio_thread_local

T = TypeVar("T")

logger = logging.getLogger("psycogreen.aio")


_sniffio_local = _sniffio_thread_local()
_CancelledError = asyncio.CancelledError
_fstat = os.fstat

#: What a finished call switches to the task; its outcome is on the greenlet.
_DONE: Any = object()
#: How many idle greenlets a thread keeps for reuse.
_IDLE_MAX = 64


class BridgeGreenlet(greenlet):  # type: ignore[misc]
    """Runs synchronous calls for tasks; reused from call to call while idle.

    ``psycogreen_waiter`` is what :func:`psycogreen._wait.current_waiter` looks for.
    """

    psycogreen_waiter: BridgeWaiter
    #: Set when the awaiting coroutine was closed without finishing the call: nobody will answer
    #: requests any more, so the waiter falls back to blocking waits to let ``drive()`` clean up.
    abandoned = False

    def __init__(self, parent: Any) -> None:
        super().__init__(self._serve, parent)
        self.result: Any = None
        self.error: Optional[BaseException] = None

    def _serve(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        while True:
            try:
                self.result = fn(*args, **kwargs)
            except BaseException as e:  # noqa: BLE001 - delivered to the awaiting task
                self.error = e
            fn = args = kwargs = None  # type: ignore[assignment]
            if self.abandoned:
                return  # nobody awaits the outcome (and we may be inside a garbage collection)
            fn, args, kwargs = self.parent.switch(_DONE)


class _Local(threading.local):
    def __init__(self) -> None:
        self.idle: list[BridgeGreenlet] = []
        self.loop: Any = None
        self.fds: dict[int, _ReadWatch] = {}
        self.hub: Optional[_EpollHub] = None
        self.hubs: weakref.WeakKeyDictionary[Any, _EpollHub] = weakref.WeakKeyDictionary()


_local = _Local()


def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> Awaitable[T]:
    """Run ``fn(*args, **kwargs)`` in a bridge greenlet; await it from an asyncio or trio task.

    Not a coroutine function itself, so the hot path has one coroutine frame less.
    """
    # trio announces itself through sniffio; anything else is asyncio (asking asyncio for its
    # running loop here would cost a getpid() system call per query, and the driver asks anyway).
    if _sniffio_local.name is None:
        return _drive_asyncio(fn, args, kwargs, False)
    return _call_anyio(fn, args, kwargs, False)


def call_shielded(fn: Callable[..., T], *args: Any, **kwargs: Any) -> Awaitable[T]:
    """:func:`call`, protected from cancellation of the task until it ends (cleanup: a rollback
    on the way out of ``async with conn``, putting a connection back in a pool). A cancellation
    that arrives meanwhile is raised when the call ends."""
    if _sniffio_local.name is None:
        return _call_asyncio(fn, args, kwargs, True)
    return _call_anyio(fn, args, kwargs, True)


def _take() -> BridgeGreenlet:
    cur = getcurrent()
    idle = _local.idle
    if idle:
        g = idle.pop()
        if g.parent is not cur:
            g.parent = cur
    else:
        g = BridgeGreenlet(cur)
    g.gr_context = cur.gr_context
    return g


def _give_back(g: BridgeGreenlet) -> Any:
    """Return the call's outcome and keep the greenlet for reuse."""
    g.gr_context = None
    result, error = g.result, g.error
    g.result = g.error = None
    if g.dead:
        # ``fn`` raised GreenletExit out of _serve: the greenlet is gone, the exception returned.
        error = error or _dead_error()
    elif len(_local.idle) < _IDLE_MAX:
        _local.idle.append(g)
    if error is not None:
        try:
            raise error
        finally:
            del error
    return result


def _dead_error() -> BaseException:
    return RuntimeError("psycogreen.aio: the bridge greenlet exited without finishing the call")


def _wake(fut: asyncio.Future[int], events: int) -> None:
    if not fut.done():
        fut.set_result(events)


_EPOLLIN = getattr(select, "EPOLLIN", 0)
_EPOLLOUT = getattr(select, "EPOLLOUT", 0)
_EPOLL_MASKS = {
    READ: _EPOLLIN | getattr(select, "EPOLLONESHOT", 0),
    WRITE: _EPOLLOUT | getattr(select, "EPOLLONESHOT", 0),
    READ | WRITE: _EPOLLIN | _EPOLLOUT | getattr(select, "EPOLLONESHOT", 0),
}

_BATCH = 64


class _EpollHub:
    """Sockets watched through an epoll instance of our own: the loop watches only its fd.

    Registering libpq's sockets with the loop itself cannot be made safe, because libpq opens and
    closes them behind the loop's back (a refused attempt, the next host, a connection broken by
    ``pg_terminate_backend``, one dropped by the garbage collector), and the loops keep state per fd
    number. On uvloop an error on a watched socket makes libuv close the poll handle *without*
    calling back (the waiting task hangs forever), the closed handle stays in uvloop's table (every
    later ``add_reader``/``add_writer`` of that number fails with "unable to perform operation on
    <UVPoll closed=True>"), and removing a handle whose number was already reused deletes the new
    socket's kernel registration. On asyncio the selector keeps a closed socket's key, so the next
    socket with that number fails to register (``FileNotFoundError``), whoever owns it.

    Our own epoll has none of this: an error is reported as readiness (libpq then reads the error),
    a closed socket leaves it by itself, a reused number is simply registered again (``EPOLL_CTL_MOD``
    answers ENOENT), and the epoll fd the loop watches is never closed under it. Registrations are
    one-shot, so a socket at rest (a NOTIFY, a server closing an idle connection) never wakes the
    loop; each wait costs one ``epoll_ctl`` and each wake-up one ``epoll_wait(0)`` for all sockets
    ready at once.
    """

    __slots__ = ("ep", "loop", "waits")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = weakref.ref(loop)  # the hub is kept per loop, weakly: it must not keep it alive
        self.ep = select.epoll()
        self.waits: dict[int, tuple[asyncio.Future[int], int]] = {}
        loop.add_reader(self.ep.fileno(), self._dispatch)

    def arm(self, fd: int, events: int, fut: asyncio.Future[int]) -> None:
        """Resolve ``fut`` with the ready events when ``fd`` is ready for ``events`` (once)."""
        mask = _EPOLL_MASKS[events]
        try:
            try:
                self.ep.modify(fd, mask)
            except FileNotFoundError:  # not registered: a new socket, or a number reused
                self.ep.register(fd, mask)
        except OSError:  # a closed fd: let libpq find out at once rather than wait on nothing
            fut.set_result(events)
            return
        self.waits[fd] = (fut, events)

    def disarm(self, fd: int, fut: asyncio.Future[int]) -> None:
        """The wait for ``fut`` is over (woken, timed out, cancelled). A one-shot registration left
        armed fires at most once more, into nothing."""
        w = self.waits.get(fd)
        if w is not None and w[0] is fut:
            del self.waits[fd]

    def _dispatch(self) -> None:
        waits = self.waits
        while True:
            # A small batch: epoll.poll() would otherwise allocate room for 1023 events per call.
            ready = self.ep.poll(0, _BATCH)
            for fd, ev in ready:
                w = waits.pop(fd, None)
                if w is None:
                    continue
                fut, events = w
                if not fut.done():
                    # An error or hang-up (EPOLLERR/EPOLLHUP) counts as ready: libpq reads it.
                    got = (READ if ev & _EPOLLIN else 0) | (WRITE if ev & _EPOLLOUT else 0)
                    fut.set_result(got & events or events)
            if len(ready) < _BATCH:
                return

    def forget(self, fd: int) -> None:
        """``fd``'s socket is closing, closed or new: drop its registration, and wake a task still
        waiting on it (it would wait forever otherwise)."""
        w = self.waits.pop(fd, None)
        if w is not None and not w[0].done():
            w[0].set_result(w[1])
        try:
            self.ep.unregister(fd)
        except (OSError, ValueError):  # not registered, or already closed: nothing to undo
            pass

    def close(self) -> None:
        loop = self.loop()
        if loop is not None:
            try:
                loop.remove_reader(self.ep.fileno())
            except (OSError, ValueError, RuntimeError):  # the loop is closed already
                pass
        self.ep.close()


def _use_loop(loop: asyncio.AbstractEventLoop) -> Optional[_EpollHub]:
    """Switch this thread's bookkeeping to ``loop`` (a new ``asyncio.run``, or another loop run in
    turn) and return its epoll hub (None where there is no epoll: the loop's own readers are then
    used, see :class:`_ReadWatch`). The hubs of loops that were closed are closed too."""
    local = _local
    local.loop = loop
    local.fds = {}
    if not _HAS_EPOLL:
        return None
    hubs = local.hubs
    for lp in [lp for lp in hubs if lp.is_closed()]:
        hubs.pop(lp).close()
    hub = hubs.get(loop)
    if hub is None:
        hub = hubs[loop] = _EpollHub(loop)
    local.hub = hub
    return hub


_HAS_EPOLL = hasattr(select, "epoll") and not os.environ.get("PSYCOGREEN_BRIDGE_NO_EPOLL")


class _ReadWatch:
    """Where there is no epoll (not Linux): a reader kept registered on the loop between the waits
    for one socket. psycogreen forgets it on every close path and for every new socket
    (``forget_fd``), which is all that keeps it correct; on Linux :class:`_EpollHub` is used.

    Registering and unregistering a reader for every query costs two ``epoll_ctl`` calls and the
    selector's bookkeeping, a fifth of a point-select's cost. The socket of a connection at rest is
    not readable (each answer is read in full), so the reader stays registered and silent; if it
    fires while nobody waits (a NOTIFY or a closed connection at rest), it unregisters itself, as a
    level-triggered reader would otherwise fire on every loop iteration. The socket's inode guards
    against a closed socket whose fd number was reused: the loop would never report the new one.
    """

    __slots__ = ("fd", "fds", "fut", "ino", "loop")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, fds: dict[int, _ReadWatch], fd: int, ino: int
    ) -> None:
        self.loop = loop
        self.fds = fds
        self.fd = fd
        self.ino = ino
        self.fut: Optional[asyncio.Future[int]] = None
        loop.add_reader(fd, self._ready)

    def _ready(self) -> None:
        fut = self.fut
        if fut is None:
            self.close()
            return
        self.fut = None
        if not fut.done():
            fut.set_result(READ)

    def close(self) -> None:
        if self.fds.get(self.fd) is self:
            del self.fds[self.fd]
        fut, self.fut = self.fut, None
        if fut is not None and not fut.done():
            fut.set_result(READ)  # closed under a waiting task: let libpq find out, never hang
        try:
            self.loop.remove_reader(self.fd)
        except (OSError, ValueError, RuntimeError):  # closed loop or a stale fd: nothing to undo
            pass


def _ino(fd: int) -> int:
    try:
        return _fstat(fd).st_ino
    except OSError:
        return -1


def _read_watch(loop: asyncio.AbstractEventLoop, fd: int) -> _ReadWatch:
    fds = _local.fds
    ino = _ino(fd)
    w = fds.get(fd)
    if w is None or w.ino != ino:
        if w is not None:
            w.close()
        w = fds[fd] = _ReadWatch(loop, fds, fd, ino)
    return w


def forget_fd(fd: int) -> None:
    """Stop watching ``fd`` on this thread's loop: its socket is closing, was closed, or is new
    (see ``psycogreen._wait._adopt``); a task still waiting on it is woken."""
    hub = _local.hub
    if hub is not None:
        hub.forget(fd)
    w = _local.fds.get(fd)
    if w is not None:
        w.close()


async def _call_asyncio(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Any, shield: bool) -> Any:
    if not shield:
        return await _drive_asyncio(fn, args, kwargs, False)
    # anyio's cancel scopes (also usable on asyncio) re-deliver cancellation at every await, and
    # only their shield stops that; a plain task.cancel() is deferred by the driver itself.
    with anyio.CancelScope(shield=True):
        return await _drive_asyncio(fn, args, kwargs, True)


async def _drive_asyncio(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Any, shield: bool) -> Any:
    loop = asyncio.get_running_loop()
    hub = _local.hub if _local.loop is loop else _use_loop(loop)
    g = _take()
    deferred: Optional[BaseException] = None  # a cancellation held back by a shield
    req = g.switch(fn, args, kwargs)
    while req is not _DONE:
        if g.dead:
            break
        try:
            if req.__class__ is tuple:
                fd, events, timeout, shielded = req
                if shielded or shield:
                    ready, cancel = await _wait_asyncio_shielded(loop, hub, fd, events, timeout)
                    deferred = cancel or deferred
                    req = g.switch(ready)
                    continue
                fut = loop.create_future()
                if hub is not None:
                    hub.arm(fd, events, fut)
                    timer = None if timeout is None else loop.call_later(max(timeout, 0.0), _wake, fut, 0)
                    try:
                        ready = await fut
                    finally:
                        hub.disarm(fd, fut)
                        if timer is not None:
                            timer.cancel()
                    req = g.switch(ready)
                    continue
                watch = None
                if events & READ:
                    watch = _read_watch(loop, fd)
                    watch.fut = fut
                if events & WRITE:
                    loop.add_writer(fd, _wake, fut, WRITE)
                timer = None if timeout is None else loop.call_later(max(timeout, 0.0), _wake, fut, 0)
                try:
                    ready = await fut
                finally:
                    if watch is not None:
                        watch.fut = None
                    if events & WRITE:
                        loop.remove_writer(fd)
                    if timer is not None:
                        timer.cancel()
                req = g.switch(ready)
                continue
            if shield:
                value, cancel = await _await_shielded(req)
                deferred = cancel or deferred
            else:
                value = await req
        except GeneratorExit:
            g.abandoned = True
            raise
        except BaseException as e:  # noqa: BLE001 - the greenlet decides what it means
            req = g.throw(e)
            continue
        req = g.switch(value)
    try:
        result = _give_back(g)
    except BaseException:
        deferred = None
        raise
    if deferred is not None:
        raise deferred
    return result


async def _await_shielded(aw: Any) -> tuple[Any, Optional[BaseException]]:
    """Await ``aw`` to the end despite cancellations of the task; return (value, a cancellation)."""
    inner = asyncio.ensure_future(aw)
    cancel: Optional[BaseException] = None
    while True:
        try:
            return await asyncio.shield(inner), cancel
        except _CancelledError as e:
            if inner.cancelled():
                raise
            cancel = e


async def _wait_asyncio_shielded(
    loop: asyncio.AbstractEventLoop,
    hub: Optional[_EpollHub],
    fd: int,
    events: int,
    timeout: Optional[float],
) -> tuple[int, Optional[BaseException]]:
    """A wait that cancellation cannot cut short: (ready events, a cancellation that arrived)."""
    deadline = None if timeout is None else loop.time() + max(timeout, 0.0)
    cancel: Optional[BaseException] = None
    if hub is not None:
        with anyio.CancelScope(shield=True):
            while True:
                fut = loop.create_future()
                hub.arm(fd, events, fut)
                timer = None if deadline is None else loop.call_at(deadline, _wake, fut, 0)
                try:
                    return await fut, cancel
                except _CancelledError as e:
                    cancel = e
                finally:
                    hub.disarm(fd, fut)
                    if timer is not None:
                        timer.cancel()
        return 0, cancel  # only if the scope swallowed an exception: report "not ready"
    # The connection's own socket keeps its watch; others (the cancel connection's) are watched
    # for this wait only.
    watch = _local.fds.get(fd) if events & READ and _local.loop is loop else None
    if watch is not None and watch.ino != _ino(fd):
        watch.close()  # a stale one, left by a socket closed without forget_fd()
        watch = None
    with anyio.CancelScope(shield=True):
        while True:
            fut = loop.create_future()
            if watch is not None:
                watch.fut = fut
            elif events & READ:
                loop.add_reader(fd, _wake, fut, READ)
            if events & WRITE:
                loop.add_writer(fd, _wake, fut, WRITE)
            timer = None if deadline is None else loop.call_at(deadline, _wake, fut, 0)
            try:
                return await fut, cancel
            except _CancelledError as e:
                cancel = e
            finally:
                if watch is not None:
                    watch.fut = None
                elif events & READ:
                    loop.remove_reader(fd)
                if events & WRITE:
                    loop.remove_writer(fd)
                if timer is not None:
                    timer.cancel()
    return 0, cancel  # only if the scope swallowed an exception: report "not ready"


async def _call_anyio(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Any, shield: bool) -> Any:
    if not shield:
        await anyio.lowlevel.checkpoint_if_cancelled()
        return await _drive_anyio(fn, args, kwargs)
    with anyio.CancelScope(shield=True):
        result = await _drive_anyio(fn, args, kwargs)
    await anyio.lowlevel.checkpoint_if_cancelled()
    return result


async def _drive_anyio(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Any) -> Any:
    g = _take()
    req = g.switch(fn, args, kwargs)
    while req is not _DONE:
        if g.dead:
            break
        try:
            if req.__class__ is tuple:
                value = await _wait_anyio(*req)
            else:
                value = await req
        except GeneratorExit:
            g.abandoned = True
            raise
        except BaseException as e:  # noqa: BLE001 - the greenlet decides what it means
            req = g.throw(e)
            continue
        req = g.switch(value)
    return _give_back(g)


async def _wait_anyio(fd: int, events: int, timeout: Optional[float], shield: bool) -> int:
    if timeout is None and not shield:
        return await _wait_fd_anyio(fd, events)
    with anyio.CancelScope(shield=shield) as scope:
        if timeout is not None:
            scope.deadline = anyio.current_time() + max(timeout, 0.0)
        return await _wait_fd_anyio(fd, events)
    return 0


async def _wait_fd_anyio(fd: int, events: int) -> int:
    if events == READ:
        await anyio.wait_readable(fd)
        return READ
    if events == WRITE:
        await anyio.wait_writable(fd)
        return WRITE
    # Both: whichever comes first (libpq flushing output while input may arrive).
    ready = 0
    async with anyio.create_task_group() as tg:

        async def one(kind: int) -> None:
            nonlocal ready
            await (anyio.wait_readable(fd) if kind == READ else anyio.wait_writable(fd))
            ready |= kind
            tg.cancel_scope.cancel()

        tg.start_soon(one, READ)
        tg.start_soon(one, WRITE)
    return ready


class BridgeEvent:
    """An event that bridge greenlets wait on by suspending (their task awaits an anyio event).

    Set it from the event loop's thread (any bridge greenlet or task); ``wait`` outside a bridge
    greenlet is an error, since it would freeze the loop.
    """

    __slots__ = ("_flag", "_waiters")

    def __init__(self) -> None:
        self._flag = False
        self._waiters: list[Any] = []

    def is_set(self) -> bool:
        return self._flag

    isSet = is_set

    def set(self) -> None:
        self._flag = True
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            try:
                w.set()
            except RuntimeError:  # its loop is closed (a finalizer at exit): nobody to wake
                pass

    def clear(self) -> None:
        self._flag = False

    def wait(self, timeout: Optional[float] = None) -> bool:
        if self._flag:
            return True
        if timeout is not None and timeout <= 0:
            return False
        return _await(self._wait(timeout))

    async def _wait(self, timeout: Optional[float]) -> bool:
        if self._flag:  # set after wait() was called, before this ran (a shielded call's new task)
            return True
        ev = anyio.Event()
        self._waiters.append(ev)
        try:
            with anyio.move_on_after(timeout):
                await ev.wait()
        finally:
            try:
                self._waiters.remove(ev)
            except ValueError:
                pass
        return self._flag

    def __repr__(self) -> str:
        return f"<BridgeEvent {'set' if self._flag else 'unset'} waiters={len(self._waiters)}>"


def _await(aw: Awaitable[T]) -> T:
    """Suspend the current bridge greenlet until its task has awaited ``aw``."""
    g = getcurrent()
    if not isinstance(g, BridgeGreenlet) or g.abandoned:
        close = getattr(aw, "close", None)
        if close is not None:
            close()
        raise RuntimeError(
            "psycogreen.aio: this waits on the event loop, which only works inside psycogreen.aio "
            "calls (run_sync, AsyncConnection, the async pool); here it would freeze the loop"
        )
    return g.parent.switch(aw)  # type: ignore[no-any-return]


_background: set[Any] = set()


async def _run_in_background(fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        await call(fn, *args)
    except BaseException as e:  # noqa: BLE001 - a background job must never take the loop down
        if isinstance(e, (_CancelledError, GeneratorExit)) or type(e).__name__ == "Cancelled":
            raise
        logger.exception("background job %r failed", fn)


class BridgeWaiter:
    """The waiter of bridge greenlets: each wait is a request to the awaiting task."""

    name = "bridge"

    def wait_fd(self, fd: int, events: int, timeout: Optional[float] = None, shield: bool = False) -> int:
        g = getcurrent()
        if g.abandoned:
            from .blocking import BlockingWaiter

            return BlockingWaiter().wait_fd(fd, events, 5.0 if timeout is None else timeout, shield)
        return g.parent.switch((fd, events, timeout, shield))  # type: ignore[no-any-return]

    def run_in_thread(self, fn: Callable[..., T], *args: Any) -> T:

        return _await(anyio.to_thread.run_sync(fn, *args))

    def getaddrinfo(self, host: str, port: Any, *args: Any) -> list[Any]:

        names = ("family", "type", "proto", "flags")
        return _await(anyio.getaddrinfo(host, port, **dict(zip(names, args))))

    def current(self) -> object:
        """The task awaiting the current bridge call (asyncio or trio), as gevent's is the greenlet."""
        if _sniffio_local.name == "trio":
            import trio

            return trio.lowlevel.current_task()
        task = asyncio.current_task()
        return task if task is not None else getcurrent()

    def sleep(self, seconds: float) -> None:

        _await(anyio.sleep(seconds))

    def spawn(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in a new bridge greenlet driven by a background task of the loop
        (asyncio task / trio system task): it lives as long as the loop, like a daemon thread."""
        if _sniffio_local.name == "trio":
            import trio

            return trio.lowlevel.spawn_system_task(_run_in_background, fn, args)
        loop = asyncio.get_running_loop()
        task = loop.create_task(_run_in_background(fn, args))
        _background.add(task)
        task.add_done_callback(_background.discard)
        return task

    def Event(self) -> Any:
        return BridgeEvent()

    def Lock(self) -> Any:
        # Greenlets of one thread never hold it across a switch (held for decisions only), so a
        # thread lock serialises correctly and costs nothing.
        return threading.RLock()

    def forget_fd(self, fd: int) -> None:
        forget_fd(fd)

    # ------------------------------------------------------------------ parking (pool hand-off)

    def park_token(self) -> Any:
        return _BridgeToken()

    def park(self, token: Any) -> Any:
        """Suspend the bridge greenlet; its task awaits one anyio event (asyncio and trio)."""
        if token.woken:
            return token.value
        try:
            _await(_park_async(token))
        except BaseException:
            token.gone = True
            raise
        return token.value

    def unpark(self, token: Any, value: Any) -> None:
        if _parking.hand(token, value) and token.event is not None:
            token.event.set()


class _BridgeToken:
    __slots__ = ("event", "value", "woken", "gone")

    def __init__(self) -> None:
        self.event: Any = None
        self.value: Any = None
        self.woken = self.gone = False


async def _park_async(token: _BridgeToken) -> None:
    if not token.woken:
        token.event = anyio.Event()
        await token.event.wait()


WAITER = BridgeWaiter()
BridgeGreenlet.psycogreen_waiter = WAITER
