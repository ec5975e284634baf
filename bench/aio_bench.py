"""Point-select throughput: psycogreen.aio vs aiopg, psycopg 3 (async) and asyncpg, on asyncio and uvloop.

    python bench/aio_bench.py --dsn "host=127.0.0.1 port=5432 user=postgres dbname=postgres"

Without --dsn a throwaway server is started (psycogreen.testing.PostgresServer). Each cell runs C
tasks, one connection each, for --duration seconds, every task looping over a pgbench -S style
query (``select abalance from aio_bench_accounts where aid = $1``, random aid, autocommit) on a
table the script creates. The cells of one row run back to back in the same process, in a rotated
order per round, and each cell is repeated --rounds times (the best round is kept), so that
background noise on a shared machine hurts every driver alike. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Awaitable, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROWS = 100_000
Q_PG2 = "select abalance from aio_bench_accounts where aid = %s"
Q_PG = "select abalance from aio_bench_accounts where aid = $1"

Runner = Callable[[str, int, float], Awaitable[int]]


def setup(dsn: str) -> None:
    import psycopg2

    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("select to_regclass('aio_bench_accounts') is not null")
    row = cur.fetchone()
    if not (row and row[0]):
        cur.execute(
            "create table aio_bench_accounts (aid int primary key, bid int, abalance int, filler text)"
        )
        cur.execute(
            "insert into aio_bench_accounts select g, 1, 0, repeat(' ', 84) from generate_series(1, %s) g",
            (ROWS,),
        )
        cur.execute("vacuum analyze aio_bench_accounts")
    conn.close()


async def _loop_for(duration: float, one: Callable[[int], Awaitable[Any]]) -> int:
    n = 0
    rnd = random.Random(n).randint
    stop = time.monotonic() + duration
    while time.monotonic() < stop:
        await one(rnd(1, ROWS))
        n += 1
    return n


async def _run_all(conns: list[Any], worker: Callable[[Any], Awaitable[int]]) -> int:
    """Run one worker per connection concurrently; the total of their query counts. Every driver
    closes its connections with ``await conn.close()``."""
    try:
        return sum(await asyncio.gather(*(worker(conn) for conn in conns)))
    finally:
        for conn in conns:
            await conn.close()


async def run_psycogreen(dsn: str, c: int, duration: float) -> int:
    import psycogreen.aio

    conns = [await psycogreen.aio.connect(dsn) for _ in range(c)]
    for conn in conns:
        conn.autocommit = True

    async def worker(conn: Any) -> int:
        cur = conn.cursor()

        async def one(aid: int) -> Any:
            await cur.execute(Q_PG2, (aid,))
            return await cur.fetchone()

        return await _loop_for(duration, one)

    return await _run_all(conns, worker)


async def run_aiopg(dsn: str, c: int, duration: float) -> int:
    import aiopg

    conns = [await aiopg.connect(dsn) for _ in range(c)]

    async def worker(conn: Any) -> int:
        cur = await conn.cursor()

        async def one(aid: int) -> Any:
            await cur.execute(Q_PG2, (aid,))
            return await cur.fetchone()

        try:
            return await _loop_for(duration, one)
        finally:
            cur.close()

    return await _run_all(conns, worker)


async def run_psycopg3(dsn: str, c: int, duration: float) -> int:
    import psycopg

    conns = [await psycopg.AsyncConnection.connect(dsn, autocommit=True) for _ in range(c)]

    async def worker(conn: Any) -> int:
        cur = conn.cursor()

        async def one(aid: int) -> Any:
            await cur.execute(Q_PG2, (aid,))
            return await cur.fetchone()

        return await _loop_for(duration, one)

    return await _run_all(conns, worker)


async def run_asyncpg(dsn: str, c: int, duration: float) -> int:
    import asyncpg
    from psycopg2.extensions import parse_dsn

    p = parse_dsn(dsn)
    kw = {
        "host": p.get("host"),
        "port": int(p.get("port", 5432)),
        "user": p.get("user"),
        "database": p.get("dbname"),
    }
    if "password" in p:
        kw["password"] = p["password"]
    conns = [await asyncpg.connect(**kw) for _ in range(c)]

    async def worker(conn: Any) -> int:
        async def one(aid: int) -> Any:
            return await conn.fetchrow(Q_PG, aid)

        return await _loop_for(duration, one)

    return await _run_all(conns, worker)


DRIVERS: dict[str, Runner] = {
    "psycogreen.aio": run_psycogreen,
    "aiopg": run_aiopg,
    "psycopg3-async": run_psycopg3,
    "asyncpg": run_asyncpg,
}


def bench_row(
    loop_name: str, dsn: str, c: int, duration: float, rounds: int, drivers: list[str]
) -> dict[str, float]:
    factory: Any = None
    if loop_name == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    best: dict[str, float] = {}
    for r in range(rounds):
        order = drivers[r % len(drivers) :] + drivers[: r % len(drivers)]
        for name in order:
            gc.collect()
            with asyncio.Runner(loop_factory=factory) as runner:
                n = runner.run(DRIVERS[name](dsn, c, duration))
            best[name] = max(best.get(name, 0.0), n / duration)
    return best


def _ratio(res: dict[str, float], other: str) -> str:
    ours, theirs = res.get("psycogreen.aio"), res.get(other)
    return f"{ours / theirs:.2f}x" if ours and theirs else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dsn", help="libpq DSN of the server (default: start a throwaway one)")
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per cell (default 3)")
    ap.add_argument("--rounds", type=int, default=1, help="repeat each cell, keep the best (default 1)")
    ap.add_argument("--concurrency", default="1,16,64", help="comma-separated C values")
    ap.add_argument("--loops", default="asyncio,uvloop")
    ap.add_argument("--drivers", default=",".join(DRIVERS))
    args = ap.parse_args()
    warnings.simplefilter("ignore")  # aiopg's ResourceWarnings at loop close

    server = None
    dsn = args.dsn
    if not dsn:
        from psycogreen.testing import PostgresServer

        server = PostgresServer().start()
        dsn = server.dsn
    try:
        setup(dsn)
        drivers = [d for d in args.drivers.split(",") if d]
        cs = [int(x) for x in args.concurrency.split(",")]
        loops = [x for x in args.loops.split(",") if x]
        print(
            f"point select (pgbench -S style, {ROWS} rows), {args.duration:g} s/cell, best of {args.rounds}"
        )
        print()
        head = ["loop", "C", *drivers, "vs aiopg", "vs psycopg3", "vs asyncpg"]
        print("| " + " | ".join(head) + " |")
        print("|" + "|".join("---" for _ in head) + "|")
        for loop_name in loops:
            for c in cs:
                res = bench_row(loop_name, dsn, c, args.duration, args.rounds, drivers)
                cells = [loop_name, str(c), *(f"{res[d]:,.0f}" for d in drivers)]
                cells += [_ratio(res, other) for other in ("aiopg", "psycopg3-async", "asyncpg")]
                print("| " + " | ".join(cells) + " |", flush=True)
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
