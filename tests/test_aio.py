"""psycogreen.aio on asyncio, uvloop and trio, against the real server.

Runs in-process (no monkey-patching): the bridge greenlets carry their own waiter. Every test leaves
psycopg2 unpatched, since other test modules assume it.
"""

from __future__ import annotations

import io
import socket
import time
from typing import Any, AsyncIterator

import anyio
import psycopg2
import psycopg2.errors
import psycopg2.extensions as ext
import psycopg2.extras
import pytest
from ticker import AsyncTicker
from until import await_until

import psycogreen
import psycogreen.aio as aio
from psycogreen import _guard, errors

pytestmark = pytest.mark.anyio


@pytest.fixture
async def aconn(dsn: str) -> AsyncIterator[aio.AsyncConnection]:
    conn = await aio.connect(dsn)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def amonitor(dsn: str) -> AsyncIterator[aio.AsyncConnection]:
    conn = await aio.connect(dsn)
    conn.autocommit = True
    try:
        yield conn
    finally:
        await conn.close()


async def _activity(monitor: aio.AsyncConnection, pid: int) -> tuple[str, str]:
    cur = monitor.cursor()
    await cur.execute("select state, query from pg_stat_activity where pid = %s", (pid,))
    row = await cur.fetchone()
    assert row is not None
    return row[0], row[1]


async def _wait_active(monitor: aio.AsyncConnection, pid: int, needle: str) -> None:
    async def running() -> bool:
        state, query = await _activity(monitor, pid)
        return state == "active" and needle in query

    await await_until(running, what=f"backend {pid} to run {needle!r}")


async def _wait_idle(monitor: aio.AsyncConnection, pid: int) -> str:
    """The server-side proof of a cancel: the backend stops running the statement."""

    async def not_active() -> str:
        state, _ = await _activity(monitor, pid)
        return state if state != "active" else ""

    what = f"backend {pid} to stop running (the statement cancelled on the server)"
    state: str = await await_until(not_active, what=what)
    return state


# -- basics -------------------------------------------------------------------------------------


async def test_roundtrip_types_and_raw(aconn: aio.AsyncConnection) -> None:
    assert isinstance(aconn.raw, ext.connection)
    assert psycogreen.patched() == "asyncio"
    cur = aconn.cursor()
    await cur.execute("select %s::int + 1, %s", (41, "x"))
    assert cur.rowcount == 1
    assert cur.description[0].name == "?column?"
    assert cur.query == b"select 41::int + 1, 'x'"
    assert cur.statusmessage == "SELECT 1"
    assert await cur.fetchone() == (42, "x")
    assert aconn.info.server_version >= 90600
    assert aconn.get_transaction_status() == ext.TRANSACTION_STATUS_INTRANS
    await aconn.rollback()
    assert aconn.get_backend_pid() > 0


async def test_transactions_commit_and_rollback(aconn: aio.AsyncConnection, dsn: str) -> None:
    cur = aconn.cursor()
    await cur.execute("create temp table t (x int)")
    await aconn.commit()
    async with aconn:
        await cur.execute("insert into t values (1)")
    with pytest.raises(ZeroDivisionError):
        async with aconn:
            await cur.execute("insert into t values (2)")
            raise ZeroDivisionError
    await cur.execute("insert into t values (3)")
    await aconn.rollback()
    await cur.execute("select array_agg(x order by x) from t")
    assert await cur.fetchone() == ([1],)
    assert not aconn.closed  # `async with conn` keeps it open, as psycopg2's `with conn`


async def test_server_error_then_usable(aconn: aio.AsyncConnection) -> None:
    cur = aconn.cursor()
    with pytest.raises(psycopg2.errors.UndefinedTable):
        await cur.execute("select * from no_such_table")
    await aconn.rollback()
    await cur.execute("select 1")
    assert await cur.fetchall() == [(1,)]


