"""Server restart under load, on a PostgreSQL of its own: ``pool_restart.py <framework>``.

Clients keep querying through the pool while the server stops and comes back; afterwards every
client has finished (nobody hangs) and the pool serves again from fresh connections.
"""

from __future__ import annotations

import time

import kit
import psycopg2

from psycogreen.errors import PoolTimeout
from psycogreen.pool import ConnectionPool
from psycogreen.testing import PostgresServer

server = PostgresServer()
server.start()
failed_calls: list[int] = []
pool = ConnectionPool(
    server.dsn,
    min_size=4,
    max_size=6,
    timeout=2.0,
    reconnect_timeout=60,
    reconnect_failed=lambda p: failed_calls.append(1),
)
pool.wait(10)
counts = {"ok_before": 0, "ok_after": 0, "errors": 0, "pool_timeouts": 0}
restarted_at = [0.0]
first_ok_after: list[float] = []  # seconds from the server being back to the first success


def client(i: int) -> None:
    # Behaviour: load until 3 s after the server is back (a client that hangs shows as not done).
    while not restarted_at[0] or time.monotonic() < restarted_at[0] + 3.0:
        try:
            with pool.connection() as c:
                c.cursor().execute("select pg_sleep(0.01)")
            now = time.monotonic()
            after = bool(restarted_at[0]) and now > restarted_at[0]
            counts["ok_after" if after else "ok_before"] += 1
            if after and not first_ok_after:
                first_ok_after.append(now - restarted_at[0])
        except PoolTimeout:
            counts["pool_timeouts"] += 1
        except psycopg2.Error:
            counts["errors"] += 1
            kit.sleep(0.05)  # behaviour: a client backs off before retrying


gs = [kit.spawn(client, i) for i in range(20)]
kit.wait_until(lambda: counts["ok_before"] >= 40, what="the clients to be served before the restart")
server.restart()  # stop (fast) + start: every pooled connection dies
restarted_at[0] = time.monotonic()
kit.joinall(gs, timeout=30)
hung = sum(1 for g in gs if not (g.t.is_alive() is False if kit.FRAMEWORK == "threads" else g.dead))
mon = psycopg2.connect(server.dsn)
cur = mon.cursor()
cur.execute(
    "select count(*) from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()"
)
backends = cur.fetchone()[0]
mon.close()
stats = pool.get_stats()
pool.close()
server.destroy()
kit.emit(
    **counts,
    hung=hung,
    backends=backends,
    stats=stats,
    reconnect_failed=len(failed_calls),
    recovered_s=first_ok_after[0] if first_ok_after else None,
)
