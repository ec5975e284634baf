"""The benchmark suite's plumbing (not its numbers): one real cell against the test server, the
report and the notes it must keep. Speed targets live in bench/, never in tests."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from typing import Any

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", os.path.join(ROOT, "bench", f"{name}.py"))
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_asyncpg_dsn_conversion() -> None:
    worker = _load("worker")
    assert (
        worker._asyncpg_dsn("host=127.0.0.1 port=5433 user=u dbname=d") == "postgresql://u@127.0.0.1:5433/d"
    )
    assert worker._asyncpg_dsn("postgresql://x@y/z") == "postgresql://x@y/z"
    assert "?host=/tmp/s&port=1" in worker._asyncpg_dsn("host=/tmp/s port=1 user=u dbname=d")


def test_render_and_keep_notes(tmp_path: Any) -> None:
    bench = _load("__main__")
    args = bench.parse_args(["--quick", "--no-write"])
    args.when = "now"
    matrix = {
        "psycogreen2-gevent": {1: {"qps": 1000.0, "cpu_us": 40.0}, 16: {"qps": 1500.0, "cpu_us": 30.0}},
        "psycogreen1-gevent": {1: {"qps": 900.0, "cpu_us": 45.0}, 16: {"error": "boom"}},
    }
    cancel = [{"label": "x", "latency_ms": [1.0, 3.0], "stall_ms": [0.5, 0.7]}]
    text = bench.render(args, matrix, cancel, [("Extra", "| a |")])
    assert "| psycogreen 2, gevent | 1,000 (40 µs) | 1,500 (30 µs) |" in text
    assert "| gevent C=1 vs psycogreen 1.0.2 | 1.11x | 1.12x |" in text
    assert "n/a" in text  # the failed C=16 cell gives no ratio, not a crash
    assert "## Extra" in text
    out = tmp_path / "b.md"
    out.write_text("old\n" + bench.NOTES_MARKER + "\n\nhand-written notes\n")
    bench.write_doc(text, str(out))
    written = out.read_text()
    assert written.count(bench.NOTES_MARKER) == 1
    assert written.endswith("hand-written notes\n")
    assert "old\n" not in written


def test_one_cell_runs(dsn: str) -> None:
    """A psycogreen 2 gevent cell against the test server, on a tiny table in a schema of its own."""
    import psycopg2

    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("CREATE SCHEMA IF NOT EXISTS psycogreen_bench_test")
    cur.execute(
        "CREATE TABLE IF NOT EXISTS psycogreen_bench_test.pgbench_accounts "
        "(aid int PRIMARY KEY, abalance int)"
    )
    cur.execute(
        "INSERT INTO psycogreen_bench_test.pgbench_accounts SELECT g, 0 FROM generate_series(1, 100) g "
        "ON CONFLICT DO NOTHING"
    )
    conn.close()
    dsn = dsn + " options='-csearch_path=psycogreen_bench_test'"
    r = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "worker.py"), "psycogreen2-gevent", "--dsn", dsn]
        + ["-c", "2", "-t", "0.3", "--warmup", "0.1", "--accounts", "100"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["queries"] > 0 and not res["errors"]


@pytest.mark.parametrize("system", ["psycogreen2"])
def test_cancel_worker_runs(dsn: str, system: str) -> None:
    r = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "bench", "cancel_worker.py"),
            system,
            "--dsn",
            dsn,
            "--runs",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(res["latency_ms"]) == 2 and not res["errors"]
    assert max(res["latency_ms"]) < 5000  # generous: the statement went away, not a speed target