async def test_set_session_autocommit_isolation(aconn: aio.AsyncConnection) -> None:
    await aconn.set_session(isolation_level="SERIALIZABLE", readonly=True)
    cur = aconn.cursor()
    await cur.execute("show transaction_isolation")
    assert await cur.fetchone() == ("serializable",)
    await aconn.rollback()
    await aconn.set_session(isolation_level="READ COMMITTED", readonly=False)
    aconn.autocommit = True
    assert aconn.autocommit
    await cur.execute("select 1")
    assert aconn.get_transaction_status() == ext.TRANSACTION_STATUS_IDLE


async def test_executemany_callproc_cursor_factory(aconn: aio.AsyncConnection) -> None:
    cur = aconn.cursor(cursor_factory=psycopg2.extras.RealDictCursor)
    await cur.execute("create temp table t (x int, y text)")
    await cur.executemany("insert into t values (%s, %s)", [(i, str(i)) for i in range(50)])
    assert cur.rowcount == 50
    await cur.execute("select x, y from t where x = %s", (7,))
    assert await cur.fetchone() == {"x": 7, "y": "7"}
    await cur.callproc("upper", ("abc",))
    assert await cur.fetchone() == {"upper": "ABC"}
    await cur.execute("select x from t order by x")
    assert [r["x"] async for r in cur] == list(range(50))


async def test_named_cursor(aconn: aio.AsyncConnection) -> None:
    cur = aconn.cursor("big", scrollable=True)
    cur.itersize = 7
    await cur.execute("select generate_series(1, 100)")
    assert await cur.fetchone() == (1,)
    assert await cur.fetchmany(3) == [(2,), (3,), (4,)]
    await cur.scroll(10, "absolute")
    assert await cur.fetchone() == (11,)
    rest = [r[0] async for r in cur]
    assert rest == list(range(12, 101))
    await cur.close()
    async with aconn.cursor("again") as cur2:
        await cur2.execute("select generate_series(1, 5)")
        assert await cur2.fetchall() == [(i,) for i in range(1, 6)]
    assert cur2.closed
    await aconn.commit()


# -- COPY ---------------------------------------------------------------------------------------


async def test_copy_both_ways(aconn: aio.AsyncConnection) -> None:
    cur = aconn.cursor()
    await cur.execute("create temp table c (a int, b text)")
    await cur.copy_from(io.StringIO("1\tone\n2\ttwo\n"), "c")
    assert cur.rowcount == 2

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(3, 503):
            await anyio.sleep(0) if i % 100 == 0 else None
            yield f"{i},n{i}\n".encode()

    await cur.copy_expert("copy c from stdin with (format csv)", chunks())
    assert cur.rowcount == 500
    out = io.StringIO()
    await cur.copy_to(out, "c", columns=("a",))
    assert out.getvalue().splitlines()[:3] == ["1", "2", "3"]

    class AsyncSink:
        def __init__(self) -> None:
            self.parts: list[bytes] = []

        async def write(self, data: bytes) -> None:
            await anyio.sleep(0)
            self.parts.append(bytes(data))

    sink = AsyncSink()
    await cur.copy_expert("copy (select a from c order by a) to stdout", sink)
    assert b"".join(sink.parts).split() == [str(i).encode() for i in range(1, 503)]
    await aconn.commit()


# -- cooperation --------------------------------------------------------------------------------


async def test_ticker_keeps_cadence(dsn: str) -> None:
    conns = [await aio.connect(dsn) for _ in range(8)]
    ticker = AsyncTicker()
    t0 = time.monotonic()

    async def sleeper(c: aio.AsyncConnection) -> None:
        cur = c.cursor()
        for _ in range(2):
            await cur.execute("select pg_sleep(0.25)")

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker.run)
        async with anyio.create_task_group() as work:
            for c in conns:
                work.start_soon(sleeper, c)
        ticker.running = False
    elapsed = time.monotonic() - t0
    for c in conns:
        await c.close()
    # 8 x 2 x 0.25 s run concurrently: ~0.5 s, not 4 s; the loop never froze for long.
    assert elapsed < 2.5, elapsed
    assert ticker.max_gap < 0.25, ticker.max_gap
    assert ticker.ticks > 20


