"""A WSGI app on psycopg2 under uWSGI's gevent loop: docs/deployment.md's recipe (and its test).

    PORT=8000 APP_DSN="dbname=app" uwsgi --ini uwsgi.ini

uwsgi.ini monkey-patches early (``gevent-early-monkey-patch``) and loads the app in each worker
(``lazy-apps``), so ``psycogreen.patch()`` below picks gevent and every worker makes its own pool
after the fork.
"""

import json
import os

import psycogreen
from psycogreen.pool import ConnectionPool

psycogreen.patch()

pool = ConnectionPool(os.environ.get("APP_DSN", "dbname=app connect_timeout=5"), min_size=2, max_size=10)


def application(environ, start_response):
    if environ["PATH_INFO"] == "/health":
        body = {"patched": psycogreen.patched()}
    else:
        with pool.connection() as conn, conn.cursor() as cur:
            cur.execute("select pg_sleep(0.2), pg_backend_pid()")
            body = {"backend_pid": cur.fetchone()[1]}
    data = json.dumps(body).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
