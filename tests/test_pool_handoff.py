"""The pool's hand-off: a returned connection goes straight to the first parked client.

gevent, eventlet and threads run tests/scripts/pool_handoff.py in subprocesses (monkey-patching is
process-wide); asyncio, uvloop and trio run in-process through ``psycogreen.aio``, whose pool is the
same pool parked through the bridge's waiter.
"""

from __future__ import annotations

import random
import time
from typing import Any, Callable

import anyio
import pytest
from until import await_until

import psycogreen
import psycogreen.aio as aio
from psycogreen import errors

FRAMEWORKS = ["gevent", "eventlet", "threads"]
RunScript = Callable[..., Any]


# -- gevent, eventlet, threads ------------------------------------------------------------------


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_park_unpark_contract(run_script: RunScript, framework: str) -> None:
    out = run_script("pool_handoff.py", framework, "park")
    assert out["early"] == "early" and out["late"] == ["late"], out
    if framework != "threads":  # a killed park is never resumed by a later unpark
        assert out["interrupted"] == {"resumed": False, "gone": True}, out


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_returned_connection_goes_to_first_parked_client(run_script: RunScript, framework: str) -> None:
    out = run_script("pool_handoff.py", framework, "fifo")
    assert out["order"] == list(range(8)), out
    assert all(out["same"]), out  # each got the very connection the previous one returned
    assert out["stats"]["requests_waiting"] == 8 and out["stats"]["pool_available"] == 1, out


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_client_interrupted_after_being_chosen_passes_it_on(run_script: RunScript, framework: str) -> None:
    out = run_script("pool_handoff.py", framework, "chosen")
    assert out["b"] in ("GreenletExit", "KeyboardInterrupt"), out
    assert out["c"] is True, out  # the next client got the connection b was chosen for
    assert out["stats"]["requests_waiting"] == 2, out  # b was chosen, then c
    assert out["idle"] == 1 and out["owned"] == 1, out


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_deadlines_kept_by_the_scheduler(run_script: RunScript, framework: str) -> None:
    out = run_script("pool_handoff.py", framework, "timeouts")
    ended = out["ended"]
    assert set(ended) == {"short", "long"}, out
    assert 0.2 < ended["short"] < ended["long"], out  # the later, shorter deadline came first
    assert 1.5 < ended["long"] < 10, out
    assert out["left"] == 0 and out["stats"]["requests_errors"] == 2, out


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_storm_of_kills_and_timeouts_loses_no_connection(run_script: RunScript, framework: str) -> None:
    out = run_script("pool_handoff.py", framework, "storm")
    assert out["idle"] == 3 and out["owned"] == 3 and out["queued"] == 0, out
    assert out["served"] == [1, 1, 1], out
    assert out["stats"]["pool_size"] == 3 and out["stats"]["connections_num"] == 3, out
    assert out["outcomes"].get("ok", 0) > 0 and out["outcomes"].get("timeout", 0) > 0, out


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_close_joins_background_tasks(run_script: RunScript, framework: str) -> None:
    out = run_script("pool_handoff.py", framework, "close")
    assert out["running"] == 0, out
    assert out["elapsed"] < 5, out


# -- asyncio, uvloop, trio ----------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _unpatched() -> Any:
    yield
    psycogreen.unpatch()


async def _queued(pool: aio.ConnectionPool, n: int) -> None:
    await await_until(lambda: len(pool.sync._clients) == n, what=f"{n} queued clients")


@pytest.mark.anyio
async def test_bridge_park_unpark_contract() -> None:
    from psycogreen.aio._runtime import call
    from psycogreen.aio._waiter import WAITER

    early = WAITER.park_token()
    WAITER.unpark(early, "early")
    assert await call(WAITER.park, early) == "early"
    box: list[Any] = []

    def parker() -> Any:
        box.append(WAITER.park_token())
        return WAITER.park(box[0])

    result: list[Any] = []
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            result.append(await call(parker))

        tg.start_soon(run)
        await await_until(lambda: box, what="the parker to take its token")
        WAITER.unpark(box[0], "late")
    assert result == ["late"]
    box.clear()
    with anyio.move_on_after(0.1):
        await call(parker)
    WAITER.unpark(box[0], "too late")
    assert box[0].gone


