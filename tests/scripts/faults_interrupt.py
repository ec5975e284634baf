"""Issue 9 items 3 and 4, one scenario per argv[2]; prints one JSON line.

- ``close_other``: ``conn.close()`` from another greenlet/thread while one runs a long statement;
- ``close_other_dead``: the same on a stalled network (the cancel cannot reach the server);
- ``close_listener``: the same while a greenlet/thread waits in ``psycogreen.notifies()``;
- ``setters``: psycopg2's session setters from another greenlet while one is inside a call;
- ``dead_network``: ``psycogreen.timeout(1)`` on a stalled network;
- ``messages``: what QueryTimeout says after a confirmed cancel and after a connect deadline;
- ``connect_parity``: the connect errors of green mode next to blocking psycopg2's.

Steps are ordered by state (kit.wait_until, pg_stat_activity), never by guessed sleeps.
"""

from __future__ import annotations

import json
import os
import random
import socket
import sys
import time
from typing import Any

import kit
import psycopg2

import psycogreen
from psycogreen._guard import in_use_by_other
from psycogreen.errors import ConcurrentUseError, QueryTimeout
from psycogreen.testing import FaultProxy

SCENARIO = sys.argv[2]
FW = kit.FRAMEWORK
REAL_PORT = int(kit.DSN.split("port=")[1].split()[0])


def tag() -> str:
    """A pg_sleep argument unique to this run, to find our statement in pg_stat_activity."""
    return f"30.{random.randint(1, 10**6)}"


def active(mon: Any, pattern: str) -> int:
    return kit.running(mon, f"%{pattern}%")


def run_owner(conn: Any, sql: str, box: dict[str, Any]) -> Any:
    """Spawn a greenlet/thread running ``sql`` on ``conn``; ``box`` gets what it raised and when."""

    def owner() -> None:
        t0 = time.monotonic()
        try:
            conn.cursor().execute(sql)
            box["exc"] = None
        except BaseException as e:  # noqa: BLE001 - reported
            box["exc"] = type(e).__name__
            box["msg"] = str(e)
            box["is_operational"] = isinstance(e, psycopg2.OperationalError)
        box["returned_after"] = time.monotonic() - t0

    return kit.spawn(owner)


def scenario_close_other() -> dict[str, Any]:
    mon = kit.monitor()
    conn = psycopg2.connect(kit.DSN)
    pid = conn.get_backend_pid()
    t = tag()
    box: dict[str, Any] = {}
    ticker = kit.Ticker(0.005)
    g = run_owner(conn, f"select pg_sleep({t})", box)
    kit.wait_until(lambda: active(mon, t) == 1, what="the statement to run on the server")
    in_use = in_use_by_other(conn)
    t0 = time.monotonic()
    conn.close()
    close_took = time.monotonic() - t0
    kit.wait_until(lambda: "returned_after" in box, timeout=15, what="the owner's call to end")
    kit.joinall([g], timeout=5)
    gap = ticker.stop()
    kit.wait_until(lambda: active(mon, t) == 0, timeout=10, what="the statement to leave the server")
    cur = mon.cursor()
    cur.execute("select count(*) from pg_stat_activity where pid = %s and state <> 'idle'", (pid,))
    busy_backend = cur.fetchone()[0]
    try:
        conn.cursor().execute("select 1")
        after = "no error"
    except psycopg2.InterfaceError as e:
        after = str(e)
    return dict(
        box,
        in_use_by_other=in_use,
        close_took=close_took,
        closed=conn.closed,
        max_gap=gap,
        busy_backend=busy_backend,
        after=after,
    )


def scenario_close_other_dead() -> dict[str, Any]:
    mon = kit.monitor()
    proxy = FaultProxy(REAL_PORT)
    conn = psycopg2.connect(proxy.dsn(), connect_timeout=5)
    conn.autocommit = True
    # Let the backend notice a vanished client during pg_sleep, so nothing is left running at the end.
    conn.cursor().execute("set client_connection_check_interval = 100")
    t = tag()
    box: dict[str, Any] = {}
    ticker = kit.Ticker(0.005)
    g = run_owner(conn, f"select pg_sleep({t})", box)
    kit.wait_until(lambda: active(mon, t) == 1, what="the statement to run on the server")
    proxy.stall()
    t0 = time.monotonic()
    conn.close()
    close_took = time.monotonic() - t0
    kit.wait_until(lambda: "returned_after" in box, timeout=15, what="the owner's call to end")
    kit.joinall([g], timeout=5)
    gap = ticker.stop()
    proxy.close()
    kit.wait_until(lambda: active(mon, t) == 0, timeout=10, what="the backend to notice the client left")
    return dict(box, close_took=close_took, closed=conn.closed, max_gap=gap)


