"""COPY in green mode (psycopg2 refuses it; psycogreen runs it cooperatively) under one framework
(argv[1]), one scenario per argv[2]; prints one JSON line. See tests/test_copy_green.py."""

from __future__ import annotations

import io
import sys
import time
from typing import Any, Callable

import kit
import psycopg2
import psycopg2.errors

import psycogreen

SCENARIO = sys.argv[2]


class Rows(io.RawIOBase):
    """A readable file producing ``n`` rows on the fly; with ``nap``, it sleeps cooperatively every
    2000 rows (a slow producer: the nap is the behaviour under test, not an ordering step)."""

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
    """A file that fails after ``after`` reads."""

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


class SlowSink(Sink):
    """A consumer that yields to the hub now and then (a slow reader: behaviour, not ordering)."""

    def write(self, data: Any) -> int:
        if self.n % 200 == 0:
            kit.sleep(0.001)
        return super().write(data)


def table(conn: Any) -> Any:
    cur = conn.cursor()
    cur.execute("create temp table t (id int, pad text)")
    conn.commit()
    return cur


def scenario_stream() -> dict[str, Any]:
    """A long COPY IN then OUT while a ticker keeps its cadence."""
    conn = psycopg2.connect(kit.DSN)
    cur = table(conn)
    ticker = kit.Ticker()
    cur.copy_expert("copy t from stdin", Rows(200_000), size=65536)
    out: dict[str, Any] = {"in_rows": cur.rowcount}
    sink = Sink()
    cur.copy_expert("copy t to stdout", sink)
    out.update(out_rows=cur.rowcount, out_bytes=sink.n, max_gap=ticker.stop())
    conn.close()
    return out


def scenario_overlap() -> dict[str, Any]:
    """Three connections copying from slow files at once: their copies overlap."""

    def copier() -> float:
        c = psycopg2.connect(kit.DSN)
        k = table(c)
        t = time.monotonic()
        k.copy_from(Rows(20_000, nap=0.05), "t")
        c.commit()
        c.close()
        return time.monotonic() - t

    t0 = time.monotonic()
    gs = [kit.spawn(copier) for _ in range(3)]
    kit.joinall(gs)
    durations = [kit.result(g) for g in gs]
    return {"sum": sum(durations), "wall": time.monotonic() - t0}


def count(cur: Any) -> int:
    cur.execute("select count(*) from t")
    n: int = cur.fetchone()[0]
    return n


def timed_out(run: Callable[[], None], seconds: float = 0.3) -> str:
    try:
        with psycogreen.timeout(seconds):
            run()
    except psycogreen.errors.QueryTimeout:
        return "QueryTimeout"
    return "none"


def scenario_deadlines() -> dict[str, Any]:
    """A deadline during COPY IN (nothing stored) and during COPY OUT (cancelled on the server);
    the connection is usable after each."""
    mon = kit.monitor()
    conn = psycopg2.connect(kit.DSN)
    cur = table(conn)
    out: dict[str, Any] = {}
    out["in"] = timed_out(lambda: cur.copy_expert("copy t from stdin", Rows(10**9, nap=0.01)))
    conn.rollback()
    out["in_rows"] = count(cur)
    out["in_active"] = kit.running(mon, "copy t from stdin%")
    cur.execute(
        "create temp table big as select g as id, repeat('y', 200) as pad from generate_series(1, 300000) g"
    )
    query = "copy (select * from big, generate_series(1, 1000)) to stdout"
    out["out"] = timed_out(lambda: cur.copy_expert(query, SlowSink()))
    conn.rollback()
    cur.execute("select 42")
    out["out_usable"] = cur.fetchone()[0] == 42
    out["out_active"] = kit.running(mon, "copy (select * from big%")
    conn.close()
    return out


def scenario_file_errors() -> dict[str, Any]:
    """A failing file: psycopg2's QueryCanceled with the file's exception as its cause, nothing
    stored; a malformed row: the server's error class."""
    conn = psycopg2.connect(kit.DSN)
    cur = table(conn)
    out: dict[str, Any] = {"file_error": "none"}
    try:
        cur.copy_from(Boom(after=3), "t")
    except psycopg2.errors.QueryCanceled as e:
        out.update(file_error=str(e.__cause__), file_error_class=type(e).__name__)
    conn.rollback()
    out["file_error_rows"] = count(cur)
    try:
        cur.copy_from(io.StringIO("1\tx\textra\n"), "t")
    except psycopg2.errors.BadCopyFileFormat as e:
        out["bad_row"] = [type(e).__name__, e.pgcode]
    conn.rollback()
    conn.close()
    return out


def scenario_kill() -> dict[str, Any]:
    """Killing a greenlet during COPY OUT: cancelled on the server, the connection survives."""
    mon = kit.monitor()
    kc = psycopg2.connect(kit.DSN)
    pattern = "copy (select g, repeat('z'%"

    def long_copy() -> None:
        query = "copy (select g, repeat('z', 100) from generate_series(1, 100000000) g) to stdout"
        kc.cursor().copy_expert(query, SlowSink())

    g = kit.spawn(long_copy)
    kit.wait_until(lambda: kit.running(mon, pattern) > 0, what="the COPY to run")
    kit.kill(g)
    kc.rollback()
    k2 = kc.cursor()
    k2.execute("select 7")
    out = {"usable": k2.fetchone()[0] == 7, "active": kit.running(mon, pattern)}
    kc.close()
    return out


kit.emit(patched=kit.PATCHED, **globals()[f"scenario_{SCENARIO}"]())
