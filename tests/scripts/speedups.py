"""The C accelerator and the pure-Python path agree (issue 13); prints one JSON line.

Run once as is and once with ``PSYCOGREEN_NO_EXTENSIONS=1`` (tests/test_speedups.py compares the
two): results, server errors, interrupts handed over mid-wait, a deadline, misuse from another
greenlet, a killed greenlet, many greenlets at once. Every outcome is reduced to plain values
(types, messages, counts); nothing depends on timing beyond generous bounds.

Steps are ordered by state (kit.wait_until, pg_stat_activity), never by guessed sleeps.
"""

from __future__ import annotations

import random
import time
from typing import Any

import kit
import psycopg2
import psycopg2.extensions

import psycogreen
from psycogreen import _accel, _connection, _wait
from psycogreen.errors import ConcurrentUseError, QueryTimeout

FW = kit.FRAMEWORK


def tag() -> str:
    """A pg_sleep argument unique to this run, to find our statement in pg_stat_activity."""
    return f"30.{random.randint(1, 10**6)}"


def outcome(fn: Any) -> Any:
    """What ``fn()`` returned, or the type and first line of what it raised."""
    try:
        return ["ok", fn()]
    except BaseException as e:  # noqa: BLE001 - reported
        return ["raised", type(e).__name__, (str(e).strip().splitlines() or [""])[0]]


def usable(conn: Any) -> Any:
    conn.rollback()
    cur = conn.cursor()
    cur.execute("select 42")
    return cur.fetchone()[0]


def paths() -> dict[str, Any]:
    """Which implementation runs in this process."""
    waiter = _wait.current_waiter()
    execute = _connection.GreenCursorMixin.__dict__["execute"]
    return {
        "active": _accel.active(),
        "poll_in_c": getattr(waiter, "accel_poll", None) is not None,
        "execute_in_c": execute is not _connection.execute_python,
        "callback_in_c": psycopg2.extensions.get_wait_callback() is not _wait.wait_callback,
        "callback_ours": _wait.is_ours(psycopg2.extensions.get_wait_callback()),
    }


def results(conn: Any) -> dict[str, Any]:
    cur = conn.cursor()

    def rows() -> Any:
        cur.execute("select g, repeat('x', g) from generate_series(1, 200) g")
        fetched = cur.fetchall()
        return [len(fetched), fetched[-1][0], len(fetched[-1][1])]

    def with_vars() -> Any:
        cur.execute("select %s::int + %s::int", (40, 2))
        a = cur.fetchone()[0]
        cur.execute(query="select %(x)s::text", vars={"x": "kw"})  # keywords: the Python path
        return [a, cur.fetchone()[0]]

    def big() -> Any:  # results larger than a socket buffer: several READ waits
        cur.execute("select string_agg(md5(g::text), '') from generate_series(1, 20000) g")
        return len(cur.fetchone()[0])

    def server_error() -> Any:
        cur.execute("select 1 / 0")

    def not_a_statement() -> Any:
        cur.execute()  # type: ignore[call-arg]

    return {
        "rows": outcome(rows),
        "vars": outcome(with_vars),
        "big": outcome(big),
        "server_error": outcome(server_error),
        "after_error": outcome(lambda: usable(conn)),
        "bad_call": outcome(not_a_statement),
    }


def interrupt(mon: Any) -> dict[str, Any]:
    """The framework's Timeout while waiting inside the C loop: cancelled, drained, raised."""
    conn = psycopg2.connect(kit.DSN)
    t = tag()
    t0 = time.monotonic()
    got = outcome(lambda: _timed(conn, f"select pg_sleep({t})", 0.3))
    took = time.monotonic() - t0
    kit.wait_until(lambda: kit.running(mon, f"%{t}%") == 0, what="the statement to leave the server")
    out = {"got": got, "within": took < 10, "after": outcome(lambda: usable(conn))}
    conn.close()
    return out


def _timed(conn: Any, sql: str, seconds: float) -> None:
    if FW == "threads":  # no interrupt to throw into a thread: the deadline stands in
        with psycogreen.timeout(seconds):
            conn.cursor().execute(sql)
        return
    with kit.Timeout(seconds):
        conn.cursor().execute(sql)


def deadline(mon: Any) -> dict[str, Any]:
    conn = psycopg2.connect(kit.DSN)
    t = tag()

    def run() -> None:
        with psycogreen.timeout(0.3):
            conn.cursor().execute(f"select pg_sleep({t})")

    got = outcome(run)
    kit.wait_until(lambda: kit.running(mon, f"%{t}%") == 0, what="the statement to leave the server")
    out = {
        "got": got[:2],
        "is_query_timeout": got[1] == QueryTimeout.__name__,
        "after": outcome(lambda: usable(conn)),
    }
    conn.close()
    return out


