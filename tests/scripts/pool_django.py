"""A minimal Django project on psycogreen.contrib.django: ``pool_django.py <framework>``.

More requests in flight than the pool has connections, through the ORM and ``connection.cursor()``,
each wrapped in Django's request_started / request_finished signals like a real request. A sampler
watches pg_stat_activity: the database never sees more than max_size backends.
"""

from __future__ import annotations

import time
from typing import Any

import kit
import psycopg2
import psycopg2.extensions

DBNAME = f"pool_django_{kit.FRAMEWORK}"
MAX_SIZE = 4
params = psycopg2.extensions.parse_dsn(kit.DSN)
mon = kit.monitor()
cur = mon.cursor()
cur.execute("select 1 from pg_database where datname = %s", (DBNAME,))
if not cur.fetchone():
    cur.execute(f"create database {DBNAME}")

import django  # noqa: E402
from django.conf import settings  # noqa: E402

settings.configure(
    DEBUG=False,
    USE_TZ=True,
    INSTALLED_APPS=["django.contrib.contenttypes"],
    DATABASES={
        "default": {
            "ENGINE": "psycogreen.contrib.django",
            "NAME": DBNAME,
            "USER": params.get("user", ""),
            "HOST": params.get("host", ""),
            "PORT": params.get("port", ""),
            "CONN_MAX_AGE": 0,
            "OPTIONS": {"pool": {"min_size": 1, "max_size": MAX_SIZE, "timeout": 30}},
        }
    },
)
django.setup()

from django.contrib.contenttypes.models import ContentType  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.core.signals import request_finished, request_started  # noqa: E402
from django.db import connection, connections  # noqa: E402

call_command("migrate", "contenttypes", verbosity=0)
request_finished.send(sender=None)

seen_max = 0
stop = False


def sampler() -> None:
    global seen_max
    c = kit.monitor()
    while not stop:
        q = c.cursor()
        q.execute("select count(*) from pg_stat_activity where datname = %s", (DBNAME,))
        seen_max = max(seen_max, q.fetchone()[0])
        kit.sleep(0.01)  # behaviour: the sampling cadence
    c.close()


errors: list[str] = []
done = [0]


def request(i: int) -> None:
    try:
        for _ in range(3):
            request_started.send(sender=None)
            try:
                n = ContentType.objects.filter(app_label="contenttypes").count()
                assert n >= 1
                with connection.cursor() as c:
                    c.execute("select pg_sleep(0.02), %s", [i])
                    c.fetchone()
                ContentType.objects.get_for_model(ContentType, for_concrete_model=True)
                done[0] += 1
            finally:
                request_finished.send(sender=None)
    except Exception as e:  # noqa: BLE001
        errors.append(repr(e))


n_requests = 40 if kit.FRAMEWORK != "threads" else 16
s = kit.spawn(sampler)
ticker = kit.Ticker()
t0 = time.monotonic()
gs = [kit.spawn(request, i) for i in range(n_requests)]
kit.joinall(gs, timeout=60)
elapsed = time.monotonic() - t0
gap = ticker.stop()
stop = True
kit.joinall([s], timeout=5)
pool: Any = connections["default"].pool
stats = pool.get_stats()
cur.execute(
    "select coalesce(state, '?'), count(*) from pg_stat_activity where datname = %s group by 1", (DBNAME,)
)
after = dict(cur.fetchall())
kit.emit(
    errors=errors[:5],
    done=done[0],
    expected=n_requests * 3,
    seen_max=seen_max,
    max_size=MAX_SIZE,
    after=after,
    stats=stats,
    vendor=connections["default"].vendor,
    driver=connections["default"].Database.__name__,
    elapsed=elapsed,
    max_gap=gap,
)
