"""The hub keeps running while queries wait: proven by a ticker's cadence, under each framework."""

from __future__ import annotations

from typing import Any, Callable

import pytest

# One at a time with the other wall-clock- or CPU-heavy tests under pytest-xdist (tests/conftest.py).
pytestmark = pytest.mark.xdist_group("serial")


@pytest.mark.parametrize("framework", ["gevent", "eventlet"])
def test_ticker_keeps_cadence_while_queries_sleep(run_script: Callable[..., Any], framework: str) -> None:
    out = run_script("coop.py", framework)
    assert out["patched"] == framework
    # 10 connections x 3 x pg_sleep(0.2) run concurrently: ~0.6 s, not 6 s.
    assert out["elapsed"] < 3.0, out
    # The ticker (5 ms cadence) never stalled for long; generous bound for a loaded CI box.
    assert out["max_gap"] < 0.25, out
    assert out["ticks"] > 50, out


def test_threads_run_concurrently(run_script: Callable[..., Any]) -> None:
    out = run_script("coop.py", "threads")
    assert out["patched"] == "threads"
    assert out["elapsed"] < 3.0, out


@pytest.mark.parametrize("framework", ["gevent", "eventlet"])
def test_psycogreen_1_usage_unchanged(run_script: Callable[..., Any], framework: str) -> None:
    out = run_script("dropin.py", framework)
    assert out["patched"] == framework and out["callback_set"]
    assert out["parallel_elapsed"] < 1.2  # 5 x 0.3 s ran concurrently
    assert out["max_gap"] < 0.25
    assert out["green_error"] == out["blocking_error"]
    assert out["green_error"][0] == "UndefinedTable"
    assert out["manual_elapsed"] < 0.6 and out["manual_row"] == 1
    if framework == "gevent":
        assert out["timeout_arg"] == "socket.timeout"
