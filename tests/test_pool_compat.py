"""psycopg2.pool's call shapes on psycogreen's pool, side by side with ThreadedConnectionPool
(issue 10.4), plus psycopg_pool's shapes, which must keep working."""

from __future__ import annotations

from typing import Any, Iterator

import psycopg2
import psycopg2.pool
import pytest

from psycogreen.errors import PoolTimeout
from psycogreen.pool import ConnectionPool


def exercise(pool: Any) -> dict[str, Any]:
    """The same calls on either pool; what they observably did."""
    seen: dict[str, Any] = {}
    a = pool.getconn("k")
    seen["same_key_same_conn"] = pool.getconn("k") is a
    b = pool.getconn()
    seen["unkeyed_is_another"] = b is not a
    cur = a.cursor()
    cur.execute("select 1")
    seen["keyed_usable"] = cur.fetchone()[0] == 1
    pool.putconn(a, key="k")
    pool.putconn(b, key=None, close=False)
    seen["kept_open"] = not a.closed and not b.closed
    c = pool.getconn("other")
    pool.putconn(c)  # the key is found from the connection
    d = pool.getconn()
    pool.putconn(d, close=True)
    seen["close_true_closes"] = bool(d.closed)
    e = pool.getconn()
    e.cursor().execute("select 1")  # leaves a transaction open: rolled back on return
    pool.putconn(e)
    seen["rolled_back"] = e.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE
    full = [pool.getconn() for _ in range(4)]  # every connection out: the pool is exhausted
    try:
        pool.getconn()
        seen["exhausted"] = "got one"
    except psycopg2.pool.PoolError:  # psycopg2.pool at once; ours after its timeout (PoolTimeout)
        seen["exhausted"] = "PoolError"
    for c in full:
        pool.putconn(c)
    held = pool.getconn()
    pool.closeall()
    seen["closeall_closes_checked_out"] = bool(held.closed)
    try:
        pool.getconn()
        seen["after_closeall"] = "got one"
    except psycopg2.pool.PoolError:
        seen["after_closeall"] = "PoolError"
    return seen


@pytest.fixture
def pools(dsn: str, threads_patched: str) -> Iterator[tuple[Any, Any]]:
    ours = ConnectionPool(dsn, min_size=4, max_size=4, timeout=0.3)
    # minconn=4: psycopg2.pool closes returned connections beyond minconn; ours keeps them
    theirs = psycopg2.pool.ThreadedConnectionPool(4, 4, dsn)
    try:
        yield ours, theirs
    finally:
        ours.close()
        if not theirs.closed:
            theirs.closeall()


def test_psycopg2_pool_shapes_side_by_side(pools: tuple[Any, Any]) -> None:
    ours, theirs = pools
    expected = exercise(theirs)
    assert expected["exhausted"] == expected["after_closeall"] == "PoolError", expected
    assert all(v is True for k, v in expected.items() if k not in ("exhausted", "after_closeall")), expected
    assert exercise(ours) == expected


def test_keyed_connection_is_reused_until_returned(dsn: str, threads_patched: str) -> None:
    with ConnectionPool(dsn, min_size=1, max_size=2, timeout=5) as pool:
        a = pool.getconn(key=7)  # a numeric key must be passed as key=
        assert pool.getconn(key=7) is a
        assert pool.get_stats()["requests_num"] == 1  # the second call was no checkout
        with pytest.raises(ValueError, match="with key 8"):
            pool.putconn(a, key=8)
        pool.putconn(a, key=7)
        with pytest.raises(ValueError, match="already returned"):
            pool.putconn(a)


def test_psycopg_pool_shapes_still_work(dsn: str, threads_patched: str) -> None:
    with ConnectionPool(dsn, min_size=1, max_size=1, timeout=5) as pool:
        a = pool.getconn(timeout=1.0)
        with pytest.raises(PoolTimeout, match="after 0.20 sec"):
            pool.getconn(0.2)  # a positional number is psycopg_pool's timeout
        with pytest.raises(PoolTimeout, match="after 0.10 sec"):
            pool.getconn(timeout=0.1)
        pool.putconn(a)
        with pool.connection(timeout=1) as c:
            assert c is a
