"""Logical replication under one framework (argv[1]): a consumer greenlet streams while two others
write, then (gevent/eventlet) a waiting consumer is killed; prints one JSON line. See
tests/test_replication.py."""

from __future__ import annotations

import time
import uuid
from typing import Any

import kit
import psycopg2
import psycopg2.extras

from psycogreen import _guard

SLOT = f"psycogreen_{kit.FRAMEWORK}_{uuid.uuid4().hex[:8]}"
TABLE = f"repl_{uuid.uuid4().hex[:8]}"
out: dict[str, Any] = {"patched": kit.PATCHED}
mon = kit.monitor()


def writer(base: int) -> None:
    w = psycopg2.connect(kit.DSN)
    w.autocommit = True
    for i in range(5):
        w.cursor().execute(f"insert into {TABLE} values (%s)", (base + i,))
        kit.sleep(0.02)  # behaviour: writes spread out, interleaved with the consumer's reads
    w.close()


def stream(rcur: Any) -> None:
    """Consume while two writers insert ten rows; stop after the tenth."""
    inserts: list[str] = []
    ticker = kit.Ticker()

    def consume(msg: Any) -> None:
        if "INSERT" in msg.payload:
            inserts.append(msg.payload)
        msg.cursor.send_feedback(flush_lsn=msg.data_start)
        if len(inserts) >= 10:
            raise psycopg2.extras.StopReplication()

    def consumer() -> str:
        try:
            rcur.consume_stream(consume, keepalive_interval=1)
        except psycopg2.extras.StopReplication:
            return "stopped"
        return "ended"

    cg = kit.spawn(consumer)
    kit.joinall([kit.spawn(writer, b) for b in (0, 100)])
    out.update(result=kit.result(cg), inserts=len(inserts), max_gap=ticker.stop(), wal_end=rcur.wal_end > 0)


def kill_waiting_consumer(rc: Any, rcur: Any) -> None:
    """A consumer greenlet waiting for messages that never come is killed: it stops at once."""
    g = kit.spawn(lambda: rcur.consume_stream(lambda m: None, keepalive_interval=1))
    kit.wait_until(lambda: _guard.in_use(rc), what="the consumer to wait in consume_stream")
    t0 = time.monotonic()
    kit.kill(g)
    out["kill_s"] = time.monotonic() - t0


def slot_inactive() -> bool:
    cur = mon.cursor()
    cur.execute("select active from pg_replication_slots where slot_name = %s", (SLOT,))
    row = cur.fetchone()
    return row is None or not row[0]


rc = psycopg2.connect(kit.DSN, connection_factory=psycopg2.extras.LogicalReplicationConnection)
rcur = rc.cursor()
rcur.create_replication_slot(SLOT, output_plugin="test_decoding")
mon.cursor().execute(f"create table {TABLE} (id int)")
try:
    rcur.start_replication(slot_name=SLOT, decode=True)
    stream(rcur)
    if kit.FRAMEWORK != "threads":
        kill_waiting_consumer(rc, rcur)
finally:
    rc.close()
    # the walsender exits asynchronously after close: the slot can be dropped once it is inactive
    kit.wait_until(slot_inactive, what=f"slot {SLOT} to be released")
    mon.cursor().execute("select pg_drop_replication_slot(%s)", (SLOT,))
    mon.cursor().execute(f"drop table {TABLE}")
kit.emit(**out)
