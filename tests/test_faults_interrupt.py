"""Issue 9 items 3 and 4: no frozen process, deadlines that hold on a dead network, messages that say
what happened, connect errors worded like blocking psycopg2's.

gevent/eventlet/threads scenarios run in subprocesses (tests/scripts/faults_interrupt.py); asyncio,
uvloop and trio run in-process through psycogreen.aio. Before these changes: close() from another
greenlet froze the whole process; timeout(1) on a stalled network returned after 6 s, and never with
the thread cancel fallback; connect errors lacked libpq's ``connection to server at …`` prefix.
"""

from __future__ import annotations

import time
from typing import Any, AsyncIterator, Callable, Iterator, Optional

import anyio
import psycopg2
import pytest
from ticker import AsyncTicker
from until import await_until, wait_until

import psycogreen
import psycogreen.aio as aio
from psycogreen import _deadline, _guard, _libpq
from psycogreen.errors import QueryTimeout
from psycogreen.testing import FaultProxy

ALL = ["gevent", "eventlet", "threads"]
CANCEL_PATHS = {"nonblocking": {}, "thread": {"PSYCOGREEN_CANCEL": "thread"}}
#: The promise: a timed-out call returns within its deadline plus the 1 s default cancel grace. The
#: slack on top is for a loaded CI machine; before the fix the figures were 6 s and "never".
DEADLINE, GRACE, SLACK = 1.0, 1.0, 2.0


def _port(dsn: str) -> int:
    return int(dsn.split("port=")[1].split()[0])


# -- close() from another greenlet/thread ---------------------------------------------------------


@pytest.mark.parametrize("cancel_path", list(CANCEL_PATHS))
@pytest.mark.parametrize("framework", ALL)
def test_close_from_another_greenlet_cancels_and_closes(
    run_script: Callable[..., Any], framework: str, cancel_path: str
) -> None:
    out = run_script(
        "faults_interrupt.py", framework, "close_other", env=CANCEL_PATHS[cancel_path], timeout=60
    )
    assert out["in_use_by_other"]
    assert out["exc"] == "OperationalError" and out["is_operational"], out
    assert "closed by" in out["msg"] and "cancelled on the server" in out["msg"], out["msg"]
    assert out["returned_after"] < 5.0  # the owner's 30 s statement was not waited for
    assert out["close_took"] < 5.0
    assert out["closed"]
    assert out["busy_backend"] == 0  # the backend is gone or idle
    assert out["after"].startswith("connection already closed")
    if framework != "threads":
        assert out["max_gap"] < 0.5  # the hub kept running: no frozen process


@pytest.mark.parametrize("cancel_path", list(CANCEL_PATHS))
@pytest.mark.parametrize("framework", ALL)
def test_close_from_another_greenlet_on_a_dead_network(
    run_script: Callable[..., Any], framework: str, cancel_path: str
) -> None:
    out = run_script(
        "faults_interrupt.py", framework, "close_other_dead", env=CANCEL_PATHS[cancel_path], timeout=60
    )
    assert out["exc"] == "OperationalError", out
    assert "closed by" in out["msg"] and "did not confirm the cancel" in out["msg"], out["msg"]
    assert out["close_took"] < GRACE + SLACK
    assert out["returned_after"] < GRACE + SLACK + 1.0
    assert out["closed"]
    if framework != "threads":
        assert out["max_gap"] < 0.5


@pytest.mark.parametrize("framework", ALL)
def test_close_under_a_notifies_loop(run_script: Callable[..., Any], framework: str) -> None:
    out = run_script("faults_interrupt.py", framework, "close_listener", timeout=60)
    assert out["exc"] == "OperationalError", out
    assert "closed by" in out["msg"] and "no statement was running" in out["msg"], out["msg"]
    assert out["close_took"] < GRACE  # nothing to cancel: no grace waited
    assert out["returned_after"] < 25  # not the 30 s notifies() timeout
    assert out["closed"]
    if framework != "threads":
        assert out["max_gap"] < 0.5


@pytest.mark.parametrize("framework", ["gevent", "eventlet"])
def test_session_setters_from_another_greenlet_raise(run_script: Callable[..., Any], framework: str) -> None:
    out = run_script("faults_interrupt.py", framework, "setters", timeout=60)
    for name, refused in out["refused"].items():
        assert refused is not None, name
        assert refused["after"] < 0.5 and "already in use" in refused["msg"], (name, refused)
    reads = out["reads"]
    assert reads["still_running"]  # all of it happened while the owner was inside its call
    assert reads["closed"] == 0 and reads["transaction_status"] == 1  # ACTIVE
    assert reads["in_use_by_other"] and not out["in_use_after"]
    for name in ("fileno", "backend_pid", "parameter_status", "server_version", "notifies"):
        assert reads[name], name
    assert out["owner"]["exc"] is None  # the owner's statement was unharmed
    assert out["max_gap"] < 0.5
    assert out["autocommit"] is True


# -- dead network --------------------------------------------------------------------------------


