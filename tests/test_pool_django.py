"""The Django backend (psycogreen.contrib.django) in a real minimal project, per framework."""

from __future__ import annotations

from typing import Any, Callable

import pytest


@pytest.mark.parametrize("framework", ["gevent", "eventlet", "threads"])
def test_django_requests_beyond_pool_size(run_script: Callable[..., Any], framework: str) -> None:
    out = run_script("pool_django.py", framework)
    assert out["errors"] == [], out
    assert out["done"] == out["expected"], out
    assert out["driver"] == "psycopg2", out
    assert out["seen_max"] <= out["max_size"], out  # never more backends than the pool allows
    assert set(out["after"]) <= {"idle"} and sum(out["after"].values()) <= out["max_size"], out
    assert out["stats"]["pool_size"] <= out["max_size"], out
    if framework != "threads":
        assert out["max_gap"] < 0.5, out
