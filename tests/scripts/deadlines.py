"""Deadlines and interrupts, one scenario per argv[2]; prints one JSON line.

Every scenario checks the three promises: the *original* exception reaches the caller, the statement
is gone from the server (pg_stat_activity, seen from a monitor connection), and the connection is
still usable — while a ticker proves the hub never stalled.
"""

from __future__ import annotations

import os
import random
import socket
import sys
import threading
import time
from typing import Any, Callable

import kit
import psycopg2
import psycopg2.errors
import psycopg2.extensions as ext

import psycogreen
from psycogreen import _guard
from psycogreen.errors import ConcurrentUseError, QueryTimeout

SCENARIO = sys.argv[2]
FW = kit.FRAMEWORK


def gone_after(mon: Any, pattern: str, limit: float = 5.0) -> float:
    """Seconds until no active query matches ``pattern`` (or ``limit``)."""
    t0 = time.monotonic()
    try:
        kit.wait_until(lambda: not kit.running(mon, pattern), limit, f"{pattern!r} to end")
    except AssertionError:
        pass  # the test asserts the time
    return time.monotonic() - t0


def usable(conn: Any) -> bool:
    if conn.closed:
        return False
    if conn.get_transaction_status() == ext.TRANSACTION_STATUS_INERROR:
        conn.rollback()
    cur = conn.cursor()
    cur.execute("select 42")
    return bool(cur.fetchone() == (42,))


def _throw_later(target: Any, exc: Any, delay: float) -> None:
    """Throw ``exc`` into ``target`` greenlet after ``delay`` seconds, from the hub."""
    if FW == "gevent":
        import gevent

        gevent.get_hub().loop.timer(delay).start(target.throw, exc)
    else:
        from eventlet.hubs import get_hub

        get_hub().schedule_call_global(delay, target.throw, exc)


def interrupt_kinds() -> dict[str, Callable[[Callable[[], None]], BaseException | None]]:
    """name -> function running ``op`` under that interrupt at ~0.2 s and returning what was raised."""

    def deadline(op: Callable[[], None]) -> BaseException | None:
        try:
            with psycogreen.timeout(0.2):
                op()
        except QueryTimeout as e:
            return e
        return None

    kinds: dict[str, Callable[[Callable[[], None]], BaseException | None]] = {"deadline": deadline}
    if FW in ("gevent", "eventlet"):

        def framework_timeout(op: Callable[[], None]) -> BaseException | None:
            t = kit.Timeout(0.2)
            try:
                if FW == "gevent":
                    t.start()
                op()
            except BaseException as e:  # noqa: BLE001
                if e is not t:
                    raise
                return e
            finally:
                t.cancel()
            return None

        def kill(op: Callable[[], None]) -> BaseException | None:
            box: list[BaseException] = []

            def run() -> None:
                try:
                    op()
                except BaseException as e:  # noqa: BLE001
                    box.append(e)
                    raise

            g = kit.spawn(run)
            kit.sleep(0.2)  # behaviour: the interrupt lands at ~0.2 s, as the other kinds' timers
            kit.kill(g)
            return box[0] if box else None

        def keyboard(op: Callable[[], None]) -> BaseException | None:
            from greenlet import getcurrent

            _throw_later(getcurrent(), KeyboardInterrupt, 0.2)
            try:
                op()
            except KeyboardInterrupt as e:
                return e
            return None

        kinds.update(timeout=framework_timeout, kill=kill, keyboard=keyboard)
    else:

        def sigint(op: Callable[[], None]) -> BaseException | None:
            threading.Timer(0.2, os.kill, (os.getpid(), 2)).start()
            try:
                op()
            except KeyboardInterrupt as e:
                return e
            return None

        kinds["sigint"] = sigint
    return kinds


