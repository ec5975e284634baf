"""psycogreen.pool API under plain threads, in-process (no monkey-patching needed)."""

from __future__ import annotations

import gc
import logging
import socket
import threading
import weakref
from typing import Any, Iterator

import psycopg2
import psycopg2.pool
import pytest
from until import wait_until

from psycogreen.errors import PoolClosed, PoolTimeout, TooManyRequests
from psycogreen.pool import ConnectionPool, NullConnectionPool, safe_conninfo


@pytest.fixture
def pool(dsn: str, threads_patched: str) -> Iterator[ConnectionPool]:
    p = ConnectionPool(dsn, min_size=2, max_size=3, timeout=2.0, name="t")
    p.wait(10)
    try:
        yield p
    finally:
        p.close()


def test_errors_are_operational_errors() -> None:
    for cls in (PoolClosed, PoolTimeout, TooManyRequests):
        assert issubclass(cls, psycopg2.OperationalError)
        assert issubclass(cls, psycopg2.pool.PoolError)  # what psycopg2.pool code catches


def test_connection_commits_on_success_and_rolls_back_on_error(pool: ConnectionPool) -> None:
    with pool.connection() as c:
        c.cursor().execute("create table if not exists pool_t (x int)")
        c.cursor().execute("truncate pool_t")
    with pool.connection() as c:
        c.cursor().execute("insert into pool_t values (1)")
    with pytest.raises(ZeroDivisionError):
        with pool.connection() as c:
            c.cursor().execute("insert into pool_t values (2)")
            raise ZeroDivisionError
    with pool.connection() as c:
        cur = c.cursor()
        cur.execute("select array_agg(x) from pool_t")
        assert cur.fetchone()[0] == [1]
        assert c.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_INTRANS
    with pool.connection() as c:
        assert c.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE


def test_lifo_reuse_of_the_warmest(pool: ConnectionPool) -> None:
    a = pool.getconn()
    b = pool.getconn()
    pool.putconn(a)
    pool.putconn(b)
    assert pool.getconn() is b


def test_open_transaction_rolled_back_on_putconn(pool: ConnectionPool, caplog: Any) -> None:
    c = pool.getconn()
    c.cursor().execute("set local statement_timeout = 1234")
    with caplog.at_level(logging.WARNING, logger="psycogreen.pool"):
        pool.putconn(c)
    assert "rolling back" in caplog.text
    with pool.connection() as c2:
        assert c2 is c
        cur = c2.cursor()
        cur.execute("show statement_timeout")
        assert cur.fetchone()[0] == "0"


def test_closed_connection_is_replaced(pool: ConnectionPool) -> None:
    c = pool.getconn()
    c.close()
    pool.putconn(c)
    assert pool.get_stats()["returns_bad"] == 1
    with pool.connection() as c2:
        assert not c2.closed


def test_putconn_foreign_connection(pool: ConnectionPool, dsn: str) -> None:
    other = psycopg2.connect(dsn)
    try:
        with pytest.raises(ValueError, match="does not belong"):
            pool.putconn(other)
    finally:
        other.close()


def test_putconn_twice_is_refused(pool: ConnectionPool) -> None:
    c = pool.getconn()
    pool.putconn(c)
    with pytest.raises(ValueError, match="already returned"):
        pool.putconn(c)
    a, b = pool.getconn(), pool.getconn()
    assert a is not b
    pool.putconn(a)
    pool.putconn(b)


def test_stats_repr_and_pop(pool: ConnectionPool) -> None:
    with pool.connection():
        r = repr(pool)
        assert "'t' open" in r and "in_use=1" in r and "min=2 max=3" in r
    s = pool.pop_stats()
    assert s["requests_num"] == 1 and s["connections_num"] == 2
    assert s["pool_min"] == 2 and s["pool_max"] == 3 and s["pool_size"] == 2 and s["pool_available"] == 2
    s2 = pool.get_stats()
    assert "requests_num" not in s2 and s2["pool_size"] == 2


def test_closeall_alias_and_closed_pool(dsn: str, threads_patched: str) -> None:
    p = ConnectionPool(dsn, min_size=1)
    p.wait(10)
    p.closeall()
    assert p.closed
    with pytest.raises(PoolClosed, match="is closed"):
        p.getconn()
    with pytest.raises(PoolClosed, match="cannot be reopened"):
        p.open()


def test_not_opened(dsn: str, threads_patched: str) -> None:
    p = ConnectionPool(dsn, open=False)
    with pytest.raises(PoolClosed, match="not open yet"):
        p.getconn()
    with p:
        with p.connection() as c:
            assert not c.closed
    assert p.closed


