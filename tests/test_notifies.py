"""psycogreen.notifies() under gevent, eventlet and threads: the queued notification first, then
the ones sent while waiting, the time budget kept, the hub running meanwhile. The scenario is
tests/scripts/notifies.py."""

from __future__ import annotations

from typing import Any, Callable

import pytest

FRAMEWORKS = ["gevent", "eventlet", "threads"]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_notifies_while_waiting_cooperatively(run_script: Callable[..., Any], framework: str) -> None:
    out = run_script("notifies.py", framework)
    assert out["patched"] == framework
    assert out["notifies"] == ["queued", "0", "1", "2"]
    assert out["empty"] == []
    assert 0.15 < out["budget"] < 2.0  # the 0.2 s budget: kept, not ignored nor overrun
    if framework != "threads":
        assert out["max_gap"] < 0.25, out