async def test_notifies(dsn: str, aconn: aio.AsyncConnection) -> None:
    aconn.autocommit = True
    cur = aconn.cursor()
    await cur.execute("listen chan")
    sender = await aio.connect(dsn)
    sender.autocommit = True

    async def send() -> None:
        scur = sender.cursor()
        for i in range(3):  # each one sent while the listener waits for it
            await await_until(lambda: _guard.in_use(aconn.raw), what="the listener to wait")
            await scur.execute("select pg_notify('chan', %s)", (str(i),))

    got = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(send)
        async for n in aconn.notifies(timeout=10, stop_after=3):
            got.append((n.channel, n.payload))
    assert got == [("chan", "0"), ("chan", "1"), ("chan", "2")]
    t0 = time.monotonic()
    assert [n async for n in aconn.notifies(timeout=0.2)] == []
    assert 0.15 < time.monotonic() - t0 < 3
    await sender.close()


# -- cancellation -------------------------------------------------------------------------------


async def test_cancel_scope_cancels_on_server(
    aconn: aio.AsyncConnection, amonitor: aio.AsyncConnection
) -> None:
    pid = aconn.get_backend_pid()
    cur = aconn.cursor()
    t0 = time.monotonic()
    with anyio.move_on_after(0.3) as scope:
        await cur.execute("select pg_sleep(30)")
    assert scope.cancelled_caught
    assert time.monotonic() - t0 < 5
    assert await _wait_idle(amonitor, pid) in ("idle in transaction (aborted)", "idle in transaction", "idle")
    assert not aconn.closed
    await aconn.rollback()
    await cur.execute("select 42")
    assert await cur.fetchone() == (42,)


async def test_cancel_outer_task(aconn: aio.AsyncConnection, amonitor: aio.AsyncConnection) -> None:
    """Cancelling a task group (trio nursery / asyncio TaskGroup under anyio) from another task."""
    pid = aconn.get_backend_pid()
    aconn.autocommit = True
    cur = aconn.cursor()

    async with anyio.create_task_group() as tg:

        async def run() -> None:
            await cur.execute("select pg_sleep(30)")

        tg.start_soon(run)
        await _wait_active(amonitor, pid, "pg_sleep")
        tg.cancel_scope.cancel()
    await _wait_idle(amonitor, pid)
    await cur.execute("select 1")
    assert await cur.fetchone() == (1,)


async def test_cancel_method_from_another_task(
    aconn: aio.AsyncConnection, amonitor: aio.AsyncConnection
) -> None:
    pid = aconn.get_backend_pid()
    cur = aconn.cursor()
    caught: list[BaseException] = []

    async def run() -> None:
        try:
            await cur.execute("select pg_sleep(30)")
        except psycopg2.extensions.QueryCanceledError as e:
            caught.append(e)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await _wait_active(amonitor, pid, "pg_sleep")
        await aconn.cancel()
    assert caught and "canceling statement" in str(caught[0])
    await aconn.rollback()
    await cur.execute("select 1")
    assert await cur.fetchone() == (1,)


async def test_psycogreen_timeout_around_await(aconn: aio.AsyncConnection) -> None:
    cur = aconn.cursor()
    t0 = time.monotonic()
    with pytest.raises(errors.QueryTimeout):
        with psycogreen.timeout(0.3):
            await cur.execute("select pg_sleep(30)")
    assert time.monotonic() - t0 < 5
    await aconn.rollback()
    await cur.execute("select 1")
    assert await cur.fetchone() == (1,)


async def test_concurrent_use_is_refused(aconn: aio.AsyncConnection) -> None:
    cur = aconn.cursor()
    results: list[Any] = []

    async def first() -> None:
        await cur.execute("select pg_sleep(0.3), 1")
        results.append(await cur.fetchone())

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        # until the first task's statement holds the connection
        await await_until(lambda: _guard.in_use(aconn.raw), interval=0.001, what="the first statement")
        with pytest.raises(errors.ConcurrentUseError, match="already in use"):
            await aconn.cursor().execute("select 2")
    assert results == [("", 1)]
    await aconn.commit()


