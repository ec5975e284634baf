"""The greenlet bridge's runtime: synchronous psycopg2 code, run from asyncio (any loop, uvloop too)
and trio tasks.

psycopg2 is synchronous all the way down, and green mode only lets us choose *how it waits*. So an
awaiting task runs the synchronous call in a greenlet (:func:`call`); whenever the call has to wait,
the greenlet's waiter (:class:`psycogreen.aio._waiter.BridgeWaiter`, found by ``current_waiter()``
through the greenlet's ``psycogreen_waiter`` attribute) switches back to the task with a *request*.
The task awaits the request on its event loop and switches back with the answer, or throws the
exception it got (a task cancellation, say) into the greenlet, where :func:`psycogreen._wait.drive`
handles it like any other interrupt: cancel on the server, drain, re-raise.

"asyncio or trio?" is decided once per call, in :func:`call`, and remembered on the greenlet for
whatever the call does later (the waiter's ``current()`` and ``spawn()``). Idle greenlets are kept
per thread and reused: a call costs two greenlet switches plus one per wait. The greenlet runs in
the task's own ``contextvars`` context, so ``psycogreen.timeout()`` set around an ``await`` is seen
by the waits inside the call.

Shielded waits (the cancel and drain after an interrupt) are really shielded: on trio a cancelled
scope would otherwise raise again at every checkpoint; on asyncio a second ``cancel()`` is remembered
and delivered when the call ends.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from typing import Any, Awaitable, Callable, Optional, TypeVar

import anyio
import anyio.lowlevel
import psycopg2
from greenlet import getcurrent, greenlet

from .._waiters.loop import _sniffio_thread_local
from . import _waiter
from ._waiter import CallWaiter, use_loop, wait_anyio

T = TypeVar("T")

logger = logging.getLogger("psycogreen.aio")

_sniffio_local = _sniffio_thread_local()
_running_loop = asyncio._get_running_loop
_CancelledError = asyncio.CancelledError

#: What a finished call switches to the task; its outcome is on the greenlet.
_DONE: Any = object()
#: How many idle greenlets a thread keeps for reuse.
_IDLE_MAX = 64


class MisuseError(psycopg2.InterfaceError, RuntimeError):
    """psycogreen.aio was used in a way that cannot work: awaited outside a running asyncio/uvloop/trio
    loop, a bridge-only wait outside a psycogreen.aio call, or the sync API of an aio connection
    called on the event loop's thread (it would freeze every task). The message names the fix.

    A ``psycopg2.InterfaceError`` (what psycopg2 raises for misuse of its API) and a ``RuntimeError``
    (what psycogreen.aio raised for these before it had a name)."""


def no_loop_error() -> MisuseError:
    return MisuseError(
        "psycogreen.aio was awaited outside a running event loop: await it from a task of asyncio "
        "(asyncio.run, any loop such as uvloop) or trio; sync code uses psycopg2 directly"
    )


def outside_call_error() -> MisuseError:
    return MisuseError(
        "psycogreen.aio: this waits on the event loop, which only works inside psycogreen.aio calls "
        "(run_sync, AsyncConnection, the async pool); here it would freeze the loop: run the code "
        "with `await psycogreen.aio.run_sync(fn, *args)`"
    )


def other_loop_error(owner: Any) -> MisuseError:
    return MisuseError(
        f"psycogreen.aio: this connection is in use by {owner!r} in another thread (another event "
        "loop, or a worker thread); waiting for it here would freeze this event loop. A connection "
        "carries one conversation at a time: use one connection (or one pool) per event loop"
    )


class RefusedWait(MisuseError):
    """The :class:`MisuseError` of a blocking wait refused on the loop's thread. Raised from the
    wait callback as an interrupt (``psycogreen_interrupt``): the statement is cancelled and the
    connection kept, where a psycopg2 error raised there would make psycopg2 close it."""

    psycogreen_interrupt = True


def blocking_on_loop_error() -> RefusedWait:
    return RefusedWait(
        "the sync API of a psycogreen.aio connection (conn.raw, or a cursor of it) was called on the "
        "event loop's thread, outside psycogreen.aio: its wait would freeze every task, so it was "
        "refused and the statement cancelled on the server (the connection stays usable, unless "
        "the server does not confirm the cancel within the cancel grace). Await "
        "the AsyncConnection's methods, or run the sync code with "
        "`await psycogreen.aio.run_sync(fn, *args)`"
    )


#: fd -> the psycopg2 connection of an ``AsyncConnection`` using it (see :func:`is_aio_socket`).
_aio_sockets: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()


def note_connection(raw: Any) -> None:
    """Remember that ``raw`` belongs to psycogreen.aio, so that a blocking wait on its socket on
    the loop's thread is refused (:class:`MisuseError`) instead of freezing the loop."""
    try:
        _aio_sockets[raw.fileno()] = raw
    except (psycopg2.Error, TypeError):  # closed already, or not a psycopg2 connection
        pass


