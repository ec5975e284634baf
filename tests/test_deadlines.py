"""Issue 3: connect deadlines, timeout(), interrupts that cancel on the server and keep the connection,
non-blocking cancel, concurrent-use errors, dead networks — under gevent, eventlet and threads, on
libpq 17's non-blocking cancel and on the thread-pool fallback."""

from __future__ import annotations

from typing import Any, Callable

import pytest

GREEN = ["gevent", "eventlet"]
ALL = ["gevent", "eventlet", "threads"]
CANCEL_PATHS = {"nonblocking": {}, "thread": {"PSYCOGREEN_CANCEL": "thread"}}


@pytest.mark.parametrize("cancel_path", list(CANCEL_PATHS))
@pytest.mark.parametrize("framework", ALL)
def test_interrupts_cancel_on_server_and_keep_connection(
    run_script: Callable[..., Any], framework: str, cancel_path: str
) -> None:
    out = run_script("deadlines.py", framework, "kinds", env=CANCEL_PATHS[cancel_path])
    expected = {
        "deadline": "QueryTimeout",
        "timeout": "Timeout",
        "kill": "GreenletExit",
        "keyboard": "KeyboardInterrupt",
        "sigint": "KeyboardInterrupt",
    }
    assert set(out) >= ({"deadline", "timeout", "kill", "keyboard"} if framework != "threads" else {"sigint"})
    for kind, r in out.items():
        assert r["exc"] == expected[kind], (kind, r)
        assert r["raised_after"] < 3.0, (kind, r)  # the 5 s query was not waited for
        assert r["gone_after"] < 1.0, (kind, r)  # and is gone from the server
        assert not r["closed"], (kind, r)
        assert r["usable"], (kind, r)
        if r["max_gap"] is not None:
            assert r["max_gap"] < 0.2, (kind, r)  # the hub never froze during the cancel


@pytest.mark.parametrize("framework", ALL)
def test_user_cancel_does_not_block(run_script: Callable[..., Any], framework: str) -> None:
    out = run_script("deadlines.py", framework, "user_cancel")
    assert out["exc"] == "QueryCanceledError"
    assert out["gone_after"] < 1.0
    assert out["usable"]
    if out["max_gap"] is not None:
        assert out["max_gap"] < 0.2


@pytest.mark.parametrize("framework", ["gevent", "threads"])
def test_timeout_nesting_and_shared_deadline(run_script: Callable[..., Any], framework: str) -> None:
    out = run_script("deadlines.py", framework, "nesting")
    name, is_qce, msg = out["inner"]
    assert name == "QueryTimeout" and is_qce
    assert "0.2 s" in msg and "cancelled on the server" in msg
    assert out["inner_t"] < 2.0  # tightest (inner) wins
    assert out["outer_t"] < 2.0  # tightest (outer) wins
    assert out["in_tx_status"] == 3  # INERROR: needs rollback, like statement_timeout
    assert 3 <= out["shared_n"] <= 5 and out["shared_t"] < 2.0
    assert out["usable"]


@pytest.mark.parametrize("framework", ALL)
def test_connect_timeout_failover_and_resolution(run_script: Callable[..., Any], framework: str) -> None:
    out = run_script("deadlines.py", framework, "connect")
    single = out["single"]
    assert 0.8 < single["elapsed"] < 2.5, single
    assert single["type"] == "OperationalError"
    assert single["msg"] == out["blocking_msg"], (single["msg"], out["blocking_msg"])
    assert "timeout expired" in single["msg"]
    assert 0.8 < out["env"]["elapsed"] < 2.5
    assert out["failover"]["usable"] and 0.8 < out["failover"]["elapsed"] < 3.0
    assert out["all_dead"]["msg"].count("timeout expired") == 2
    assert out["resolved"] == {"host": "localhost", "dsn_has_hostaddr": True, "usable": True}
    assert out["timeout_block"]["elapsed"] < 2.0
    if framework != "threads":
        assert out["max_gap"] < 0.2


@pytest.mark.parametrize("framework", GREEN)
def test_interrupt_while_connecting_leaks_nothing(run_script: Callable[..., Any], framework: str) -> None:
    out = run_script("deadlines.py", framework, "interrupt_connect")
    assert out["results"] == ["Timeout"] * 5
    assert out["fd_delta"] <= 0


@pytest.mark.parametrize("framework", GREEN)
def test_interrupt_during_commit_and_named_fetch(run_script: Callable[..., Any], framework: str) -> None:
    out = run_script("deadlines.py", framework, "commit_and_fetch")
    assert out["commit_exc"] == "Timeout" and out["commit_raised_after"] < 2.0
    assert out["commit_gone_after"] < 1.0
    assert out["commit_usable"]
    assert out["committed_rows"] == 0  # an interrupted commit commits nothing
    assert out["fetch_exc"] == "Timeout" and out["fetch_raised_after"] < 5.0
    assert out["fetch_gone_after"] < 1.0
    assert out["fetch_usable"]


@pytest.mark.parametrize("framework", GREEN)
def test_thousand_random_interrupts(run_script: Callable[..., Any], framework: str) -> None:
    out = run_script("deadlines.py", framework, "storm")
    assert out["interrupted"] + out["completed"] == 1000
    assert out["interrupted"] > 100
    assert out["usable"] == out["workers"]  # every connection survived
    assert out["backends"] == out["workers"]  # no leaked backend
    assert out["active"] == 0  # no query left running
    assert out["idle_in_tx"] == 0


@pytest.mark.parametrize("framework", GREEN)
def test_concurrent_use_is_refused_at_once(run_script: Callable[..., Any], framework: str) -> None:
    out = run_script("deadlines.py", framework, "concurrent")
    assert out["second"]["type"] == "ConcurrentUseError" and out["second"]["is_prog"]
    assert "already in use by" in out["second"]["msg"] and "pool" in out["second"]["msg"]
    assert out["refused_after"] < 0.5  # refused at once, not after the first caller's 2 s query
    assert out["commit_refused"]
    assert out["first_row"] == 7  # the first caller's query was unharmed
    assert out["usable"]


@pytest.mark.parametrize("framework", ALL)
def test_dead_network_returns_within_deadline(run_script: Callable[..., Any], framework: str) -> None:
    out = run_script("deadlines.py", framework, "dead_network", env={"PSYCOGREEN_CANCEL_GRACE": "1"})
    assert out["exc"] == "QueryTimeout"
    # deadline 0.5 s + cancel grace 1 s, generous margin
    assert out["elapsed"] < 4.0
    assert out["closed"]  # an unreachable server cannot confirm the cancel: the connection is closed
    if framework != "threads":
        assert out["max_gap"] < 0.2