async def test_concurrent_use_during_copy_is_refused(aconn: aio.AsyncConnection) -> None:
    """A COPY holds the connection like any other call: a second task is refused, not interleaved
    into the COPY's protocol (which would corrupt both)."""
    cur = aconn.cursor()
    await cur.execute("create temporary table copy_busy (n int)")
    release = anyio.Event()
    sent: list[int] = []

    async def rows() -> Any:
        for n in range(3):
            sent.append(n)
            yield f"{n}\n".encode()
            if n == 0:
                await release.wait()  # the COPY stays open on the server meanwhile

    async with anyio.create_task_group() as tg:
        tg.start_soon(cur.copy_expert, "copy copy_busy from stdin", rows())
        await await_until(lambda: sent and _guard.in_use(aconn.raw), interval=0.001, what="the COPY")
        with pytest.raises(errors.ConcurrentUseError, match="already in use"):
            await aconn.cursor().execute("select 2")
        release.set()
    await cur.execute("select count(*) from copy_busy")
    assert await cur.fetchone() == (3,)
    await aconn.rollback()


async def test_connect_timeout_against_silent_server() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts the TCP handshake, never answers the startup packet
    port = silent.getsockname()[1]
    ticker = AsyncTicker()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker.run)
            t0 = time.monotonic()
            with pytest.raises(psycopg2.OperationalError, match="timeout expired"):
                await aio.connect(f"host=127.0.0.1 port={port} user=x dbname=x connect_timeout=1")
            elapsed = time.monotonic() - t0
            ticker.running = False
    finally:
        silent.close()
    assert 0.8 < elapsed < 4, elapsed
    assert ticker.max_gap < 0.25


# -- run_sync -----------------------------------------------------------------------------------


def _legacy_dao(dsn: str, n: int) -> list[int]:
    """Plain psycopg2 code, unchanged: connect, transaction, server-side sleep."""
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("select pg_sleep(0.2)")
            cur.execute("select generate_series(1, %s)", (n,))
            return [r[0] for r in cur.fetchall()]
    finally:
        conn.close()


async def test_run_sync_plain_psycopg2_cooperates(dsn: str) -> None:
    ticker = AsyncTicker()
    results: list[list[int]] = []
    t0 = time.monotonic()

    async def one(n: int) -> None:
        results.append(await aio.run_sync(_legacy_dao, dsn, n))

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker.run)
        async with anyio.create_task_group() as work:
            for n in range(1, 7):
                work.start_soon(one, n)
        ticker.running = False
    assert sorted(len(r) for r in results) == [1, 2, 3, 4, 5, 6]
    assert time.monotonic() - t0 < 2.5  # six 0.2 s sleeps concurrently
    assert ticker.max_gap < 0.25, ticker.max_gap


def _sqlalchemy_orm(dsn: str) -> list[str]:
    import sqlalchemy as sa
    from sqlalchemy.orm import DeclarativeBase, Session, mapped_column

    params = ext.parse_dsn(dsn)

    class Base(DeclarativeBase):
        pass

    class User(Base):
        __tablename__ = "aio_users"
        id = mapped_column(sa.Integer, primary_key=True)
        name = mapped_column(sa.Text, nullable=False)

    engine = sa.create_engine(
        "postgresql+psycopg2://",
        connect_args={k: params[k] for k in ("host", "port", "user", "dbname") if k in params},
    )
    try:
        Base.metadata.drop_all(engine)
        Base.metadata.create_all(engine)
        with Session(engine) as session:
            session.add_all([User(name="ada"), User(name="grace")])
            session.commit()
            session.execute(sa.text("select pg_sleep(0.2)"))
            names = [u.name for u in session.scalars(sa.select(User).order_by(User.name))]
        Base.metadata.drop_all(engine)
        return names
    finally:
        engine.dispose()


