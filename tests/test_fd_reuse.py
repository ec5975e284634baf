"""Resources follow sockets, not fd numbers (issue 9, items 1 and 2).

The OS gives a new socket the lowest free fd number, very often the one a socket just closed had:
a refused attempt, libpq moving to the next host, a connection broken or dropped by the garbage
collector. Whatever a waiter cached for that number (a gevent watcher, an event loop's reader)
belonged to the dead socket. Under gevent a cached watcher made every later connect hang; under
uvloop an error on a watched socket left a closed poll handle that poisoned reconnects and hung
tasks; under asyncio a gc-closed connection made the next connect fail with FileNotFoundError.

gevent, eventlet and threads run as scripts (tests/scripts/fd_reuse.py); asyncio, uvloop and trio
run in-process through psycogreen.aio.
"""

from __future__ import annotations

import gc
import logging
import shutil
import socket
import time
from typing import Any, Callable, Iterator

import anyio
import psycopg2
import pytest
from until import await_until

import psycogreen
import psycogreen.aio as aio
from psycogreen.errors import PoolTimeout
from psycogreen.testing import PostgresServer
from psycogreen.testing._server import find_bindir

FRAMEWORKS = ["gevent", "eventlet", "threads"]
RunScript = Callable[..., Any]


def _has_basebackup() -> bool:
    import os

    try:
        bindir = find_bindir()
    except RuntimeError:
        return False
    return os.path.exists(os.path.join(bindir, "pg_basebackup")) or shutil.which("pg_basebackup") is not None


# -- gevent, eventlet, threads ------------------------------------------------------------------


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_connects_after_refused_closed_dropped_broken_reset(run_script: RunScript, framework: str) -> None:
    out = run_script("fd_reuse.py", framework, "connects")
    assert out["refused"] == ["refused"] * 3, out
    assert out["refused_t"] == ["refused"] * 3, out
    # A refused attempt's fd number, reused at once by the next socket, must not hang it.
    for step in ("after_refused", "after_refused_t", "multi", "multi_t", "after_close", "after_gc"):
        assert out[step] == ["ok"] * 3, (step, out)
    assert out["after_broken"] == ["ok closed=2"] * 3, out
    assert out["after_reset"] == ["ok kept=True"] * 3, out


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_pool_recovers_after_a_5s_outage(run_script: RunScript, framework: str) -> None:
    out = run_script("fd_reuse.py", framework, "outage")
    assert out["outage_s"] >= 5.0, out
    assert out["hung"] == 0, out
    # The pool retries with backoff (0.5 s, doubling): generous bounds, the figures are in the output.
    assert out["recovery_s"] is not None and out["recovery_s"] < 15.0, out
    assert out["served_200_s"] is not None and out["served_200_s"] < 20.0, out


@pytest.mark.skipif(not _has_basebackup(), reason="pg_basebackup is needed to build a streaming standby")
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_failover_to_a_promoted_standby(run_script: RunScript, framework: str) -> None:
    out = run_script("fd_reuse.py", framework, "failover")
    # Writes resume soon after the promotion (measured: ~0.3 s; the bound is generous).
    assert out["resume_after_promotion_s"] is not None, out
    assert out["resume_after_promotion_s"] < 10.0, out
    assert out["written_after"] > 0, out
    assert out["hung"] == 0, out
    # Synchronous replication: every commit a client saw succeed is on the promoted standby.
    assert out["n_lost"] == 0, out
    assert out["acked"] > 50, out


# -- asyncio, uvloop, trio through psycogreen.aio ----------------------------------------------


@pytest.fixture(autouse=True)
def _unpatched() -> Iterator[None]:
    yield
    psycogreen.unpatch()


