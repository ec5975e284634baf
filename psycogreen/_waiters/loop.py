"""``patch("asyncio")``: psycopg2 outside the bridge, in a process that runs an event loop.

Code inside :mod:`psycogreen.aio` (``run_sync``, ``AsyncConnection``, the async pool) waits on the loop
through its bridge greenlet's own waiter. Everything else waits in its own thread, blocking, which is
right for worker threads (``asyncio.to_thread``, executors) — but a psycopg2 call made directly on the
event loop's thread blocks *every* task until the server answers. That still has to work (libraries
do it at import or start-up time), so it waits correctly, and the first time it happens it says so
with a warning that names the fix, instead of freezing the loop silently.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import warnings
from typing import Any, Optional

from .blocking import BlockingWaiter

logger = logging.getLogger("psycogreen.aio")


def _sniffio_thread_local() -> Any:
    """Where trio says it is running (sniffio's thread-local). trio depends on sniffio, so without
    sniffio installed no trio runs and every task is asyncio's."""
    try:
        import sniffio
    except ImportError:  # pragma: no cover - anyio 4 does not require it

        class _NoLibrary:
            name = None

        return _NoLibrary()
    return sniffio.thread_local


_get_running_loop = asyncio._get_running_loop
_sniffio_local = _sniffio_thread_local()

MESSAGE = (
    "psycopg2 waited for the server on the event loop's thread, outside psycogreen.aio: the whole "
    "loop was blocked until the server answered (every other task stalled). Run such code with "
    "`await psycogreen.aio.run_sync(fn, *args)` or use psycogreen.aio.connect(); sync code meant to "
    "block belongs in a worker thread (asyncio.to_thread). This warning is shown once."
)


class LoopGuardWaiter(BlockingWaiter):
    """Blocking waits, with a one-time warning when they happen on a running event loop's thread."""

    name = "asyncio"
    warned = False

    def wait_fd(self, fd: int, events: int, timeout: Optional[float] = None, shield: bool = False) -> int:
        if _sniffio_local.name is not None or _get_running_loop() is not None:
            self._on_loop_thread(fd, shield)
        return BlockingWaiter.wait_fd(self, fd, events, timeout, shield)

    def _on_loop_thread(self, fd: int, shield: bool) -> None:
        """A blocking wait on the loop's thread: refused for a psycogreen.aio connection (which has
        a non-blocking way), allowed with a one-time warning for any other (start-up code)."""
        if shield:
            return  # the cancel and drain of an interrupted call: its first wait was reported
        runtime = sys.modules.get("psycogreen.aio._runtime")
        if runtime is not None and runtime.is_aio_socket(fd):
            # Raised as an interrupt: the statement is cancelled and the connection kept (a
            # psycopg2 error raised from the wait callback would make psycopg2 close it).
            raise runtime.blocking_on_loop_error()
        if not self.warned:
            LoopGuardWaiter.warned = True
            logger.warning("%s", MESSAGE)
            warnings.warn(MESSAGE, RuntimeWarning, stacklevel=3)

    def forget_fd(self, fd: int) -> None:
        waiter = sys.modules.get("psycogreen.aio._waiter")
        if waiter is not None:
            waiter.forget_fd(fd)
