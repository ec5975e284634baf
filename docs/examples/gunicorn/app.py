"""A tiny WSGI app for docs/deployment.md's gunicorn recipe (and its test).

``/`` runs ``select pg_sleep(0.2)`` on a new psycopg2 connection; ``/debug`` reports what psycogreen
settled on in this worker. The server is the libpq default, or ``APP_DSN``.
"""

import json
import os

import psycopg2

import psycogreen

DSN = os.environ.get("APP_DSN", "dbname=app connect_timeout=5")


def app(environ, start_response):
    if environ.get("PATH_INFO") == "/debug":
        body = {"patched": psycogreen.patched()}
    else:
        conn = psycopg2.connect(DSN)
        try:
            with conn.cursor() as cur:
                cur.execute("select pg_sleep(0.2), pg_backend_pid()")
                body = {"pid": cur.fetchone()[1]}
        finally:
            conn.close()
    data = json.dumps(body).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
