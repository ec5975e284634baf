"""Everything psycopg2 refuses in green mode, under one framework (argv[1]): COPY, large objects,
replication, notifications. Same expectations under gevent, eventlet and threads."""

from __future__ import annotations

import io
import sys
import time
from typing import Any

import kit
import psycopg2
import psycopg2.errors
import psycopg2.extras

import psycogreen

out: dict[str, Any] = {"patched": kit.PATCHED}


def step(name: str) -> None:
    print("step", name, file=sys.stderr, flush=True)


mon = kit.monitor()


class Rows(io.RawIOBase):
    """A readable file producing ``n`` rows on the fly, sleeping cooperatively now and then."""

    def __init__(self, n: int, width: int = 100, nap: float = 0.0) -> None:
        self.n, self.i, self.nap = n, 0, nap
        self.pad = b"x" * width

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self.i >= self.n:
            return b""
        chunk = []
        for _ in range(max(1, size // (len(self.pad) + 10))):
            if self.i >= self.n:
                break
            chunk.append(b"%d\t%s\n" % (self.i, self.pad))
            self.i += 1
        if self.nap and self.i % 2000 == 0:
            kit.sleep(self.nap)
        return b"".join(chunk)


class Boom(io.RawIOBase):
    def __init__(self, after: int) -> None:
        self.left = after

    def read(self, size: int = -1) -> bytes:
        self.left -= 1
        if self.left < 0:
            raise ValueError("the file failed")
        return b"1\tok\n" * 100


class Sink:
    def __init__(self) -> None:
        self.n = 0

    def write(self, data: Any) -> int:
        self.n += len(data)
        return len(data)


conn = psycopg2.connect(kit.DSN)
cur = conn.cursor()
cur.execute("create temp table t (id int, pad text)")
conn.commit()

# 1. a long COPY IN and OUT while a ticker keeps its cadence
step("1")
ticker = kit.Ticker()
t0 = time.monotonic()
cur.copy_expert("copy t from stdin", Rows(200_000), size=65536)
out["copy_in_rows"] = cur.rowcount
sink = Sink()
cur.copy_expert("copy t to stdout", sink)
out["copy_out_rows"] = cur.rowcount
out["copy_out_bytes"] = sink.n
out["copy_elapsed"] = time.monotonic() - t0
out["copy_max_gap"] = ticker.stop()
conn.commit()

# 2. COPY with concurrency: two connections copying at once overlap
step("2")


def copier(i: int) -> float:
    c = psycopg2.connect(kit.DSN)
    k = c.cursor()
    k.execute("create temp table u (id int, pad text)")
    t = time.monotonic()
    k.copy_from(Rows(20_000, nap=0.05), "u")
    c.commit()
    c.close()
    return time.monotonic() - t


t0 = time.monotonic()
gs = [kit.spawn(copier, i) for i in range(3)]
kit.joinall(gs)
durations = [kit.result(g) for g in gs]
out["parallel_sum"] = sum(durations)
out["parallel_wall"] = time.monotonic() - t0

# 3. a deadline during COPY IN ends the copy on the server; nothing committed; connection usable
step("3")
cur.execute("select count(*) from t")
before = cur.fetchone()[0]
try:
    with psycogreen.timeout(0.3):
        cur.copy_expert("copy t from stdin", Rows(10**9, nap=0.01))
    out["in_timeout"] = "none"
except psycogreen.errors.QueryTimeout:
    out["in_timeout"] = "QueryTimeout"
conn.rollback()
cur.execute("select count(*) from t")
out["in_timeout_rows_unchanged"] = cur.fetchone()[0] == before
out["in_timeout_active"] = kit.running(mon, "copy t from stdin%")

# 4. a deadline during COPY OUT cancels it on the server; connection usable
step("4")
cur.execute(
    "create temp table big as select g as id, repeat('y', 200) as pad from generate_series(1, 300000) g"
)


class SlowSink(Sink):
    def write(self, data: Any) -> int:
        if self.n % 200 == 0:
            kit.sleep(0.001)
        return super().write(data)


try:
    with psycogreen.timeout(0.3):
        cur.copy_expert("copy (select * from big, generate_series(1, 1000)) to stdout", SlowSink())
    out["out_timeout"] = "none"
except psycogreen.errors.QueryTimeout:
    out["out_timeout"] = "QueryTimeout"
conn.rollback()
cur.execute("select 42")
out["out_timeout_usable"] = cur.fetchone()[0] == 42
out["out_timeout_active"] = kit.running(mon, "copy (select * from big%")

# 5. a failing file: psycopg2's QueryCanceled (the file's exception as its cause), the copy aborted
# on the server, nothing committed
step("5")
try:
    cur.copy_from(Boom(after=3), "t")
    out["file_error"] = "none"
except psycopg2.errors.QueryCanceled as e:
    out["file_error"] = str(e.__cause__)
    out["file_error_context"] = type(e).__name__
conn.rollback()
cur.execute("select count(*) from t")
out["file_error_rows_unchanged"] = cur.fetchone()[0] == before

# 6. a malformed row: the server's error class
step("6")
try:
    cur.copy_from(io.StringIO("1\tx\textra\n"), "t")
except psycopg2.errors.BadCopyFileFormat as e:
    out["bad_row"] = [type(e).__name__, e.pgcode]
conn.rollback()

# 7. killing a greenlet during COPY OUT (gevent/eventlet)
step("7")
if kit.FRAMEWORK != "threads":
    kc = psycopg2.connect(kit.DSN)

    def long_copy() -> None:
        kc.cursor().copy_expert(
            "copy (select g, repeat('z', 100) from generate_series(1, 100000000) g) to stdout", SlowSink()
        )

    g = kit.spawn(long_copy)
    kit.wait_until(lambda: kit.running(mon, "copy (select g, repeat('z'%") > 0, what="the COPY to run")
    kit.kill(g)
    kc.rollback()
    k2 = kc.cursor()
    k2.execute("select 7")
    out["kill_usable"] = k2.fetchone()[0] == 7
    out["kill_active"] = kit.running(mon, "copy (select g, repeat('z'%")
    kc.close()

# 8. large objects
step("8")
lo = conn.lobject()
lo.write(b"hello")
lo.seek(3 * 1024**3)
lo.write(b"!")
out["lo_tell"] = lo.tell()
lo.seek(0)
out["lo_head"] = lo.read(5).__str__()
oid = lo.oid
conn.commit()
lo2 = conn.lobject(oid, "rb")
out["lo_bytes"] = lo2.read(5).decode()
lo2.unlink()
conn.commit()

# 9. LISTEN/NOTIFY: a listener greenlet waits while another notifies
step("9")
lc = psycopg2.connect(kit.DSN)
lc.autocommit = True
lc.cursor().execute("listen ch")
lc.cursor().execute("notify ch, 'queued'")
nticker = kit.Ticker()


def notifier() -> None:
    kit.sleep(0.2)
    nc = psycopg2.connect(kit.DSN)
    nc.autocommit = True
    for i in range(3):
        nc.cursor().execute("notify ch, %s", (str(i),))
        kit.sleep(0.05)
    nc.close()


ng = kit.spawn(notifier)
got = [n.payload for n in psycogreen.notifies(lc, timeout=10, stop_after=4)]
kit.result(ng)
out["notifies"] = got
t0 = time.monotonic()
out["notifies_empty"] = list(psycogreen.notifies(lc, timeout=0.2))
out["notifies_budget"] = time.monotonic() - t0
out["notify_max_gap"] = nticker.stop()
lc.close()

# 10. replication: a consumer in one greenlet while others write
step("10")
slot = f"psycogreen_{kit.FRAMEWORK}"
TABLE = f"repl_t_{kit.FRAMEWORK}"
rc = psycopg2.connect(kit.DSN, connection_factory=psycopg2.extras.LogicalReplicationConnection)
rcur = rc.cursor()
mon.cursor().execute(
    "select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = %s", (slot,)
)
rcur.create_replication_slot(slot, output_plugin="test_decoding")
try:
    wc = psycopg2.connect(kit.DSN)
    wc.autocommit = True
    wc.cursor().execute(f"create table if not exists {TABLE} (id int)")

    def writer(base: int) -> None:
        w = psycopg2.connect(kit.DSN)
        w.autocommit = True
        for i in range(5):
            w.cursor().execute(f"insert into {TABLE} values (%s)", (base + i,))
            kit.sleep(0.02)
        w.close()

    rcur.start_replication(slot_name=slot, decode=True)
    inserts: list[str] = []
    rticker = kit.Ticker()

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
    ws = [kit.spawn(writer, b) for b in (0, 100)]
    kit.joinall(ws)
    out["repl_result"] = kit.result(cg)
    out["repl_inserts"] = len(inserts)
    out["repl_max_gap"] = rticker.stop()
    out["repl_wal_end"] = rcur.wal_end > 0
    out["repl_msg_attrs"] = True

    if kit.FRAMEWORK != "threads":
        # a consumer greenlet that is killed stops at once
        def forever() -> None:
            rcur.consume_stream(lambda m: None, keepalive_interval=1)

        fg = kit.spawn(forever)
        kit.sleep(0.3)
        t0 = time.monotonic()
        kit.kill(fg)
        out["repl_kill_s"] = time.monotonic() - t0
    wc.cursor().execute(f"drop table {TABLE}")
    wc.close()
finally:
    rc.close()
    for _ in range(100):  # the walsender exits asynchronously after close
        try:
            mon.cursor().execute("select pg_drop_replication_slot(%s)", (slot,))
            break
        except psycopg2.errors.ObjectInUse:
            kit.sleep(0.1)

conn.close()
kit.emit(**out)
sys.exit(0)