def scenario_close_listener() -> dict[str, Any]:
    """A greenlet waiting in psycogreen.notifies() (no statement on the server) is closed under."""
    conn = psycopg2.connect(kit.DSN)
    conn.autocommit = True
    conn.cursor().execute("listen psycogreen_close_listener")
    box: dict[str, Any] = {}
    ticker = kit.Ticker(0.005)

    def listener() -> None:
        t0 = time.monotonic()
        try:
            for _ in psycogreen.notifies(conn, timeout=30):
                pass
            box["exc"] = None
        except BaseException as e:  # noqa: BLE001 - reported
            box.update(exc=type(e).__name__, msg=str(e))
        box["returned_after"] = time.monotonic() - t0

    g = kit.spawn(listener)
    kit.wait_until(lambda: in_use_by_other(conn), what="the listener to wait on the connection")
    t0 = time.monotonic()
    conn.close()
    close_took = time.monotonic() - t0
    kit.wait_until(lambda: "returned_after" in box, timeout=15, what="the listener to return")
    kit.joinall([g], timeout=5)
    return dict(box, close_took=close_took, closed=conn.closed, max_gap=ticker.stop())


def scenario_setters() -> dict[str, Any]:
    conn = psycopg2.connect(kit.DSN)
    box: dict[str, Any] = {}
    ticker = kit.Ticker(0.005)
    g = run_owner(conn, "select pg_sleep(1.5)", box)
    kit.wait_until(lambda: in_use_by_other(conn), what="the owner to be inside its call")
    refused: dict[str, Any] = {}
    for name, value in (
        ("autocommit", True),
        ("readonly", True),
        ("deferrable", True),
        ("isolation_level", 1),
    ):
        t0 = time.monotonic()
        try:
            setattr(conn, name, value)
            refused[name] = None
        except ConcurrentUseError as e:
            refused[name] = {"after": time.monotonic() - t0, "msg": str(e)}
    for name, call in (
        ("reset", conn.reset),
        ("set_session", lambda: conn.set_session(readonly=True)),
        ("set_client_encoding", lambda: conn.set_client_encoding("UTF8")),
        ("commit", conn.commit),
        ("named_cursor_close", lambda: conn.cursor("psycogreen_named").close()),
    ):
        t0 = time.monotonic()
        try:
            call()
            refused[name] = None
        except ConcurrentUseError as e:
            refused[name] = {"after": time.monotonic() - t0, "msg": str(e)}
    # What does not take psycopg2's connection mutex works while the owner is inside its call.
    reads = {
        "closed": conn.closed,
        "fileno": conn.fileno() > 0,
        "backend_pid": conn.info.backend_pid > 0,
        "transaction_status": conn.get_transaction_status(),
        "parameter_status": conn.get_parameter_status("server_version") is not None,
        "server_version": conn.server_version > 0,
        "notifies": conn.notifies == [],
        "autocommit": conn.autocommit,
        "in_use_by_other": in_use_by_other(conn),
    }
    conn.cursor().close()  # a client-side cursor closes without the server
    reads["still_running"] = "returned_after" not in box
    kit.wait_until(lambda: "returned_after" in box, timeout=15, what="the owner's call to end")
    kit.joinall([g], timeout=5)
    gap = ticker.stop()
    conn.rollback()
    conn.autocommit = True  # free again: allowed
    return {
        "refused": refused,
        "reads": reads,
        "owner": box,
        "max_gap": gap,
        "autocommit": conn.autocommit,
        "in_use_after": in_use_by_other(conn),
    }


def scenario_dead_network() -> dict[str, Any]:
    proxy = FaultProxy(REAL_PORT)
    conn = psycopg2.connect(proxy.dsn(), connect_timeout=5)
    conn.autocommit = True
    conn.cursor().execute("select 1")
    ticker = kit.Ticker(0.005)
    proxy.stall()
    t0 = time.monotonic()
    out: dict[str, Any] = {"exc": None}
    try:
        with psycogreen.timeout(1):
            conn.cursor().execute("select 1")
    except BaseException as e:  # noqa: BLE001 - reported
        out.update(exc=type(e).__name__, msg=str(e))
    out["elapsed"] = time.monotonic() - t0
    out["closed"] = conn.closed
    out["max_gap"] = ticker.stop()
    # A user's cancel() on the dead network returns too (it cannot block on an unreachable server).
    proxy.resume()
    conn2 = psycopg2.connect(proxy.dsn(), connect_timeout=5)
    conn2.cursor().execute("select 1")
    proxy.stall()
    t0 = time.monotonic()
    try:
        conn2.cancel()
        out["cancel_exc"] = None
    except psycopg2.OperationalError as e:
        out["cancel_exc"] = str(e)
    out["cancel_took"] = time.monotonic() - t0
    proxy.close()
    return out


