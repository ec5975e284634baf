"""psycogreen.aio's pool gives every borrower the connection as configured (issue 10.1), and an
enclosing ``psycogreen.timeout()`` bounds its wait (10.3), on asyncio, uvloop and trio: it is the
sync pool run through the bridge, so this checks the wiring."""

from __future__ import annotations

import time
from typing import Iterator

import psycopg2
import psycopg2.extensions as ext
import pytest

import psycogreen
import psycogreen.aio as aio
from psycogreen.errors import QueryTimeout
from psycogreen.pool import ConnectionPool as SyncPool

pytestmark = pytest.mark.anyio


@pytest.fixture
def tables(dsn: str) -> Iterator[tuple[str, str]]:
    mon = psycopg2.connect(dsn)
    mon.autocommit = True
    cur = mon.cursor()
    cur.execute("drop table if exists aio_state_ac; create table aio_state_ac (x int)")
    cur.execute("drop table if exists aio_state_enc; create table aio_state_enc (x int, s text)")
    cur.execute("insert into aio_state_enc values (1, 'café')")
    try:
        yield "aio_state_ac", "aio_state_enc"
    finally:
        mon.close()


async def test_autocommit_left_on_does_not_persist_a_failed_block(dsn: str, tables: tuple[str, str]) -> None:
    t_ac, _ = tables
    async with aio.ConnectionPool(dsn, min_size=1, max_size=1, timeout=5) as pool:
        async with pool.connection() as c:
            c.autocommit = True
        with pytest.raises(ValueError):
            async with pool.connection() as c:
                assert not c.autocommit
                await c.cursor().execute(f"insert into {t_ac} values (1)")
                raise ValueError("the block fails")
        async with pool.connection() as c:
            cur = c.cursor()
            await cur.execute(f"select count(*) from {t_ac}")
            assert await cur.fetchone() == (0,)


async def test_every_setting_is_restored(dsn: str, tables: tuple[str, str]) -> None:
    async with aio.ConnectionPool(dsn, min_size=1, max_size=1, timeout=5) as pool:
        conn = await pool.getconn()
        base = (conn.autocommit, conn.isolation_level, conn.readonly, conn.deferrable, conn.encoding)
        conn.isolation_level = ext.ISOLATION_LEVEL_SERIALIZABLE
        conn.readonly = True
        conn.deferrable = True
        await conn.set_client_encoding("LATIN1")
        conn.autocommit = True
        await conn.cursor().execute("do $$ begin raise notice 'hi'; end $$")
        assert conn.notices
        await pool.putconn(conn)
        async with pool.connection() as c:
            assert (c.autocommit, c.isolation_level, c.readonly, c.deferrable, c.encoding) == base
            assert not c.notices
            cur = c.cursor()
            await cur.execute("show transaction_read_only")
            assert await cur.fetchone() == ("off",)


async def test_latin1_then_discard_all_round_trips_text(dsn: str, tables: tuple[str, str]) -> None:
    _, t_enc = tables
    async with aio.ConnectionPool(dsn, min_size=1, max_size=1, timeout=5, reset=SyncPool.discard_all) as pool:
        async with pool.connection() as c:
            await c.set_client_encoding("LATIN1")
        async with pool.connection() as c:
            cur = c.cursor()
            await cur.execute(f"insert into {t_enc} values (2, 'café')")
            await cur.execute(f"select s from {t_enc} order by x")
            assert await cur.fetchall() == [("café",), ("café",)]


async def test_putconn_close_true(dsn: str) -> None:
    async with aio.ConnectionPool(dsn, min_size=1, max_size=1, timeout=5) as pool:
        conn = await pool.getconn()
        await pool.putconn(conn, close=True)
        assert conn.closed
        async with pool.connection() as c:
            assert c.raw is not conn.raw and not c.closed


async def test_enclosing_deadline_bounds_the_pool_wait(dsn: str) -> None:
    async with aio.ConnectionPool(dsn, min_size=1, max_size=1, timeout=5) as pool:
        held = await pool.getconn()
        t0 = time.monotonic()
        with pytest.raises(QueryTimeout, match="enclosing psycogreen.timeout"):
            with psycogreen.timeout(0.3):
                async with pool.connection():
                    pass
        assert time.monotonic() - t0 < 3.0  # not the pool's 5 s
        await pool.putconn(held)