def scenario_kinds() -> dict[str, Any]:
    mon = kit.monitor()
    conn = psycopg2.connect(kit.DSN)
    conn.autocommit = True
    out: dict[str, Any] = {}
    for name, run in interrupt_kinds().items():
        ticker = kit.Ticker(0.002) if FW != "threads" else None
        tag = f"pg_sleep(5.{random.randint(1, 10**6)})"
        cur = conn.cursor()
        t0 = time.monotonic()
        exc = run(lambda cur=cur, tag=tag: cur.execute(f"select {tag}"))  # type: ignore[misc]
        raised_after = time.monotonic() - t0
        gone = gone_after(mon, f"select {tag}%")
        out[name] = {
            "exc": type(exc).__name__ if exc is not None else None,
            "raised_after": raised_after,
            "gone_after": gone,
            "closed": conn.closed,
            "usable": usable(conn),
            "max_gap": ticker.stop() if ticker else None,
        }
    return out


def scenario_nesting() -> dict[str, Any]:
    conn = psycopg2.connect(kit.DSN)
    t0 = time.monotonic()
    try:
        with psycogreen.timeout(5):
            with psycogreen.timeout(0.2):
                conn.cursor().execute("select pg_sleep(3)")
    except QueryTimeout as e:
        inner = (type(e).__name__, isinstance(e, ext.QueryCanceledError), str(e))
    inner_t = time.monotonic() - t0
    in_tx_status = conn.get_transaction_status()
    conn.rollback()
    t0 = time.monotonic()
    try:
        with psycogreen.timeout(0.2):
            with psycogreen.timeout(5):
                conn.cursor().execute("select pg_sleep(3)")
    except QueryTimeout:
        pass
    outer_t = time.monotonic() - t0
    conn.rollback()
    # several statements share one absolute deadline
    t0 = time.monotonic()
    n = 0
    try:
        with psycogreen.timeout(0.5):
            while True:
                conn.cursor().execute("select pg_sleep(0.1)")
                n += 1
    except QueryTimeout:
        pass
    shared_t = time.monotonic() - t0
    conn.rollback()
    return {
        "inner": inner,
        "inner_t": inner_t,
        "outer_t": outer_t,
        "in_tx_status": in_tx_status,
        "shared_t": shared_t,
        "shared_n": n,
        "usable": usable(conn),
    }


def silent_listener() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    return s


def scenario_connect() -> dict[str, Any]:
    ls = silent_listener()
    port = ls.getsockname()[1]
    real_port = kit.DSN.split("port=")[1].split()[0]
    ticker = kit.Ticker(0.005)
    out: dict[str, Any] = {}
    t0 = time.monotonic()
    try:
        psycopg2.connect(f"host=127.0.0.1 port={port} user=postgres connect_timeout=1")
    except psycopg2.OperationalError as e:
        out["single"] = {"elapsed": time.monotonic() - t0, "msg": str(e), "type": type(e).__name__}
    os.environ["PGCONNECT_TIMEOUT"] = "1"
    t0 = time.monotonic()
    try:
        psycopg2.connect(f"host=127.0.0.1 port={port} user=postgres")
    except psycopg2.OperationalError as e:
        out["env"] = {"elapsed": time.monotonic() - t0, "msg": str(e)}
    del os.environ["PGCONNECT_TIMEOUT"]
    t0 = time.monotonic()
    c = psycopg2.connect(
        f"host=127.0.0.1,127.0.0.1 port={port},{real_port} user=postgres dbname=postgres connect_timeout=1"
    )
    out["failover"] = {"elapsed": time.monotonic() - t0, "port": c.info.port, "usable": usable(c)}
    t0 = time.monotonic()
    try:
        psycopg2.connect(f"host=127.0.0.1,127.0.0.1 port={port},{port} user=postgres connect_timeout=1")
    except psycopg2.OperationalError as e:
        out["all_dead"] = {"elapsed": time.monotonic() - t0, "msg": str(e)}
    c = psycopg2.connect(f"host=localhost port={real_port} user=postgres dbname=postgres connect_timeout=5")
    out["resolved"] = {"host": c.info.host, "dsn_has_hostaddr": "hostaddr=" in c.dsn, "usable": usable(c)}
    t0 = time.monotonic()
    try:
        with psycogreen.timeout(0.3):
            psycopg2.connect(f"host=127.0.0.1 port={port} user=postgres connect_timeout=5")
    except QueryTimeout:
        out["timeout_block"] = {"elapsed": time.monotonic() - t0}
    out["max_gap"] = ticker.stop()
    # blocking psycopg2 gives the same message
    psycogreen.unpatch()
    try:
        psycopg2.connect(f"host=127.0.0.1 port={port} user=postgres connect_timeout=1")
    except psycopg2.OperationalError as e:
        out["blocking_msg"] = str(e)
    return out


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def scenario_interrupt_connect() -> dict[str, Any]:
    ls = silent_listener()
    port = ls.getsockname()[1]
    before = open_fds()
    results = []
    for _ in range(5):
        try:
            with kit.Timeout(0.1):
                psycopg2.connect(f"host=127.0.0.1 port={port} user=postgres")
        except BaseException as e:  # noqa: BLE001
            results.append(type(e).__name__)
    try:  # a socket closed from the hub may take a turn of it to go
        kit.wait_until(lambda: open_fds() <= before, timeout=2, what="the sockets to close")
    except AssertionError:
        pass  # the test reports the leak
    return {"results": results, "fd_delta": open_fds() - before}