@pytest.mark.parametrize("cancel_path", list(CANCEL_PATHS))
@pytest.mark.parametrize("framework", ALL)
def test_dead_network_timeout_returns_within_deadline_plus_grace(
    run_script: Callable[..., Any], framework: str, cancel_path: str
) -> None:
    out = run_script(
        "faults_interrupt.py", framework, "dead_network", env=CANCEL_PATHS[cancel_path], timeout=60
    )
    assert out["exc"] == "QueryTimeout"
    assert DEADLINE <= out["elapsed"] < DEADLINE + GRACE + SLACK, out["elapsed"]
    assert out["closed"]
    assert "did not confirm the cancel" in out["msg"] and "connection was closed" in out["msg"], out["msg"]
    assert "still usable" not in out["msg"]
    # conn.cancel() on the dead network returns with an error instead of blocking
    assert out["cancel_exc"] and "no answer" in out["cancel_exc"]
    assert out["cancel_took"] < GRACE + SLACK
    if framework != "threads":
        assert out["max_gap"] < 0.5


def test_cancel_grace_is_configurable_in_one_place(run_script: Callable[..., Any]) -> None:
    out = run_script(
        "faults_interrupt.py", "threads", "dead_network", env={"PSYCOGREEN_CANCEL_GRACE": "2.5"}, timeout=60
    )
    assert DEADLINE + 2.5 <= out["elapsed"] < DEADLINE + 2.5 + SLACK
    assert "within 2.5 s" in out["msg"]


def test_set_cancel_grace_validates() -> None:
    assert psycogreen.set_cancel_grace is _deadline.set_cancel_grace
    previous = psycogreen.set_cancel_grace(3)
    try:
        assert _deadline.cancel_grace() == 3.0
        for bad in (0, -1, float("nan"), float("inf")):
            with pytest.raises(ValueError):
                _deadline.set_cancel_grace(bad)
    finally:
        _deadline.set_cancel_grace(previous)


# -- messages ------------------------------------------------------------------------------------


@pytest.mark.parametrize("framework", ALL)
def test_timeout_messages_say_what_happened(run_script: Callable[..., Any], framework: str) -> None:
    out = run_script("faults_interrupt.py", framework, "messages", timeout=60)
    cancelled = out["cancelled"]
    assert not cancelled["closed"]
    assert "cancelled on the server" in cancelled["msg"] and "still usable" in cancelled["msg"]
    connect = out["connect"]["msg"]
    assert connect.startswith('connection to server at "127.0.0.1", port ')
    assert "connect timed out" in connect and "0.3 s" in connect
    assert "cancelled" not in connect and "usable" not in connect


@pytest.fixture
def password_dsn(dsn: str) -> Iterator[Optional[str]]:
    """A role that must give a password (scram) on TCP, and a DSN with the wrong one; None when the
    server's pg_hba.conf cannot be edited from here."""
    admin = psycopg2.connect(dsn)
    admin.autocommit = True
    cur = admin.cursor()
    cur.execute("show hba_file")
    row = cur.fetchone()
    assert row is not None
    hba = row[0]
    try:
        with open(hba) as f:
            original = f.read()
        with open(hba, "w") as f:
            f.write("host all psycogreen_pw 127.0.0.1/32 scram-sha-256\n" + original)
    except OSError:
        admin.close()
        yield None
        return
    try:
        cur.execute("drop role if exists psycogreen_pw")
        cur.execute("set password_encryption = 'scram-sha-256'")
        cur.execute("create role psycogreen_pw login password 'psycogreen-right-one'")
        cur.execute("select pg_reload_conf()")
        wrong = f"host=127.0.0.1 port={_port(dsn)} user=psycogreen_pw password=wrong-one dbname=postgres"

        def rejected() -> bool:
            try:
                psycopg2.connect(wrong).close()
            except psycopg2.OperationalError as e:
                return "password authentication failed" in str(e)
            return False

        # the postmaster reloads pg_hba.conf asynchronously
        wait_until(rejected, interval=0.05, what="the pg_hba.conf reload")
        yield wrong
    finally:
        with open(hba, "w") as f:
            f.write(original)
        cur.execute("select pg_reload_conf()")
        cur.execute("drop role if exists psycogreen_pw")
        admin.close()


@pytest.mark.parametrize("framework", ALL)
def test_connect_errors_read_like_blocking_psycopg2(
    run_script: Callable[..., Any], framework: str, password_dsn: Optional[str]
) -> None:
    env = {"PSYCOGREEN_PW_DSN": password_dsn} if password_dsn else {}
    out = run_script("faults_interrupt.py", framework, "connect_parity", env=env, timeout=90)
    green, blocking = out["green"], out["blocking"]
    expected = {
        "refused",
        "timeout",
        "unknown_database",
        "unknown_database_socket",
        "unknown_database_name",
        "socket_missing",
        "unresolvable",
    }
    if password_dsn:
        expected |= {"bad_password", "bad_password_timeout"}
    assert expected <= set(green)
    for case in green:
        assert green[case] == blocking[case], (case, green[case], blocking[case])
        assert green[case].startswith("OperationalError: "), (case, green[case])
    for case in expected - {"unresolvable"}:
        assert green[case].startswith("OperationalError: connection to server "), (case, green[case])
    if password_dsn:
        assert "password authentication failed" in green["bad_password"]
        assert "wrong-one" not in green["bad_password"]


