"""SQLAlchemy recipe (docs/pooling.md): its QueuePool on cooperative psycopg2, per framework."""

from __future__ import annotations

from typing import Any, Callable

import pytest


@pytest.mark.parametrize("framework", ["gevent", "eventlet", "threads"])
def test_sqlalchemy_queuepool_is_cooperative_and_leak_free(
    run_script: Callable[..., Any], framework: str
) -> None:
    out = run_script("pool_sqlalchemy.py", framework)
    assert out["checked_out"] == 0, out
    assert set(out["backends"]) <= {"idle"}, out
    assert sum(out["backends"].values()) <= out["pool_size"], out
    assert out["still"] == 1, out
    assert out["outcomes"].get("ok", 0) > 0, out
    if framework != "threads":
        assert out["max_gap"] < 0.5, out
    # creator=pool.getconn + NullPool closes instead of putconn: the psycogreen pool loses them.
    assert out["wrong_recipe_in_use"] == 3, out
