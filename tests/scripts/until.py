"""Wait for a condition instead of a guessed time: the one polling helper of the tests and scripts.

A step that needs some state (a statement running on the server, a client queued in the pool, a
slot released) waits until that state is seen, so the suite is as fast as the machine allows and
does not flake when the machine is slow. Fails loudly, naming what it waited for.

Importable without side effects (unlike ``kit``, which monkey-patches): scripts get it through
``kit.wait_until`` (which yields with the framework's own sleep), pytest tests import it directly
(``tests/scripts`` is on pytest's ``pythonpath``); ``await_until`` is the same for anyio tests.
"""

from __future__ import annotations

import inspect
import time
from typing import Any, Callable, Optional

INTERVAL = 0.005


class _Deadline:
    """The timeout shared by the sync and async forms, and the failure message."""

    def __init__(self, timeout: float, what: str, detail: Optional[Callable[[], str]]) -> None:
        self.end = time.monotonic() + timeout
        self.timeout, self.what, self.detail = timeout, what, detail

    def check(self) -> None:
        if time.monotonic() > self.end:
            extra = f"\n{self.detail()}" if self.detail else ""
            raise AssertionError(f"timed out after {self.timeout} s waiting for {self.what}{extra}")


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    what: str = "condition",
    *,
    sleep: Callable[[float], Any] = time.sleep,
    interval: float = INTERVAL,
    detail: Optional[Callable[[], str]] = None,
) -> Any:
    """Call ``predicate()`` until it returns something truthy, and return that. ``sleep`` lets other
    threads/greenlets run between calls; after ``timeout`` s raise AssertionError naming ``what``
    (plus ``detail()``, e.g. a server's log)."""
    deadline = _Deadline(timeout, what, detail)
    while True:
        value = predicate()
        if value:
            return value
        deadline.check()
        sleep(interval)


async def await_until(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    what: str = "condition",
    *,
    interval: float = INTERVAL,
    detail: Optional[Callable[[], str]] = None,
) -> Any:
    """``wait_until`` for anyio tests: ``predicate`` may be a coroutine function; waits with
    ``anyio.sleep`` so the event loop runs meanwhile."""
    import anyio

    deadline = _Deadline(timeout, what, detail)
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        deadline.check()
        await anyio.sleep(interval)
