"""``AsyncConnection`` and ``AsyncCursor``: psycopg2's green connection, awaited from asyncio or trio.

Each method that may wait on the server runs the psycopg2 method itself in a bridge greenlet
(:func:`psycogreen.aio._runtime.call`); everything that cannot wait (properties, fetching from a
client-side cursor's buffer) is read directly. So the semantics are psycopg2's own, in green mode:
transactions, ``executemany``, named cursors, COPY, and psycogreen's guards (concurrent use,
interrupts that cancel on the server and keep the connection).
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, AsyncIterator, Awaitable, Callable, Optional, TypeVar

import psycopg2
import psycopg2.extensions as ext

from .. import _guard
from .._patch import patch, patched
from ._delegate import Delegated, Settable
from ._files import adapt
from ._runtime import call, call_shielded, note_connection
from ._waiter import forget_fd

__all__ = ["AsyncConnection", "AsyncCursor", "connect", "run_sync"]

T = TypeVar("T")
_END: Any = object()


def _ensure_patched() -> None:
    """psycopg2 must be in green mode (a wait callback set); the bridge greenlets bring their own
    waiter, so any framework patched already (gevent, eventlet, threads) is fine as it is."""
    if patched() is None:
        patch("asyncio")


async def connect(
    dsn: str = "",
    *,
    connection_factory: Optional[Callable[..., Any]] = None,
    cursor_factory: Optional[Callable[..., Any]] = None,
    **kwargs: Any,
) -> AsyncConnection:
    """Connect without blocking the loop; the arguments are ``psycopg2.connect()``'s.

    ``connect_timeout`` is honoured (libpq ignores it in non-blocking mode; psycogreen enforces it),
    host names resolve through the loop, and multi-host DSNs are tried in order.
    """
    _ensure_patched()
    raw = await call(
        psycopg2.connect, dsn, connection_factory=connection_factory, cursor_factory=cursor_factory, **kwargs
    )
    return AsyncConnection(raw)


async def run_sync(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run synchronous code that uses psycopg2 — a legacy data-access layer, SQLAlchemy's sync
    ``Session`` — cooperatively: it runs on the loop's thread, and each wait on the server suspends
    only this task. Connections it opens with ``psycopg2.connect()`` are green; cancelling the task
    cancels the running statement on the server.

    Code that blocks in other ways (``time.sleep``, ``requests``) still blocks the loop: that kind
    belongs in ``asyncio.to_thread`` / ``anyio.to_thread.run_sync``.
    """
    _ensure_patched()
    return await call(fn, *args, **kwargs)


