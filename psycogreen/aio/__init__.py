"""psycopg2 in asyncio (any loop, uvloop included) and trio, through a greenlet bridge.

::

    import psycogreen.aio

    conn = await psycogreen.aio.connect(dsn)
    async with conn:                      # psycopg2's ``with conn``: commit or roll back
        cur = conn.cursor()
        await cur.execute("select %s", (42,))
        print(await cur.fetchone())

psycopg2's own methods run in a greenlet whose waits are awaited by the calling task, so psycopg2
keeps its full green-mode semantics (transactions, ``executemany``, named cursors, COPY), cancelling
the task cancels the statement on the server, and unmodified sync code can be run cooperatively
with :func:`run_sync`. See ``docs/asyncio.md``.
"""

from __future__ import annotations

from ._connection import AsyncConnection, AsyncCursor, connect, run_sync
from ._pool import ConnectionPool, NullConnectionPool
from ._runtime import MisuseError

__all__ = [
    "AsyncConnection",
    "AsyncCursor",
    "ConnectionPool",
    "MisuseError",
    "NullConnectionPool",
    "connect",
    "run_sync",
]