# -- asyncio, uvloop, trio ------------------------------------------------------------------------


@pytest.fixture
def _unpatched() -> Iterator[None]:
    yield
    psycogreen.unpatch()


@pytest.fixture(params=list(CANCEL_PATHS))
def cancel_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "thread":
        monkeypatch.setattr(_libpq, "HAS_NONBLOCKING_CANCEL", False)
    return str(request.param)


@pytest.fixture
async def amonitor(dsn: str, _unpatched: None) -> AsyncIterator[aio.AsyncConnection]:
    conn = await aio.connect(dsn)
    conn.autocommit = True
    try:
        yield conn
    finally:
        await conn.close()


async def _busy(monitor: aio.AsyncConnection, pid: int) -> bool:
    cur = monitor.cursor()
    await cur.execute("select count(*) from pg_stat_activity where pid = %s and state = 'active'", (pid,))
    row = await cur.fetchone()
    return bool(row and row[0])


async def _close_under_owner(conn: aio.AsyncConnection, sql: str, ready: Callable[[], Any]) -> dict[str, Any]:
    """Run ``sql`` in one task, close ``conn`` from another once ``await ready()`` holds."""
    seen: dict[str, Any] = {}
    ticker = AsyncTicker()

    async def owner() -> None:
        t0 = time.monotonic()
        try:
            await conn.cursor().execute(sql)
        except psycopg2.Error as e:
            seen["error"] = e
        seen["returned_after"] = time.monotonic() - t0

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker.run)
            tg.start_soon(owner)
            await await_until(ready, what="the owner's statement to be under way")
            t0 = time.monotonic()
            await conn.close()
            seen["close_took"] = time.monotonic() - t0
            await await_until(lambda: "returned_after" in seen, what="the owner to return")
            ticker.running = False
    seen["max_gap"] = ticker.max_gap
    return seen


@pytest.mark.anyio
async def test_aio_close_from_another_task(dsn: str, amonitor: aio.AsyncConnection, cancel_path: str) -> None:
    conn = await aio.connect(dsn)
    pid = conn.get_backend_pid()
    seen = await _close_under_owner(conn, "select pg_sleep(30)", lambda: _busy(amonitor, pid))
    error = seen["error"]
    assert isinstance(error, psycopg2.OperationalError), repr(error)
    assert "closed by" in str(error) and "cancelled on the server" in str(error)
    assert seen["returned_after"] < 5.0 and seen["close_took"] < 5.0
    assert conn.closed
    assert seen["max_gap"] < 0.5
    await await_until(lambda: _idle(amonitor, pid), what=f"backend {pid} to stop running")


async def _idle(monitor: aio.AsyncConnection, pid: int) -> bool:
    return not await _busy(monitor, pid)


@pytest.mark.anyio
async def test_aio_close_from_another_task_on_a_dead_network(
    dsn: str, _unpatched: None, cancel_path: str
) -> None:
    with FaultProxy(_port(dsn)) as proxy:
        conn = await aio.connect(proxy.dsn(), connect_timeout=5)
        conn.autocommit = True
        await conn.cursor().execute("select 1")

        async def stalled() -> bool:
            if not _guard.in_use(conn.raw):
                return False
            proxy.stall()
            return True

        seen = await _close_under_owner(conn, "select pg_sleep(30)", stalled)
    error = seen["error"]
    assert isinstance(error, psycopg2.OperationalError), repr(error)
    assert "closed by" in str(error) and "did not confirm the cancel" in str(error)
    assert seen["close_took"] < GRACE + SLACK
    assert conn.closed
    assert seen["max_gap"] < 0.5


@pytest.mark.anyio
async def test_aio_dead_network_timeout(dsn: str, _unpatched: None, cancel_path: str) -> None:
    with FaultProxy(_port(dsn)) as proxy:
        conn = await aio.connect(proxy.dsn(), connect_timeout=5)
        conn.autocommit = True
        cur = conn.cursor()
        await cur.execute("select 1")
        proxy.stall()
        ticker = AsyncTicker()
        t0 = time.monotonic()
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(ticker.run)
                with pytest.raises(QueryTimeout) as info:
                    with psycogreen.timeout(DEADLINE):
                        await cur.execute("select 1")
                ticker.running = False
        elapsed = time.monotonic() - t0
    assert DEADLINE <= elapsed < DEADLINE + GRACE + SLACK, elapsed
    assert conn.closed
    assert "did not confirm the cancel" in str(info.value) and "still usable" not in str(info.value)
    assert ticker.max_gap < 0.5
