"""How to wait: one small module per framework, all with the same shape.

A waiter knows nothing about PostgreSQL. It offers the few primitives the rest of psycogreen needs:

- ``wait_fd(fd, events, timeout, shield)``: block the current green thread/task (never the hub) until
  ``fd`` is ready, returning the ready events, or 0 when ``timeout`` seconds pass first. ``shield``
  asks the waiter to ignore cancellation while waiting, where the framework can (trio/anyio); where
  it cannot (gevent), the driver catches and retries.
- ``run_in_thread(fn, *args)``: run a blocking C call in the framework's native thread pool.
- ``getaddrinfo(...)``: name resolution that does not block the hub.
- ``current()``: the identity of the running green thread/task.
- ``sleep``, ``spawn`` and ``Event``/``Lock`` factories for the pool's bookkeeping.

The choice of waiter is made in one place, :func:`psycogreen._patch.patch`.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Optional, Protocol, TypeVar

T = TypeVar("T")


class Waiter(Protocol):
    name: str

    def wait_fd(self, fd: int, events: int, timeout: Optional[float] = None, shield: bool = False) -> int: ...

    def run_in_thread(self, fn: Callable[..., T], *args: Any) -> T: ...

    def getaddrinfo(self, host: str, port: Any, *args: Any) -> list[Any]: ...

    def current(self) -> object: ...

    def sleep(self, seconds: float) -> None: ...

    def spawn(self, fn: Callable[..., Any], *args: Any) -> Any: ...

    def Event(self) -> Any: ...

    def Lock(self) -> Any: ...

    def forget_fd(self, fd: int) -> None: ...

    # Parking (the pool's hand-off): one green thread parks on a token, another wakes it with a
    # value. ``park_token()`` makes the token (before the caller publishes it, under its own lock);
    # ``park(token)`` suspends the caller until ``unpark(token, value)`` and returns ``value`` (at
    # once if that already happened); an interrupt (kill, Timeout, cancellation) raises out of
    # ``park`` and makes any later ``unpark`` of that token a no-op. ``unpark`` never blocks and
    # never switches, so it may be called while holding a lock.

    def park_token(self) -> Any: ...

    def park(self, token: Any) -> Any: ...

    def unpark(self, token: Any, value: Any) -> None: ...


def get_ident() -> tuple[object, int]:
    """(green thread, OS thread) of the caller: who is using a connection right now."""
    try:
        from greenlet import getcurrent
    except ImportError:  # pragma: no cover - greenlet ships with gevent and eventlet
        return (None, threading.get_ident())
    return (getcurrent(), threading.get_ident())
