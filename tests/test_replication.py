"""Replication cursors under patch() (threads, in process): psycopg2's documented behaviour, with a
real logical slot (test_decoding) created and dropped by each test."""

from __future__ import annotations

import datetime
import select
import time
import uuid
from typing import Any, Iterator

import psycopg2
import psycopg2.extras
import pytest
from until import wait_until

import psycogreen
from psycogreen.replication import ReplicationMessage


@pytest.fixture
def slot(dsn: str, threads_patched: str) -> Iterator[tuple[Any, Any, str]]:
    name = f"t_{uuid.uuid4().hex[:10]}"
    rconn = psycopg2.connect(dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection)
    cur = rconn.cursor()
    cur.create_replication_slot(name, output_plugin="test_decoding")
    admin = psycopg2.connect(dsn)
    admin.autocommit = True
    try:
        yield rconn, cur, name
    finally:
        rconn.close()
        wait_until(lambda: _slot_released(admin, name), what=f"slot {name} to be released")
        admin.cursor().execute("select pg_drop_replication_slot(%s)", (name,))
        admin.close()


def _slot_released(admin: Any, name: str) -> bool:
    """The walsender exits asynchronously after its client closes: the slot is in use until then."""
    cur = admin.cursor()
    cur.execute("select active from pg_replication_slots where slot_name = %s", (name,))
    row = cur.fetchone()
    return row is None or not row[0]


@pytest.fixture
def written(slot: tuple[Any, Any, str], dsn: str) -> Iterator[tuple[Any, str]]:
    """A writer cursor and a fresh table whose changes the slot will stream (made after the slot)."""
    writer = psycopg2.connect(dsn)
    writer.autocommit = True
    wcur = writer.cursor()
    table = f"rt_{uuid.uuid4().hex[:8]}"
    wcur.execute(f"create table {table} (id int)")
    try:
        yield wcur, table
    finally:
        wcur.execute(f"drop table {table}")
        writer.close()


def test_misuse_errors_match_psycopg2(slot: tuple[Any, Any, str]) -> None:
    _, cur, name = slot
    with pytest.raises(psycopg2.ProgrammingError, match="not replicating, call start_replication first"):
        cur.consume_stream(lambda m: None)
    with pytest.raises(psycopg2.ProgrammingError, match="status_interval must be >= 1"):
        cur.start_replication(slot_name=name, status_interval=0.5)
    cur.start_replication(slot_name=name)
    with pytest.raises(psycopg2.ProgrammingError, match="keepalive_interval must be >= 1"):
        cur.consume_stream(lambda m: None, keepalive_interval=0.1)


def test_read_message_loop_and_feedback(slot: tuple[Any, Any, str], written: tuple[Any, str]) -> None:
    rconn, cur, name = slot
    wcur, table = written
    cur.start_replication(slot_name=name, decode=False)
    # non-blocking: None when nothing has arrived yet (the CREATE TABLE may already have)
    first = cur.read_message()
    assert first is None or isinstance(first, ReplicationMessage)
    wcur.execute(f"insert into {table} values (1), (2)")
    msgs: list[ReplicationMessage] = [first] if first is not None else []
    deadline = time.monotonic() + 10
    while len(msgs) < 6 and time.monotonic() < deadline:  # DDL BEGIN+COMMIT; BEGIN, 2 x INSERT, COMMIT
        msg = cur.read_message()
        if msg is None:
            select.select([rconn], [], [], 0.5)
            continue
        msgs.append(msg)
    payloads = [m.payload for m in msgs]
    assert all(isinstance(p, bytes) for p in payloads)
    assert sum(b"INSERT" in p for p in payloads) == 2
    last = msgs[-1]
    assert last.data_size == len(last.payload)
    assert isinstance(last.send_time, datetime.datetime)
    assert abs((datetime.datetime.now() - last.send_time).total_seconds()) < 60
    assert last.cursor is cur
    assert cur.wal_end >= last.data_start > 0
    assert isinstance(cur.io_timestamp, datetime.datetime)
    cur.send_feedback(flush_lsn=last.data_start, force=True)
    assert abs((datetime.datetime.now() - cur.feedback_timestamp).total_seconds()) < 5

    # the server records the confirmed position
    def confirmed() -> bool:
        wcur.execute(
            "select confirmed_flush_lsn - '0/0'::pg_lsn from pg_replication_slots where slot_name = %s",
            (name,),
        )
        if int(wcur.fetchone()[0]) >= last.data_start:
            return True
        cur.send_feedback(reply=True)
        return False

    wait_until(confirmed, interval=0.05, what="the server to record the confirmed position")


def test_consume_stream_stop_replication_and_resume(
    slot: tuple[Any, Any, str], written: tuple[Any, str]
) -> None:
    _, cur, name = slot
    wcur, table = written
    cur.start_replication(slot_name=name, decode=True)
    for i in range(3):
        wcur.execute(f"insert into {table} values (%s)", (i,))
    seen: list[str] = []

    def consume(msg: Any) -> None:
        seen.append(msg.payload)
        if len(seen) in (2, 11):  # DDL BEGIN+COMMIT, then 3 x BEGIN, INSERT, COMMIT
            raise psycopg2.extras.StopReplication()

    with pytest.raises(psycopg2.extras.StopReplication):
        cur.consume_stream(consume, keepalive_interval=1)
    assert len(seen) == 2
    # the stream stayed open: consuming again resumes where it stopped
    with pytest.raises(psycopg2.extras.StopReplication):
        cur.consume_stream(consume)
    assert len(seen) == 11
    assert sum("INSERT" in p for p in seen) == 3


def test_unpatched_cursor_is_psycopg2s(dsn: str) -> None:
    """Without patch() the mixin is not involved at all."""
    assert psycogreen.patched() is None
    conn = psycopg2.connect(dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection)
    try:
        cur = conn.cursor()
        assert type(cur) is psycopg2.extras.ReplicationCursor
    finally:
        conn.close()


@pytest.mark.parametrize("framework", ["gevent", "eventlet", "threads"])
def test_replication_consumer_among_writers(run_script: Any, framework: str) -> None:
    """A consumer greenlet streams while two others write (tests/scripts/replication.py); under
    gevent/eventlet the hub keeps its cadence and a waiting consumer is killed at once."""
    out = run_script("replication.py", framework)
    assert out["patched"] == framework
    assert out["result"] == "stopped"
    assert out["inserts"] == 10
    assert out["wal_end"] is True
    if framework != "threads":
        assert out["max_gap"] < 0.25, out
        assert out["kill_s"] < 1.0, out
