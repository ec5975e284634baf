"""One benchmark cell in its own process: ``python bench/worker.py SYSTEM --dsn DSN -c C -t SECONDS``.

Monkey-patching is process-wide, so every (system, concurrency) cell runs in a fresh interpreter; the
psycogreen 1.0.2 cells run this same file with the interpreter of ``bench/.venvs/psycogreen1`` (it has
the same import name as psycogreen 2). This file therefore imports nothing from the repository.

The workload is pgbench's ``-S`` script: ``SELECT abalance FROM pgbench_accounts WHERE aid = :random``
in autocommit, by C workers that each own one connection. After a warm-up, the worker counts the
queries completed in the measurement window and the CPU time (user + system, all threads) this
process spent in it, and prints one JSON line: ``{"qps": ..., "cpu_us": ..., "queries": ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from typing import Any, Callable

QUERY = "SELECT abalance FROM pgbench_accounts WHERE aid = %s"
QUERY_PG = "SELECT abalance FROM pgbench_accounts WHERE aid = $1"

SYSTEMS = (
    "psycogreen2-gevent",
    "psycogreen2-eventlet",
    "psycogreen1-gevent",
    "psycogreen1-eventlet",
    "psycopg2-threads",
    "psycopg3-gevent",
    "psycopg3-asyncio",
    "aiopg",
    "asyncpg",
    "asyncpg-uvloop",
)


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


class Window:
    """Counts completed queries; the main flow snapshots it at the start and end of the window."""

    def __init__(self, n: int) -> None:
        self.counts = [0] * n
        self.stop = False
        self.errors: list[str] = []

    def measure(self, sleep: Callable[[float], Any], warmup: float, duration: float) -> dict[str, Any]:
        sleep(warmup)
        c0, q0, t0 = _cpu(), sum(self.counts), time.perf_counter()
        sleep(duration)
        c1, q1, t1 = _cpu(), sum(self.counts), time.perf_counter()
        self.stop = True
        return _result(q1 - q0, t1 - t0, c1 - c0, self.errors)


def _result(queries: int, elapsed: float, cpu: float, errors: list[str]) -> dict[str, Any]:
    return {
        "queries": queries,
        "elapsed": elapsed,
        "qps": queries / elapsed if elapsed else 0.0,
        "cpu_us": cpu / queries * 1e6 if queries else None,
        "errors": errors[:3],
    }


def _dbapi_worker(connect: Callable[[], Any], win: Window, i: int, naccounts: int) -> None:
    """The loop shared by every DB-API driver (psycopg2 in all modes, psycopg 3 sync)."""
    try:
        conn = connect()
        cur = conn.cursor()
        rand = random.Random(i).randint
        counts = win.counts
        execute, fetchone = cur.execute, cur.fetchone
        while not win.stop:
            execute(QUERY, (rand(1, naccounts),))
            fetchone()
            counts[i] += 1
        conn.close()
    except Exception as e:
        win.errors.append(repr(e))


def run_green(args: argparse.Namespace, system: str) -> dict[str, Any]:
    framework = system.rsplit("-", 1)[1]
    if framework == "gevent":
        from gevent import monkey

        monkey.patch_all()
        import gevent

        spawn: Callable[..., Any] = gevent.spawn
        sleep: Callable[[float], Any] = gevent.sleep

        def join(gs: list[Any]) -> None:
            gevent.joinall(gs, timeout=10)
    else:
        import eventlet

        eventlet.monkey_patch()
        spawn, sleep = eventlet.spawn, eventlet.sleep

        def join(gs: list[Any]) -> None:
            with eventlet.Timeout(10, False):
                for g in gs:
                    g.wait()

    if system.startswith("psycogreen1"):
        import psycogreen  # noqa: F401 - version 1.0.2, from the psycogreen1 venv

        if framework == "gevent":
            from psycogreen.gevent import patch_psycopg
        else:
            from psycogreen.eventlet import patch_psycopg
        patch_psycopg()
        import psycopg2

        def connect() -> Any:
            c = psycopg2.connect(args.dsn)
            c.autocommit = True
            return c
    elif system.startswith("psycogreen2"):
        import psycogreen

        psycogreen.patch(framework)
        import psycopg2

        def connect() -> Any:
            c = psycopg2.connect(args.dsn)
            c.autocommit = True
            return c
    else:  # psycopg3-gevent: psycopg 3 detects gevent's monkey-patching itself
        import psycopg

        def connect() -> Any:
            return psycopg.connect(args.dsn, autocommit=True)

    win = Window(args.concurrency)
    gs = [spawn(_dbapi_worker, connect, win, i, args.accounts) for i in range(args.concurrency)]
    res = win.measure(sleep, args.warmup, args.duration)
    join(gs)
    return res


def run_threads(args: argparse.Namespace) -> dict[str, Any]:
    import threading

    import psycopg2

    def connect() -> Any:
        c = psycopg2.connect(args.dsn)
        c.autocommit = True
        return c

    win = Window(args.concurrency)
    ts = [
        threading.Thread(target=_dbapi_worker, args=(connect, win, i, args.accounts), daemon=True)
        for i in range(args.concurrency)
    ]
    for t in ts:
        t.start()
    res = win.measure(time.sleep, args.warmup, args.duration)
    for t in ts:
        t.join(10)
    return res


def run_asyncio(args: argparse.Namespace, system: str) -> dict[str, Any]:
    import asyncio

    naccounts = args.accounts

    async def worker(win: Window, i: int) -> None:
        rand = random.Random(i).randint
        counts = win.counts
        try:
            if system == "psycopg3-asyncio":
                import psycopg

                conn = await psycopg.AsyncConnection.connect(args.dsn, autocommit=True)
                cur = conn.cursor()
                while not win.stop:
                    await cur.execute(QUERY, (rand(1, naccounts),))
                    await cur.fetchone()
                    counts[i] += 1
                await conn.close()
            elif system == "aiopg":
                import aiopg

                aconn = await aiopg.connect(args.dsn)
                acur = await aconn.cursor()
                while not win.stop:
                    await acur.execute(QUERY, (rand(1, naccounts),))
                    await acur.fetchone()
                    counts[i] += 1
                aconn.close()
            else:
                import asyncpg

                pconn = await asyncpg.connect(_asyncpg_dsn(args.dsn))
                while not win.stop:
                    await pconn.fetchval(QUERY_PG, rand(1, naccounts))
                    counts[i] += 1
                await pconn.close()
        except Exception as e:
            win.errors.append(repr(e))

    async def main() -> dict[str, Any]:
        win = Window(args.concurrency)
        tasks = [asyncio.ensure_future(worker(win, i)) for i in range(args.concurrency)]
        await asyncio.sleep(args.warmup)
        c0, q0, t0 = _cpu(), sum(win.counts), time.perf_counter()
        await asyncio.sleep(args.duration)
        c1, q1, t1 = _cpu(), sum(win.counts), time.perf_counter()
        win.stop = True
        await asyncio.wait(tasks, timeout=10)
        return _result(q1 - q0, t1 - t0, c1 - c0, win.errors)

    if system == "asyncpg-uvloop":
        import uvloop

        return uvloop.run(main())
    if sys.platform == "win32":  # pragma: no cover - psycopg 3 async needs a selector loop there
        asyncio.set_event_loop_policy(asyncio.WindowsSelectorEventLoopPolicy())  # type: ignore[attr-defined]
    return asyncio.run(main())


def _asyncpg_dsn(dsn: str) -> str:
    """asyncpg wants a URL; the benchmark DSNs are libpq key=value strings."""
    if "://" in dsn:
        return dsn
    parts = dict(kv.split("=", 1) for kv in dsn.split())
    user = parts.get("user", "postgres")
    pw = f":{parts['password']}" if "password" in parts else ""
    host = parts.get("host", "127.0.0.1")
    if host.startswith("/"):
        return (
            f"postgresql://{user}{pw}@/{parts.get('dbname', user)}?host={host}&port={parts.get('port', 5432)}"
        )
    return f"postgresql://{user}{pw}@{host}:{parts.get('port', 5432)}/{parts.get('dbname', user)}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("system", choices=SYSTEMS)
    p.add_argument("--dsn", required=True)
    p.add_argument("-c", "--concurrency", type=int, default=1)
    p.add_argument("-t", "--duration", type=float, default=3.0)
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--accounts", type=int, default=100_000, help="rows in pgbench_accounts (scale * 100000)")
    args = p.parse_args(argv)
    if args.system in ("psycopg2-threads",):
        res = run_threads(args)
    elif args.system.startswith(("psycogreen", "psycopg3-gevent")):
        res = run_green(args, args.system)
    else:
        res = run_asyncio(args, args.system)
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
