"""Real OS threads sharing one connection in a monkey-patched program (argv[1]: gevent, eventlet or
threads): psycopg2 serialises threads, so must we; greenlets of one thread still get
ConcurrentUseError. Emits per-thread errors, query results checked and the greenlet outcome."""

from __future__ import annotations

import kit
import psycopg2

from psycogreen import _guard
from psycogreen.errors import ConcurrentUseError

if kit.FRAMEWORK == "gevent":
    from gevent import monkey

    start_thread = monkey.get_original("_thread", "start_new_thread")
elif kit.FRAMEWORK == "eventlet":
    from eventlet import patcher

    start_thread = patcher.original("_thread").start_new_thread
else:
    import _thread

    start_thread = _thread.start_new_thread

THREADS, ROUNDS = 3, 150
conn = psycopg2.connect(kit.DSN)
errors: list[str] = []
checked: dict[int, int] = {}


def worker(n: int) -> None:
    ok = 0
    try:
        for i in range(ROUNDS):
            cur = conn.cursor()
            cur.execute("select pg_sleep(0.001), %s", (n * 1000 + i,))
            if cur.fetchone()[1] == n * 1000 + i:
                ok += 1
            conn.commit()
    except BaseException as e:
        errors.append(f"{type(e).__name__}: {e}")
    checked[n] = ok


for n in range(THREADS):
    start_thread(worker, (n,))
try:  # this thread's hub keeps running meanwhile
    kit.wait_until(lambda: len(checked) >= THREADS, 60, "every thread to finish")
except AssertionError:
    pass  # the test reports which did not

greenlet_error = None
if kit.FRAMEWORK != "threads":
    g = kit.spawn(lambda: conn.cursor().execute("select pg_sleep(0.5)"))
    kit.wait_until(lambda: _guard.in_use(conn), what="the first greenlet inside")
    try:
        conn.cursor().execute("select 1")
    except ConcurrentUseError as e:
        greenlet_error = type(e).__name__
    kit.joinall([g])
conn.close()
kit.emit(errors=errors, checked=checked, rounds=ROUNDS, greenlet_error=greenlet_error)
