"""A pool created before ``os.fork()``: ``pool_fork.py <framework>``.

The child must get a working pool of its own (new backends, a timeout that fires) and must not
disturb the parent's session; the parent's connections keep working after the child exits.
"""

from __future__ import annotations

import json
import os
import time

import kit

from psycogreen.errors import PoolTimeout
from psycogreen.pool import ConnectionPool

APP = f"pool_fork_{kit.FRAMEWORK}"


def child(pool: ConnectionPool, parent_pids: list[int], held: object, out: int) -> None:
    res: dict[str, object] = {}
    try:
        with pool.connection(timeout=10) as c:
            cur = c.cursor()
            cur.execute("select pg_backend_pid()")
            res["child_pid_backend"] = cur.fetchone()[0]
        res["new_backend"] = res["child_pid_backend"] not in parent_pids
        a, b = pool.getconn(timeout=10), pool.getconn(timeout=10)  # max_size=2: now exhausted
        t0 = time.monotonic()
        try:
            pool.getconn(timeout=0.5)
            res["exhausted"] = "got one"
        except PoolTimeout as e:
            res["exhausted"] = "PoolTimeout: " + str(e)
        res["timeout_s"] = time.monotonic() - t0
        pool.putconn(a)
        pool.putconn(b)
        pool.putconn(held)  # checked out in the parent: detached quietly in the child
        res["stats"] = pool.get_stats()
        pool.close()
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        res["error"] = repr(e)
    os.write(out, json.dumps(res).encode())
    os._exit(0)


def main() -> None:
    pool = ConnectionPool(kit.DSN, min_size=2, max_size=2, kwargs={"application_name": APP}, name=APP)
    pool.wait(10)
    held = pool.getconn()
    mon = kit.monitor()
    cur = mon.cursor()
    cur.execute("select pid from pg_stat_activity where application_name = %s", (APP,))
    parent_pids = sorted(r[0] for r in cur.fetchall())
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        child(pool, parent_pids, held, w)
    os.close(w)
    result: list[int] = []

    def child_exited() -> bool:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            result.append(status)
        return bool(done)

    try:
        kit.wait_until(child_exited, 60, "the forked child to exit")
    except AssertionError:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    status = result[0] if result else None
    raw = b""
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        raw += chunk
    child_res = json.loads(raw) if raw else {"error": "child hung or died"}
    # The parent's connections are untouched by the child (no Terminate sent on its behalf).
    cur2 = held.cursor()
    cur2.execute("select pg_backend_pid()")
    held_pid = cur2.fetchone()[0]
    pool.putconn(held)
    with pool.connection(timeout=5) as c:
        c.cursor().execute("select 1")
    cur.execute("select pid from pg_stat_activity where application_name = %s", (APP,))
    after = sorted(r[0] for r in cur.fetchall())
    kit.emit(
        child=child_res,
        child_status=status,
        parent_pids=parent_pids,
        parent_after=after,
        held_pid_ok=held_pid in parent_pids,
    )
    pool.close()


main()
