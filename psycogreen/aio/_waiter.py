"""The waiter of bridge greenlets, and the one way the bridge waits for a socket on asyncio/uvloop.

A bridge greenlet (see :mod:`psycogreen.aio._runtime`) carries a :class:`CallWaiter` of its own as
its ``psycogreen_waiter``, so ``psycogreen._wait.current_waiter()`` finds it. Each wait becomes a
*request* switched to the awaiting task: a tuple ``(fd, events, timeout, shield)`` for a socket, an
awaitable for anything else (``sleep``, an event, a worker thread, name resolution).

On asyncio and uvloop a socket wait is served by :meth:`Sockets.arm`, the single socket-wait helper
of the bridge: it returns a future that resolves with the ready events (or 0 when ``timeout``
passes). Shielded waits (the cancel and drain after an interrupt) await the same future through
the runtime's one shield helper, so both shield modes share one implementation. On trio, anyio's
``wait_readable``/``wait_writable`` do the watching (:func:`wait_anyio`).
"""

from __future__ import annotations

import asyncio
import os
import select
import threading
import weakref
from typing import Any, Callable, Optional, TypeVar

import anyio
import anyio.to_thread
from greenlet import getcurrent

from .._core import READ, WRITE
from .._waiters import _parking

T = TypeVar("T")

_EPOLLIN = getattr(select, "EPOLLIN", 0)
_EPOLLOUT = getattr(select, "EPOLLOUT", 0)
_ONESHOT = getattr(select, "EPOLLONESHOT", 0)
_EPOLL_MASKS = (0, _EPOLLIN | _ONESHOT, _EPOLLOUT | _ONESHOT, _EPOLLIN | _EPOLLOUT | _ONESHOT)
_HAS_EPOLL = hasattr(select, "epoll") and not os.environ.get("PSYCOGREEN_BRIDGE_NO_EPOLL")
#: Events read per ``epoll_wait``: ``epoll.poll()`` would otherwise allocate room for 1023.
_BATCH = 64


def _ino(fd: int) -> int:
    """The inode of ``fd``'s socket (-1 once closed): a reader kept for an fd number watches the
    socket it was made for only while this has not changed."""
    try:
        return os.fstat(fd).st_ino
    except OSError:
        return -1


def _wake(fut: asyncio.Future[int], events: int) -> None:
    if not fut.done():
        fut.set_result(events)


def _timer_for(loop: asyncio.AbstractEventLoop, fut: asyncio.Future[int], timeout: float) -> None:
    """Resolve ``fut`` with 0 after ``timeout`` seconds; the timer goes when ``fut`` is done."""
    timer = loop.call_later(max(timeout, 0.0), _wake, fut, 0)
    fut.add_done_callback(lambda _: timer.cancel())


