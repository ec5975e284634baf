"""gevent: wait on libev/libuv watchers that are created once and reused.

``gevent.socket.wait_read()`` creates and closes a watcher on every call (and wraps it in a Waiter);
on the per-query hot path that is half the cost of waiting. Here each (fd, events) pair gets one io
watcher per hub, kept until the connection closes, and the greenlet switches to the hub directly.

A cached watcher must never outlive its socket: libev keeps its own record of what it registered
for an fd number, and a watcher started again after its socket was closed and the number reused by
a new socket is never reported (the process waits forever, or until connect_timeout). So
:meth:`GeventWaiter.forget_fd` closes the watchers of an fd number, and psycogreen calls it on every
path where a socket ends or is born: ``close()``, a failed connect attempt, and every new socket
seen while connecting or cancelling (see ``psycogreen._wait._adopt``), which also covers sockets
closed behind our back (garbage collection, a broken connection). The per-query path pays nothing.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, TypeVar

import gevent
import gevent.event
import gevent.lock
import gevent.socket
from gevent import getcurrent
from gevent._hub_local import get_hub_if_exists
from gevent.hub import get_hub

from .._core import READ_WRITE
from . import _parking

T = TypeVar("T")


def _new_watcher(hub: Any, fd: int, events: int) -> Any:
    try:
        cache = hub.psycogreen_watchers
    except AttributeError:
        cache = hub.psycogreen_watchers = {}
    watcher = cache[(fd << 2) | events] = hub.loop.io(fd, events)
    return watcher


def _accel_poll() -> Optional[Callable[[Any], Any]]:
    """The wait callback's poll loop in C with this waiter's hot path (None: pure Python)."""
    from .. import _accel

    if _accel.speedups is None:
        return None
    import greenlet

    _accel.speedups.setup_gevent(get_hub, _new_watcher, greenlet.greenlet.switch)
    return _accel.speedups.gevent_poll  # type: ignore[no-any-return]


class GeventWaiter:
    name = "gevent"
    #: ``psycogreen._speedups.gevent_poll``: the poll loop of ``_wait.wait_callback`` with the hot
    #: path of :meth:`wait_fd` below, in C; None when the accelerator is off (see ``_accel``).
    #: (A C function stored on a class is not bound to instances: no staticmethod needed.)
    accel_poll: Optional[Callable[[Any], Any]] = _accel_poll()

    def wait_fd(self, fd: int, events: int, timeout: Optional[float] = None, shield: bool = False) -> int:
        hub = get_hub()
        try:
            watcher = hub.psycogreen_watchers[(fd << 2) | events]
        except (AttributeError, KeyError):
            watcher = _new_watcher(hub, fd, events)
        if timeout is None and events != READ_WRITE:
            # The hot path: one cached watcher, one switch to the hub and back.
            watcher.start(getcurrent().switch, events)
            try:
                return hub.switch()  # type: ignore[no-any-return]
            finally:
                watcher.stop()
        switch = getcurrent().switch
        if events == READ_WRITE:
            # Waiting for either: libev passes the events that actually happened.
            watcher.start(switch, pass_events=True)
        else:
            watcher.start(switch, events)
        if timeout is None:
            try:
                return hub.switch()  # type: ignore[no-any-return]
            finally:
                watcher.stop()
        timer = hub.loop.timer(max(timeout, 0.0))
        timer.start(switch, 0)
        try:
            return hub.switch()  # type: ignore[no-any-return]
        finally:
            watcher.stop()
            timer.close()

    def run_in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return get_hub().threadpool.apply(fn, args)  # type: ignore[no-any-return]

    def getaddrinfo(self, host: str, port: Any, *args: Any) -> list[Any]:
        return gevent.socket.getaddrinfo(host, port, *args)  # type: ignore[no-any-return]

    def current(self) -> object:
        return getcurrent()

    def sleep(self, seconds: float) -> None:
        gevent.sleep(seconds)

    def spawn(self, fn: Callable[..., Any], *args: Any) -> Any:
        return gevent.spawn(fn, *args)

    def Event(self) -> Any:
        return gevent.event.Event()

    def Lock(self) -> Any:
        return gevent.lock.RLock()

    def forget_fd(self, fd: int) -> None:
        """Drop the watchers cached for ``fd``: its socket is closing, closed, or newly created."""
        hub = get_hub_if_exists()  # never create a hub for this (a finalizer may run in any thread)
        cache = getattr(hub, "psycogreen_watchers", None)
        if not cache:
            return
        for events in (1, 2, 3):
            watcher = cache.pop((fd << 2) | events, None)
            if watcher is not None:
                _retire(hub, watcher, events)

    # ------------------------------------------------------------------ parking (pool hand-off)

    def park_token(self) -> Any:
        return _parking.GreenToken(getcurrent(), get_hub())

    def park(self, token: Any) -> Any:
        """Switch to the hub until ``unpark`` (no Event: one hub callback wakes the greenlet)."""
        return _parking.park(token)

    def unpark(self, token: Any, value: Any) -> None:
        if _parking.hand(token, value) and token.parked:
            if get_hub() is token.hub:
                token.hub.loop.run_callback(_parking.wake_parked, token)
            else:  # unparked from another OS thread: its hub's loop is not ours
                token.hub.loop.run_callback_threadsafe(_parking.wake_parked, token)


def _retire(hub: Any, watcher: Any, events: int) -> None:
    """Close a cached watcher. One still started has a greenlet parked on it (its socket was closed
    under it): wake that greenlet with the events, so libpq finds out, rather than leave it parked
    forever; the waiter's own ``finally`` then stops the watcher, which is closed by gevent later."""
    if not watcher.active:
        watcher.close()
        return
    callback = watcher.callback
    watcher.stop()
    if callback is not None:
        hub.loop.run_callback(callback, events)