class AsyncConnection:
    """An asyncio/trio face for a psycopg2 connection (``raw``) in green mode.

    Create it with :func:`connect` or take one from :class:`psycogreen.aio.ConnectionPool`.
    ``async with conn:`` has psycopg2's ``with conn:`` meaning: commit on success, roll back on an
    exception, and the connection stays open.
    """

    __slots__ = ("__weakref__", "raw")

    def __init__(self, raw: Any) -> None:
        #: The psycopg2 connection (of psycogreen's green class) doing the work.
        self.raw: ext.connection = raw
        note_connection(raw)

    def __repr__(self) -> str:
        return f"<AsyncConnection {self.raw!r}>"

    # -- no I/O -----------------------------------------------------------------------------------

    def cursor(
        self,
        name: Optional[str] = None,
        cursor_factory: Optional[Callable[..., Any]] = None,
        scrollable: Optional[bool] = None,
        withhold: bool = False,
    ) -> AsyncCursor:
        """A cursor; with ``name``, a server-side cursor whose fetches run on the server."""
        raw = self.raw.cursor(name, cursor_factory=cursor_factory, scrollable=scrollable, withhold=withhold)
        return AsyncCursor(self, raw)

    closed: Delegated[int] = Delegated()
    autocommit: Settable[bool] = Settable()
    isolation_level: Settable[Optional[int]] = Settable()
    readonly: Settable[Optional[bool]] = Settable()
    deferrable: Settable[Optional[bool]] = Settable()
    cursor_factory: Settable[Any] = Settable()
    info: Delegated[Any] = Delegated()
    notices: Delegated[Any] = Delegated()
    status: Delegated[int] = Delegated()
    encoding: Delegated[str] = Delegated()
    dsn: Delegated[str] = Delegated()
    server_version: Delegated[int] = Delegated()
    protocol_version: Delegated[int] = Delegated()

    def fileno(self) -> int:
        return self.raw.fileno()

    def get_backend_pid(self) -> int:
        return self.raw.get_backend_pid()

    def get_transaction_status(self) -> int:
        return self.raw.get_transaction_status()

    def get_parameter_status(self, parameter: str) -> Optional[str]:
        return self.raw.get_parameter_status(parameter)

    def get_dsn_parameters(self) -> dict[str, str]:
        return self.raw.get_dsn_parameters()

    def xid(self, format_id: int, gtrid: str, bqual: str) -> Any:
        return self.raw.xid(format_id, gtrid, bqual)

    # -- may wait on the server -------------------------------------------------------------------

    def commit(self) -> Awaitable[None]:
        return call(self.raw.commit)

    def rollback(self) -> Awaitable[None]:
        return call(self.raw.rollback)

    async def close(self) -> None:
        """Close the connection. If another task is running a statement on it, that statement is
        cancelled first and that task's call ends with an ``OperationalError`` saying the connection
        was closed; on a dead network its socket is shut down after the cancel grace. psycopg2
        holds the connection's lock for the whole call, so closing under it would freeze the loop."""
        raw = self.raw
        if _guard.in_use(raw) and not raw.closed:
            await call(_guard.stop_other_user, raw)
        if not raw.closed:
            try:
                forget_fd(raw.fileno())
            except psycopg2.Error:
                pass
        raw.close()

    async def cancel(self) -> None:
        """Cancel the statement another task is running on this connection; never blocks the loop
        (libpq 17's non-blocking cancel, else libpq's blocking one in a worker thread)."""
        from .. import _wait

        if self.raw.closed:
            raise psycopg2.InterfaceError("connection already closed")
        await call(_wait.cancel, self.raw)

    def set_session(
        self,
        isolation_level: Any = None,
        readonly: Any = None,
        deferrable: Any = None,
        autocommit: Any = None,
    ) -> Awaitable[None]:
        kwargs = {
            k: v
            for k, v in (
                ("isolation_level", isolation_level),
                ("readonly", readonly),
                ("deferrable", deferrable),
                ("autocommit", autocommit),
            )
            if v is not None
        }
        return call(self.raw.set_session, **kwargs)

    def set_isolation_level(self, level: int) -> Awaitable[None]:
        return call(self.raw.set_isolation_level, level)

    def set_client_encoding(self, encoding: str) -> Awaitable[None]:
        return call(self.raw.set_client_encoding, encoding)

    def reset(self) -> Awaitable[None]:
        return call(self.raw.reset)

    def tpc_begin(self, xid: Any) -> Awaitable[None]:
        return call(self.raw.tpc_begin, xid)

    def tpc_prepare(self) -> Awaitable[None]:
        return call(self.raw.tpc_prepare)

    def tpc_commit(self, xid: Any = None) -> Awaitable[None]:
        return call(self.raw.tpc_commit, *(() if xid is None else (xid,)))

    def tpc_rollback(self, xid: Any = None) -> Awaitable[None]:
        return call(self.raw.tpc_rollback, *(() if xid is None else (xid,)))

    def tpc_recover(self) -> Awaitable[list[Any]]:
        return call(self.raw.tpc_recover)

    async def notifies(
        self, *, timeout: Optional[float] = None, stop_after: Optional[int] = None
    ) -> AsyncIterator[Any]:
        """Yield ``Notify`` objects as they arrive (``LISTEN`` first, on an autocommit connection).

        ``timeout`` is the total budget in seconds, after which iteration simply ends;
        ``stop_after`` ends it after that many. Queued notifications come first.
        """
        from .._notify import notifies

        gen = notifies(self.raw, timeout=timeout, stop_after=stop_after)
        try:
            while True:
                item = await call(next, gen, _END)
                if item is _END:
                    return
                yield item
        finally:
            close = getattr(gen, "close", None)
            if close is not None:
                close()

    async def __aenter__(self) -> AsyncConnection:
        return self

    async def __aexit__(
        self, et: Optional[type[BaseException]], ev: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        if et is None:
            await call(self.raw.__exit__, None, None, None)
        else:
            # Rolling back must happen even when the task is being cancelled.
            await call_shielded(self.raw.__exit__, et, ev, tb)


class AsyncCursor:
    """An asyncio/trio face for a psycopg2 cursor (``raw``). Fetching from a client-side cursor
    reads its buffer directly; a named cursor's fetches go to the server."""

    __slots__ = ("__weakref__", "_named", "connection", "raw")

    def __init__(self, connection: AsyncConnection, raw: Any) -> None:
        self.connection = connection
        #: The psycopg2 cursor doing the work.
        self.raw: ext.cursor = raw
        self._named = raw.name is not None

    def __repr__(self) -> str:
        return f"<AsyncCursor {self.raw!r}>"

    # -- statements -------------------------------------------------------------------------------

    def execute(self, query: Any, vars: Any = None) -> Awaitable[None]:
        return call(self.raw.execute, query, vars)

    def executemany(self, query: Any, vars_list: Any) -> Awaitable[None]:
        return call(self.raw.executemany, query, vars_list)

    def callproc(self, procname: str, parameters: Any = None) -> Awaitable[Any]:
        return call(self.raw.callproc, procname, parameters)

    def mogrify(self, query: Any, vars: Any = None) -> bytes:
        return self.raw.mogrify(query, vars)

    # -- results ----------------------------------------------------------------------------------

    async def fetchone(self) -> Any:
        if self._named:
            return await call(self.raw.fetchone)
        return self.raw.fetchone()

    async def fetchmany(self, size: Optional[int] = None) -> list[Any]:
        args = () if size is None else (size,)
        if self._named:
            return await call(self.raw.fetchmany, *args)
        return self.raw.fetchmany(*args)

    async def fetchall(self) -> list[Any]:
        if self._named:
            return await call(self.raw.fetchall)
        return self.raw.fetchall()

    async def scroll(self, value: int, mode: str = "relative") -> None:
        how: Any = mode  # psycopg2 checks it ("relative" or "absolute")
        if self._named:
            await call(self.raw.scroll, value, how)
        else:
            self.raw.scroll(value, how)

    def __aiter__(self) -> AsyncCursor:
        return self

    async def __anext__(self) -> Any:
        if self._named:
            row = await call(next, self.raw, _END)
        else:
            row = next(self.raw, _END)
        if row is _END:
            raise StopAsyncIteration
        return row

    # -- COPY: through the cursor's own methods, so a COPY holds the connection (guarded) -------

    async def copy_expert(self, sql: Any, file: Any, size: int = 8192) -> None:
        """``COPY ... FROM STDIN`` / ``TO STDOUT``. ``file`` may be a sync file-like object, an
        object with ``async def read(size)`` / ``async def write(data)`` (bytes are written), or,
        for COPY FROM, an async iterable of ``bytes``/``str`` chunks."""
        await call(self.raw.copy_expert, sql, adapt(file), size)

    async def copy_from(
        self,
        file: Any,
        table: str,
        sep: str = "\t",
        null: str = "\\N",
        size: int = 8192,
        columns: Any = None,
    ) -> None:
        await call(self.raw.copy_from, adapt(file), table, sep, null, size, columns)

    async def copy_to(
        self, file: Any, table: str, sep: str = "\t", null: str = "\\N", columns: Any = None
    ) -> None:
        await call(self.raw.copy_to, adapt(file), table, sep, null, columns)

    # -- state ------------------------------------------------------------------------------------

    async def close(self) -> None:
        if self._named and not self.raw.closed:
            await call(self.raw.close)
        else:
            self.raw.close()

    async def __aenter__(self) -> AsyncCursor:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._named and not self.raw.closed and not self.connection.closed:
            await call_shielded(self.raw.close)
        else:
            self.raw.close()

    description: Delegated[Any] = Delegated()
    rowcount: Delegated[int] = Delegated()
    rownumber: Delegated[Optional[int]] = Delegated()
    lastrowid: Delegated[int] = Delegated()
    query: Delegated[Optional[bytes]] = Delegated()
    statusmessage: Delegated[Optional[str]] = Delegated()
    closed: Delegated[bool] = Delegated()
    name: Delegated[Optional[str]] = Delegated()
    arraysize: Settable[int] = Settable()
    itersize: Settable[int] = Settable()
    tzinfo_factory: Settable[Any] = Settable()
