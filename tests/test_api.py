"""Public API: patch/unpatch/patched, the 1.0.2 drop-in names, errors, and green-mode semantics
that must match blocking psycopg2 exactly (run in-process with the threads waiter)."""

from __future__ import annotations

from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions as ext
import psycopg2.extras
import pytest

import psycogreen
import psycogreen.eventlet
import psycogreen.gevent
from psycogreen import errors


def test_version_and_surface() -> None:
    assert psycogreen.__version__ == "2.0.0.dev0"
    for name in psycogreen.__all__:
        assert hasattr(psycogreen, name), name
    assert callable(psycogreen.gevent.patch_psycopg)
    assert callable(psycogreen.gevent.gevent_wait_callback)
    assert callable(psycogreen.eventlet.patch_psycopg)
    assert callable(psycogreen.eventlet.eventlet_wait_callback)


def test_error_hierarchy() -> None:
    assert issubclass(errors.QueryTimeout, ext.QueryCanceledError)
    assert issubclass(errors.ConcurrentUseError, psycopg2.ProgrammingError)
    for e in (errors.PoolTimeout, errors.PoolClosed, errors.TooManyRequests):
        assert issubclass(e, psycopg2.OperationalError)


def test_patch_is_idempotent_and_unpatch_restores() -> None:
    original = psycopg2._connect
    assert psycogreen.patched() is None
    try:
        assert psycogreen.patch("threads") == "threads"
        assert psycogreen.patch("threads") == "threads"
        assert psycogreen.patched() == "threads"
        assert ext.get_wait_callback() is not None
    finally:
        psycogreen.unpatch()
    psycogreen.unpatch()
    assert psycogreen.patched() is None
    assert ext.get_wait_callback() is None
    assert psycopg2._connect is original


def test_patch_detects_threads_without_monkey_patching() -> None:
    try:
        assert psycogreen.patch() == "threads"
    finally:
        psycogreen.unpatch()


def test_timeout_without_patch_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    from psycogreen import _deadline

    monkeypatch.setattr(_deadline, "_warned", False)
    with pytest.warns(RuntimeWarning, match=r"call psycogreen.patch\(\) first"):
        with psycogreen.timeout(1):
            pass
    with pytest.raises(ValueError, match="seconds >= 0"):
        with psycogreen.timeout(-1):
            pass


def test_unknown_framework_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown framework 'twisted'"):
        psycogreen.patch("twisted")
    assert psycogreen.patched() is None


def test_missing_framework_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "gevent", None)  # makes `import gevent` fail
    with pytest.raises(ImportError, match=r"pip install 'psycogreen\[gevent\]'"):
        psycogreen.patch("gevent")
    assert psycogreen.patched() is None


def test_patch_psycopg_requires_wait_callback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(ext, "set_wait_callback")
    with pytest.raises(ImportError, match="psycopg2"):
        psycogreen.gevent.patch_psycopg()
    with pytest.raises(ImportError, match="psycopg2"):
        psycogreen.eventlet.patch_psycopg()


def test_green_query_roundtrip(threads_patched: str, dsn: str) -> None:
    conn = psycopg2.connect(dsn)
    try:
        assert isinstance(conn, ext.connection)
        cur = conn.cursor()
        cur.execute("select %s::int + 1, %s", (41, "x"))
        assert cur.fetchone() == (42, "x")
        conn.commit()
    finally:
        conn.close()


def test_server_error_matches_blocking(threads_patched: str, dsn: str) -> None:
    def failing(c: Any) -> BaseException:
        cur = c.cursor()
        with pytest.raises(psycopg2.Error) as info:
            cur.execute("select 1/0")
        return info.value

    green = psycopg2.connect(dsn)
    green_exc = failing(green)
    psycogreen.unpatch()
    blocking = psycopg2.connect(dsn)
    blocking_exc = failing(blocking)
    assert type(green_exc) is type(blocking_exc) is psycopg2.errors.DivisionByZero
    assert str(green_exc) == str(blocking_exc)
    assert green_exc.pgcode == blocking_exc.pgcode
    # the connection is usable after rollback, as in blocking mode
    green.rollback()
    cur = green.cursor()
    cur.execute("select 1")
    assert cur.fetchone() == (1,)
    green.close()
    blocking.close()


def test_user_factories_are_kept(threads_patched: str, dsn: str) -> None:
    conn = psycopg2.connect(dsn, connection_factory=psycopg2.extras.DictConnection)
    try:
        assert isinstance(conn, psycopg2.extras.DictConnection)
        cur = conn.cursor()
        assert isinstance(cur, psycopg2.extras.DictCursor)
        cur.execute("select 1 as a")
        assert cur.fetchone()["a"] == 1
        rcur = conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor)
        assert isinstance(rcur, psycopg2.extras.RealDictCursor)
        rcur.execute("select 2 as b")
        assert rcur.fetchone() == {"b": 2}
    finally:
        conn.close()
    conn = psycopg2.connect(dsn, cursor_factory=psycopg2.extras.NamedTupleCursor)
    try:
        cur = conn.cursor()
        assert isinstance(cur, psycopg2.extras.NamedTupleCursor)
        cur.execute("select 3 as c")
        assert cur.fetchone().c == 3
    finally:
        conn.close()


def test_named_cursor_and_transactions(threads_patched: str, dsn: str) -> None:
    conn = psycopg2.connect(dsn)
    try:
        with conn:
            cur = conn.cursor()
            cur.execute("create temp table t (x int)")
            cur.executemany("insert into t values (%s)", [(i,) for i in range(100)])
        named = conn.cursor("named")
        named.itersize = 7
        named.execute("select x from t order by x")
        assert named.fetchone() == (0,)
        assert len(named.fetchmany(5)) == 5
        rest = [r[0] for r in named]
        assert rest == list(range(6, 100))
        named.close()
        conn.rollback()
        with pytest.raises(psycopg2.errors.UndefinedTable):
            with conn:
                conn.cursor().execute("select * from nonexistent")
        assert conn.get_transaction_status() == ext.TRANSACTION_STATUS_IDLE
    finally:
        conn.close()


def test_closed_connection_errors(threads_patched: str, dsn: str) -> None:
    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    conn.close()
    with pytest.raises(psycopg2.InterfaceError):
        cur.execute("select 1")
    with pytest.raises(psycopg2.InterfaceError):
        conn.cursor()
    with pytest.raises(psycopg2.InterfaceError):
        conn.cancel()


def test_unpatch_then_blocking_use(dsn: str) -> None:
    psycogreen.patch("threads")
    green = psycopg2.connect(dsn)
    psycogreen.unpatch()
    plain = psycopg2.connect(dsn)
    assert type(plain) is ext.connection
    for c in (green, plain):
        cur = c.cursor()
        cur.execute("select 1")
        assert cur.fetchone() == (1,)
        c.close()


def test_wrong_framework_is_a_clear_error(run_script: Any) -> None:
    out = run_script("wrong_framework.py", "eventlet")
    assert "monkey-patched by eventlet" in out["error"]
