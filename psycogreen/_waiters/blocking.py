"""Plain threads: block the calling thread in ``poll(2)``, which stays interruptible.

A signal (Ctrl-C) interrupts ``poll`` and Python raises ``KeyboardInterrupt`` from it, so a long
query can be interrupted and cancelled on the server — unlike psycopg2's blocking mode, where libpq
waits inside C and Ctrl-C is only seen when the query ends.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from typing import Any, Callable, Optional, TypeVar

from .._core import READ, WRITE
from . import _parking

T = TypeVar("T")

_POLLIN = select.POLLIN | select.POLLPRI
_POLLOUT = select.POLLOUT
_POLLERR = select.POLLERR | select.POLLHUP | select.POLLNVAL


class BlockingWaiter:
    name = "threads"

    def wait_fd(self, fd: int, events: int, timeout: Optional[float] = None, shield: bool = False) -> int:
        mask = (_POLLIN if events & READ else 0) | (_POLLOUT if events & WRITE else 0)
        poller = select.poll()
        poller.register(fd, mask)
        ms = None if timeout is None else max(0, int(timeout * 1000.0 + 0.999))
        ready = poller.poll(ms)
        if not ready:
            return 0
        rev = ready[0][1]
        if rev & _POLLERR:
            return events  # let libpq read the error
        return (READ if rev & _POLLIN else 0) | (WRITE if rev & _POLLOUT else 0)

    def run_in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return fn(*args)

    def getaddrinfo(self, host: str, port: Any, *args: Any) -> list[Any]:
        return socket.getaddrinfo(host, port, *args)

    def current(self) -> object:
        return threading.current_thread()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def spawn(self, fn: Callable[..., Any], *args: Any) -> Any:
        t = threading.Thread(target=fn, args=args, daemon=True, name="psycogreen-worker")
        t.start()
        return t

    def Event(self) -> Any:
        return threading.Event()

    def Lock(self) -> Any:
        return threading.RLock()

    def forget_fd(self, fd: int) -> None:
        pass

    # ------------------------------------------------------------------ parking (pool hand-off)

    def park_token(self) -> Any:
        return _ThreadToken()

    def park(self, token: Any) -> Any:
        """Block this thread on the token's lock (interruptible by Ctrl-C in the main thread)."""
        try:
            token.lock.acquire()
        except BaseException:
            token.gone = True
            raise
        return token.value

    def unpark(self, token: Any, value: Any) -> None:
        if _parking.hand(token, value):
            token.lock.release()


class _ThreadToken:
    """A parked thread: a lock taken at creation, released by ``unpark``."""

    __slots__ = ("lock", "value", "woken", "gone")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.value: Any = None
        self.woken = False
        self.gone = False
