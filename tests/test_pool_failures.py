"""Failures that say why (issue 10.3), in-process under plain threads: a pool that cannot connect
chains the server's error and gives the right advice, the waiting count is right, an enclosing
``psycogreen.timeout()`` bounds the pool wait, and ``timeout()`` rejects what is not a number."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import psycopg2
import pytest
from until import wait_until

import psycogreen
from psycogreen.errors import PoolTimeout, QueryTimeout
from psycogreen.pool import ConnectionPool


def _refused_port() -> int:
    with socket.socket() as s:  # a loopback port where nothing listens
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _with(dsn: str, **params: Any) -> str:
    parts = dict(kv.split("=", 1) for kv in dsn.split())
    parts.update({k: str(v) for k, v in params.items()})
    return " ".join(f"{k}={v}" for k, v in parts.items())


@pytest.mark.parametrize(
    "case, expected",
    [
        ("dbname", 'database "no_such_db" does not exist'),
        ("user", 'role "no_such_role" does not exist'),
        ("down", "Connection refused"),
    ],
)
def test_pool_that_cannot_connect_says_why(dsn: str, threads_patched: str, case: str, expected: str) -> None:
    bad = {
        "dbname": _with(dsn, dbname="no_such_db"),
        "user": _with(dsn, user="no_such_role", password="hunter2"),
        "down": _with(dsn, host="127.0.0.1", port=_refused_port()),
    }[case]
    pool = ConnectionPool(bad, min_size=1, timeout=1.0, name="bad")
    try:
        with pytest.raises(PoolTimeout) as info:
            with pool.connection():
                pass
    finally:
        pool.close()
    err = info.value
    assert isinstance(err.__cause__, psycopg2.OperationalError), err
    assert expected in str(err.__cause__)
    msg = str(err)
    assert msg.startswith("couldn't get a connection after 1.00 sec from pool 'bad'"), msg
    assert "cannot connect" in msg and expected in msg, msg
    assert "fix the connection settings" in msg and "raise max_size" not in msg, msg
    assert "hunter2" not in msg


def test_busy_pool_advice_and_waiting_count(dsn: str, threads_patched: str) -> None:
    with ConnectionPool(dsn, min_size=1, max_size=1, timeout=5, name="busy") as pool:
        held = pool.getconn()
        errors: list[BaseException] = []
        second_queued = threading.Event()

        def patient() -> None:
            second_queued.set()
            try:
                pool.getconn(timeout=30)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        t = threading.Thread(target=patient)
        t.start()
        second_queued.wait(5)
        wait_until(lambda: pool.get_stats()["requests_queued"] >= 1, what="the second client to queue")
        with pytest.raises(PoolTimeout) as info:
            pool.getconn(timeout=0.3)
        msg = str(info.value)
        assert info.value.__cause__ is None
        assert "2 waiting" in msg and "raise max_size or the timeout" in msg, msg
        pool.putconn(held)
        t.join(10)
        assert not errors


def test_enclosing_deadline_bounds_the_pool_wait(dsn: str, threads_patched: str) -> None:
    with ConnectionPool(dsn, min_size=1, max_size=1, timeout=5, name="dl") as pool:
        held = pool.getconn()
        t0 = time.monotonic()
        with pytest.raises(PoolTimeout) as info:
            with psycogreen.timeout(0.3):
                with pool.connection():
                    pass
        elapsed = time.monotonic() - t0
        assert elapsed < 3.0, elapsed  # not the pool's 5 s
        assert isinstance(info.value, QueryTimeout)  # what a timeout() block raises on expiry
        assert "enclosing psycogreen.timeout(0.30)" in str(info.value), info.value
        # The pool's own timeout when it is the tighter one: a plain PoolTimeout.
        with pytest.raises(PoolTimeout) as info2:
            with psycogreen.timeout(10):
                pool.getconn(timeout=0.2)
        assert not isinstance(info2.value, QueryTimeout)
        assert str(info2.value).startswith("couldn't get a connection after 0.20 sec")
        pool.putconn(held)
        with psycogreen.timeout(5):
            with pool.connection() as c:  # a free connection under a deadline: no wait at all
                c.cursor().execute("select 1")


@pytest.mark.parametrize("bad", ["1", None, b"1", True, [1]])
def test_timeout_rejects_what_is_not_a_number(bad: Any) -> None:
    with pytest.raises(TypeError, match=r"takes a number of seconds \(int or float\)"):
        with psycogreen.timeout(bad):
            pass


@pytest.mark.parametrize("bad", [-1, float("nan")])
def test_timeout_rejects_negative_and_nan(bad: float) -> None:
    with pytest.raises(ValueError, match="needs a number of seconds >= 0"):
        with psycogreen.timeout(bad):
            pass


def test_timeout_accepts_ints_and_floats(threads_patched: str) -> None:
    for ok in (0, 1, 0.5, float("inf")):
        with psycogreen.timeout(ok):
            pass
