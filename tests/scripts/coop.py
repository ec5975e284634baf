"""Cooperation: N connections each run pg_sleep while a ticker keeps its cadence."""

import time

import kit
import psycopg2

N = 10
conns = [psycopg2.connect(kit.DSN) for _ in range(N)]
ticker = kit.Ticker()


def work(c: object) -> None:
    cur = c.cursor()  # type: ignore[attr-defined]
    for _ in range(3):
        cur.execute("select pg_sleep(0.2)")


t0 = time.monotonic()
gs = [kit.spawn(work, c) for c in conns]
kit.joinall(gs)
elapsed = time.monotonic() - t0
gap = ticker.stop()
for g in gs:
    kit.result(g)
kit.emit(patched=kit.PATCHED, elapsed=elapsed, max_gap=gap, ticks=ticker.ticks)
