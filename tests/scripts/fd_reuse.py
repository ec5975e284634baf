"""Sockets come and go, fd numbers are recycled: ``fd_reuse.py <framework> <scenario>``.

Scenarios (each prints one JSON object that tests/test_fd_reuse.py asserts on):

- ``connects``: refused -> healthy, multi-host refused -> good, healthy after a closed, a
  garbage-collected, a broken (terminated) connection, and after ``reset()``; each connect runs in
  its own greenlet/thread with a bound, so a poisoned connect shows as "hung" instead of hanging.
- ``outage``: a pool under load while its server is down for 5 s, then started again: time from the
  restart to the first successful query, and nobody hung.
- ``failover``: a pool over ``host=primary,standby target_session_attrs=read-write`` with writers
  running; the primary is killed (``-m immediate``) and the synchronous standby promoted: time from
  the promotion to the first committed write, no hung writer, no acknowledged commit lost.
"""

from __future__ import annotations

import gc
import socket
import sys
import time
from typing import Any, Callable

import kit
import psycopg2

from psycogreen.errors import PoolTimeout
from psycogreen.pool import ConnectionPool
from psycogreen.testing import PostgresServer

SCENARIO = sys.argv[2]
#: How long one connect-and-query step may take before it counts as hung.
STEP_LIMIT = 15.0


def refused_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bounded(fn: Callable[[], str]) -> str:
    """``fn()`` in its own greenlet/thread: its result, an error's text, or "hung"."""
    box: list[str] = []

    def run() -> None:
        try:
            box.append(fn())
        except psycopg2.Error as e:
            box.append(f"{type(e).__name__}: {str(e).strip().splitlines()[-1]}")

    g = kit.spawn(run)
    kit.joinall([g], timeout=STEP_LIMIT)
    return box[0] if box else "hung"


def query(dsn: str) -> str:
    c = psycopg2.connect(dsn)
    try:
        cur = c.cursor()
        cur.execute("select 42")
        return "ok" if cur.fetchone()[0] == 42 else "wrong"
    finally:
        c.close()


def refused(dsn: str) -> str:
    try:
        psycopg2.connect(dsn).close()
    except psycopg2.OperationalError:
        return "refused"
    return "connected?"


def connects() -> None:
    params = dict(p.split("=", 1) for p in kit.DSN.split())
    good = params["port"]
    rest = " ".join(f"{k}={v}" for k, v in params.items() if k not in ("host", "port"))
    dead = refused_port()
    down = f"host=127.0.0.1 port={dead} {rest}"
    multi = f"host=127.0.0.1,127.0.0.1 port={dead},{good} {rest}"
    out: dict[str, list[str]] = {}

    def record(name: str, result: str) -> None:
        out.setdefault(name, []).append(result)

    for _ in range(3):
        # 1. refused -> healthy, without and with connect_timeout
        record("refused", bounded(lambda: refused(down)))
        record("after_refused", bounded(lambda: query(kit.DSN)))
        record("refused_t", bounded(lambda: refused(down + " connect_timeout=3")))
        record("after_refused_t", bounded(lambda: query(kit.DSN + " connect_timeout=3")))
        # 2. multi-host: the first host refuses, the second answers
        record("multi", bounded(lambda: query(multi)))
        record("multi_t", bounded(lambda: query(multi + " connect_timeout=3")))
        # 3. after a connection closed with close()
        record("after_close", bounded(lambda: query(kit.DSN)))

        # 4. after a connection dropped without close(): the garbage collector closes its socket
        def dropped() -> str:
            c = psycopg2.connect(kit.DSN)
            c.cursor().execute("select 1")
            del c
            gc.collect()
            return query(kit.DSN)

        record("after_gc", bounded(dropped))

        # 5. after a broken connection (backend terminated: libpq closes the socket itself)
        def broken() -> str:
            c = psycopg2.connect(kit.DSN)
            pid = c.get_backend_pid()
            mon = psycopg2.connect(kit.DSN)
            mon.autocommit = True
            mon.cursor().execute("select pg_terminate_backend(%s)", (pid,))
            mon.close()
            try:
                c.cursor().execute("select 1")
            except psycopg2.OperationalError:
                pass
            closed = c.closed
            result = query(kit.DSN)
            c.close()
            return f"{result} closed={closed}"

        record("after_broken", bounded(broken))

        # 6. reset(): the connection stays usable, and so do new ones
        def reset() -> str:
            c = psycopg2.connect(kit.DSN)
            c.cursor().execute("select 1")
            c.reset()
            cur = c.cursor()
            cur.execute("select 7")
            kept = cur.fetchone()[0] == 7
            result = query(kit.DSN)
            c.close()
            return f"{result} kept={kept}"

        record("after_reset", bounded(reset))
    kit.emit(**out)