def scenario_commit_and_fetch() -> dict[str, Any]:
    mon = kit.monitor()
    conn = psycopg2.connect(kit.DSN)
    cur = conn.cursor()
    cur.execute(
        "create table if not exists slow_commit (x int);"
        "create or replace function slow_commit_f() returns trigger language plpgsql as"
        " $$ begin perform pg_sleep(3); return null; end $$;"
        "drop trigger if exists slow_commit_t on slow_commit;"
        "create constraint trigger slow_commit_t after insert on slow_commit"
        " deferrable initially deferred for each row execute function slow_commit_f()"
    )
    conn.commit()
    out: dict[str, Any] = {}
    cur.execute("insert into slow_commit values (1)")
    t0 = time.monotonic()
    try:
        with kit.Timeout(0.2):
            conn.commit()
    except kit.Timeout:
        out["commit_exc"] = "Timeout"
    out["commit_raised_after"] = time.monotonic() - t0
    out["commit_gone_after"] = gone_after(mon, "COMMIT%")
    out["commit_usable"] = usable(conn)
    conn.rollback()
    cur = conn.cursor()
    cur.execute("select count(*) from slow_commit")
    out["committed_rows"] = cur.fetchone()[0]
    conn.rollback()
    # interrupt during rollback: a rollback is quick, so just check it survives a Timeout around it
    # fetchall() of a named cursor that takes ~10 s to produce its rows
    named = conn.cursor("slow_named")
    named.execute("select pg_sleep(0.01), i from generate_series(1, 1000) i")
    t0 = time.monotonic()
    try:
        with kit.Timeout(0.2):
            named.fetchall()
    except kit.Timeout:
        out["fetch_exc"] = "Timeout"
    out["fetch_raised_after"] = time.monotonic() - t0
    out["fetch_gone_after"] = gone_after(mon, "FETCH%")
    conn.rollback()
    out["fetch_usable"] = usable(conn)
    cur = conn.cursor()
    cur.execute("drop table slow_commit; drop function slow_commit_f()")
    conn.commit()
    return out


