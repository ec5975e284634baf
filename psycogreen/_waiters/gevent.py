"""gevent: wait on libev/libuv watchers that are created once and reused.

``gevent.socket.wait_read()`` creates and closes a watcher on every call (and wraps it in a Waiter);
on the per-query hot path that is half the cost of waiting. Here each (fd, events) pair gets one io
watcher per hub, kept until the connection closes, and the greenlet switches to the hub directly.
An fd number reused by a later connection reuses the stopped watcher, which libev/libuv handle.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, TypeVar

import gevent
import gevent.event
import gevent.lock
import gevent.socket
from gevent import getcurrent
from gevent.hub import get_hub

from .._core import READ_WRITE

T = TypeVar("T")


def _new_watcher(hub: Any, fd: int, events: int) -> Any:
    try:
        cache = hub.psycogreen_watchers
    except AttributeError:
        cache = hub.psycogreen_watchers = {}
    watcher = cache[(fd << 2) | events] = hub.loop.io(fd, events)
    return watcher


class GeventWaiter:
    name = "gevent"

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
        hub = get_hub()
        cache = getattr(hub, "psycogreen_watchers", None)
        if not cache:
            return
        for events in (1, 2, 3):
            watcher = cache.pop((fd << 2) | events, None)
            if watcher is not None:
                watcher.close()

    # ------------------------------------------------------------------ parking (pool hand-off)

    def park_token(self) -> Any:
        return _GreenToken(getcurrent(), get_hub())

    def park(self, token: Any) -> Any:
        """Switch to the hub until ``unpark`` (no Event, no link objects: one callback)."""
        if token.woken:
            return token.value
        token.parked = True
        try:
            while not token.woken:  # a stray switch into this greenlet parks it again
                token.hub.switch()
        except BaseException:
            token.gone = True
            raise
        finally:
            token.parked = False
        return token.value

    def unpark(self, token: Any, value: Any) -> None:
        if token.woken or token.gone:
            return
        token.value = value
        token.woken = True
        if token.parked:
            if get_hub() is token.hub:
                token.hub.loop.run_callback(_wake_parked, token)
            else:  # unparked from another OS thread: its hub's loop is not ours
                token.hub.loop.run_callback_threadsafe(_wake_parked, token)


class _GreenToken:
    __slots__ = ("greenlet", "hub", "value", "woken", "gone", "parked")

    def __init__(self, glet: Any, hub: Any) -> None:
        self.greenlet = glet
        self.hub = hub
        self.value: Any = None
        self.woken = self.gone = self.parked = False


def _wake_parked(token: _GreenToken) -> None:
    """In the hub: resume the parked greenlet, unless an interrupt already took it out of park."""
    if token.parked and not token.gone:
        token.greenlet.switch()
