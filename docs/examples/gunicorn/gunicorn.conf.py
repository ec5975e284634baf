"""gunicorn settings for a psycopg2 app under gevent (or eventlet) workers.

    gunicorn -c gunicorn.conf.py app:app              # gevent workers
    gunicorn -c gunicorn.conf.py -k eventlet app:app  # eventlet workers

gunicorn calls ``post_fork`` in each new worker *before* the gevent/eventlet worker monkey-patches
the process. ``psycogreen.patch()`` there starts on plain threads and moves to the worker's framework
by itself on first use, so every request's queries wait cooperatively.
"""

import os

import psycogreen

worker_class = "gevent"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_connections = 100  # greenlets (in-flight requests) per worker


def post_fork(server, worker):
    psycogreen.patch()
