"""LISTEN/NOTIFY with psycogreen.notifies() under one framework (argv[1]): a listener waits while
another greenlet notifies; prints one JSON line. See tests/test_notifies.py."""

from __future__ import annotations

import time

import kit
import psycopg2

import psycogreen
from psycogreen import _guard

lc = psycopg2.connect(kit.DSN)
lc.autocommit = True
lc.cursor().execute("listen ch")
lc.cursor().execute("notify ch, 'queued'")  # our own: comes with the result, kept in lc.notifies
ticker = kit.Ticker()


def notifier() -> None:
    kit.wait_until(lambda: _guard.in_use(lc), what="the listener to wait")
    nc = psycopg2.connect(kit.DSN)
    nc.autocommit = True
    for i in range(3):
        nc.cursor().execute("notify ch, %s", (str(i),))
        kit.sleep(0.05)  # behaviour: three separate arrivals, each waking the waiting listener
    nc.close()


stream = psycogreen.notifies(lc, timeout=10, stop_after=4)
got = [next(stream).payload]  # the queued one comes first, before anything is sent
ng = kit.spawn(notifier)  # the others are sent once the listener waits
got += [n.payload for n in stream]
kit.result(ng)
t0 = time.monotonic()
empty = list(psycogreen.notifies(lc, timeout=0.2))
budget = time.monotonic() - t0
lc.close()
kit.emit(patched=kit.PATCHED, notifies=got, empty=empty, budget=budget, max_gap=ticker.stop())
