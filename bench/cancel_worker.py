"""Cancel latency and hub stall, in its own process: ``python bench/cancel_worker.py SYSTEM --dsn DSN``.

Per run: a greenlet starts ``SELECT pg_sleep(30)`` on its own connection; once the statement shows
as active in ``pg_stat_activity``, the interrupt is delivered and a monitor connection polls
``pg_stat_activity`` every ~0.5 ms until the backend is no longer active. The *latency* is interrupt
-> statement gone. Meanwhile a ticker greenlet sleeping 1 ms records the largest gap between its
ticks from the interrupt until the statement is gone: the *hub stall* (a blocking cancel freezes
every greenlet, so it shows there).

Systems (all under gevent):
- ``psycogreen2``: the waiting greenlet is killed (``GreenletExit``); psycogreen cancels on the
  server (libpq 17's non-blocking cancel, or the thread pool with ``PSYCOGREEN_CANCEL=thread``);
- ``psycogreen1``: psycogreen 1.0.2 has no interrupt support (the query would keep running), so the
  usual recipe: ``conn.cancel()`` from another greenlet, psycopg2's blocking ``PQcancel``;
- ``psycopg3``: psycopg 3's ``cancel_safe()`` (non-blocking where libpq >= 17) or ``cancel()``.

Prints one JSON line: ``{"latency_ms": [...], "stall_ms": [...], "errors": [...]}``.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from typing import Any, Callable  # noqa: E402

import gevent  # noqa: E402

ACTIVE = "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND state = 'active'"


class Ticker:
    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.max_gap = 0.0
        self.stop = False

    def reset(self) -> None:
        self.last = time.perf_counter()
        self.max_gap = 0.0

    def run(self) -> None:
        while not self.stop:
            gevent.sleep(0.001)
            now = time.perf_counter()
            self.max_gap = max(self.max_gap, now - self.last)
            self.last = now


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("system", choices=("psycogreen2", "psycogreen1", "psycopg3"))
    p.add_argument("--dsn", required=True)
    p.add_argument("--runs", type=int, default=20)
    args = p.parse_args()

    connect: Callable[[], Any]
    if args.system == "psycopg3":
        import psycopg

        def connect() -> Any:
            return psycopg.connect(args.dsn, autocommit=True)

        def interrupt(g: Any, conn: Any) -> None:
            if hasattr(conn, "cancel_safe"):
                conn.cancel_safe()
            else:
                conn.cancel()
    else:
        import psycopg2

        if args.system == "psycogreen2":
            import psycogreen

            psycogreen.patch("gevent")

            def interrupt(g: Any, conn: Any) -> None:
                g.kill(block=False)
        else:
            from psycogreen.gevent import patch_psycopg  # 1.0.2, from its own venv

            patch_psycopg()

            def interrupt(g: Any, conn: Any) -> None:
                conn.cancel()

        def connect() -> Any:
            c = psycopg2.connect(args.dsn)
            c.autocommit = True
            return c

    monitor = connect()
    mcur = monitor.cursor()
    ticker = Ticker()
    tg = gevent.spawn(ticker.run)
    latencies: list[float] = []
    stalls: list[float] = []
    errors: list[str] = []

    def victim(conn: Any) -> None:
        try:
            conn.cursor().execute("SELECT pg_sleep(30)")
        except BaseException:
            pass  # cancelled or killed: the point of the exercise

    def active(pid: int) -> bool:
        mcur.execute(ACTIVE, (pid,))
        row = mcur.fetchone()
        return bool(row and row[0])

    for _ in range(args.runs):
        conn = connect()
        pid = conn.info.backend_pid if args.system == "psycopg3" else conn.get_backend_pid()
        g = gevent.spawn(victim, conn)
        end = time.perf_counter() + 5
        while not active(pid) and time.perf_counter() < end:
            gevent.sleep(0.002)
        gevent.sleep(0.01)
        ticker.reset()
        t0 = time.perf_counter()
        interrupt(g, conn)
        end = t0 + 10
        while active(pid) and time.perf_counter() < end:
            gevent.sleep(0.0005)
        t1 = time.perf_counter()
        stall = max(ticker.max_gap, time.perf_counter() - ticker.last)
        if t1 >= end:
            errors.append("statement still active after 10 s")
        latencies.append((t1 - t0) * 1000)
        stalls.append(stall * 1000)
        g.join(5)
        try:
            conn.close()
        except Exception as e:
            errors.append(repr(e))
    ticker.stop = True
    tg.join(1)
    print(json.dumps({"latency_ms": latencies, "stall_ms": stalls, "errors": errors[:3]}), flush=True)


if __name__ == "__main__":
    main()
