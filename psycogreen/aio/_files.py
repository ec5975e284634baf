"""COPY files for psycogreen.aio: sync file objects as they are, async ones through the bridge.

The COPY protocol (``psycogreen._core.copy``) never touches a file: it yields requests for data
and hands over rows, and the driver layer (``psycogreen.copy.with_file``) answers them with the
file's ``read``/``write``. For an async file, that driver-layer call is where the bridge greenlet
suspends and its task awaits the file (:func:`psycogreen.aio._runtime.suspend`), so a slow source
or sink never blocks the loop and the protocol loop itself never waits on a file.
"""

from __future__ import annotations

import inspect
from typing import Any, Optional

from ._runtime import suspend


class AsyncFileAdapter:
    """A sync file-like view of an async source or sink (``async def read(size)`` /
    ``async def write(data)``, or an async iterable of chunks for COPY FROM)."""

    __slots__ = ("_iter", "_target")

    def __init__(self, target: Any) -> None:
        self._target = target
        self._iter: Optional[Any] = None
        if not hasattr(target, "read") and hasattr(target, "__aiter__"):
            self._iter = target.__aiter__()

    def read(self, size: int = -1) -> Any:
        if self._iter is not None:
            try:
                return suspend(self._iter.__anext__())
            except StopAsyncIteration:
                return b""
        data = self._target.read(size)
        return suspend(data) if inspect.isawaitable(data) else data

    def write(self, data: Any) -> Any:
        rv = self._target.write(data)
        return suspend(rv) if inspect.isawaitable(rv) else rv


def adapt(file: Any) -> Any:
    """``file`` itself when it is a sync file-like object, else an :class:`AsyncFileAdapter`."""
    read = getattr(file, "read", None)
    write = getattr(file, "write", None)
    if read is None and write is None:
        if hasattr(file, "__aiter__"):
            return AsyncFileAdapter(file)
        return file  # psycogreen.copy raises the usual TypeError
    for method in (read, write):
        if method is not None and inspect.iscoroutinefunction(method):
            return AsyncFileAdapter(file)
    return file