async def test_run_sync_sqlalchemy_orm_session(dsn: str) -> None:
    ticker = AsyncTicker()
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker.run)
        names = await aio.run_sync(_sqlalchemy_orm, dsn)
        ticker.running = False
    assert names == ["ada", "grace"]
    assert ticker.max_gap < 0.25, ticker.max_gap


async def test_run_sync_cancel_cancels_on_server(dsn: str, amonitor: aio.AsyncConnection) -> None:
    raw = await aio.run_sync(psycopg2.connect, dsn)  # a green connection
    try:
        pid = raw.get_backend_pid()

        def slow() -> None:
            raw.cursor().execute("select pg_sleep(30)")

        with anyio.move_on_after(0.3):
            await aio.run_sync(slow)
        await _wait_idle(amonitor, pid)
        await aio.run_sync(raw.rollback)
        assert await aio.run_sync(lambda: raw.cursor().execute("select 1")) is None
    finally:
        raw.close()


# -- pool ---------------------------------------------------------------------------------------


async def test_pool_connection_commit_and_exhaustion(dsn: str) -> None:
    async with aio.ConnectionPool(dsn, min_size=1, max_size=2, timeout=0.5, name="aiotest") as pool:
        await pool.wait(10)
        async with pool.connection() as conn:
            assert isinstance(conn, aio.AsyncConnection)
            cur = conn.cursor()
            await cur.execute("create table if not exists aio_pool_t (x int)")
        async with pool.connection() as conn:
            await conn.cursor().execute("insert into aio_pool_t values (1)")
        with pytest.raises(RuntimeError):
            async with pool.connection() as conn:
                await conn.cursor().execute("insert into aio_pool_t values (2)")
                raise RuntimeError("rolled back")
        held = [await pool.getconn(), await pool.getconn()]
        t0 = time.monotonic()
        with pytest.raises(errors.PoolTimeout, match="couldn't get a connection after 0.50 sec"):
            await pool.getconn()
        assert 0.4 < time.monotonic() - t0 < 3

        # A waiting client gets the connection given back by another task.
        async def give_back_later() -> None:
            await await_until(lambda: pool.sync._clients, what="the client to queue")
            await pool.putconn(held.pop())

        async with anyio.create_task_group() as tg:
            tg.start_soon(give_back_later)
            got = await pool.getconn(timeout=5)
        await pool.putconn(got)
        await pool.putconn(held.pop())
        async with pool.connection() as conn:
            cur = conn.cursor()
            await cur.execute("select array_agg(x) from aio_pool_t")
            assert await cur.fetchone() == ([1],)
            await cur.execute("drop table aio_pool_t")
        stats = pool.get_stats()
        assert stats["pool_max"] == 2 and stats["requests_errors"] >= 1
    assert pool.closed


async def test_pool_waiting_client_cancelled(dsn: str) -> None:
    async with aio.ConnectionPool(dsn, min_size=1, max_size=1, timeout=10) as pool:
        held = await pool.getconn()
        with anyio.move_on_after(0.2) as scope:
            await pool.getconn()
        assert scope.cancelled_caught
        await pool.putconn(held)
        # The cancelled client never received a connection: the pool still has it to give.
        async with pool.connection(timeout=2) as conn:
            await conn.cursor().execute("select 1")
        assert pool.get_stats()["pool_available"] == 1


async def test_pool_cannot_open_in_constructor(dsn: str) -> None:
    with pytest.raises(TypeError, match="await pool.open"):
        aio.ConnectionPool(dsn, open=True)


# -- outside the bridge -------------------------------------------------------------------------


async def test_blocking_call_on_loop_thread_warns_once(dsn: str) -> None:
    from psycogreen._waiters.loop import LoopGuardWaiter

    psycogreen.patch("asyncio")
    LoopGuardWaiter.warned = False
    with pytest.warns(RuntimeWarning, match="run_sync"):
        conn = psycopg2.connect(dsn)
    try:
        cur = conn.cursor()
        cur.execute("select 1")  # correct, if blocking; and no second warning
        assert cur.fetchone() == (1,)
    finally:
        conn.close()
    # Worker threads block only themselves: no warning there.
    assert await anyio.to_thread.run_sync(_legacy_dao, dsn, 2) == [1, 2]


