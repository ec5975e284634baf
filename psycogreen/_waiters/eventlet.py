"""eventlet: register a listener on the hub and switch to it, without ``trampoline``'s extras.

eventlet's hubs have no reusable watchers (listeners are added and removed per wait), so the saving
here is skipping ``trampoline()``'s Timeout object and keyword handling on the hot path.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, TypeVar

import eventlet
import eventlet.event
import eventlet.semaphore
import eventlet.tpool
from eventlet.hubs import get_hub
from greenlet import getcurrent

from .._core import READ, READ_WRITE, WRITE
from . import _parking

T = TypeVar("T")


def _accel_poll() -> Optional[Callable[[Any], Any]]:
    """The wait callback's poll loop in C with this waiter's wait (None: pure Python)."""
    from eventlet.hubs import hub as _hub

    from .. import _accel

    if _accel.speedups is None:
        return None
    _accel.speedups.setup_eventlet(get_hub, _hub.READ, _hub.WRITE)
    return _accel.speedups.eventlet_poll  # type: ignore[no-any-return]


class EventletWaiter:
    name = "eventlet"
    #: ``psycogreen._speedups.eventlet_poll``: the poll loop of ``_wait.wait_callback`` with
    #: :meth:`wait_fd` without a timeout, in C; None when the accelerator is off (see ``_accel``).
    accel_poll: Optional[Callable[[Any], Any]] = _accel_poll()

    def wait_fd(self, fd: int, events: int, timeout: Optional[float] = None, shield: bool = False) -> int:
        hub = get_hub()
        current = getcurrent()
        if events == READ_WRITE:
            return self._wait_either(hub, current, fd, timeout)
        # The listener calls ``current.switch(fd)`` directly (no lambda per wait); the timer switches
        # with None, so the two wake-ups are told apart by type, whatever the fd number.
        listener = hub.add(hub.READ if events & READ else hub.WRITE, fd, current.switch, current.throw, None)
        if timeout is None:
            try:
                hub.switch()
            finally:
                hub.remove(listener)
            return events
        timer = hub.schedule_call_global(max(timeout, 0.0), current.switch, None)
        try:
            woke = hub.switch()
        finally:
            hub.remove(listener)
            timer.cancel()
        return 0 if woke is None else events

    @staticmethod
    def _wait_either(hub: Any, current: Any, fd: int, timeout: Optional[float]) -> int:
        """READ|WRITE (rare: a COPY that may be flushed or answered): a listener for each, and
        report which one fired."""
        listeners = [
            hub.add(hub.READ, fd, lambda _fd: current.switch(READ), current.throw, None),
            hub.add(hub.WRITE, fd, lambda _fd: current.switch(WRITE), current.throw, None),
        ]
        timer = None if timeout is None else hub.schedule_call_global(max(timeout, 0.0), current.switch, 0)
        try:
            return hub.switch()  # type: ignore[no-any-return]
        finally:
            for listener in listeners:
                hub.remove(listener)
            if timer is not None:
                timer.cancel()

    def run_in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return eventlet.tpool.execute(fn, *args)  # type: ignore[no-any-return]

    def getaddrinfo(self, host: str, port: Any, *args: Any) -> list[Any]:
        from eventlet.green import socket as gsocket

        return gsocket.getaddrinfo(host, port, *args)  # type: ignore[no-any-return]

    def current(self) -> object:
        return getcurrent()

    def sleep(self, seconds: float) -> None:
        eventlet.sleep(seconds)

    def spawn(self, fn: Callable[..., Any], *args: Any) -> Any:
        return eventlet.spawn(fn, *args)

    def Event(self) -> Any:
        from eventlet.green import threading as gthreading

        return gthreading.Event()

    def Lock(self) -> Any:
        from eventlet.green import threading as gthreading

        return gthreading.RLock()

    def forget_fd(self, fd: int) -> None:
        """eventlet keeps nothing per fd between waits (listeners are removed after each), so only a
        listener still registered matters: a green thread parked on a socket that is closing or
        gone. Wake it as if the socket were ready, so libpq finds out what happened (the same as
        the gevent waiter does), instead of leaving it parked forever."""
        hub = get_hub()
        for bucket in (hub.listeners[hub.READ], hub.listeners[hub.WRITE]):
            listener = bucket.get(fd)
            while listener is not None:
                callback = listener.cb
                hub.remove(listener)  # promotes a secondary listener of the same fd, if any
                listener.spent = True  # the waiter's own remove() in its finally is then a no-op
                hub.schedule_call_global(0, callback, fd)
                listener = bucket.get(fd)

    # ------------------------------------------------------------------ parking (pool hand-off)

    def park_token(self) -> Any:
        return _parking.GreenToken(getcurrent(), get_hub())

    def park(self, token: Any) -> Any:
        """Switch to the hub until ``unpark`` (no Event: one hub callback wakes the greenlet)."""
        return _parking.park(token)

    def unpark(self, token: Any, value: Any) -> None:
        if _parking.hand(token, value) and token.parked:
            token.hub.schedule_call_global(0, _parking.wake_parked, token)
