"""``python -m psycogreen demo`` and ``doctor`` run end to end against the real server."""

from __future__ import annotations

import subprocess
import sys


def test_doctor_reports_libpq_and_frameworks() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "psycogreen", "doctor"], capture_output=True, text=True, check=True
    ).stdout
    assert "libpq" in out and "cancel" in out and "gevent" in out


def test_demo_runs(dsn: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "psycogreen", "demo", "--dsn", dsn, "--greenlets", "20"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "20 greenlets" in out and "speed-up" in out
    assert "QueryTimeout" in out and "usable" in out
    assert "cooperative pool" in out and "(pool max 10)" in out
    assert "copy_from (in)" in out and "200,000" in out
    assert "asyncio: 20 tasks" in out and "TimeoutError after" in out and "returned 1000" in out
