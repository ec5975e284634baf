"""Measure: how many interrupted COMMITs actually committed. ``pool_commit_interrupt.py <fw> [n]``.

Each of ``n`` transactions inserts one row, then runs COMMIT under a ``psycogreen.timeout()`` whose
length is drawn at random from [0, 2 x the median commit time measured first], so the deadline
lands at random points of the commit. For every commit that raised, the side connection checks
whether its row is there. Two kinds of commit: a plain one (sub-millisecond), and one made slow by a
deferred constraint trigger that sleeps 0-20 ms at COMMIT time (work the server does *inside* the
commit, which a cancel can still stop).
"""

from __future__ import annotations

import random
import statistics
import sys
import time

import kit
import psycopg2

import psycogreen

N = int(sys.argv[2]) if len(sys.argv) > 2 else 200
TABLE = f"commit_interrupt_{kit.FRAMEWORK}"


def run(conn: object, mon: object, slow: bool, rng: random.Random) -> dict[str, object]:
    cur = conn.cursor()  # type: ignore[attr-defined]
    cur.execute(f"truncate {TABLE}")
    conn.commit()  # type: ignore[attr-defined]
    flag = "true" if slow else "false"
    samples = []
    for i in range(20):  # the commit's usual length, to aim the deadlines
        cur.execute(f"insert into {TABLE} values (%s, {flag})", (-1 - i,))
        t0 = time.perf_counter()
        conn.commit()  # type: ignore[attr-defined]
        samples.append(time.perf_counter() - t0)
    median = statistics.median(samples)
    interrupted = committed = 0
    for i in range(N):
        cur.execute(f"insert into {TABLE} values (%s, {flag})", (i,))
        try:
            with psycogreen.timeout(rng.uniform(0, 2 * median)):
                conn.commit()  # type: ignore[attr-defined]
        except psycopg2.extensions.QueryCanceledError:
            interrupted += 1
            if conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE:  # type: ignore[attr-defined]
                conn.rollback()  # type: ignore[attr-defined]
            mcur = mon.cursor()  # type: ignore[attr-defined]
            mcur.execute(f"select count(*) from {TABLE} where id = %s", (i,))
            committed += mcur.fetchone()[0]
    return {"median_commit_ms": round(median * 1000, 2), "interrupted": interrupted, "committed": committed}


def main() -> None:
    mon = kit.monitor()
    mcur = mon.cursor()
    mcur.execute(f"drop table if exists {TABLE}; create table {TABLE} (id int, slow bool)")
    mcur.execute(
        "create or replace function commit_interrupt_slow() returns trigger language plpgsql as "
        "$$ begin if new.slow then perform pg_sleep(random() * 0.02); end if; return null; end $$"
    )
    mcur.execute(
        f"create constraint trigger slow_commit after insert on {TABLE} deferrable initially deferred "
        "for each row execute function commit_interrupt_slow()"
    )
    conn = psycopg2.connect(kit.DSN)
    rng = random.Random(1)
    plain = run(conn, mon, False, rng)
    slow = run(conn, mon, True, rng)
    conn.close()
    kit.emit(n=N, plain=plain, slow_trigger=slow)


main()