def client_loop(pool: ConnectionPool, stop: list[bool], oks: list[float]) -> None:
    while not stop[0]:
        try:
            with pool.connection(timeout=2) as c:
                c.cursor().execute("select 1")
            oks.append(time.monotonic())
        except (PoolTimeout, psycopg2.Error):
            kit.sleep(0.05)  # behaviour: a client backs off before retrying


def alive(gs: list[Any]) -> int:
    if kit.FRAMEWORK == "threads":
        return sum(1 for g in gs if g.t.is_alive())
    return sum(1 for g in gs if not g.dead)


def outage() -> None:
    server = PostgresServer()
    server.start()
    pool = ConnectionPool(server.dsn, min_size=4, max_size=6, timeout=2.0)
    pool.wait(10)
    stop = [False]
    oks: list[float] = []
    gs = [kit.spawn(client_loop, pool, stop, oks) for _ in range(8)]
    kit.wait_until(lambda: len(oks) > 20, what="queries before the outage")
    server.stop()
    down_at = time.monotonic()
    kit.sleep(5.0)  # behaviour: the outage lasts 5 s, longer than the pool's timeout
    server.start()
    up_at = time.monotonic()
    # Serving again means serving everyone, not one lucky client: 200 queries after the restart.
    try:
        kit.wait_until(lambda: len([t for t in oks if t > up_at]) >= 200, timeout=30, what="200 queries")
        after = sorted(t for t in oks if t > up_at)
        first_ok: Any = after[0] - up_at
        served_200: Any = after[199] - up_at
    except AssertionError:
        first_ok = served_200 = None  # the pool did not recover
    stop[0] = True
    kit.joinall(gs, timeout=15)
    hung = alive(gs)
    stats = pool.get_stats()
    pool.close()
    server.destroy()
    kit.emit(
        recovery_s=first_ok,
        served_200_s=served_200,
        outage_s=up_at - down_at,
        hung=hung,
        stats=stats,
    )


def failover() -> None:
    primary = PostgresServer().start()
    standby = primary.make_standby(synchronous=True)
    primary.sql("create table acked (id int primary key)")
    dsn = (
        f"host=127.0.0.1,127.0.0.1 port={primary.port},{standby.port} user=postgres dbname=postgres "
        "target_session_attrs=read-write connect_timeout=2"
    )
    pool = ConnectionPool(dsn, min_size=4, max_size=6, timeout=2.0)
    pool.wait(10)
    stop = [False]
    acked: list[int] = []
    commits: list[float] = []
    counter = iter(range(1, 10**9))

    def writer() -> None:
        while not stop[0]:
            i = next(counter)
            try:
                with pool.connection(timeout=2) as c:
                    c.cursor().execute("insert into acked values (%s)", (i,))
                    # leaving the block commits: only then is the write acknowledged
                acked.append(i)
                commits.append(time.monotonic())
            except (PoolTimeout, psycopg2.Error):
                kit.sleep(0.02)  # behaviour: a writer backs off before retrying

    gs = [kit.spawn(writer) for _ in range(6)]
    kit.wait_until(lambda: len(acked) > 50, what="writes before the failover")
    primary.stop("immediate")
    crashed_at = time.monotonic()
    standby.promote()
    promoted_at = time.monotonic()
    try:
        kit.wait_until(lambda: bool(commits) and commits[-1] > promoted_at, timeout=30, what="a write")
        resumed: Any = min(t for t in commits if t > promoted_at) - promoted_at
        # more writes on the new primary, each of which must then be there
        kit.wait_until(lambda: sum(t > promoted_at for t in commits) >= 100, timeout=30, what="100 writes")
    except AssertionError:
        resumed = None  # writes never resumed
    stop[0] = True
    kit.joinall(gs, timeout=15)
    hung = alive(gs)
    pool.close()
    present = {r[0] for r in standby.sql("select id from acked")}
    lost = sorted(set(acked) - present)
    standby.destroy()
    primary.destroy()
    kit.emit(
        resume_after_promotion_s=resumed,
        promotion_s=promoted_at - crashed_at,
        acked=len(acked),
        lost=lost[:20],
        n_lost=len(lost),
        written_after=len([t for t in commits if t > promoted_at]),
        hung=hung,
    )


{"connects": connects, "outage": outage, "failover": failover}[SCENARIO]()
sys.stdout.flush()
