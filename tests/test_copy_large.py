"""A 200 MB COPY each way keeps memory flat and the hub responsive (1 GB: see docs/copy.md)."""

from __future__ import annotations

from typing import Any, Callable

import pytest


@pytest.mark.parametrize("framework", ["gevent", "eventlet"])
def test_large_copy_memory_is_flat(run_script: Callable[..., Any], framework: str) -> None:
    out = run_script("copy_large.py", framework, "200")
    assert out["out_bytes"] > 200 * 2**20
    # Streaming: neither direction holds the data; generous bounds for allocator noise.
    assert out["rss_growth_in"] < 40, out
    assert out["rss_growth_out"] < 40, out
    assert out["max_gap"] < 0.25, out
