"""Large objects under gevent, eventlet and threads (psycopg2 refuses them in green mode): write,
seek past 2 GB, read back, unlink. The scenario is tests/scripts/large_objects.py."""

from __future__ import annotations

from typing import Any, Callable

import pytest

FRAMEWORKS = ["gevent", "eventlet", "threads"]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_large_object_round_trip_with_a_3gb_offset(run_script: Callable[..., Any], framework: str) -> None:
    out = run_script("large_objects.py", framework)
    assert out["patched"] == framework
    assert out["tell"] == 3 * 1024**3 + 1
    assert out["head"] == "hello"
    assert out["bytes"] == "hello"
