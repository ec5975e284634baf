"""Celery tasks on psycopg2 under a gevent worker pool: docs/deployment.md's recipe (and its test).

    celery -A tasks worker -P gevent -c 100

``celery ... -P gevent`` monkey-patches the process first thing, so ``psycogreen.patch()`` at worker
start picks gevent; every task's queries then wait cooperatively and one worker process runs up to
``-c`` tasks at once, sharing the pool's connections. (With ``-P prefork``, open the pool in
``worker_process_init`` instead: a pool must not cross a fork.)
"""

import os

from celery import Celery, signals

import psycogreen
from psycogreen.pool import ConnectionPool

app = Celery("tasks")
app.config_from_object(os.environ.get("CELERY_CONFIG_MODULE", "celeryconfig"))

# Opened when the worker starts, not at import: a client that imports this module to send tasks
# needs neither the patch nor database connections.
pool = ConnectionPool(
    os.environ.get("APP_DSN", "dbname=app connect_timeout=5"), min_size=2, max_size=10, open=False
)


@signals.worker_init.connect
def open_pool(**kwargs):
    psycogreen.patch()
    pool.open()


@signals.worker_shutdown.connect
def close_pool(**kwargs):
    pool.close()


@app.task
def slow_query(job_id, seconds=0.2):
    """A task that spends its time waiting for PostgreSQL; records when it ran."""
    with pool.connection() as conn, conn.cursor() as cur:
        cur.execute("select clock_timestamp(), pg_sleep(%s), clock_timestamp()", (seconds,))
        started, _, finished = cur.fetchone()
        cur.execute(
            "insert into celery_jobs (job_id, started, finished, backend_pid)"
            " values (%s, %s, %s, pg_backend_pid())",
            (job_id, started, finished),
        )