def misuse(mon: Any) -> dict[str, Any]:
    """A second greenlet on a busy connection gets ConcurrentUseError; the owner is unharmed."""
    conn = psycopg2.connect(kit.DSN)
    conn.autocommit = True
    t = tag()
    box: dict[str, Any] = {}

    def owner() -> None:
        box["owner"] = outcome(lambda: conn.cursor().execute(f"select pg_sleep({t})"))

    g = kit.spawn(owner)
    kit.wait_until(lambda: kit.running(mon, f"%{t}%") == 1, what="the statement to run on the server")
    if FW == "threads":
        second = ["skipped"]  # another OS thread waits its turn instead (tested elsewhere)
    else:
        second = outcome(lambda: conn.cursor().execute("select 1"))
        second = second[:2] + [second[1] == ConcurrentUseError.__name__]
    conn.cancel()
    kit.wait_until(lambda: "owner" in box, what="the owner's call to end")
    kit.joinall([g], timeout=10)
    out = {"second": second, "owner": box["owner"][:2], "after": outcome(lambda: usable(conn))}
    conn.close()
    return out


def killed(mon: Any) -> dict[str, Any]:
    """A greenlet killed while its query runs: the statement is cancelled, the connection usable."""
    if FW == "threads":
        return {"skipped": True}
    conn = psycopg2.connect(kit.DSN)
    t = tag()
    box: dict[str, Any] = {}

    def victim() -> None:
        try:
            conn.cursor().execute(f"select pg_sleep({t})")
            box["end"] = "returned"
        except BaseException as e:  # noqa: BLE001 - reported
            box["end"] = type(e).__name__
            raise

    g = kit.spawn(victim)
    kit.wait_until(lambda: kit.running(mon, f"%{t}%") == 1, what="the statement to run on the server")
    kit.kill(g)
    kit.wait_until(lambda: kit.running(mon, f"%{t}%") == 0, what="the statement to leave the server")
    out = {"end": box.get("end"), "after": outcome(lambda: usable(conn))}
    conn.close()
    return out


def crowd() -> dict[str, Any]:
    """Many greenlets, one connection each, interleaving their waits on the hub."""
    n, each = 20, 20
    totals: list[int] = []

    def worker(i: int) -> None:
        conn = psycopg2.connect(kit.DSN)
        cur = conn.cursor()
        total = 0
        for j in range(each):
            cur.execute("select %s::int * %s::int, pg_sleep(0.001)", (i, j))
            total += cur.fetchone()[0]
        conn.close()
        totals.append(total)

    ticker = kit.Ticker(0.005)
    gs = [kit.spawn(worker, i) for i in range(n)]
    kit.joinall(gs, timeout=120)
    gap = ticker.stop()
    expected = sum(i * j for i in range(n) for j in range(each))
    return {"done": len(totals), "sum_ok": sum(totals) == expected, "hub_ran": FW == "threads" or gap < 1.0}


def switch_out() -> dict[str, Any]:
    """gevent's hub.switch() calls the current greenlet's ``switch_out`` first (the hub's own
    raises BlockingSwitchOutError); the C wait switches to the hub directly only when there is none,
    so a class or an instance defining one still sees every wait."""
    if FW != "gevent":
        return {"skipped": True}
    import gevent

    calls = {"class": 0, "instance": 0}

    class Traced(gevent.Greenlet):  # type: ignore[misc]
        def switch_out(self) -> None:
            calls["class"] += 1

    def query() -> Any:
        conn = psycopg2.connect(kit.DSN)
        cur = conn.cursor()
        cur.execute("select 1")
        value = cur.fetchone()[0]
        conn.close()
        return value

    g = Traced(query)
    g.start()
    g.join()
    plain = gevent.Greenlet(query)
    plain.switch_out = lambda: calls.__setitem__("instance", calls["instance"] + 1)
    plain.start()
    plain.join()
    return {
        "class_seen": calls["class"] > 0,
        "instance_seen": calls["instance"] > 0,
        "results": [g.value, plain.value],
    }


def main() -> None:
    mon = kit.monitor()
    conn = psycopg2.connect(kit.DSN)
    out = {"paths": paths(), "results": results(conn)}
    conn.close()
    out["interrupt"] = interrupt(mon)
    out["deadline"] = deadline(mon)
    out["misuse"] = misuse(mon)
    out["killed"] = killed(mon)
    out["crowd"] = crowd()
    out["switch_out"] = switch_out()
    kit.emit(**out)


main()
