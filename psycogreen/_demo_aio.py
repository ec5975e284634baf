"""The asyncio part of the demo: psycopg2 awaited through ``psycogreen.aio`` (no gevent here)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import psycopg2

import psycogreen.aio as aio
from psycogreen._demo_table import table


async def sleepers(dsn: str, n: int) -> float:
    conns = await asyncio.gather(*(aio.connect(dsn) for _ in range(n)))

    async def work(conn: aio.AsyncConnection) -> None:
        cur = conn.cursor()
        for _ in range(3):
            await cur.execute("select pg_sleep(0.2)")

    t0 = time.monotonic()
    await asyncio.gather(*(work(c) for c in conns))
    elapsed = time.monotonic() - t0
    for c in conns:
        await c.close()
    return elapsed


async def cancelled(dsn: str) -> tuple[str, float, int, bool]:
    conn = await aio.connect(dsn)
    await conn.set_session(autocommit=True)
    mon = await aio.connect(dsn)
    await mon.set_session(autocommit=True)
    t0 = time.monotonic()
    raised = "nothing"
    try:
        await asyncio.wait_for(conn.cursor().execute("select pg_sleep(10)"), 0.5)
    except asyncio.TimeoutError:
        raised = "TimeoutError"
    after = time.monotonic() - t0
    await asyncio.sleep(0.05)
    cur = mon.cursor()
    await cur.execute(
        "select count(*) from pg_stat_activity where query like 'select pg_sleep(10)%' and state = 'active'"
    )
    row = await cur.fetchone()
    cur2 = conn.cursor()
    await cur2.execute("select 1")
    usable = await cur2.fetchone() == (1,)
    await conn.close()
    await mon.close()
    return raised, after, int(row[0]) if row else -1, usable


def legacy_report(dsn: str) -> int:
    """Unmodified synchronous psycopg2 code, as a legacy data-access layer would have it."""
    conn = psycopg2.connect(dsn)
    try:
        cur = conn.cursor()
        cur.execute("select count(*) from generate_series(1, 1000)")
        row = cur.fetchone()
        return int(row[0]) if row else 0
    finally:
        conn.close()


async def main_async(dsn: str, n: int) -> None:
    print(f"6. asyncio: {n} tasks, psycopg2 awaited through psycogreen.aio")
    elapsed = await sleepers(dsn, n)
    raised, after, running, usable = await cancelled(dsn)
    count = await aio.run_sync(legacy_report, dsn)
    table(
        [
            ("", "result"),
            (f"{n} tasks x 3 x pg_sleep(0.2)", f"{elapsed:.2f} s"),
            ("asyncio.wait_for(..., 0.5) on pg_sleep(10)", f"{raised} after {after:.2f} s"),
            ("still running on the server", str(running)),
            ("connection afterwards", "usable" if usable else "broken"),
            ("run_sync(legacy sync psycopg2 code)", f"returned {count}"),
        ]
    )
    print()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--tasks", type=int, default=50)
    ns = parser.parse_args()
    asyncio.run(main_async(ns.dsn, ns.tasks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
