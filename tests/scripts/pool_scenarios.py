"""Pool scenarios under one framework: ``pool_scenarios.py <framework> <scenario>``.

Each scenario prints one JSON object (``kit.emit``) that tests/test_pool_frameworks.py asserts on.
Pool connections carry an application_name, so the side monitor sees exactly the pool's backends.
"""

from __future__ import annotations

import random
import sys
import time
from typing import Any, Callable

import kit
import psycopg2
import psycopg2.extras

import psycogreen
from psycogreen.errors import PoolClosed, PoolTimeout, TooManyRequests
from psycogreen.pool import ConnectionPool

SCENARIO = sys.argv[2]
APP = f"pool_{SCENARIO}_{kit.FRAMEWORK}"
THREADS = kit.FRAMEWORK == "threads"


def make_pool(**kw: Any) -> ConnectionPool:
    kw.setdefault("kwargs", {"application_name": APP})
    kw.setdefault("name", APP)
    return ConnectionPool(kit.DSN, **kw)


def backends(mon: Any) -> dict[str, int]:
    cur = mon.cursor()
    cur.execute(
        "select coalesce(state, '?'), count(*) from pg_stat_activity where application_name = %s group by 1",
        (APP,),
    )
    return {state: n for state, n in cur.fetchall()}


def pids(mon: Any) -> list[int]:
    cur = mon.cursor()
    cur.execute("select pid from pg_stat_activity where application_name = %s", (APP,))
    return [r[0] for r in cur.fetchall()]


def settle(pool: ConnectionPool, cond: Callable[[], bool], limit: float = 10.0) -> bool:
    """Whether ``cond`` comes to hold within ``limit`` s (the test asserts it, with the details)."""
    try:
        kit.wait_until(cond, limit, "the pool to settle")
    except AssertionError:
        return cond()
    return True


def exhaustion() -> None:
    pool = make_pool(min_size=2, max_size=2)
    pool.wait(10)
    held = [pool.getconn(), pool.getconn()]
    ticker = kit.Ticker()
    t0 = time.monotonic()
    try:
        pool.getconn(timeout=0.5)
        error = None
    except PoolTimeout as e:
        error = str(e)
    elapsed = time.monotonic() - t0
    gap = ticker.stop()
    for c in held:
        pool.putconn(c)
    with pool.connection(timeout=1) as c:
        c.cursor().execute("select 1")
    kit.emit(error=error, elapsed=elapsed, max_gap=gap, stats=pool.get_stats(), is_op=True)
    pool.close()


def fifo() -> None:
    pool = make_pool(min_size=1, max_size=1)
    pool.wait(10)
    first = pool.getconn()
    order: list[int] = []
    arrived: list[int] = []

    def client(i: int) -> None:
        arrived.append(i)  # no switch between this and joining the queue
        with pool.connection(timeout=20) as c:
            order.append(i)
            c.cursor().execute("select 1")

    gs = []
    for i in range(12):
        gs.append(kit.spawn(client, i))
        # enqueue one at a time
        kit.wait_until(lambda n=i + 1: len(pool._clients) == n, what=f"client {i} to queue")
    pool.putconn(first)
    kit.joinall(gs, timeout=30)
    for g in gs:
        kit.result(g)
    kit.emit(order=order, arrived=arrived, stats=pool.get_stats())
    pool.close()