def is_aio_socket(fd: int) -> bool:
    """True when ``fd`` is the socket of an open connection wrapped by an ``AsyncConnection``."""
    raw = _aio_sockets.get(fd)
    if raw is None or raw.closed:
        return False
    try:
        return bool(raw.fileno() == fd)
    except psycopg2.Error:
        return False


class BridgeGreenlet(greenlet):  # type: ignore[misc]
    """Runs synchronous calls for tasks; reused from call to call while idle.

    ``psycogreen_waiter`` is what :func:`psycogreen._wait.current_waiter` looks for.
    """

    __slots__ = ("error", "home", "psycogreen_waiter", "result", "trio")

    def __init__(self, parent: Any, home: list[BridgeGreenlet]) -> None:
        super().__init__(self._serve, parent)
        self.result: Any = None
        self.error: Optional[BaseException] = None
        #: The idle list (of a loop, or of this thread for trio) the greenlet goes back to.
        self.home = home
        #: Decided by :func:`call`: the call's task is trio's (else asyncio's).
        self.trio = False
        #: This greenlet's own waiter: it switches to the task's greenlet without looking it up.
        self.psycogreen_waiter: CallWaiter = CallWaiter(parent.switch)

    @property
    def abandoned(self) -> bool:
        """Set when the awaiting coroutine was closed without finishing the call: nobody will answer
        requests any more, so the waiter falls back to blocking waits to let ``drive()`` clean up."""
        return self.psycogreen_waiter.abandoned

    @abandoned.setter
    def abandoned(self, value: bool) -> None:
        self.psycogreen_waiter.abandoned = value

    def _serve(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        waiter = self.psycogreen_waiter
        while True:
            try:
                self.result = fn(*args, **kwargs)
            except BaseException as e:  # noqa: BLE001 - delivered to the awaiting task
                self.error = e
            fn = args = kwargs = None  # type: ignore[assignment]
            if waiter.abandoned:
                return  # nobody awaits the outcome (and we may be inside a garbage collection)
            fn, args, kwargs = waiter.switch(_DONE)


class _Local(threading.local):
    def __init__(self) -> None:
        self.idle: list[BridgeGreenlet] = []


_local = _Local()


def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> Awaitable[T]:
    """Run ``fn(*args, **kwargs)`` in a bridge greenlet; await it from an asyncio or trio task.

    Not a coroutine function itself, so the hot path has one coroutine frame less. "asyncio or
    trio?" is decided here, once: a running asyncio loop (which the asyncio driver needs anyway),
    else trio if sniffio says so; with neither, the driver decides when awaited (or raises
    :class:`MisuseError`).
    """
    loop = _running_loop()
    if loop is None and _sniffio_local.name is not None:
        return _call_anyio(fn, args, kwargs, False)
    return _drive_asyncio(loop, fn, args, kwargs, False)


def call_shielded(fn: Callable[..., T], *args: Any, **kwargs: Any) -> Awaitable[T]:
    """:func:`call`, protected from cancellation of the task until it ends (cleanup: a rollback
    on the way out of ``async with conn``, putting a connection back in a pool). A cancellation
    that arrives meanwhile is raised when the call ends."""
    loop = _running_loop()
    if loop is None and _sniffio_local.name is not None:
        return _call_anyio(fn, args, kwargs, True)
    return _call_asyncio_shielded(loop, fn, args, kwargs)


def _take(idle: list[BridgeGreenlet], trio: bool) -> BridgeGreenlet:
    """An idle greenlet of ``idle`` (made if none), ready to run a call for the current task."""
    me = getcurrent()
    while idle:
        g = idle.pop()
        if g.parent is not me:
            try:
                g.parent = me  # ValueError when made by another thread
                g.psycogreen_waiter.switch = me.switch
            except ValueError:  # made by another thread (the loop moved): unusable here
                idle.clear()
                break
        g.gr_context = me.gr_context
        return g
    g = BridgeGreenlet(me, idle)
    g.trio = trio
    g.gr_context = me.gr_context
    return g


def _give_back(g: BridgeGreenlet) -> Any:
    """Return the call's outcome and keep the greenlet for reuse."""
    g.gr_context = None
    result, error = g.result, g.error
    g.result = g.error = None
    if g.dead:
        # ``fn`` raised GreenletExit out of _serve: the greenlet is gone, the exception returned.
        error = error or MisuseError("psycogreen.aio: the bridge greenlet exited without finishing the call")
    elif len(g.home) < _IDLE_MAX:
        g.home.append(g)
    if error is not None:
        try:
            raise error
        finally:
            del error
    return result


# -- asyncio (any loop) -------------------------------------------------------------------------


async def _call_asyncio_shielded(
    loop: Optional[asyncio.AbstractEventLoop], fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Any
) -> Any:
    # anyio's cancel scopes (also usable on asyncio) re-deliver cancellation at every await, and
    # only their shield stops that; a plain task.cancel() is deferred by the driver itself.
    with anyio.CancelScope(shield=True):
        return await _drive_asyncio(loop, fn, args, kwargs, True)


async def _drive_asyncio(
    loop: Optional[asyncio.AbstractEventLoop],
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: Any,
    shield: bool,
) -> Any:
    """Serve the requests of one call on an asyncio loop: socket waits through the loop's
    :class:`~psycogreen.aio._waiter.Sockets`, anything else awaited as is."""
    if loop is None:
        loop = _running_loop()
        if loop is None:
            raise no_loop_error()
    cur = _waiter.current
    if cur.loop is not loop:
        cur = use_loop(loop)
    arm = cur.arm
    idle = cur.idle
    me = getcurrent()
    if idle and idle[-1].parent is me:  # the usual case, inlined: a greenlet of this task's thread
        g = idle.pop()
        g.gr_context = me.gr_context
    else:
        g = _take(idle, False)
    deferred: Optional[BaseException] = None  # a cancellation held back by a shield
    req = g.switch(fn, args, kwargs)
    while req is not _DONE:
        try:
            if req.__class__ is tuple:  # (fd, events, timeout, shield): the hot path
                aw = arm(loop, req[0], req[1], req[2])
                if not (shield or req[3]):
                    req = g.switch(await aw)
                    continue
            elif g.dead:
                break
            else:
                aw = req
                if not shield:
                    req = g.switch(await aw)
                    continue
            value, cancel = await _await_shielded(aw)
            deferred = cancel or deferred
        except BaseException as e:  # noqa: BLE001 - the greenlet decides what it means
            req = _throw(g, e)
            continue
        req = g.switch(value)
    if req is _DONE and g.error is None and deferred is None:  # the usual end of _give_back, inlined
        g.gr_context = None
        result = g.result
        g.result = None
        if len(idle) < _IDLE_MAX:
            idle.append(g)
        return result
    result = _give_back(g)
    if deferred is not None:
        raise deferred  # a cancellation a shield held back
    return result


def _throw(g: BridgeGreenlet, exc: BaseException) -> Any:
    """Deliver what interrupted the task's await (a cancellation) into the call, where
    ``psycogreen._wait.drive`` handles it; return the call's next request. ``GeneratorExit`` (the
    awaiting coroutine was closed without finishing) is re-raised instead: nobody will answer the
    call's requests any more, so the greenlet is marked abandoned and finishes with blocking waits."""
    if isinstance(exc, GeneratorExit):
        g.abandoned = True
        raise exc
    return g.throw(exc)


async def _await_shielded(aw: Any) -> tuple[Any, Optional[BaseException]]:
    """Await ``aw`` (a socket wait's future or any awaitable) to the end despite cancellations of
    the task; return (its value, a cancellation that arrived meanwhile). The one shield of the
    asyncio side: a socket wait's future keeps its deadline across the retries."""
    inner = asyncio.ensure_future(aw)
    cancel: Optional[BaseException] = None
    with anyio.CancelScope(shield=True):
        while True:
            try:
                return await asyncio.shield(inner), cancel
            except _CancelledError as e:
                if inner.cancelled():
                    raise
                cancel = e
    return 0, cancel  # only if the scope swallowed an exception: report "not ready"


# -- trio (through anyio) -----------------------------------------------------------------------


async def _call_anyio(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Any, shield: bool) -> Any:
    if not shield:
        await anyio.lowlevel.checkpoint_if_cancelled()
        return await _drive_anyio(fn, args, kwargs)
    with anyio.CancelScope(shield=True):
        result = await _drive_anyio(fn, args, kwargs)
    await anyio.lowlevel.checkpoint_if_cancelled()
    return result


async def _drive_anyio(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Any) -> Any:
    g = _take(_local.idle, True)
    req = g.switch(fn, args, kwargs)
    while req is not _DONE:
        try:
            if req.__class__ is tuple:
                value = await wait_anyio(*req)
            elif g.dead:
                break
            else:
                value = await req
        except BaseException as e:  # noqa: BLE001 - the greenlet decides what it means
            req = _throw(g, e)
            continue
        req = g.switch(value)
    return _give_back(g)


# -- inside a call: suspend, events, tasks -------------------------------------------------------


def suspend(aw: Awaitable[T]) -> T:
    """Suspend the current bridge greenlet until its task has awaited ``aw``."""
    g = getcurrent()
    if not isinstance(g, BridgeGreenlet) or g.abandoned:
        close = getattr(aw, "close", None)
        if close is not None:
            close()
        raise outside_call_error()
    return g.parent.switch(aw)  # type: ignore[no-any-return]


def current_task() -> object:
    """The task awaiting the current bridge call (asyncio or trio)."""
    g = getcurrent()
    if getattr(g, "trio", False):
        import trio

        return trio.lowlevel.current_task()
    task = asyncio.current_task()
    return task if task is not None else g


_background: set[Any] = set()


async def _run_in_background(fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        await call(fn, *args)
    except BaseException as e:  # noqa: BLE001 - a background job must never take the loop down
        if isinstance(e, (_CancelledError, GeneratorExit)) or type(e).__name__ == "Cancelled":
            raise
        logger.exception("background job %r failed", fn)


def spawn(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """Run ``fn(*args)`` in a new bridge greenlet driven by a background task of the current
    call's loop (asyncio task / trio system task)."""
    if getattr(getcurrent(), "trio", False):
        import trio

        return trio.lowlevel.spawn_system_task(_run_in_background, fn, args)
    loop = asyncio.get_running_loop()
    task = loop.create_task(_run_in_background(fn, args))
    _background.add(task)
    task.add_done_callback(_background.discard)
    return task


class BridgeEvent:
    """An event that bridge greenlets wait on by suspending (their task awaits an anyio event).

    Set it from the event loop's thread (any bridge greenlet or task); ``wait`` outside a bridge
    greenlet is a :class:`MisuseError`, since it would freeze the loop.
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
        return suspend(self._wait(timeout))

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
