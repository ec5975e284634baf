"""The pool under gevent, eventlet and threads: each scenario runs in a subprocess
(tests/scripts/pool_scenarios.py, pool_restart.py, pool_kills.py, pool_fork.py) because
monkey-patching is process-wide."""

from __future__ import annotations

from typing import Any, Callable

import pytest

FRAMEWORKS = ["gevent", "eventlet", "threads"]
RunScript = Callable[..., Any]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_exhaustion_times_out_on_time_and_cooperatively(run_script: RunScript, framework: str) -> None:
    out = run_script("pool_scenarios.py", framework, "exhaustion")
    assert out["error"].startswith("couldn't get a connection after 0.50 sec"), out
    assert 0.4 < out["elapsed"] < 3.0, out
    assert out["max_gap"] < 0.5, out  # waiting parked the client, not the hub
    assert out["stats"]["requests_errors"] == 1, out


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_waiters_are_served_in_arrival_order(run_script: RunScript, framework: str) -> None:
    out = run_script("pool_scenarios.py", framework, "fifo")
    assert out["order"] == out["arrived"] and sorted(out["order"]) == list(range(12)), out


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_storm_of_kills_and_timeouts_leaks_nothing(run_script: RunScript, framework: str) -> None:
    out = run_script("pool_scenarios.py", framework, "storm")
    assert out["errors"] == [], out
    assert out["in_use"] == 0, out
    backends = out["backends"]
    assert sum(backends.values()) <= out["max_size"], out
    assert set(backends) <= {"idle"}, out  # none active, none idle in transaction
    assert out["stats"]["pool_size"] <= out["max_size"], out
    assert out["outcomes"].get("ok", 0) > 0, out
    if framework != "threads":
        assert out["outcomes"].get("killed_by_timeout", 0) > 0, out
        assert out["max_gap"] < 0.5, out


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_terminated_backends_are_never_handed_out(run_script: RunScript, framework: str) -> None:
    out = run_script("pool_scenarios.py", framework, "terminate")
    assert out["failures"] == [], out
    assert out["before"] == 4 and out["overlap"] == 0 and out["after"] == 4, out
    assert out["stats"]["connections_lost"] >= 1, out


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_server_restart_under_load_recovers(run_script: RunScript, framework: str) -> None:
    out = run_script("pool_restart.py", framework)
    assert out["hung"] == 0, out
    assert out["ok_before"] > 0 and out["ok_after"] > 0, out
    assert out["backends"] <= 6, out
    assert out["reconnect_failed"] == 0, out


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_lifetime_and_idle_recycling(run_script: RunScript, framework: str) -> None:
    out = run_script("pool_scenarios.py", framework, "recycle")
    assert out["grown"] == 6, out
    assert out["shrunk"], out  # back to min_size after max_idle
    assert out["replaced"], out  # past max_lifetime: new backends
    assert out["size"] >= 1, out


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_resize(run_script: RunScript, framework: str) -> None:
    out = run_script("pool_scenarios.py", framework, "resize")
    assert out["grew"] and out["at_max"] == 8 and out["shrank"], out
    assert "min=1 max=1" in out["repr"], out


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_close_with_connections_checked_out(run_script: RunScript, framework: str) -> None:
    out = run_script("pool_scenarios.py", framework, "close_out")
    assert out["waiter"].startswith("PoolClosed"), out
    assert out["close_s"] < 2.0, out
    assert out["still_usable"] == 42, out
    assert out["closed_on_return"], out
    assert "is closed" in out["after"], out
    assert " closed " in out["repr"], out


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_max_waiting(run_script: RunScript, framework: str) -> None:
    out = run_script("pool_scenarios.py", framework, "max_waiting")
    assert "max_waiting=2" in out["error"], out
    assert out["elapsed"] < 0.5, out
    assert out["got"] == ["ok", "ok"], out


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_terminated_fresh_connections_are_never_handed_out(run_script: RunScript, framework: str) -> None:
    # Backends killed right after their connections were returned (< 0.1 s: main skipped the look).
    out = run_script("pool_kills.py", framework, "4")
    assert out["kills"] == 24 and out["checkouts"] == 480, out
    assert out["broken"] == 0, out
    assert out["connections_lost"] == out["kills"], out


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_putconn_of_a_busy_connection_raises(run_script: RunScript, framework: str) -> None:
    out = run_script("pool_scenarios.py", framework, "busy_putconn")
    assert out["error"] and "is in use by" in out["error"] and "stays checked out" in out["error"], out
    assert out["elapsed"] < 0.5 and out["max_gap"] < 0.5, out  # no freeze
    assert out["in_use_after_error"] == 1, out
    assert out["same"], out  # returned later by its owner, handed out again
    assert out["stats"]["pool_size"] == 1 and "returns_bad" not in out["stats"], out


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_check_callback_raising_anything_rejects(run_script: RunScript, framework: str) -> None:
    out = run_script("pool_scenarios.py", framework, "check_raises")
    assert out["got"] == 1 and out["calls"] == 2, out
    assert out["stats"]["connections_lost"] == 1, out


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_borrowers_settings_never_reach_the_next_borrower(run_script: RunScript, framework: str) -> None:
    out = run_script("pool_scenarios.py", framework, "state")
    assert out["rows_after_failed_block"] == 0, out  # autocommit left on: nothing persisted
    assert out["queued"] == [1, 1], out  # the borrower did have a notify and a notice queued
    assert out["settings_restored"] and out["lists_empty"] == [0, 0], out
    assert out["server_tx"] == ["read committed", "off", "UTF8"], out
    assert out["discard_all_roundtrip"] == ["café", "café"], out  # LATIN1 + DISCARD ALL
    assert out["configured_latin1"] == ["café", "LATIN1", "LATIN1"], out
    assert out["stored_cafe"] == 2, out


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_pool_created_before_fork(run_script: RunScript, framework: str) -> None:
    out = run_script("pool_fork.py", framework)
    child = out["child"]
    assert "error" not in child, out
    assert child["new_backend"], out  # the child never shares the parent's sessions
    assert child["exhausted"].startswith("PoolTimeout: couldn't get a connection after 0.50 sec"), out
    assert child["timeout_s"] < 5, out  # bounded (main: waited forever under threads)
    assert out["child_status"] == 0, out
    assert out["held_pid_ok"] and out["parent_after"] == out["parent_pids"], out  # parent untouched


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_closeall_with_a_busy_connection_does_not_freeze(run_script: RunScript, framework: str) -> None:
    out = run_script("pool_scenarios.py", framework, "busy_closeall")
    assert out["elapsed"] < 0.5 and out["max_gap"] < 0.5, out
    assert out["held_closed"] and out["busy_open_during_query"] and out["busy_closed_on_return"], out
