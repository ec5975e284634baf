"""psycogreen.timeout() bounds the waits where nothing runs on the server: a notifies() loop and
consume_stream on a logical replication slot. Run as ``timeout_waits.py <framework> <scenario>``."""

from __future__ import annotations

import sys
import time
import uuid
from typing import Any

import kit
import psycopg2
import psycopg2.extras

import psycogreen
from psycogreen.errors import QueryTimeout

SCENARIO = sys.argv[2]


def _bounded(run: Any, seconds: float) -> dict[str, Any]:
    """Run ``run()`` inside timeout(seconds) with a ticker going; what came out, and how soon."""
    ticker = kit.Ticker()
    t0 = time.monotonic()
    exc: BaseException | None = None
    try:
        with psycogreen.timeout(seconds):
            run()
    except QueryTimeout as e:
        exc = e
    took = time.monotonic() - t0
    return {
        "exc": type(exc).__name__ if exc else None,
        "msg": str(exc) if exc else "",
        "took": took,
        "max_gap": ticker.stop(),
    }


def notifies() -> dict[str, Any]:
    conn = psycopg2.connect(kit.DSN)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("listen timeout_waits")

    def loop() -> None:
        for _ in psycogreen.notifies(conn):
            pass

    out = _bounded(loop, 0.3)
    # the loop's own budget inside a larger deadline ends it normally
    t0 = time.monotonic()
    with psycogreen.timeout(30):
        got = list(psycogreen.notifies(conn, timeout=0.2))
    out["own_budget_got"] = len(got)
    out["own_budget_took"] = time.monotonic() - t0
    cur.execute("select 1")
    out["usable"] = cur.fetchone()[0] == 1 and not conn.closed
    conn.close()
    return out


def consume_stream() -> dict[str, Any]:
    name = f"tw_{uuid.uuid4().hex[:10]}"
    rconn = psycopg2.connect(kit.DSN, connection_factory=psycopg2.extras.LogicalReplicationConnection)
    rcur = rconn.cursor()
    rcur.create_replication_slot(name, output_plugin="test_decoding")
    try:
        rcur.start_replication(slot_name=name)
        out = _bounded(lambda: rcur.consume_stream(lambda msg: None), 0.3)
        rcur.read_message()  # the stream is still there: no exception
        out["usable"] = not rconn.closed
    finally:
        rconn.close()
        admin = kit.monitor()
        kit.wait_until(lambda: _drop(admin, name), what="the slot to be dropped")
        admin.close()
    return out


def _drop(admin: Any, name: str) -> bool:
    try:
        admin.cursor().execute("select pg_drop_replication_slot(%s)", (name,))
    except psycopg2.errors.ObjectInUse:
        return False
    return True


kit.emit(**{"notifies": notifies, "consume_stream": consume_stream}[SCENARIO]())
