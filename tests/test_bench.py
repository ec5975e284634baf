"""The benchmark suite's plumbing (not its numbers): one real cell against the test server, the
report and the notes it must keep. Speed targets live in bench/, never in tests."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from typing import Any

import pytest

# One at a time with the other wall-clock- or CPU-heavy tests under pytest-xdist (tests/conftest.py).
pytestmark = pytest.mark.xdist_group("serial")
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


# -- instruction counts (bench/instructions.py) ---------------------------------------------------
def _instr_results(repeat: int = 2) -> dict[str, Any]:
    """What run_all returns, with made-up but plausible figures (no valgrind needed)."""
    instr = _load("instructions")
    figures = {
        "point:psycopg2-blocking": 30_000.0,
        "point:psycogreen2-gevent": 50_000.0,
        "point:psycogreen1-gevent": 46_000.0,
        "point:psycogreen2-eventlet": 90_000.0,
        "point:psycogreen1-eventlet": 95_000.0,
        "point:psycogreen2-threads": 33_000.0,
        "copy-out:psycopg2-blocking": 1_900.0,
        "copy-out:psycogreen2-gevent": 9_500.0,
        "copy-out-wide:psycopg2-blocking": 3_000.0,
        "copy-out-wide:psycogreen2-gevent": 3_750.0,
        "copy-in:psycopg2-blocking": 85.0,
        "copy-in:psycogreen2-gevent": 100.0,
        "aio:psycogreen.aio-asyncio": 80_000.0,
        "aio:aiopg-asyncio": 70_000.0,
        "aio:psycogreen.aio-uvloop": 77_000.0,
        "aio:aiopg-uvloop": 70_000.0,
    }
    runs = {k: [{"per": v * (1 + 0.001 * r)} for r in range(repeat)] for k, v in figures.items()}
    labels = {instr.key(w): w.label for w in instr.WORKLOADS}
    assert set(labels) == set(figures)  # every workload is covered by the fixture
    return {"runs": runs, "labels": labels, "repeat": repeat}


def test_instructions_arithmetic(tmp_path: Any) -> None:
    instr = _load("instructions")
    assert instr.per_op(1_000_000, 3_000_000, 100, 1100) == 2000.0
    with pytest.raises(ValueError):
        instr.per_op(1, 2, 5, 5)
    # (ours - blocking) / (1.0.2 - blocking): issue 13's hot-path ratio.
    assert instr.overhead_ratio(52_400, 29_200, 48_100) == pytest.approx(1.2275, abs=1e-3)
    assert instr.overhead_ratio(40_000, 30_000, 30_000) is None
    assert instr.spread([100.0, 101.0]) == pytest.approx(1 / 100.5)
    assert instr.spread([]) == 0.0
    for line in ("events: Ir\nsummary: 933752867\n", "events: Ir\ntotals: 42\n"):
        f = tmp_path / "cg.out"
        f.write_text(line)
        assert instr.callgrind_total(str(f)) == int(line.split()[-1])
    (tmp_path / "bad").write_text("nothing")
    with pytest.raises(ValueError, match="callgrind"):
        instr.callgrind_total(str(tmp_path / "bad"))


def test_instructions_render() -> None:
    instr = _load("instructions")
    results = _instr_results()
    text = instr.render(results)
    assert "| psycogreen 2, gevent | 50.0k | 50,000 | 50,050 | 0.10 % |" in text
    assert "| COPY IN, psycopg2 blocking | 85 | 85 | 85 | 0.10 % |" in text
    # (50k - 30k) / (46k - 30k) = 1.25; eventlet (90k - 30k) / (95k - 30k) = 0.92
    assert "| gevent: (psycogreen 2 - blocking) / (psycogreen 1.0.2 - blocking) | 1.25x |" in text
    assert "| eventlet: (psycogreen 2 - blocking) / (psycogreen 1.0.2 - blocking) | 0.92x |" in text
    assert "| COPY OUT narrow rows: blocking / psycogreen 2 (instructions per row) | 0.20x |" in text
    wide = "| COPY OUT wide rows (~2 KB): blocking / psycogreen 2 (instructions per row) | 0.80x | >= 0.9x |"
    assert wide in text
    assert "| psycogreen.aio / aiopg instructions per query, uvloop | 1.10x | <= 1.15x |" in text
    # A failed workload shows its error and the ratios that need it say n/a, without crashing.
    results["runs"]["point:psycogreen1-gevent"] = [{"error": "venv unavailable"}, {"per": 1.0}]
    text = instr.render(results)
    assert "| psycogreen 1.0.2, gevent | error: venv unavailable |" in text
    assert "(psycogreen 1.0.2 - blocking) | n/a |" in text
    # One run: no per-run columns.
    assert "| psycogreen 2, threads | 33.0k |\n" in instr.render(_instr_results(repeat=1)) + "\n"
    assert instr.render({"error": "valgrind not found"}) == "Not measured: valgrind not found."


def test_instructions_section_replaced_alone() -> None:
    bench = _load("__main__")
    args = bench.parse_args(["--instructions-only", "--instructions-repeat", "2"])
    assert args.instructions_only and args.instructions_repeat == 2
    assert bench.parse_args(["--instructions"]).instructions
    assert not bench.parse_args(["--instructions", "--no-instructions"]).instructions  # make bench opt-out
    section = bench.render_instructions(_instr_results())
    assert section.startswith(bench.INSTR_BEGIN) and section.endswith(bench.INSTR_END)
    doc = "# B\n\nqps tables\n\n" + bench.NOTES_MARKER + "\n\nnotes\n"
    once = bench.replace_instructions(doc, section)
    assert once.index("qps tables") < once.index(bench.INSTR_BEGIN) < once.index(bench.NOTES_MARKER)
    assert once.endswith("notes\n")
    twice = bench.replace_instructions(once, bench.render_instructions({"error": "no valgrind"}))
    assert twice.count(bench.INSTR_BEGIN) == 1 and "Not measured: no valgrind." in twice
    assert "50.0k" not in twice and twice.endswith("notes\n")


@pytest.mark.skipif(not shutil.which("valgrind"), reason="valgrind not installed")
def test_instructions_real_callgrind_run(dsn: str) -> None:
    """One workload (blocking psycopg2, the quickest to start) counted for real: two callgrind runs.
    Bounds are loose; this checks the plumbing, not a figure."""
    instr = _load("instructions")
    w = instr.Workload("point", "psycopg2-blocking", "blocking", 5, (5, 105))
    instr.setup(dsn)
    res = instr.run_all(dsn, None, [w], repeat=1, jobs=1)
    (got,) = res["runs"]["point:psycopg2-blocking"]
    assert "error" not in got, got
    assert 5_000 < got["per"] < 500_000  # ~30k instructions per query on x86-64 CPython 3.11


def test_instructions_only_rewrites_its_section(tmp_path: Any, monkeypatch: Any) -> None:
    """``python -m bench --instructions-only``: counts (faked here) replace only their section."""
    bench = _load("__main__")
    instr = _load("instructions")
    calls: list[tuple[str, Any]] = []

    class Fake:
        render = staticmethod(instr.render)

        @staticmethod
        def run_all(dsn: str, pg1: Any, repeat: int = 1, log: Any = None) -> dict[str, Any]:
            calls.append((dsn, repeat))
            return _instr_results(repeat)

    monkeypatch.setattr(bench, "instructions_module", lambda: Fake)
    monkeypatch.setattr(bench, "ensure_psycogreen1", lambda: None)
    monkeypatch.setattr(bench, "HERE", str(tmp_path))  # bench/results/instructions.json goes here
    out = tmp_path / "b.md"
    out.write_text("qps\n\n" + bench.render_instructions({"error": "old"}) + "\n\npool\n")
    assert (
        bench.main(["--instructions-only", "--instructions-repeat", "2", "--dsn", "x", "--output", str(out)])
        == 0
    )
    assert calls == [("x", 2)]
    text = out.read_text()
    assert text.startswith("qps\n\n") and text.endswith("\n\npool\n") and "old" not in text
    assert "| psycogreen 2, gevent | 50.0k |" in text
    assert json.loads((tmp_path / "results" / "instructions.json").read_text())["repeat"] == 2