async def test_terminated_backend_and_fd_reuse(dsn: str, amonitor: aio.AsyncConnection) -> None:
    """libpq closes the socket of a broken connection itself; the next socket often reuses its fd
    number. The loop must watch the new socket, not the memory of the old one."""
    for _ in range(3):
        victim = await aio.connect(dsn)
        fd = victim.fileno()
        pid = victim.get_backend_pid()
        cur = victim.cursor()

        async def kill_soon(pid: int = pid) -> None:
            await _wait_active(amonitor, pid, "pg_sleep")
            await amonitor.cursor().execute("select pg_terminate_backend(%s)", (pid,))

        async with anyio.create_task_group() as tg:
            tg.start_soon(kill_soon)
            with pytest.raises(psycopg2.OperationalError):
                await cur.execute("select pg_sleep(30)")
        assert victim.closed
        fresh = await aio.connect(dsn)  # very likely the same fd number
        try:
            fcur = fresh.cursor()
            with anyio.fail_after(10):
                await fcur.execute("select pg_sleep(0.05), %s", (fd,))
                assert (await fcur.fetchone())[1] == fd
        finally:
            await fresh.close()
            await victim.close()


async def test_native_asyncio_timeout_and_wait_for(
    anyio_backend: Any, aconn: aio.AsyncConnection, amonitor: aio.AsyncConnection
) -> None:
    if anyio_backend[0] != "asyncio":
        pytest.skip("asyncio's own timeout helpers")
    import asyncio

    pid = aconn.get_backend_pid()
    aconn.autocommit = True
    cur = aconn.cursor()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await cur.execute("select pg_sleep(30)")
    await _wait_idle(amonitor, pid)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(cur.execute("select pg_sleep(30)"), 0.3)
    await _wait_idle(amonitor, pid)
    task = asyncio.ensure_future(cur.execute("select pg_sleep(30)"))
    await _wait_active(amonitor, pid, "pg_sleep")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _wait_idle(amonitor, pid)
    await cur.execute("select 1")
    assert await cur.fetchone() == (1,)


async def test_native_trio_cancel_scope(
    anyio_backend: Any, aconn: aio.AsyncConnection, amonitor: aio.AsyncConnection
) -> None:
    if anyio_backend[0] != "trio":
        pytest.skip("trio's own cancel scopes")
    import trio

    pid = aconn.get_backend_pid()
    aconn.autocommit = True
    cur = aconn.cursor()
    with trio.move_on_after(0.3) as scope:
        await cur.execute("select pg_sleep(30)")
    assert scope.cancelled_caught
    await _wait_idle(amonitor, pid)
    # A statement started inside an already-cancelled scope is not even sent.
    with trio.CancelScope() as scope2:
        scope2.cancel()
        await cur.execute("select pg_sleep(30)")
    assert scope2.cancelled_caught
    state, _ = await _activity(amonitor, pid)
    assert state == "idle"
    await cur.execute("select 1")
    assert await cur.fetchone() == (1,)


async def test_close_under_a_waiting_task(aconn: aio.AsyncConnection, amonitor: aio.AsyncConnection) -> None:
    """Closing a connection another task is waiting on ends that task's wait with an error."""
    if aconn.raw.closed:
        pytest.skip("closed")
    pid = aconn.get_backend_pid()
    cur = aconn.cursor()
    errors_seen: list[BaseException] = []

    async def run() -> None:
        try:
            await cur.execute("select pg_sleep(30)")
        except psycopg2.Error as e:
            errors_seen.append(e)

    with anyio.fail_after(15):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await _wait_active(amonitor, pid, "pg_sleep")
            await aconn.close()
    assert errors_seen, "the waiting task must get an error, not hang"
    assert aconn.closed