class _Records(logging.Handler):
    """Every log record of psycogreen (the pool logs each failed connection attempt)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def records() -> Iterator[_Records]:
    handler = _Records()
    logger = logging.getLogger("psycogreen")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def _poisoned(messages: list[str]) -> list[str]:
    """Messages that betray stale loop state for an fd number."""
    return [m for m in messages if "UVPoll" in m or "handler is closed" in m or "Errno 2" in m]


def _refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _select(dsn: str) -> int:
    conn = await aio.connect(dsn)
    try:
        cur = conn.cursor()
        await cur.execute("select 42")
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])
    finally:
        await conn.close()


@pytest.mark.anyio
async def test_aio_dropped_connection_then_connects(dsn: str) -> None:
    """A connection never closed, collected by gc: the next connects and queries work."""
    for _ in range(5):
        dropped = await aio.connect(dsn)
        await dropped.cursor().execute("select 1")
        del dropped
        gc.collect()
        with anyio.fail_after(10):
            assert await _select(dsn) == 42


@pytest.mark.anyio
async def test_aio_refused_then_healthy(dsn: str) -> None:
    params = dict(p.split("=", 1) for p in dsn.split())
    rest = " ".join(f"{k}={v}" for k, v in params.items() if k not in ("host", "port"))
    dead = _refused_port()
    for _ in range(3):
        with anyio.fail_after(10):
            with pytest.raises(psycopg2.OperationalError):
                await aio.connect(f"host=127.0.0.1 port={dead} {rest}")
            assert await _select(dsn) == 42
            assert await _select(f"host=127.0.0.1,127.0.0.1 port={dead},{params['port']} {rest}") == 42


async def _clients(pool: aio.ConnectionPool, n: int, stop: list[bool], oks: list[float]) -> Any:
    async def client() -> None:
        while not stop[0]:
            try:
                async with pool.connection(timeout=2) as conn:
                    await conn.cursor().execute("select pg_sleep(0.002)")
                oks.append(time.monotonic())
            except (PoolTimeout, psycopg2.Error):
                await anyio.sleep(0.02)  # behaviour: a client backs off before retrying

    return [client for _ in range(n)]


@pytest.mark.anyio
async def test_aio_terminate_storms(dsn: str, records: _Records) -> None:
    """pg_terminate_backend of every pool backend under load, five times: no task hangs, no stale
    loop state shows, and the pool serves everyone afterwards."""
    app = "fd_reuse_storm"
    mon = await aio.connect(dsn)
    mon.autocommit = True
    pool = aio.ConnectionPool(dsn, min_size=4, max_size=8, timeout=3, kwargs={"application_name": app})
    await pool.open(wait=True)
    stop = [False]
    oks: list[float] = []
    try:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for fn in await _clients(pool, 16, stop, oks):
                    tg.start_soon(fn)
                for _ in range(5):
                    want = len(oks) + 50
                    await await_until(lambda w=want: len(oks) >= w, 60, "50 more queries served")
                    await mon.cursor().execute(
                        "select pg_terminate_backend(pid) from pg_stat_activity where application_name = %s",
                        (app,),
                    )
                after = len(oks)
                # everyone is served again
                await await_until(lambda: len(oks) >= after + 300, 60, "300 queries after the storms")
                stop[0] = True  # every client must now finish: none may hang inside a query
    finally:
        stop[0] = True
        with anyio.move_on_after(15):  # a failure above must not turn into a hang here
            await pool.close()
            await mon.close()
    assert _poisoned(records.messages) == [], records.messages[-5:]


@pytest.mark.anyio
async def test_aio_server_restart(records: _Records) -> None:
    """The server stops and starts again under load: the pool serves again, no task hangs."""
    server = await anyio.to_thread.run_sync(PostgresServer().start)
    pool = aio.ConnectionPool(server.dsn, min_size=4, max_size=6, timeout=2)
    stop = [False]
    oks: list[float] = []
    try:
        await pool.open(wait=True)
        with anyio.fail_after(90):
            async with anyio.create_task_group() as tg:
                for fn in await _clients(pool, 8, stop, oks):
                    tg.start_soon(fn)
                await await_until(lambda: len(oks) >= 50, 60, "50 queries served")
                await anyio.to_thread.run_sync(server.restart)
                up_at = time.monotonic()
                await await_until(lambda: sum(t > up_at for t in oks) >= 200, 80, "200 queries after restart")
                stop[0] = True
    finally:
        stop[0] = True
        with anyio.move_on_after(15):  # a failure above must not turn into a hang here
            await pool.close()
        await anyio.to_thread.run_sync(server.destroy)
    assert _poisoned(records.messages) == [], records.messages[-5:]
