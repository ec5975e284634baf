"""Pool throughput under gevent: many greenlets over a small pool vs dedicated connections.

    python bench/pool_bench.py --dsn "host=127.0.0.1 port=5432 dbname=postgres user=postgres"

Every system runs pgbench -S style point selects (``select abalance from pool_bench_accounts where
aid = $1``, autocommit) for ``--seconds`` and the script prints a markdown table:

- dedicated: ``--conns`` greenlets, each on its own psycopg2 connection (the ceiling);
- psycogreen.pool: ``--clients`` greenlets sharing a ``ConnectionPool`` of ``--conns`` connections;
- psycopg_pool: the same with psycopg 3 and psycopg_pool under gevent's monkey-patching (a peer).

Target: the psycogreen pool reaches >= 0.9x the dedicated throughput.

``--instructions`` prints instead the deterministic figure: CPU instructions (valgrind's
callgrind) per checkout + return on the hand-off path (100 greenlets over 10 connections, each
holding its connection across one ``gevent.sleep(0)``), with the cost of the same greenlets
sleeping without a pool and of process start-up subtracted (runs of N and 2N rounds). Run it with
``PYTHONPATH`` pointing at each checkout to compare versions.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any, Callable  # noqa: E402

import gevent  # noqa: E402
import psycopg2  # noqa: E402

import psycogreen  # noqa: E402
from psycogreen.pool import ConnectionPool  # noqa: E402

ROWS = 10_000
QUERY = "select abalance from pool_bench_accounts where aid = %s"


def setup(dsn: str) -> None:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("select to_regclass('pool_bench_accounts') is not null")
    row = cur.fetchone()
    if not (row and row[0]):
        cur.execute("create table pool_bench_accounts (aid int primary key, abalance int not null default 0)")
        cur.execute("insert into pool_bench_accounts (aid) select generate_series(1, %s)", (ROWS,))
        cur.execute("analyze pool_bench_accounts")
    conn.close()


def run_clients(n: int, seconds: float, one_op: Callable[[random.Random], None]) -> tuple[int, list[float]]:
    """n greenlets call one_op until the deadline; returns (operations, sampled latencies)."""
    count = [0]
    lat: list[float] = []
    stop = time.monotonic() + seconds

    def client(i: int) -> None:
        rng = random.Random(i)
        mono = time.monotonic
        while True:
            t = mono()
            if t >= stop:
                return
            one_op(rng)
            count[0] += 1
            if count[0] % 16 == 0:
                lat.append(mono() - t)

    gs = [gevent.spawn(client, i) for i in range(n)]
    gevent.joinall(gs)
    for g in gs:
        g.get()
    return count[0], lat


def bench_dedicated(dsn: str, conns: int, seconds: float) -> tuple[int, list[float]]:
    pool = [psycopg2.connect(dsn) for _ in range(conns)]
    for c in pool:
        c.autocommit = True
    it = iter(pool)
    mine: dict[Any, Any] = {}

    def op(rng: random.Random) -> None:
        g = gevent.getcurrent()
        c = mine.get(g)
        if c is None:
            c = mine[g] = next(it)
        cur = c.cursor()
        cur.execute(QUERY, (rng.randint(1, ROWS),))
        cur.fetchone()

    try:
        return run_clients(conns, seconds, op)
    finally:
        for c in pool:
            c.close()


def bench_psycogreen(dsn: str, clients: int, conns: int, seconds: float) -> tuple[int, list[float]]:
    pool = ConnectionPool(
        dsn, min_size=conns, max_size=conns, configure=lambda c: setattr(c, "autocommit", True), timeout=60
    )
    pool.wait(30)

    def op(rng: random.Random) -> None:
        with pool.connection() as c:
            cur = c.cursor()
            cur.execute(QUERY, (rng.randint(1, ROWS),))
            cur.fetchone()

    try:
        return run_clients(clients, seconds, op)
    finally:
        pool.close()


def bench_psycopg_pool(dsn: str, clients: int, conns: int, seconds: float) -> tuple[int, list[float]] | None:
    try:
        import psycopg_pool
    except ImportError:
        return None
    pool = psycopg_pool.ConnectionPool(
        dsn, min_size=conns, max_size=conns, kwargs={"autocommit": True}, timeout=60, open=False
    )
    pool.open(wait=True, timeout=30)
    q = QUERY.replace("%s", "%s")

    def op(rng: random.Random) -> None:
        with pool.connection() as c:
            c.execute(q, (rng.randint(1, ROWS),)).fetchone()

    try:
        return run_clients(clients, seconds, op)
    finally:
        pool.close()


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p))] * 1000


MICRO_GREENLETS, MICRO_CONNS = 100, 10
#: ``--instructions`` workloads: (greenlets, what each does per round).
WORKLOADS = ("handoff", "sleep", "pool_query", "dedicated_query")


def micro(dsn: str, rounds: int, workload: str) -> None:
    """One workload ``--instructions`` counts, ``rounds`` rounds of it:

    - handoff: 100 greenlets over 10 connections, each taking one, yielding once, giving it back;
    - sleep: the same greenlets only yielding (subtracted from handoff);
    - pool_query: the throughput bench's pool side (1,000 greenlets, 10 connections), one point
      select per greenlet per round;
    - dedicated_query: its baseline, 10 greenlets on their own connections, 100 selects each per
      round (the same number of queries).
    """
    if workload == "dedicated_query":
        setup(dsn)
        conns = [psycopg2.connect(dsn) for _ in range(MICRO_CONNS)]
        for c in conns:
            c.autocommit = True
        per, jobs = rounds * 100, [(lambda c=c: c) for c in conns]
    else:
        n = 1000 if workload == "pool_query" else MICRO_GREENLETS
        if workload == "pool_query":
            setup(dsn)
        pool = ConnectionPool(
            dsn, min_size=MICRO_CONNS, configure=lambda c: setattr(c, "autocommit", True), timeout=3600
        )
        pool.wait(30)
        per, jobs = rounds, [pool.connection for _ in range(n)]

    def client(take: Callable[[], Any], seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(per):
            if workload == "sleep":
                gevent.sleep(0)
            elif workload == "handoff":
                with take():
                    gevent.sleep(0)
            elif workload == "pool_query":
                with take() as c:
                    cur = c.cursor()
                    cur.execute(QUERY, (rng.randint(1, ROWS),))
                    cur.fetchone()
            else:
                cur = take().cursor()
                cur.execute(QUERY, (rng.randint(1, ROWS),))
                cur.fetchone()

    gevent.joinall([gevent.spawn(client, take, i) for i, take in enumerate(jobs)], raise_error=True)


def callgrind_instructions(dsn: str, rounds: int, workload: str) -> int:
    """Instructions (Ir) of one ``--micro`` process under callgrind."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out")
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, __file__]
        cmd += ["--dsn", dsn, "--micro", str(rounds), "--workload", workload]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
        with open(out) as f:
            m = re.search(r"^(?:summary|totals): (\d+)", f.read(), re.M)
    assert m, "no callgrind summary"
    return int(m.group(1))