def silent_listener() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    return s


def scenario_messages() -> dict[str, Any]:
    out: dict[str, Any] = {}
    conn = psycopg2.connect(kit.DSN)
    conn.autocommit = True
    try:
        with psycogreen.timeout(0.2):
            conn.cursor().execute("select pg_sleep(5)")
    except QueryTimeout as e:
        out["cancelled"] = {"msg": str(e), "closed": conn.closed}
    ls = silent_listener()
    try:
        with psycogreen.timeout(0.3):
            psycopg2.connect(f"host=127.0.0.1 port={ls.getsockname()[1]} user=postgres connect_timeout=5")
    except QueryTimeout as e:
        out["connect"] = {"msg": str(e)}
    return out


def connect_cases() -> dict[str, str]:
    ls = silent_listener()
    kit_keep.append(ls)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    refused_port = closed.getsockname()[1]
    closed.close()
    base = "user=postgres dbname=postgres"
    cases = {
        "refused": f"host=127.0.0.1 port={refused_port} {base}",
        "refused_timeout": f"host=127.0.0.1 port={refused_port} {base} connect_timeout=3",
        "timeout": f"host=127.0.0.1 port={ls.getsockname()[1]} {base} connect_timeout=1",
        "unknown_database": f"host=127.0.0.1 port={REAL_PORT} user=postgres dbname=psycogreen_no_such_db",
        "unknown_database_timeout": (
            f"host=127.0.0.1 port={REAL_PORT} user=postgres dbname=psycogreen_no_such_db connect_timeout=3"
        ),
        "socket_missing": "host=/nonexistent/psycogreen port=5432 user=postgres dbname=postgres",
        # Both names fail inside the resolver without a query leaving the machine (empty label /
        # 70-character label), so the test never talks to a real DNS server.
        "unresolvable": "host=psycogreen..invalid port=5432 user=postgres dbname=postgres",
        "unresolvable_long": f"host={'x' * 70}.invalid port=5432 user=postgres dbname=postgres",
    }
    mon = kit.monitor()
    cur = mon.cursor()
    cur.execute("show unix_socket_directories")
    sockdir = cur.fetchone()[0].split(",")[0].strip()
    mon.close()
    cases["unknown_database_socket"] = (
        f"host={sockdir} port={REAL_PORT} user=postgres dbname=psycogreen_no_such_db"
    )
    # /etc/hosts names: may resolve to ::1 and 127.0.0.1, tried in turn (the server listens on the latter).
    cases["unknown_database_name"] = (
        f"host=localhost port={REAL_PORT} user=postgres dbname=psycogreen_no_such_db connect_timeout=3"
    )
    pw = os.environ.get("PSYCOGREEN_PW_DSN")
    if pw:
        cases["bad_password"] = pw
        cases["bad_password_timeout"] = pw + " connect_timeout=3"
    return cases


kit_keep: list[Any] = []


def forget_watchers() -> None:
    """Isolate each attempt from issue 9 item 1 (a watcher cached for a closed socket's fd number,
    tested in test_refused.py): drop gevent's cached watchers between attempts."""
    if FW != "gevent":
        return
    import gevent

    cache = getattr(gevent.get_hub(), "psycogreen_watchers", None) or {}
    for watcher in cache.values():
        watcher.close()
    cache.clear()


def attempt(dsn: str) -> str:
    forget_watchers()
    try:
        psycopg2.connect(dsn).close()
    except psycopg2.Error as e:
        return f"{type(e).__name__}: {e}"
    except Exception as e:  # noqa: BLE001 - a non-psycopg2 error is a parity failure to report
        return f"{type(e).__name__}: {e}"
    return "connected"


def scenario_connect_parity() -> dict[str, Any]:
    cases = connect_cases()
    green = {name: attempt(dsn) for name, dsn in cases.items()}
    psycogreen.unpatch()
    blocking = {name: attempt(dsn) for name, dsn in cases.items()}
    return {"green": green, "blocking": blocking}


if __name__ == "__main__":
    result = globals()[f"scenario_{SCENARIO}"]()
    print(json.dumps(result), flush=True)
    os._exit(0)  # stalled proxies and blocked cancel threads must not delay the exit
