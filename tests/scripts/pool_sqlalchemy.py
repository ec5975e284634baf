"""SQLAlchemy under a green framework: ``pool_sqlalchemy.py <framework>``.

1. The recommended recipe: SQLAlchemy's own QueuePool on psycopg2 made cooperative by psycogreen.
   Monkey-patching turns its threading Condition into green waits; a storm of clients with random
   timeouts and kills must leak no checked-out connection and leave no busy backend.
2. The tempting wrong one: ``creator=psycogreen_pool.getconn`` with ``NullPool``. SQLAlchemy closes
   what it created instead of calling ``putconn``, so the psycogreen pool loses track (reported).
"""

from __future__ import annotations

import gc
import random
import time

import kit
import psycopg2.extensions
import sqlalchemy
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from psycogreen.pool import ConnectionPool

APP = f"pool_sqla_{kit.FRAMEWORK}"
THREADS = kit.FRAMEWORK == "threads"
p = psycopg2.extensions.parse_dsn(kit.DSN)
url = sqlalchemy.engine.URL.create(
    "postgresql+psycopg2",
    username=p.get("user"),
    host=p.get("host"),
    port=int(p["port"]) if "port" in p else None,
    database=p.get("dbname"),
    query={"application_name": APP},
)
POOL_SIZE = 5
engine = create_engine(url, pool_size=POOL_SIZE, max_overflow=0, pool_timeout=2, pool_pre_ping=True)
ticker = kit.Ticker()
outcomes: dict[str, int] = {}


def note(k: str) -> None:
    outcomes[k] = outcomes.get(k, 0) + 1


def work(i: int) -> None:
    r = random.Random(i)
    for _ in range(5):
        try:
            if not THREADS and r.random() < 0.4:
                with kit.Timeout(r.uniform(0.001, 0.05)):
                    with engine.begin() as c:
                        c.execute(text("select pg_sleep(:s)"), {"s": r.uniform(0, 0.06)})
            else:
                with engine.begin() as c:
                    c.execute(text("select pg_sleep(:s)"), {"s": r.uniform(0, 0.01)})
            note("ok")
        except sqlalchemy.exc.TimeoutError:
            note("pool_timeout")
        except BaseException as e:  # noqa: BLE001 - the framework's Timeout
            if kit.Timeout is not None and isinstance(e, kit.Timeout):
                note("killed_by_timeout")
            else:
                note(type(e).__name__)


n = 40 if THREADS else 200
t0 = time.monotonic()
gs = [kit.spawn(work, i) for i in range(n)]
rng = random.Random(1)
killed = 0
if not THREADS:
    for _ in range(20):
        kit.sleep(0.02)  # behaviour: kills spread over the run, hitting greenlets at any step
        alive = [g for g in gs if not g.dead]
        if alive:
            kit.kill(rng.choice(alive))
            killed += 1
kit.joinall(gs, timeout=60)
elapsed = time.monotonic() - t0
gap = ticker.stop()
mon = kit.monitor()


def app_backends() -> dict[str, int]:
    cur = mon.cursor()
    cur.execute(
        "select coalesce(state, '?'), count(*) from pg_stat_activity where application_name = %s group by 1",
        (APP,),
    )
    return dict(cur.fetchall())


def settled() -> bool:
    """Every backend of the engine idle and within the pool size: the steady state. A greenlet
    killed during SQLAlchemy's post-connect initialisation leaves that DB-API connection in a
    reference cycle (safe_reraise keeps exc_info in a frame local): CPython closes it at the next
    cycle collection, not at once, so collect first; the server then notices the close."""
    gc.collect()
    b = app_backends()
    return set(b) <= {"idle"} and sum(b.values()) <= POOL_SIZE


try:
    kit.wait_until(settled, what="the engine's backends to settle")
except AssertionError:
    pass  # the test reports what the server shows
backends = app_backends()
checked_out = engine.pool.checkedout()  # type: ignore[attr-defined]
with engine.connect() as c:
    still = c.execute(text("select 1")).scalar()
engine.dispose()

# The wrong recipe, for the record.
pg = ConnectionPool(kit.DSN, min_size=1, max_size=3, timeout=0.5)
pg.wait(10)
bad = create_engine("postgresql+psycopg2://", creator=pg.getconn, poolclass=NullPool)
for _ in range(3):
    with bad.connect() as c:
        c.execute(text("select 1"))
leak_stats = pg.get_stats()
in_use_after = len(pg._owned) - len(pg._idle)
pg.close()

kit.emit(
    outcomes=outcomes,
    killed=killed,
    backends=backends,
    pool_size=POOL_SIZE,
    checked_out=checked_out,
    still=still,
    max_gap=gap,
    elapsed=elapsed,
    wrong_recipe_in_use=in_use_after,
    wrong_recipe_stats=leak_stats,
)