class Sockets:
    """How one event loop watches libpq's sockets for the bridge (one instance per loop)."""

    __slots__ = ("__weakref__", "idle", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = weakref.ref(loop)  # kept per loop, weakly: it must not keep the loop alive
        #: The runtime's bridge greenlets idle between calls on this loop.
        self.idle: list[Any] = []

    def arm(
        self, loop: asyncio.AbstractEventLoop, fd: int, events: int, timeout: Optional[float] = None
    ) -> asyncio.Future[int]:
        """A future of ``loop`` resolved with the ready events of ``fd`` (READ/WRITE bits), or with
        0 when ``timeout`` seconds pass first. A closed fd resolves at once: libpq finds out."""
        raise NotImplementedError

    def forget(self, fd: int) -> None:
        """``fd``'s socket is closing, closed or new: drop what is kept for it, waking a task still
        waiting on it (it would wait forever otherwise)."""
        raise NotImplementedError

    def close(self) -> None:
        """The loop is closed: release what the watching holds."""


class _EpollSockets(Sockets):
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
    ready at once. No per-wait ``fstat`` is needed: the kernel knows which socket is registered.
    """

    __slots__ = ("ep", "modify", "poll", "waits")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.ep = select.epoll()
        self.modify = self.ep.modify
        self.poll = self.ep.poll
        #: fd -> (future, events) of the wait in progress; a finished one may linger until the next
        #: wait, wake-up or forget of that fd (a one-shot registration fires at most once, into it).
        self.waits: dict[int, tuple[asyncio.Future[int], int]] = {}
        loop.add_reader(self.ep.fileno(), self._dispatch)

    def arm(
        self, loop: asyncio.AbstractEventLoop, fd: int, events: int, timeout: Optional[float] = None
    ) -> asyncio.Future[int]:
        fut = loop.create_future()
        mask = _EPOLL_MASKS[events]
        try:
            try:
                self.modify(fd, mask)
            except FileNotFoundError:  # not registered: a new socket, or a number reused
                self.ep.register(fd, mask)
        except OSError:  # a closed fd: let libpq find out at once rather than wait on nothing
            fut.set_result(events)
            return fut
        self.waits[fd] = (fut, events)
        if timeout is not None:
            _timer_for(loop, fut, timeout)
        return fut

    def _dispatch(self) -> None:
        waits = self.waits
        while True:
            ready = self.poll(0, _BATCH)
            for fd, ev in ready:
                w = waits.pop(fd, None)
                if w is None or w[0].done():
                    continue
                events = w[1]
                if events != READ:  # (READ alone, the common case, is what it was asked)
                    # An error or hang-up (EPOLLERR/EPOLLHUP) counts as ready: libpq reads it.
                    got = (READ if ev & _EPOLLIN else 0) | (WRITE if ev & _EPOLLOUT else 0)
                    events = got & events or events
                w[0].set_result(events)
            if len(ready) < _BATCH:
                return

    def forget(self, fd: int) -> None:
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


class _Reader:
    """Where there is no epoll: a reader kept registered on the loop between the waits for one
    socket (registering and unregistering one per query would cost two system calls and the
    selector's bookkeeping). The socket of a connection at rest is not readable (each answer is
    read in full), so the reader stays silent; if it fires while nobody waits (a NOTIFY, a closed
    connection at rest) it removes itself, as a level-triggered reader would fire on every loop
    iteration otherwise."""

    __slots__ = ("fd", "fut", "ino", "owner")

    def __init__(self, owner: _LoopSockets, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        self.owner = owner
        self.fd = fd
        self.ino = _ino(fd)
        self.fut: Optional[asyncio.Future[int]] = None
        loop.add_reader(fd, self._ready)

    def _ready(self) -> None:
        fut, self.fut = self.fut, None
        if fut is None or fut.done():
            self.close()
        else:
            fut.set_result(READ)

    def close(self) -> None:
        owner = self.owner
        if owner.readers.get(self.fd) is self:
            del owner.readers[self.fd]
        fut, self.fut = self.fut, None
        if fut is not None and not fut.done():
            fut.set_result(READ)  # closed under a waiting task: let libpq find out, never hang
        loop = owner.loop()
        if loop is not None:
            try:
                loop.remove_reader(self.fd)
            except (OSError, ValueError, RuntimeError):  # closed loop or a stale fd: nothing to undo
                pass


class _LoopSockets(Sockets):
    """Sockets watched through the loop's own readers and writers (no epoll: not Linux, or
    ``PSYCOGREEN_BRIDGE_NO_EPOLL=1``). psycogreen forgets an fd number on every close path and for
    every new socket (``forget_fd``); on top of that each wait checks the socket's inode (one
    ``fstat``), because sockets closed by libpq itself (a terminated backend) leave no trace for the
    loop otherwise: without it ``tests/test_fd_reuse.py``'s terminate storms failed on uvloop (3 runs
    of 4). The epoll path (Linux) needs no such check."""

    __slots__ = ("readers",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.readers: dict[int, _Reader] = {}

    def arm(
        self, loop: asyncio.AbstractEventLoop, fd: int, events: int, timeout: Optional[float] = None
    ) -> asyncio.Future[int]:
        fut = loop.create_future()
        try:
            if events & READ:
                self._reader(loop, fd).fut = fut
            if events & WRITE:
                loop.add_writer(fd, self._writable, fd, fut)
        except (OSError, ValueError):  # a closed fd: let libpq find out at once
            _wake(fut, events)
            return fut
        if timeout is not None:
            _timer_for(loop, fut, timeout)
        return fut

    def _reader(self, loop: asyncio.AbstractEventLoop, fd: int) -> _Reader:
        r = self.readers.get(fd)
        if r is None or r.ino != _ino(fd):
            if r is not None:
                r.close()
            r = self.readers[fd] = _Reader(self, loop, fd)
        return r

    def _writable(self, fd: int, fut: asyncio.Future[int]) -> None:
        """A writer lives for one wake-up: writable sockets stay writable, so a writer left
        registered would fire on every loop iteration (it fires at most once more after a wait
        that ended otherwise, then removes itself)."""
        self._remove_writer(fd)
        _wake(fut, WRITE)

    def _remove_writer(self, fd: int) -> None:
        loop = self.loop()
        if loop is not None:
            try:
                loop.remove_writer(fd)
            except (OSError, ValueError, RuntimeError):  # closed loop or a stale fd: nothing to undo
                pass

    def forget(self, fd: int) -> None:
        r = self.readers.get(fd)
        if r is not None:
            r.close()
        self._remove_writer(fd)

    def close(self) -> None:
        for r in list(self.readers.values()):
            r.close()


class _Current:
    """The loop the bridge served last, its :class:`Sockets` (and their ``arm``) and the bridge
    greenlets idle for it, as one immutable record: reading it is one global load (no thread-local
    lookup per call); a loop maps to one ``Sockets`` whatever thread runs it."""

    __slots__ = ("arm", "idle", "loop", "sockets")

    def __init__(self, loop: Any, sockets: Sockets) -> None:
        self.loop = loop
        self.sockets = sockets
        self.arm = sockets.arm
        self.idle = sockets.idle


class _NoLoop(Sockets):
    """What :data:`current` holds before any loop was served."""

    __slots__ = ()

    def __init__(self) -> None:
        self.idle = []


current = _Current(None, _NoLoop())
_registry: weakref.WeakKeyDictionary[Any, Sockets] = weakref.WeakKeyDictionary()
_registry_lock = threading.Lock()


def use_loop(loop: asyncio.AbstractEventLoop) -> _Current:
    """Make ``loop`` the current one (its :class:`Sockets` made on first use); the ``Sockets`` of
    closed loops are closed."""
    global current
    with _registry_lock:
        for lp in [lp for lp in _registry if lp.is_closed()]:
            _registry.pop(lp).close()
        sockets = _registry.get(loop)
        if sockets is None:
            sockets = _registry[loop] = (_EpollSockets if _HAS_EPOLL else _LoopSockets)(loop)
    current = cur = _Current(loop, sockets)
    return cur


def forget_fd(fd: int) -> None:
    """Stop watching ``fd`` in the running loop's :class:`Sockets`: its socket is closing, was
    closed, or is new (see ``psycogreen._wait._adopt``); a task still waiting on it is woken."""
    loop = _running_loop()
    if loop is None:
        return  # not on a loop's thread: no loop state may be touched from here
    cur = current
    sockets: Optional[Sockets] = cur.sockets if cur.loop is loop else _registry.get(loop)
    if sockets is not None:
        sockets.forget(fd)


_running_loop = asyncio._get_running_loop


async def wait_anyio(fd: int, events: int, timeout: Optional[float], shield: bool) -> int:
    """A socket wait on trio (anyio): the ready events, or 0 when ``timeout`` passes first."""
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


# -- the waiter ---------------------------------------------------------------------------------


class BridgeWaiter:
    """The waiter of bridge greenlets: each wait is a request to the awaiting task."""

    name = "bridge"

    def wait_fd(self, fd: int, events: int, timeout: Optional[float] = None, shield: bool = False) -> int:
        waiter = getattr(getcurrent(), "psycogreen_waiter", None)
        if not isinstance(waiter, CallWaiter):
            raise _runtime.outside_call_error()
        return waiter.wait_fd(fd, events, timeout, shield)

    def run_in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return _runtime.suspend(anyio.to_thread.run_sync(fn, *args))

    def getaddrinfo(self, host: str, port: Any, *args: Any) -> list[Any]:
        names = ("family", "type", "proto", "flags")
        return _runtime.suspend(anyio.getaddrinfo(host, port, **dict(zip(names, args))))

    def current(self) -> object:
        """The task awaiting the current bridge call (asyncio or trio), as gevent's is the greenlet."""
        return _runtime.current_task()

    def sleep(self, seconds: float) -> None:
        _runtime.suspend(anyio.sleep(seconds))

    def spawn(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in a new bridge greenlet driven by a background task of the loop
        (asyncio task / trio system task): it lives as long as the loop, like a daemon thread."""
        return _runtime.spawn(fn, args)

    def Event(self) -> Any:
        return _runtime.BridgeEvent()

    def Lock(self) -> Any:
        # Greenlets of one thread never hold it across a switch (held for decisions only), so a
        # thread lock serialises correctly and costs nothing.
        return threading.RLock()

    def forget_fd(self, fd: int) -> None:
        forget_fd(fd)

    # -- parking (the pool's hand-off) --------------------------------------------------------------

    def park_token(self) -> Any:
        return _BridgeToken()

    def park(self, token: Any) -> Any:
        """Suspend the bridge greenlet; its task awaits one anyio event (asyncio and trio)."""
        if token.woken:
            return token.value
        try:
            _runtime.suspend(_park_async(token))
        except BaseException:
            token.gone = True
            raise
        return token.value

    def unpark(self, token: Any, value: Any) -> None:
        if _parking.hand(token, value) and token.event is not None:
            token.event.set()


class CallWaiter(BridgeWaiter):
    """The waiter of one bridge greenlet (its ``psycogreen_waiter``): a socket wait is one switch
    to the greenlet of the awaiting task, found without asking greenlet for it."""

    __slots__ = ("abandoned", "switch")

    def __init__(self, switch: Callable[..., Any]) -> None:
        #: ``parent.switch`` of the greenlet (the runtime updates both together).
        self.switch = switch
        #: See ``BridgeGreenlet.abandoned``.
        self.abandoned = False

    def wait_fd(self, fd: int, events: int, timeout: Optional[float] = None, shield: bool = False) -> int:
        if self.abandoned:
            from .._waiters.blocking import BlockingWaiter

            return BlockingWaiter().wait_fd(fd, events, 5.0 if timeout is None else timeout, shield)
        return self.switch((fd, events, timeout, shield))  # type: ignore[no-any-return]


class _BridgeToken:
    __slots__ = ("event", "gone", "value", "woken")

    def __init__(self) -> None:
        self.event: Any = None
        self.value: Any = None
        self.woken = self.gone = False


async def _park_async(token: _BridgeToken) -> None:
    if not token.woken:
        token.event = anyio.Event()
        await token.event.wait()


WAITER = BridgeWaiter()

from . import _runtime  # noqa: E402 - the runtime imports this module's names: import it last
