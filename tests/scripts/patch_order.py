"""Set-up order scenarios: ``patch_order.py <framework> <scenario>``.

Unlike the other scripts this one does not import ``kit`` (kit patches at import, and the point
here is *when* and *whether* ``psycogreen.patch()`` is called). Scenarios:

- ``late``: ``psycogreen.patch()`` first, monkey-patching after (gunicorn's post_fork order);
- ``explicit``: ``patch("threads")`` first, monkey-patching after: the explicit choice stays;
- ``pool``: no ``patch()`` at all, psycogreen's ConnectionPool;
- ``django``: no ``patch()`` at all, the ``psycogreen.contrib.django`` ENGINE (with and without
  ``OPTIONS["pool"]``);
- ``warn``: no ``patch()``, plain ``psycopg2.connect()``: one RuntimeWarning naming the fix.

Each prints one JSON line: what ``patched()`` said, the wall time of N concurrent
``pg_sleep(SLEEP)`` and the worst gap a ticker greenlet saw while they ran.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from typing import Any, Callable

FRAMEWORK, SCENARIO = sys.argv[1], sys.argv[2]
DSN = os.environ["PSYCOGREEN_TEST_DSN"]
N, SLEEP = 10, 0.3

import psycogreen  # noqa: E402
import psycogreen._wait  # noqa: E402

before: Any = None
if SCENARIO == "late":
    before = psycogreen.patch()
elif SCENARIO == "explicit":
    before = psycogreen.patch("threads")

if FRAMEWORK == "gevent":
    from gevent import monkey

    monkey.patch_all()
    import gevent

    spawn: Callable[..., Any] = gevent.spawn
    sleep: Callable[[float], None] = gevent.sleep

    def joinall(gs: list[Any]) -> None:
        gevent.joinall(gs, timeout=60, raise_error=True)

elif FRAMEWORK == "eventlet":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eventlet's deprecation notice
        import eventlet

    eventlet.monkey_patch()
    spawn = eventlet.spawn
    sleep = eventlet.sleep

    def joinall(gs: list[Any]) -> None:
        for g in gs:
            g.wait()

else:
    raise SystemExit(f"unknown framework {FRAMEWORK!r}")

import psycopg2  # noqa: E402
import until  # noqa: E402


def Ticker() -> Any:  # noqa: N802 - stands for the class
    """The shared hub-stall probe (tests/scripts/ticker.py) on this framework."""
    from ticker import Ticker as _Ticker

    return _Ticker(spawn, sleep)


def concurrently(query: Callable[[int], None]) -> dict[str, float]:
    """Run ``query`` in N greenlets; wall time and the ticker's worst gap."""
    ticker = Ticker()
    until.wait_until(lambda: ticker.ticks >= 2, what="the ticker to tick", sleep=sleep)
    t0 = time.monotonic()
    joinall([spawn(query, i) for i in range(N)])
    elapsed = time.monotonic() - t0
    return {"elapsed": round(elapsed, 3), "max_gap": round(ticker.stop(), 3)}


def plain_query(i: int) -> None:
    conn = psycopg2.connect(DSN)
    try:
        conn.cursor().execute("select pg_sleep(%s)", (SLEEP,))
    finally:
        conn.close()


def waiter() -> str:
    return type(psycogreen._wait.current_waiter()).__name__


out: dict[str, Any] = {"before": before, "n": N, "sleep": SLEEP}

if SCENARIO in ("late", "explicit"):
    out["patched"] = psycogreen.patched()
    out.update(concurrently(plain_query))
    out["waiter"] = waiter()

elif SCENARIO == "pool":
    from psycogreen.pool import ConnectionPool

    with ConnectionPool(DSN, min_size=0, max_size=N, timeout=30) as pool:
        out["patched"] = psycogreen.patched()

        def pooled(i: int) -> None:
            with pool.connection() as conn:
                conn.cursor().execute("select pg_sleep(%s)", (SLEEP,))

        out.update(concurrently(pooled))
    out["waiter"] = waiter()

elif SCENARIO == "django":
    params = psycopg2.extensions.parse_dsn(DSN)
    import django
    from django.conf import settings

    db = {
        "ENGINE": "psycogreen.contrib.django",
        "NAME": params.get("dbname", "postgres"),
        "USER": params.get("user", ""),
        "HOST": params.get("host", ""),
        "PORT": params.get("port", ""),
        "CONN_MAX_AGE": 0,
    }
    pooled_db = {**db, "OPTIONS": {"pool": {"min_size": 0, "max_size": N, "timeout": 30}}}
    settings.configure(USE_TZ=True, DATABASES={"default": pooled_db, "plain": db})
    django.setup()
    from django.core.signals import request_finished, request_started
    from django.db import connections

    for alias in ("default", "plain"):

        def request(i: int, alias: str = alias) -> None:
            request_started.send(sender=None)
            try:
                with connections[alias].cursor() as cur:
                    cur.execute("select pg_sleep(%s)", [SLEEP])
            finally:
                request_finished.send(sender=None)

        request(-1)  # warm up: the first request imports and sets up Django's backend modules
        out[alias] = concurrently(request)
    out["patched"] = psycogreen.patched()
    out["waiter"] = waiter()
    connections["default"].close_pool()

elif SCENARIO == "warn":
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            psycopg2.connect(DSN).close()
    out["warnings"] = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    out["patched"] = psycogreen.patched()
    out["wait_callback"] = repr(psycopg2.extensions.get_wait_callback())

else:
    raise SystemExit(f"unknown scenario {SCENARIO!r}")

print(json.dumps(out), flush=True)
