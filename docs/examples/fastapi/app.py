"""FastAPI on psycopg2 through psycogreen.aio: docs/deployment.md's recipe (and its test).

    APP_DSN="dbname=app" uvicorn app:app --port 8000

The pool lives as long as the application: opened in the lifespan, before the first request, and
closed after the last one, on the server's event loop (the pool's background work runs there).
"""

import os
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

import psycogreen.aio

DSN = os.environ.get("APP_DSN", "dbname=app connect_timeout=5")


@asynccontextmanager
async def lifespan(app: FastAPI):
    async with psycogreen.aio.ConnectionPool(DSN, min_size=2, max_size=10, timeout=10) as pool:
        await pool.wait()  # fail at start-up, not on the first request, if the database is unreachable
        app.state.pool = pool
        yield


app = FastAPI(lifespan=lifespan)


@app.get("/sleep")
async def sleep(request: Request, seconds: float = 0.2):
    """A request that spends its time waiting for PostgreSQL; the loop serves others meanwhile."""
    async with request.app.state.pool.connection() as conn:
        cur = conn.cursor()
        await cur.execute("select pg_sleep(%s), pg_backend_pid()", (seconds,))
        _, pid = await cur.fetchone()
    return {"backend_pid": pid}


@app.get("/stats")
async def stats(request: Request):
    return request.app.state.pool.get_stats()
