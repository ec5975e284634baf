"""psycogreen.timeout() bounds notifies() and consume_stream: their waits go through the driver.

Nothing runs on the server while they wait, so the deadline raises ``QueryTimeout`` at once (no
cancel, no grace) and the connection stays usable. Threads in this process; gevent and eventlet in
a script (tests/scripts/timeout_waits.py)."""

from __future__ import annotations

import time
from typing import Any, Callable

import pytest

GREEN = ["gevent", "eventlet", "threads"]
BOUND = 5.0  # generous: the deadline is 0.3 s and nothing is waited for after it


@pytest.mark.parametrize("framework", GREEN)
def test_timeout_bounds_notifies(run_script: Callable[..., Any], framework: str) -> None:
    out = run_script("timeout_waits.py", framework, "notifies", timeout=60)
    assert out["exc"] == "QueryTimeout", out
    assert "no statement was running" in out["msg"], out["msg"]
    assert 0.25 <= out["took"] < BOUND
    assert out["own_budget_got"] == 0 and out["own_budget_took"] < BOUND
    assert out["usable"]
    if framework != "threads":
        assert out["max_gap"] < 0.5


@pytest.mark.parametrize("framework", GREEN)
def test_timeout_bounds_consume_stream(run_script: Callable[..., Any], framework: str) -> None:
    out = run_script("timeout_waits.py", framework, "consume_stream", timeout=60)
    assert out["exc"] == "QueryTimeout", out
    assert 0.25 <= out["took"] < BOUND
    assert out["usable"]
    if framework != "threads":
        assert out["max_gap"] < 0.5


def test_timeout_bounds_notifies_in_process(dsn: str, threads_patched: str) -> None:
    import psycopg2

    import psycogreen
    from psycogreen.errors import QueryTimeout

    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        cur = conn.cursor()
        cur.execute("listen timeout_waits_in_process")
        t0 = time.monotonic()
        with pytest.raises(QueryTimeout, match="no statement was running"):
            with psycogreen.timeout(0.3):
                for _ in psycogreen.notifies(conn):
                    pass
        assert time.monotonic() - t0 < BOUND
        cur.execute("select 1")
        assert cur.fetchone() == (1,)
    finally:
        conn.close()
