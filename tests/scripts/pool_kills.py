"""Measure: broken connections handed out per 100 backend kills, and the checkout cost.

``pool_kills.py <framework> [rounds] [cost]``. Each round: 20 clients make a burst of checkouts through a
6-connection pool (so every connection was returned a moment ago), then every idle pooled backend
is terminated (``pg_terminate_backend``) and, once the server shows them gone, the 20 clients check
out again and run ``select 1``. A client whose first statement fails was handed a connection whose
backend was already gone. Then a tight getconn/putconn loop on an idle pool gives the cost of a
checkout cycle, and the liveness look alone is timed on one connection.
"""

from __future__ import annotations

import sys
import time
import timeit

import kit
import psycopg2

from psycogreen.pool import ConnectionPool

APP = f"pool_kills_{kit.FRAMEWORK}"
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 20


def backends(mon: object) -> int:
    cur = mon.cursor()  # type: ignore[attr-defined]
    cur.execute("select count(*) from pg_stat_activity where application_name = %s", (APP,))
    n: int = cur.fetchone()[0]
    return n


def main() -> None:
    pool = ConnectionPool(kit.DSN, min_size=6, max_size=6, timeout=10, kwargs={"application_name": APP})
    pool.wait(10)
    mon = kit.monitor()
    counts = {"checkouts": 0, "broken": 0, "kills": 0}
    since_return: list[float] = []

    def client(times: int) -> None:
        for _ in range(times):
            with pool.connection() as c:
                counts["checkouts"] += 1
                try:
                    c.cursor().execute("select 1")
                except psycopg2.OperationalError:
                    counts["broken"] += 1

    for _ in range(ROUNDS):
        kit.joinall([kit.spawn(client, 5) for _ in range(20)], timeout=60)
        kit.wait_until(lambda: len(pool._idle) == 6, what="all connections back")
        returned = max(m.returned_at for m in pool._idle)
        cur = mon.cursor()
        cur.execute(
            "select count(pg_terminate_backend(pid)) from pg_stat_activity where application_name = %s",
            (APP,),
        )
        counts["kills"] += cur.fetchone()[0]
        kit.wait_until(lambda: backends(mon) == 0, what="the killed backends to go")
        since_return.append(time.monotonic() - returned)
        kit.joinall([kit.spawn(client, 1) for _ in range(20)], timeout=60)
    stats = pool.get_stats()
    pool.close()
    result = dict(
        counts,
        broken_per_100_kills=round(100 * counts["broken"] / max(counts["kills"], 1), 1),
        connections_lost=stats.get("connections_lost", 0),
        max_s_since_return=round(max(since_return), 3),
    )
    if "cost" in sys.argv[3:]:
        result.update(checkout_cost())
    kit.emit(**result)


def checkout_cost() -> dict[str, float]:
    """µs per getconn+putconn cycle on an idle pool, and per liveness look."""
    quiet = ConnectionPool(kit.DSN, min_size=1, max_size=1)
    quiet.wait(10)
    n = 20000

    def cycle() -> None:
        quiet.putconn(quiet.getconn())

    cycle_us = min(timeit.repeat(cycle, number=n, repeat=5)) / n * 1e6
    conn = quiet.getconn()
    look_us = min(timeit.repeat(lambda: quiet._alive(conn, False), number=n, repeat=5)) / n * 1e6
    quiet.putconn(conn)
    quiet.close()
    return {"cycle_us": round(cycle_us, 2), "look_us": round(look_us, 2)}


main()
