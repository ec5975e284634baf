"""``psycogreen.aio.ConnectionPool``: :class:`psycogreen.pool.ConnectionPool`, awaited.

There is one pool implementation. The sync pool waits only through the primitives of
``current_waiter()`` (``park``/``unpark`` for waiting clients, ``spawn`` and ``Event`` for its
background tasks), resolved at call time; run inside a bridge greenlet those primitives suspend the
greenlet and let its task await the loop. So every
method here is the sync pool's own method run through the bridge, and the async pool has the same
options, behaviour and fixes as the sync one by construction. Connections are handed out wrapped
in :class:`~psycogreen.aio.AsyncConnection`.
"""

from __future__ import annotations

import contextlib
from types import TracebackType
from typing import Any, AsyncIterator, Callable, ClassVar, Optional

from .. import pool as _sync
from ._connection import AsyncConnection, _ensure_patched
from ._delegate import Delegated
from ._runtime import call, call_shielded, suspend

__all__ = ["ConnectionPool", "NullConnectionPool"]


class ConnectionPool:
    """An asyncio/trio connection pool; takes the options of :class:`psycogreen.pool.ConnectionPool`.

    It cannot open in the constructor (that would need an ``await``): use ``async with
    ConnectionPool(...) as pool:`` or ``await pool.open()``. Background work (connecting, replacing,
    sweeping) runs in tasks of the running loop (trio: system tasks), so close the pool before the
    loop ends.
    """

    _sync_class: ClassVar[type[_sync.ConnectionPool]] = _sync.ConnectionPool

    def __init__(self, conninfo: str = "", *, open: bool = False, **options: Any) -> None:
        if open:
            raise TypeError(
                "psycogreen.aio.ConnectionPool cannot open in its constructor (opening awaits): "
                "use `async with ConnectionPool(...) as pool:` or `await pool.open()`"
            )
        _ensure_patched()
        configure, check, reset = (options.get(k) for k in ("configure", "check", "reset"))
        for key, fn in (("configure", configure), ("check", check), ("reset", reset)):
            if fn is not None:
                options[key] = _sync_callback(fn, key)
        #: The sync pool doing the work; its methods run in bridge greenlets.
        self.sync = self._sync_class(conninfo, open=False, **options)

    def __repr__(self) -> str:
        return repr(self.sync).replace("<", "<aio.", 1)

    name: Delegated[str] = Delegated("sync")
    min_size: Delegated[int] = Delegated("sync")
    max_size: Delegated[int] = Delegated("sync")
    closed: Delegated[bool] = Delegated("sync")
    timeout: Delegated[float] = Delegated("sync")

    async def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        await call(self.sync.open, wait, timeout)

    async def wait(self, timeout: float = 30.0) -> None:
        await call(self.sync.wait, timeout)

    async def close(self, timeout: float = 5.0) -> None:
        await call_shielded(self.sync.close, timeout)

    async def __aenter__(self) -> ConnectionPool:
        if self.sync.closed:
            await self.open()
        return self

    async def __aexit__(
        self, et: Optional[type[BaseException]], ev: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        await self.close()

    @contextlib.asynccontextmanager
    async def connection(self, timeout: Optional[float] = None) -> AsyncIterator[AsyncConnection]:
        """A connection for the ``async with`` block: committed on success, rolled back on an
        exception (cancellation included), returned to the pool in both cases."""
        cm = self.sync.connection(timeout)
        raw = await call(cm.__enter__)
        try:
            yield AsyncConnection(raw)
        except BaseException as e:
            exit_: Callable[..., Any] = cm.__exit__
            if not await call_shielded(exit_, type(e), e, e.__traceback__):
                raise
        else:
            await call_shielded(cm.__exit__, None, None, None)

    async def getconn(self, timeout: Optional[float] = None) -> AsyncConnection:
        return AsyncConnection(await call(self.sync.getconn, timeout))

    async def putconn(self, conn: AsyncConnection, close: bool = False) -> None:
        """Give back a connection from :meth:`getconn` (``close=True``: close it instead of keeping
        it). As in the sync pool, the settings it had when configured are restored."""
        raw = conn.raw if isinstance(conn, AsyncConnection) else conn
        await call_shielded(self.sync.putconn, raw, None, close)

    async def resize(self, min_size: int, max_size: Optional[int] = None) -> None:
        await call(self.sync.resize, min_size, max_size)

    async def check(self) -> None:
        await call(self.sync.check)

    def get_stats(self) -> dict[str, int]:
        return self.sync.get_stats()

    def pop_stats(self) -> dict[str, int]:
        return self.sync.pop_stats()


class NullConnectionPool(ConnectionPool):
    """:class:`psycogreen.pool.NullConnectionPool`, awaited: a fresh connection per checkout."""

    _sync_class = _sync.NullConnectionPool


def _sync_callback(fn: Callable[..., Any], key: str) -> Callable[[Any], None]:
    """``configure``/``check``/``reset`` may be ``async def fn(conn: AsyncConnection)``; the sync
    pool calls them in a bridge greenlet, which awaits them through the bridge."""
    import inspect

    if not inspect.iscoroutinefunction(fn):
        return fn

    def sync_fn(raw: Any) -> None:
        suspend(fn(AsyncConnection(raw)))

    sync_fn.__name__ = getattr(fn, "__name__", key)
    return sync_fn