def scenario_storm() -> dict[str, Any]:
    """1,000 randomly timed interrupts over 20 connections."""
    workers, per_worker = 20, 50
    app = f"storm{random.randint(0, 10**6)}"
    mon = kit.monitor()
    counts = {"interrupted": 0, "completed": 0, "usable": 0}
    conns = [psycopg2.connect(kit.DSN, application_name=app) for _ in range(workers)]

    def work(conn: Any) -> None:
        for i in range(per_worker):
            kind = i % 3
            delay = random.uniform(0, 0.03)
            try:
                if kind == 0:
                    with psycogreen.timeout(delay):
                        conn.cursor().execute("select pg_sleep(%s)", (random.uniform(0, 0.03),))
                else:
                    with kit.Timeout(delay):
                        conn.cursor().execute("select pg_sleep(%s)", (random.uniform(0, 0.03),))
                counts["completed"] += 1
            except BaseException:  # noqa: BLE001
                counts["interrupted"] += 1
            if conn.get_transaction_status() != ext.TRANSACTION_STATUS_IDLE:
                conn.rollback()

    gs = [kit.spawn(work, c) for c in conns]
    kit.joinall(gs)
    for c in conns:
        if usable(c):
            counts["usable"] += 1
        c.rollback()

    def states() -> tuple[int, int, int]:
        cur = mon.cursor()
        cur.execute(
            "select count(*), count(*) filter (where state = 'active'),"
            " count(*) filter (where state like 'idle in transaction%%')"
            " from pg_stat_activity where application_name = %s",
            (app,),
        )
        row: tuple[int, int, int] = cur.fetchone()
        return row

    try:  # the server shows a rollback or a cancel a moment after the client saw it
        kit.wait_until(lambda: states()[1:] == (0, 0), timeout=5, what="no active or idle-in-tx backend")
    except AssertionError:
        pass  # the test reports what is left
    backends, active, idle_tx = states()
    return dict(counts, backends=backends, active=active, idle_in_tx=idle_tx, workers=workers)


def scenario_concurrent() -> dict[str, Any]:
    conn = psycopg2.connect(kit.DSN)
    conn.autocommit = True
    first: dict[str, Any] = {}

    def q() -> None:
        cur = conn.cursor()
        cur.execute("select pg_sleep(2), 7")
        first["row"] = cur.fetchone()[1]

    g = kit.spawn(q)
    kit.wait_until(lambda: _guard.in_use(conn), what="the first greenlet to own the connection")
    t0 = time.monotonic()
    try:
        conn.cursor().execute("select 1")
        second = None
    except ConcurrentUseError as e:
        second = {
            "type": type(e).__name__,
            "msg": str(e),
            "is_prog": isinstance(e, psycopg2.ProgrammingError),
        }
    refused_after = time.monotonic() - t0
    try:
        conn.commit()
        commit_refused = False
    except ConcurrentUseError:
        commit_refused = True
    kit.result(g)
    return {
        "second": second,
        "refused_after": refused_after,
        "commit_refused": commit_refused,
        "first_row": first.get("row"),
        "usable": usable(conn),
    }


def scenario_dead_network() -> dict[str, Any]:
    from psycogreen.testing import FaultProxy

    real_port = int(kit.DSN.split("port=")[1].split()[0])
    proxy = FaultProxy(real_port)
    conn = psycopg2.connect(proxy.dsn(), connect_timeout=5)
    conn.autocommit = True
    usable(conn)
    ticker = kit.Ticker(0.005)
    proxy.stall()
    t0 = time.monotonic()
    exc = None
    try:
        with psycogreen.timeout(0.5):
            conn.cursor().execute("select 1")
    except BaseException as e:  # noqa: BLE001
        exc = type(e).__name__
    elapsed = time.monotonic() - t0
    gap = ticker.stop()
    proxy.close()
    return {"exc": exc, "elapsed": elapsed, "closed": bool(conn.closed), "max_gap": gap}


def scenario_user_cancel() -> dict[str, Any]:
    mon = kit.monitor()
    conn = psycopg2.connect(kit.DSN)
    conn.autocommit = True
    ticker = kit.Ticker(0.002) if FW != "threads" else None
    box: dict[str, Any] = {}

    def canceller() -> None:
        kit.wait_until(lambda: kit.running(mon, "select pg_sleep(5)%"), what="the statement to run")
        t0 = time.monotonic()
        conn.cancel()
        box["cancel_call"] = time.monotonic() - t0

    g = kit.spawn(canceller)
    try:
        conn.cursor().execute("select pg_sleep(5)")
    except ext.QueryCanceledError as e:
        box["exc"] = (
            "QueryCanceledError"
            if type(e) in (ext.QueryCanceledError, psycopg2.errors.QueryCanceled)
            else repr(e)
        )
    kit.result(g)
    box["gone_after"] = gone_after(mon, "select pg_sleep(5)%")
    box["usable"] = usable(conn)
    box["max_gap"] = ticker.stop() if ticker else None
    return box


kit.emit(**globals()[f"scenario_{SCENARIO}"]())