@pytest.mark.anyio
async def test_aio_fifo_and_chosen_then_cancelled(dsn: str) -> None:
    async with aio.ConnectionPool(dsn, min_size=1, max_size=1, timeout=10) as pool:
        await pool.wait(10)
        held = await pool.getconn()
        got: dict[str, Any] = {}
        scopes: dict[str, anyio.CancelScope] = {}

        async def client(name: str) -> None:
            with anyio.CancelScope() as scope:
                scopes[name] = scope
                async with pool.connection() as c:
                    got[name] = c.raw is held.raw
                    await c.cursor().execute("select 1")
            if scope.cancelled_caught:
                got[name] = "cancelled"

        async with anyio.create_task_group() as tg:
            for i, name in enumerate(["b", "c", "d"]):
                tg.start_soon(client, name)
                await _queued(pool, i + 1)
            scopes["b"].cancel()  # delivered after putconn chose b...
            await pool.putconn(held)  # ...so b passes the connection on to c, then c to d
        assert got == {"b": "cancelled", "c": True, "d": True}
        stats = pool.get_stats()
        assert stats["requests_waiting"] == 3 and stats["pool_available"] == 1, stats


@pytest.mark.anyio
async def test_aio_deadlines_kept_by_the_scheduler(dsn: str) -> None:
    async with aio.ConnectionPool(dsn, min_size=1, max_size=1, timeout=10) as pool:
        held = await pool.getconn()
        t0 = time.monotonic()
        ended: dict[str, float] = {}

        async def client(name: str, timeout: float) -> None:
            with pytest.raises(errors.PoolTimeout):
                await pool.getconn(timeout=timeout)
            ended[name] = time.monotonic() - t0

        async with anyio.create_task_group() as tg:
            tg.start_soon(client, "long", 2.0)
            await _queued(pool, 1)
            tg.start_soon(client, "short", 0.3)
        assert 0.2 < ended["short"] < ended["long"] and 1.5 < ended["long"] < 10, ended
        assert len(pool.sync._clients) == 0
        await pool.putconn(held)


@pytest.mark.anyio
async def test_aio_storm_of_cancellations_and_timeouts_loses_no_connection(dsn: str) -> None:
    async with aio.ConnectionPool(dsn, min_size=3, max_size=3, timeout=5) as pool:
        await pool.wait(10)
        outcomes: dict[str, int] = {}

        async def work(i: int) -> None:
            r = random.Random(i)
            for _ in range(6):
                with anyio.move_on_after(r.choice([0.001, 0.01, 5.0])):
                    try:
                        async with pool.connection(timeout=r.choice([0.001, 0.02, 2.0])) as c:
                            await c.cursor().execute("select 1")
                        k = "ok"
                    except errors.PoolTimeout:
                        k = "timeout"
                    outcomes[k] = outcomes.get(k, 0) + 1

        async with anyio.create_task_group() as tg:
            for i in range(80):
                tg.start_soon(work, i)
        assert outcomes.get("ok", 0) > 0, outcomes
        await await_until(
            lambda: len(pool.sync._idle) == 3, what="3 idle connections", detail=lambda: repr(pool)
        )
        assert len(pool.sync._owned) == 3 and not pool.sync._clients, repr(pool)
        for _ in range(3):
            async with pool.connection(timeout=5) as c:
                cur = c.cursor()
                await cur.execute("select 1")
                assert await cur.fetchone() == (1,)


@pytest.mark.anyio
async def test_aio_close_joins_background_tasks(dsn: str) -> None:
    pool = aio.ConnectionPool(dsn, min_size=2, max_size=2)
    await pool.open(wait=True, timeout=10)
    bg = pool.sync._bg
    assert bg is not None and bg.running >= 1  # the scheduler at least
    t0 = time.monotonic()
    await pool.close(timeout=10)
    assert bg.running == 0 and time.monotonic() - t0 < 5  # joined, not timed out