def per_round(dsn: str, rounds: int, workload: str) -> float:
    """Instructions one more round of ``workload`` costs (runs of N and 2N rounds: start-up and
    filling the pool cancel out)."""
    return (
        callgrind_instructions(dsn, 2 * rounds, workload) - callgrind_instructions(dsn, rounds, workload)
    ) / rounds


def instructions(dsn: str, rounds: int) -> None:
    where = f"psycogreen {psycogreen.__version__} from {os.path.dirname(psycogreen.__file__)}"
    handoff = (per_round(dsn, rounds, "handoff") - per_round(dsn, rounds, "sleep")) / MICRO_GREENLETS
    print(f"{where}: instructions per checkout + return (hand-off, 100 greenlets / 10 conns): {handoff:,.0f}")
    queries = max(1, rounds // 10)
    pooled = per_round(dsn, queries, "pool_query") / 1000
    dedicated = per_round(dsn, queries, "dedicated_query") / 1000
    print(
        f"{where}: instructions per point select: dedicated {dedicated:,.0f}, pool (1,000 greenlets / "
        f"10 conns) {pooled:,.0f}; CPU model of the throughput ratio: {dedicated / pooled:.2f}x"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--instructions", type=int, metavar="ROUNDS", help="callgrind figure (see above)")
    ap.add_argument("--micro", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--workload", choices=WORKLOADS, default="handoff", help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=5.0, help="per system, over all rounds")
    ap.add_argument("--rounds", type=int, default=5, help="systems alternate, to share the noise")
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--conns", type=int, default=10)
    args = ap.parse_args()
    psycogreen.patch("gevent")
    if args.micro:
        return micro(args.dsn, args.micro, args.workload)
    if args.instructions:
        return instructions(args.dsn, args.instructions)
    setup(args.dsn)
    slot = args.seconds / args.rounds
    systems: list[tuple[str, int, Callable[[], tuple[int, list[float]] | None]]] = [
        ("dedicated connections", args.conns, lambda: bench_dedicated(args.dsn, args.conns, slot)),
        (
            "psycogreen.pool.ConnectionPool",
            args.clients,
            lambda: bench_psycogreen(args.dsn, args.clients, args.conns, slot),
        ),
        (
            "psycopg_pool (psycopg 3, gevent-patched)",
            args.clients,
            lambda: bench_psycopg_pool(args.dsn, args.clients, args.conns, slot),
        ),
    ]
    bench_dedicated(args.dsn, args.conns, 0.5)  # warm-up: caches, first connections
    totals: dict[str, tuple[int, list[float]] | None] = {name: (0, []) for name, _, _ in systems}
    for _ in range(args.rounds):
        for name, _, fn in systems:
            res = fn()
            acc = totals[name]
            totals[name] = None if res is None or acc is None else (acc[0] + res[0], acc[1] + res[1])
    base_res = totals[systems[0][0]]
    base = base_res[0] / args.seconds if base_res else 1.0
    print(
        f"\nPoint selects (pgbench -S style), gevent, {args.seconds:g} s per system in {args.rounds} "
        f"alternating rounds, psycogreen {psycogreen.__version__}\n"
    )
    print("| system | greenlets | connections | ops/s | vs dedicated | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, clients, _ in systems:
        res = totals[name]
        if res is None:
            print(f"| {name} | {clients} | {args.conns} | n/a | | | |")
            continue
        ops = res[0] / args.seconds
        print(
            f"| {name} | {clients} | {args.conns} | {ops:,.0f} | {ops / base:.2f}x | "
            f"{pct(res[1], 0.5):.2f} | {pct(res[1], 0.99):.2f} |"
        )


if __name__ == "__main__":
    main()