def test_discard_all_reset(dsn: str, threads_patched: str) -> None:
    with ConnectionPool(dsn, min_size=1, reset=ConnectionPool.discard_all) as p:
        with p.connection() as c:
            c.autocommit = True
            c.cursor().execute("set search_path = nowhere")
            c.cursor().execute("create temp table leak (x int)")
            c.autocommit = False
        with p.connection() as c:
            cur = c.cursor()
            cur.execute("show search_path")
            assert cur.fetchone()[0] == '"$user", public'
            cur.execute("select count(*) from pg_class where relname = 'leak'")
            assert cur.fetchone()[0] == 0


def test_configure_and_check_callbacks(dsn: str, threads_patched: str) -> None:
    checked: list[Any] = []

    def configure(conn: Any) -> None:
        conn.autocommit = True
        conn.cursor().execute("set application_name = 'configured'")

    with ConnectionPool(dsn, min_size=1, configure=configure, check=checked.append) as p:
        p.wait(10)
        p.check()
        assert len(checked) == 1
        with p.connection() as c:
            cur = c.cursor()
            cur.execute("show application_name")
            assert cur.fetchone()[0] == "configured"


def test_null_pool_caps_and_does_not_reuse(dsn: str, threads_patched: str) -> None:
    with NullConnectionPool(dsn, max_size=2) as p:
        a = p.getconn()
        pid = a.info.backend_pid
        p.putconn(a)
        assert a.closed
        with p.connection() as b:
            assert b.info.backend_pid != pid
        held = [p.getconn(), p.getconn()]
        with pytest.raises(PoolTimeout):
            p.getconn(timeout=0.3)
        for c in held:
            p.putconn(c)


def test_threads_contend_without_leaks(pool: ConnectionPool) -> None:
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                with pool.connection() as c:
                    c.cursor().execute("select 1")
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=work) for _ in range(12)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert not errors
    s = pool.get_stats()
    assert s["pool_size"] <= 3 and s["pool_available"] == s["pool_size"]


def test_reconnect_failed_called_and_no_password_logged(threads_patched: str, caplog: Any) -> None:
    with socket.socket() as s:  # a loopback port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    called = threading.Event()
    dsn = f"host=127.0.0.1 port={port} user=u password=hunter2 dbname=x connect_timeout=2"
    with caplog.at_level(logging.INFO, logger="psycogreen.pool"):
        p = ConnectionPool(dsn, min_size=1, reconnect_timeout=0.5, reconnect_failed=lambda _: called.set())
        try:
            assert called.wait(10)
            with pytest.raises(PoolTimeout, match=r"after 0.20 sec"):
                p.getconn(timeout=0.2)
        finally:
            p.close()
    assert "hunter2" not in caplog.text and f"port={port}" in caplog.text
    assert "hunter2" not in safe_conninfo(dsn)


def test_wait_timeout_closes_the_pool(threads_patched: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = ConnectionPool(f"host=127.0.0.1 port={port} dbname=x", min_size=1)
    with pytest.raises(PoolTimeout, match="initialization incomplete"):
        p.wait(0.5)
    assert p.closed


def _workers() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "psycogreen-worker")


def test_pool_is_collected_and_workers_end(dsn: str, threads_patched: str) -> None:
    baseline = _workers()
    p = ConnectionPool(dsn, min_size=2, max_idle=0.2)
    p.wait(10)
    ref = weakref.ref(p)
    conns = list(p._owned.values())
    del p
    gc.collect()
    assert ref() is None
    for m in conns:
        m.conn.close()
    wait_until(lambda: _workers() <= baseline, what="the pool's workers to end")


def test_invalid_sizes() -> None:
    with pytest.raises(ValueError):
        ConnectionPool("", min_size=5, max_size=2, open=False)


def test_discard_all_keeps_what_configure_set_in_autocommit(dsn: str, threads_patched: str) -> None:
    # In autocommit psycopg2 sets read-only/isolation as server session defaults, which DISCARD ALL
    # clears while psycopg2 still believes them: the pool applies them again.
    def configure(conn: Any) -> None:
        conn.autocommit = True
        conn.readonly = True
        conn.isolation_level = psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ

    reset = ConnectionPool.discard_all
    with ConnectionPool(dsn, min_size=1, max_size=1, configure=configure, reset=reset) as p:
        for _ in range(2):
            with p.connection() as c:
                cur = c.cursor()
                cur.execute("show default_transaction_read_only")
                assert cur.fetchone()[0] == "on"
                cur.execute("show default_transaction_isolation")
                assert cur.fetchone()[0] == "repeatable read"