def storm() -> None:
    n = 60 if THREADS else 300
    max_size = 8
    pool = make_pool(min_size=2, max_size=max_size, timeout=0.3)
    pool.wait(10)
    mon = kit.monitor()
    ticker = kit.Ticker()
    outcomes: dict[str, int] = {}
    rng = random.Random(42)

    def note(k: str) -> None:
        outcomes[k] = outcomes.get(k, 0) + 1

    def work(i: int) -> None:
        r = random.Random(i)
        for _ in range(6):
            try:
                if not THREADS and r.random() < 0.3:
                    with kit.Timeout(r.uniform(0.001, 0.05)):
                        with pool.connection() as c:
                            c.cursor().execute("select pg_sleep(%s)", (r.uniform(0, 0.06),))
                elif r.random() < 0.3:
                    with psycogreen.timeout(r.uniform(0.001, 0.05)):
                        with pool.connection() as c:
                            cur = c.cursor()
                            cur.execute("create temp table if not exists t(x int)")
                            cur.execute("select pg_sleep(%s)", (r.uniform(0, 0.06),))
                else:
                    with pool.connection(timeout=r.uniform(0.01, 0.5)) as c:
                        c.cursor().execute("select pg_sleep(%s)", (r.uniform(0, 0.01),))
                note("ok")
            except PoolTimeout:
                note("pool_timeout")
            except psycopg2.extensions.QueryCanceledError:
                note("query_timeout")
            except BaseException as e:  # noqa: BLE001 - the framework's Timeout
                if kit.Timeout is not None and isinstance(e, kit.Timeout):
                    note("killed_by_timeout")
                else:
                    raise

    gs = [kit.spawn(work, i) for i in range(n)]
    killed = 0
    if not THREADS:
        for _ in range(40):
            kit.sleep(0.02)  # behaviour: kills spread over the run, hitting clients at any step
            alive = [g for g in gs if not g.dead]
            if alive:
                kit.kill(rng.choice(alive))
                killed += 1
    kit.joinall(gs, timeout=60)
    gap = ticker.stop()
    errors = []
    for g in gs:
        try:
            kit.result(g)
        except BaseException as e:  # noqa: BLE001 - killed greenlets end with GreenletExit
            if type(e).__name__ != "GreenletExit":
                errors.append(repr(e))
    # the server shows the last rollbacks and closes a moment after the pool made them
    settle(pool, lambda: set(backends(mon)) <= {"idle"} and sum(backends(mon).values()) <= max_size)
    stats = pool.get_stats()
    seen = backends(mon)
    in_use = len(pool._owned) - len(pool._idle)
    with pool.connection(timeout=5) as c:  # still serves
        c.cursor().execute("select 1")
    kit.emit(
        outcomes=outcomes,
        killed=killed,
        errors=errors[:5],
        backends=seen,
        max_size=max_size,
        in_use=in_use,
        stats=stats,
        max_gap=gap,
        pool=repr(pool),
    )
    pool.close()


def terminate() -> None:
    pool = make_pool(min_size=4, max_size=4)
    pool.wait(10)
    mon = kit.monitor()
    before = set(pids(mon))
    mon.cursor().execute(
        "select pg_terminate_backend(pid) from pg_stat_activity where application_name = %s", (APP,)
    )
    kit.wait_until(lambda: not before & set(pids(mon)), what="the terminated backends to exit")
    failures: list[str] = []

    def client(i: int) -> None:
        try:
            with pool.connection(timeout=10) as c:
                c.cursor().execute("select pg_sleep(0.01)")
        except psycopg2.Error as e:
            failures.append(repr(e))

    gs = [kit.spawn(client, i) for i in range(20)]
    kit.joinall(gs, timeout=30)
    pool.check()  # any terminated connection the clients did not happen to draw is replaced too
    settle(pool, lambda: len(pids(mon)) == 4)
    after = set(pids(mon))
    kit.emit(
        failures=failures,
        before=len(before),
        overlap=len(before & after),
        after=len(after),
        stats=pool.get_stats(),
    )
    pool.close()


def recycle() -> None:
    pool = make_pool(min_size=2, max_size=6, max_lifetime=1.0, max_idle=0.3)
    pool.wait(10)
    mon = kit.monitor()
    first = set(pids(mon))

    def client(i: int) -> None:
        with pool.connection(timeout=10) as c:
            c.cursor().execute("select pg_sleep(0.2)")

    gs = [kit.spawn(client, i) for i in range(6)]
    kit.joinall(gs, timeout=30)
    grown = pool.get_stats()["pool_size"]
    shrunk = settle(pool, lambda: pool.get_stats()["pool_size"] == 2 and len(pids(mon)) == 2, 5)
    # past max_lifetime (1 s): the first connections are replaced
    settle(pool, lambda: not first & set(pids(mon)), 10)
    with pool.connection(timeout=5) as c:
        c.cursor().execute("select 1")
    later = set(pids(mon))
    kit.emit(
        grown=grown,
        shrunk=shrunk,
        replaced=not (first & later),
        size=pool.get_stats()["pool_size"],
        n_later=len(later),
    )
    pool.close()


def resize() -> None:
    pool = make_pool(min_size=2, max_size=2)
    pool.wait(10)
    mon = kit.monitor()
    pool.resize(4, 8)
    grew = settle(pool, lambda: len(pids(mon)) == 4)
    held = [pool.getconn(timeout=5) for _ in range(8)]
    at_max = len(pids(mon))
    for c in held:
        pool.putconn(c)
    pool.resize(1, 1)
    shrank = settle(pool, lambda: len(pids(mon)) == 1)
    kit.emit(grew=grew, at_max=at_max, shrank=shrank, repr=repr(pool), stats=pool.get_stats())
    pool.close()


