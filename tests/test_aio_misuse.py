"""psycogreen.aio.MisuseError: each misuse of the bridge raises it, with the fix in its message, on
asyncio, uvloop and trio; and it is both a ``psycopg2.InterfaceError`` and a ``RuntimeError``."""

from __future__ import annotations

import time
from typing import Any, Iterator

import anyio
import psycopg2
import pytest

import psycogreen
import psycogreen.aio as aio
from psycogreen.aio._waiter import WAITER

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _unpatched() -> Iterator[None]:
    yield
    psycogreen.unpatch()


def test_misuse_error_is_what_psycopg2_and_runtime_handlers_catch() -> None:
    assert issubclass(aio.MisuseError, psycopg2.InterfaceError)
    assert issubclass(aio.MisuseError, psycopg2.Error)
    assert issubclass(aio.MisuseError, RuntimeError)
    assert "MisuseError" in aio.__all__


def _drive_without_a_loop() -> BaseException:
    """Await psycogreen.aio by hand, in a thread where no event loop runs."""
    coro = aio.run_sync(lambda: 42)
    try:
        coro.send(None)
    except BaseException as e:  # noqa: BLE001 - returned to the test
        return e
    finally:
        coro.close()
    raise AssertionError("awaiting psycogreen.aio outside a running loop did not fail")


async def test_awaited_outside_a_running_loop() -> None:
    err = await anyio.to_thread.run_sync(_drive_without_a_loop)
    assert isinstance(err, aio.MisuseError), repr(err)
    assert isinstance(err, RuntimeError)
    assert "outside a running event loop" in str(err)
    assert "asyncio.run" in str(err) and "trio" in str(err)  # the fix


async def test_bridge_wait_outside_a_psycogreen_aio_call() -> None:
    """The bridge's waits (events, sleeps, worker threads) suspend a bridge greenlet; called from
    plain task code they would freeze the loop instead."""
    event = WAITER.Event()
    with pytest.raises(aio.MisuseError, match="run_sync"):
        event.wait(1.0)
    with pytest.raises(RuntimeError, match="only works inside psycogreen.aio calls"):
        WAITER.sleep(0.01)
    with pytest.raises(aio.MisuseError):
        WAITER.wait_fd(0, 1, 0.01)
    # Inside a call the same waits work.
    assert await aio.run_sync(event.wait, 0.01) is False
    await aio.run_sync(WAITER.sleep, 0.01)


async def test_sync_api_of_an_aio_connection_on_the_loop_thread(dsn: str) -> None:
    conn = await aio.connect(dsn)
    try:
        conn.autocommit = True
        pid = conn.get_backend_pid()
        raw_cur = conn.raw.cursor()
        # Refused at its first wait, right after the statement was sent, and cancelled. A cancel that
        # reaches the backend before it started the statement is ignored by PostgreSQL, so the
        # statement is short enough to end within the cancel grace either way: the connection is
        # kept in both cases (a long one whose cancel is lost is closed after the grace).
        with pytest.raises(aio.MisuseError) as info:
            raw_cur.execute("select pg_sleep(0.3)")
        message = str(info.value)
        assert "event loop's thread" in message and "run_sync" in message
        # The connection was kept, idle, and serves the next statement.
        assert not conn.closed
        cur = conn.cursor()
        await cur.execute("select pg_backend_pid()")
        assert await cur.fetchone() == (pid,)
        # In a worker thread the sync API only blocks that thread: allowed.
        assert await anyio.to_thread.run_sync(_sync_select, conn.raw) == 7
        # And inside psycogreen.aio it is the normal way to run sync code.
        assert await aio.run_sync(_sync_select, conn.raw) == 7
    finally:
        await conn.close()


def _sync_select(raw: Any) -> int:
    cur = raw.cursor()
    cur.execute("select 7")
    row = cur.fetchone()
    assert row is not None
    return int(row[0])


async def test_plain_psycopg2_on_the_loop_thread_still_only_warns(dsn: str) -> None:
    """Only connections of psycogreen.aio are refused; other psycopg2 code on the loop's thread (a
    library at start-up) keeps working, with the one-time warning."""
    from psycogreen._waiters.loop import LoopGuardWaiter

    aio_conn = await aio.connect(dsn)  # patches for asyncio, marks only its own socket
    try:
        LoopGuardWaiter.warned = False
        with pytest.warns(RuntimeWarning, match="run_sync"):
            plain = psycopg2.connect(dsn)
        try:
            cur = plain.cursor()
            cur.execute("select 1")
            assert cur.fetchone() == (1,)
        finally:
            plain.close()
    finally:
        await aio_conn.close()


async def test_connection_in_use_by_another_loop_thread(dsn: str) -> None:
    """A second event loop (in another thread) using a connection while this loop's task is inside
    a call on it gets MisuseError at once, instead of its whole loop sleeping until the call ends."""
    import asyncio

    conn = await aio.connect(dsn)
    monitor = await aio.connect(dsn)
    try:
        conn.autocommit = True
        monitor.autocommit = True
        pid = conn.get_backend_pid()

        async def other_loop() -> BaseException:
            try:
                await conn.cursor().execute("select 1")
            except BaseException as e:  # noqa: BLE001 - returned to the test
                return e
            raise AssertionError("the second loop's call was not refused")

        async with anyio.create_task_group() as tg:
            tg.start_soon(conn.cursor().execute, "select pg_sleep(30)")
            await _wait_active(monitor, pid)
            started = time.monotonic()
            err = await anyio.to_thread.run_sync(asyncio.run, other_loop())
            refused_after = time.monotonic() - started
            tg.cancel_scope.cancel()  # cancels the long statement on the server
        assert isinstance(err, aio.MisuseError), repr(err)
        assert "another thread" in str(err) and "one connection (or one pool) per event loop" in str(err)
        assert refused_after < 10  # at once, not after the running 30 s statement
        # One after the other, from another loop, is fine.
        assert await anyio.to_thread.run_sync(asyncio.run, _select_7(conn)) == 7
    finally:
        await conn.close()
        await monitor.close()


async def _select_7(conn: aio.AsyncConnection) -> int:
    cur = conn.cursor()
    await cur.execute("select 7")
    row = await cur.fetchone()
    return int(row[0])


async def _wait_active(monitor: aio.AsyncConnection, pid: int) -> None:
    cur = monitor.cursor()
    with anyio.fail_after(10):
        while True:
            await cur.execute("select state from pg_stat_activity where pid = %s", (pid,))
            if await cur.fetchone() == ("active",):
                return
            await anyio.sleep(0.01)
