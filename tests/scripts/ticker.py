"""The hub-stall probe every scenario script uses, with no import-time side effects (``kit`` monkey-
patches when imported; ``patch_order.py`` must not, so both take the Ticker from here); and its
twin for the event loops of the anyio tests, ``AsyncTicker``."""

from __future__ import annotations

import time
from typing import Any, Callable


class Ticker:
    """Ticks every ``interval`` seconds in its own greenlet; ``max_gap`` is the worst stall seen.

    ``spawn`` and ``sleep`` are the framework's own (gevent, eventlet, or threads)."""

    def __init__(
        self, spawn: Callable[..., Any], sleep: Callable[[float], None], interval: float = 0.005
    ) -> None:
        self.interval = interval
        self.max_gap = 0.0
        self.ticks = 0
        self._sleep = sleep
        self._stop = False
        self._g = spawn(self._run)

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop:
            self._sleep(self.interval)
            now = time.monotonic()
            self.max_gap = max(self.max_gap, now - last)
            self.ticks += 1
            last = now

    def stop(self) -> float:
        self._stop = True
        self._sleep(self.interval * 2)
        return self.max_gap


class AsyncTicker:
    """``Ticker`` for an event loop: ``tg.start_soon(ticker.run)``, then ``running = False``.
    ``max_gap`` is the worst stall of the loop seen, ``ticks`` how many times it ticked."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.max_gap = 0.0
        self.ticks = 0
        self.running = True

    async def run(self) -> None:
        import anyio

        last = time.monotonic()
        while self.running:
            await anyio.sleep(self.interval)
            now = time.monotonic()
            self.max_gap = max(self.max_gap, now - last)
            self.ticks += 1
            last = now
