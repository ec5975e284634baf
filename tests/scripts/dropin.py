"""psycogreen 1.0.2 usage patterns, unchanged, under gevent or eventlet."""

from __future__ import annotations

import socket
import sys
import time
from typing import Any

import kit
import psycopg2
import psycopg2.extensions as ext

import psycogreen

FW = kit.FRAMEWORK
out: dict[str, Any] = {}

# 1. The documented way: patch_psycopg()
psycogreen.unpatch()
if FW == "gevent":
    from psycogreen.gevent import gevent_wait_callback as cb
    from psycogreen.gevent import patch_psycopg
else:
    from psycogreen.eventlet import eventlet_wait_callback as cb  # type: ignore[assignment]
    from psycogreen.eventlet import patch_psycopg
patch_psycopg()
out["patched"] = psycogreen.patched()
out["callback_set"] = ext.get_wait_callback() is not None

ticker = kit.Ticker()
conns = [psycopg2.connect(kit.DSN) for _ in range(5)]
t0 = time.monotonic()
kit.joinall([kit.spawn(lambda c=c: c.cursor().execute("select pg_sleep(0.3)")) for c in conns])
out["parallel_elapsed"] = time.monotonic() - t0
out["max_gap"] = ticker.stop()

# 2. A server-side error: same type and message as blocking psycopg2
cur = conns[0].cursor()
try:
    cur.execute("select * from no_such_table")
except psycopg2.Error as e:
    out["green_error"] = [type(e).__name__, e.pgcode, str(e)]
conns[0].rollback()

# 3. Registering the callback by hand, as many 1.0.2 users do
psycogreen.unpatch()
ext.set_wait_callback(cb)
c = psycopg2.connect(kit.DSN)
t0 = time.monotonic()
kit.joinall([kit.spawn(lambda: c.cursor().execute("select pg_sleep(0.3)")), kit.spawn(kit.sleep, 0.3)])
out["manual_elapsed"] = time.monotonic() - t0
cur = c.cursor()
cur.execute("select 1")
out["manual_row"] = cur.fetchone()[0]

# 4. gevent_wait_callback(conn, timeout): 1.0.2 raised socket.timeout per wait
if FW == "gevent":

    def timed_cb(conn: Any) -> None:
        cb(conn, timeout=0.1)

    ext.set_wait_callback(timed_cb)
    c2 = psycopg2.connect(kit.DSN)
    try:
        c2.cursor().execute("select pg_sleep(1)")
    except socket.timeout:
        out["timeout_arg"] = "socket.timeout"
ext.set_wait_callback(None)

# 5. blocking psycopg2 error for comparison
b = psycopg2.connect(kit.DSN)
try:
    b.cursor().execute("select * from no_such_table")
except psycopg2.Error as e:
    out["blocking_error"] = [type(e).__name__, e.pgcode, str(e)]
kit.emit(**out)
sys.exit(0)