def close_out() -> None:
    pool = make_pool(min_size=1, max_size=1)
    pool.wait(10)
    c = pool.getconn()
    result: dict[str, Any] = {}

    def waiter() -> None:
        try:
            pool.getconn(timeout=20)
            result["waiter"] = "got one"
        except PoolClosed as e:
            result["waiter"] = "PoolClosed: " + str(e)

    g = kit.spawn(waiter)
    kit.wait_until(lambda: len(pool._clients) == 1, what="the waiter to queue")
    t0 = time.monotonic()
    pool.close()
    kit.joinall([g], timeout=10)
    result["close_s"] = time.monotonic() - t0
    cur = c.cursor()
    cur.execute("select 42")
    result["still_usable"] = cur.fetchone()[0]
    pool.putconn(c)
    result["closed_on_return"] = c.closed
    try:
        pool.getconn()
    except PoolClosed as e:
        result["after"] = str(e)
    result["repr"] = repr(pool)
    kit.emit(**result)


def max_waiting() -> None:
    pool = make_pool(min_size=1, max_size=1, max_waiting=2)
    pool.wait(10)
    c = pool.getconn()
    got: list[str] = []

    def waiter() -> None:
        with pool.connection(timeout=10):
            got.append("ok")

    gs = [kit.spawn(waiter) for _ in range(2)]
    kit.wait_until(lambda: len(pool._clients) == 2, what="two waiters to queue")
    t0 = time.monotonic()
    try:
        pool.getconn(timeout=10)
        err = None
    except TooManyRequests as e:
        err = str(e)
    elapsed = time.monotonic() - t0
    pool.putconn(c)
    kit.joinall(gs, timeout=10)
    kit.emit(error=err, elapsed=elapsed, got=got, stats=pool.get_stats())
    pool.close()


def busy_putconn() -> None:
    """putconn() of a connection another green thread is inside a query on: a clear error at once,
    no freeze, and the pool unchanged (the owner returns it later as usual)."""
    pool = make_pool(min_size=1, max_size=1)
    pool.wait(10)
    mon = kit.monitor()
    c = pool.getconn()
    g = kit.spawn(lambda: c.cursor().execute("select pg_sleep(1.5) /* busy_putconn */"))
    kit.wait_until(lambda: kit.running(mon, "%busy_putconn%") == 1, what="the query to run")
    ticker = kit.Ticker()
    t0 = time.monotonic()
    try:
        pool.putconn(c)
        error = None
    except psycopg2.ProgrammingError as e:
        error = str(e)
    elapsed = time.monotonic() - t0
    in_use_after_error = len(pool._owned) - len(pool._idle)
    kit.joinall([g], timeout=10)
    gap = ticker.stop()
    kit.result(g)
    pool.putconn(c)  # by its owner, once the query is over: accepted
    with pool.connection(timeout=5) as c2:
        same = c2 is c
        c2.cursor().execute("select 1")
    kit.emit(
        error=error,
        elapsed=elapsed,
        max_gap=gap,
        in_use_after_error=in_use_after_error,
        same=same,
        stats=pool.get_stats(),
    )
    pool.close()


def busy_closeall() -> None:
    """psycopg2.pool's closeall() closes checked-out connections, except one a green thread is
    inside a query on (closing that would freeze the process): it is closed when returned."""
    pool = make_pool(min_size=2, max_size=2)
    pool.wait(10)
    mon = kit.monitor()
    busy, held = pool.getconn(), pool.getconn()
    g = kit.spawn(lambda: busy.cursor().execute("select pg_sleep(1) /* busy_closeall */"))
    kit.wait_until(lambda: kit.running(mon, "%busy_closeall%") == 1, what="the query to run")
    ticker = kit.Ticker()
    t0 = time.monotonic()
    pool.closeall()
    elapsed = time.monotonic() - t0
    held_closed, busy_open = bool(held.closed), not busy.closed
    kit.joinall([g], timeout=10)
    gap = ticker.stop()
    kit.result(g)  # the query finished normally
    pool.putconn(busy)
    kit.emit(
        elapsed=elapsed,
        max_gap=gap,
        held_closed=held_closed,
        busy_open_during_query=busy_open,
        busy_closed_on_return=bool(busy.closed),
    )


