"""Every waiter honours the same contract, including waits for READ|WRITE."""

from __future__ import annotations

from typing import Any, Callable

import pytest


@pytest.mark.parametrize("framework", ["gevent", "eventlet", "threads"])
def test_wait_fd_reports_ready_events(run_script: Callable[..., Any], framework: str) -> None:
    out = run_script("waiters.py", framework)
    assert out["waiter"] == framework
    assert out["writable"] == 2 and out["writable_no_timeout"] == 2
    assert out["readable"] == 1
    assert out["timeout"] == 0 and out["read_timeout"] == 0
    assert out["write"] == 2