def check_raises() -> None:
    """A check= callback raising a non-psycopg2 exception rejects the connection (the client gets
    another one, never the exception)."""
    calls: list[int] = []

    def check(conn: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ZeroDivisionError("check bug")

    pool = make_pool(min_size=1, max_size=2, check=check)
    pool.wait(10)
    with pool.connection(timeout=10) as c:
        cur = c.cursor()
        cur.execute("select 1")
        got = cur.fetchone()[0]
    kit.emit(got=got, calls=len(calls), stats=pool.get_stats())
    pool.close()


def _table(mon: Any, name: str) -> None:
    mon.cursor().execute(f"drop table if exists {name}; create table {name} (x int, s text)")


def state() -> None:
    """Whatever a borrower changes on the connection object, the next borrower finds it as
    configured (issue 10.1), including the two data-loss cases."""
    mon = kit.monitor()
    t_ac, t_enc = f"state_ac_{kit.FRAMEWORK}", f"state_enc_{kit.FRAMEWORK}"
    _table(mon, t_ac)
    _table(mon, t_enc)
    mon.cursor().execute(f"insert into {t_enc} values (1, 'café')")
    res: dict[str, Any] = {}

    # 1. autocommit left on, then a failing `with` block: its rows must not persist.
    pool = make_pool(min_size=1, max_size=1)
    pool.wait(10)
    with pool.connection() as c:
        c.autocommit = True
    try:
        with pool.connection() as c:
            c.cursor().execute(f"insert into {t_ac} values (1)")
            raise ValueError("the block fails")
    except ValueError:
        pass
    cur = mon.cursor()
    cur.execute(f"select count(*) from {t_ac}")
    res["rows_after_failed_block"] = cur.fetchone()[0]

    # 2. every other psycopg2-side setting, and queued notices/notifies.
    with pool.connection() as c:
        base = (c.autocommit, c.isolation_level, c.readonly, c.deferrable, c.encoding, c.cursor_factory)
        c.cursor().execute("listen state_chan; notify state_chan, 'x'")
        c.cursor().execute("do $$ begin raise notice 'hello'; end $$")
        c.commit()
        res["queued"] = [len(c.notifies), len(c.notices)]
        c.isolation_level = psycopg2.extensions.ISOLATION_LEVEL_SERIALIZABLE
        c.readonly = True
        c.deferrable = True
        c.set_client_encoding("LATIN1")
        c.cursor_factory = psycopg2.extras.RealDictCursor
        c.autocommit = True
        c.cursor().execute("unlisten *")
    with pool.connection() as c:
        res["settings_restored"] = (
            c.autocommit,
            c.isolation_level,
            c.readonly,
            c.deferrable,
            c.encoding,
            c.cursor_factory,
        ) == base
        res["lists_empty"] = [len(c.notifies), len(c.notices)]
        cur = c.cursor()
        cur.execute("show transaction_isolation")
        iso = cur.fetchone()[0]
        cur.execute("show transaction_read_only")
        res["server_tx"] = [iso, cur.fetchone()[0], c.get_parameter_status("client_encoding")]
    pool.close()

    # 3. LATIN1 + DISCARD ALL: the next borrower reads and writes 'café' correctly.
    pool = make_pool(min_size=1, max_size=1, reset=ConnectionPool.discard_all)
    pool.wait(10)
    with pool.connection() as c:
        c.set_client_encoding("LATIN1")
    with pool.connection() as c:
        cur = c.cursor()
        cur.execute(f"insert into {t_enc} values (2, 'café')")
        cur.execute(f"select s from {t_enc} order by x")
        res["discard_all_roundtrip"] = [r[0] for r in cur.fetchall()]
    pool.close()

    # 4. configured LATIN1 (the baseline itself) + DISCARD ALL: the server is told again.
    def latin1(conn: Any) -> None:
        conn.set_client_encoding("LATIN1")

    pool = make_pool(min_size=1, max_size=1, reset=ConnectionPool.discard_all, configure=latin1)
    pool.wait(10)
    with pool.connection() as c:
        c.cursor().execute("select 1")
    with pool.connection() as c:
        cur = c.cursor()
        cur.execute(f"select s from {t_enc} where x = 1")
        res["configured_latin1"] = [cur.fetchone()[0], c.encoding, c.get_parameter_status("client_encoding")]
    pool.close()
    cur = mon.cursor()
    cur.execute(f"select count(*) from {t_enc} where s = 'café'")
    res["stored_cafe"] = cur.fetchone()[0]
    kit.emit(**res)


globals()[SCENARIO]()
