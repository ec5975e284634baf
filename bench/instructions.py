"""Deterministic cost: user-space instructions per query (per COPY row), counted by callgrind.

    python bench/instructions.py --dsn DSN          # or: python -m bench --instructions

Wall-clock throughput on a shared machine varies by +-20 % between runs; the number of instructions
the *client* process executes per query does not, so it is the figure that shows a change of a few
per cent. Method, for each workload of ``bench/instr_worker.py``:

- run it twice under ``valgrind --tool=callgrind``, with M1 and M2 measured operations after the same
  warm-up; callgrind traces only that client process (the server is another process, not traced,
  and ``--trace-children=no``);
- instructions per operation = (I2 - I1) / (M2 - M1): start-up, imports, connecting and the warm-up
  are the same in both runs and cancel out.

Kernel work (the syscalls themselves) is not counted; callgrind sees user space only. With
``PYTHONHASHSEED`` fixed and one connection, repeated runs agree to well under 1 % (``--repeat 2``
shows it). Needs ``valgrind``; without it the section says so and nothing fails.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKER = os.path.join(HERE, "instr_worker.py")
TABLE = "psycogreen_instr_accounts"
ACCOUNTS = 1000


class Workload(NamedTuple):
    kind: str  # instr_worker.py's KIND
    system: str  # instr_worker.py's SYSTEM
    label: str
    warmup: int
    counts: tuple[int, int]  # M1, M2
    variant: str = ""  # "pure": psycogreen's compiled accelerator switched off


#: Operation counts: the larger M2 - M1, the smaller start-up jitter (~0.3M instructions between two
#: identical runs) weighs per operation. COPY IN costs the client a few instructions per row (it sends
#: 64 KiB chunks), hence far more rows.
_Q = (200, (200, 2200))
_OUT = (2000, (2000, 52000))
_IN = (10000, (10000, 510000))
_WIDE = (500, (500, 10500))

WORKLOADS: list[Workload] = [
    Workload("point", "psycopg2-blocking", "psycopg2, blocking (no wait callback)", _Q[0], _Q[1]),
    Workload("point", "psycogreen2-gevent", "psycogreen 2, gevent", _Q[0], _Q[1]),
    Workload("point", "psycogreen1-gevent", "psycogreen 1.0.2, gevent", _Q[0], _Q[1]),
    Workload("point", "psycogreen2-eventlet", "psycogreen 2, eventlet", _Q[0], _Q[1]),
    Workload("point", "psycogreen1-eventlet", "psycogreen 1.0.2, eventlet", _Q[0], _Q[1]),
    Workload("point", "psycogreen2-threads", "psycogreen 2, threads", _Q[0], _Q[1]),
    Workload("copy-out", "psycopg2-blocking", "COPY OUT, psycopg2 blocking", _OUT[0], _OUT[1]),
    Workload("copy-out", "psycogreen2-gevent", "COPY OUT, psycogreen 2 gevent", _OUT[0], _OUT[1]),
    Workload("copy-out-wide", "psycopg2-blocking", "COPY OUT wide rows, psycopg2 blocking", *_WIDE),
    Workload("copy-out-wide", "psycogreen2-gevent", "COPY OUT wide rows, psycogreen 2 gevent", *_WIDE),
    Workload("copy-in", "psycopg2-blocking", "COPY IN, psycopg2 blocking", _IN[0], _IN[1]),
    Workload("copy-in", "psycogreen2-gevent", "COPY IN, psycogreen 2 gevent", _IN[0], _IN[1]),
    Workload("aio", "psycogreen.aio-asyncio", "psycogreen.aio, asyncio", _Q[0], _Q[1]),
    Workload("aio", "aiopg-asyncio", "aiopg, asyncio", _Q[0], _Q[1]),
    Workload("aio", "psycogreen.aio-uvloop", "psycogreen.aio, uvloop", _Q[0], _Q[1]),
    Workload("aio", "aiopg-uvloop", "aiopg, uvloop", _Q[0], _Q[1]),
]


#: Environment of each variant: "pure" forces the pure-Python path of psycogreen 2 (issue 13's
#: optional ``psycogreen._speedups``; the variant is only measured when that extension exists).
VARIANTS = {"pure": {"PSYCOGREEN_NO_EXTENSIONS": "1"}}


def has_speedups() -> bool:
    """Whether this checkout has psycogreen's compiled accelerator (then pure Python is measured too)."""
    import glob

    return bool(glob.glob(os.path.join(ROOT, "psycogreen", "_speedups*.so")))


def default_workloads() -> list[Workload]:
    """WORKLOADS, plus the pure-Python variant of psycogreen 2's gevent hot path and COPY OUT when
    the accelerator is built (both paths are what issue 13's targets name)."""
    out = list(WORKLOADS)
    if has_speedups():
        for w in WORKLOADS:
            if w.system == "psycogreen2-gevent" and w.kind in ("point", "copy-out", "copy-out-wide"):
                out.append(w._replace(variant="pure", label=w.label + ", pure Python"))
    return out


def key(w: Workload) -> str:
    return f"{w.kind}:{w.system}" + (f"+{w.variant}" if w.variant else "")


# -- arithmetic ---------------------------------------------------------------------------------
def per_op(i1: int, i2: int, m1: int, m2: int) -> float:
    """Instructions per operation from two runs that differ only in the number of operations."""
    if m2 == m1:
        raise ValueError(f"the two runs must differ in operations (both {m1})")
    return (i2 - i1) / (m2 - m1)


def overhead_ratio(ours: float, blocking: float, old: float) -> Optional[float]:
    """What psycogreen 2 adds above blocking psycopg2, as a fraction of what psycogreen 1.0.2 adds:
    the hot-path target of issue 13 (<= 1.0 pure Python, <= 0.6 accelerated). None if 1.0.2 adds
    nothing (the ratio would mean nothing)."""
    if old <= blocking:
        return None
    return (ours - blocking) / (old - blocking)


def spread(values: list[float]) -> float:
    """(max - min) / mean: how far repeated runs of one workload disagree (0.01 = 1 %)."""
    if not values:
        return 0.0
    mean = sum(values) / len(values)
    return (max(values) - min(values)) / mean if mean else 0.0


_TOTAL = re.compile(rb"^(?:totals|summary):\s+(\d+)", re.M)


def callgrind_total(path: str) -> int:
    """The instruction total (event Ir) of a callgrind output file."""
    with open(path, "rb") as f:
        m = _TOTAL.search(f.read())
    if not m:
        raise ValueError(f"{path}: no 'totals:' or 'summary:' line; is it a callgrind output file?")
    return int(m.group(1))


# -- running ------------------------------------------------------------------------------------
def valgrind() -> Optional[str]:
    return shutil.which("valgrind")


def setup(dsn: str) -> None:
    """The point-select table, created once (``ACCOUNTS`` rows, pgbench_accounts' shape)."""
    import psycopg2

    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (aid int PRIMARY KEY, abalance int)")
    cur.execute(
        f"INSERT INTO {TABLE} SELECT g, 0 FROM generate_series(1, %s) g ON CONFLICT DO NOTHING",
        (ACCOUNTS,),
    )
    conn.close()


def _env(system: str, variant: str = "") -> dict[str, str]:
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONWARNINGS="ignore", **VARIANTS.get(variant, {}))
    if system.startswith("psycogreen1"):
        env.pop("PYTHONPATH", None)  # psycogreen 1.0.2 must not see psycogreen 2
    else:
        # This checkout's psycogreen, whatever is installed in the venv.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    return env


def count_once(w: Workload, count: int, dsn: str, python: str, tmpdir: str) -> int:
    """The client's instruction total for one run of ``w`` with ``count`` measured operations."""
    out = os.path.join(tmpdir, f"{key(w).replace(':', '.')}.{count}.callgrind")
    cmd = [valgrind() or "valgrind", "--tool=callgrind", "--trace-children=no", f"--callgrind-out-file={out}"]
    cmd += [python, WORKER, w.kind, w.system, "--dsn", dsn, "--warmup", str(w.warmup), "--count", str(count)]
    r = subprocess.run(
        cmd, capture_output=True, text=True, timeout=900, env=_env(w.system, w.variant), cwd=HERE
    )
    if r.returncode:
        tail = [ln for ln in r.stderr.splitlines() if not ln.startswith("==")] or [f"exit {r.returncode}"]
        raise RuntimeError(f"{w.kind} {w.system}: {tail[-1]}")
    return callgrind_total(out)


def measure(w: Workload, dsn: str, python: str, tmpdir: str) -> dict[str, Any]:
    """{"i1", "i2", "m1", "m2", "per"} for one workload, or {"error": ...}."""
    m1, m2 = w.counts
    try:
        i1 = count_once(w, m1, dsn, python, tmpdir)
        i2 = count_once(w, m2, dsn, python, tmpdir)
    except (OSError, RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
        return {"error": str(e)}
    return {"i1": i1, "i2": i2, "m1": m1, "m2": m2, "per": per_op(i1, i2, m1, m2)}


def run_all(
    dsn: str,
    pg1: Optional[str],
    workloads: Optional[list[Workload]] = None,
    repeat: int = 1,
    jobs: int = 2,
    log: Any = None,
) -> dict[str, Any]:
    """{"runs": {key: [measurement per repeat]}, "labels": {key: label}}. Workloads run ``jobs`` at a
    time: the counts do not depend on load, so sharing the cores changes nothing but the wall time."""
    workloads = default_workloads() if workloads is None else workloads
    if valgrind() is None:
        return {"error": "valgrind not found (apt-get install valgrind); instruction counts skipped"}
    setup(dsn)
    runs: dict[str, list[dict[str, Any]]] = {key(w): [] for w in workloads}
    tasks = [(w, r) for r in range(repeat) for w in workloads]
    with tempfile.TemporaryDirectory(prefix="psycogreen-instr-") as tmpdir:

        def one(task: tuple[Workload, int]) -> tuple[Workload, dict[str, Any]]:
            w, r = task
            python = pg1 if w.system.startswith("psycogreen1") else sys.executable
            if python is None:
                return w, {"error": "psycogreen 1.0.2 venv unavailable"}
            sub = os.path.join(tmpdir, str(r))
            os.makedirs(sub, exist_ok=True)
            res = measure(w, dsn, python, sub)
            if log is not None:
                shown = f"{res['per']:,.0f} instructions/op" if "per" in res else res["error"]
                log(f"instructions: run {r + 1} {key(w):36s} {shown}")
            return w, res

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            for w, res in pool.map(one, tasks):
                runs[key(w)].append(res)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return {"runs": runs, "labels": {key(w): w.label for w in workloads}, "repeat": repeat, "when": when}


# -- reporting ----------------------------------------------------------------------------------
def figure(results: dict[str, Any], k: str) -> Optional[float]:
    """The reported figure of one workload: the mean over the repeats, None if any failed."""
    runs = results.get("runs", {}).get(k, [])
    pers = [r["per"] for r in runs if "per" in r]
    if not pers or len(pers) != len(runs):
        return None
    return sum(pers) / len(pers)


def _fmt(v: Optional[float]) -> str:
    return "n/a" if v is None else f"{v / 1000:.1f}k" if v >= 10_000 else f"{v:,.0f}"


def _table(results: dict[str, Any], kinds: tuple[str, ...], unit: str) -> list[str]:
    repeat = int(results.get("repeat", 1))
    runs_head = " | ".join(f"run {i + 1}" for i in range(repeat))
    lines = [
        f"| workload | {unit} | {runs_head} | spread |" if repeat > 1 else f"| workload | {unit} |",
        "|---|---:|" + ("---:|" * (repeat + 1) if repeat > 1 else ""),
    ]
    for k, label in results.get("labels", {}).items():
        if k.split(":", 1)[0] not in kinds:
            continue
        runs = results["runs"][k]
        v = figure(results, k)
        if v is None:
            err = next((r["error"] for r in runs if "error" in r), "failed")
            lines.append(f"| {label} | error: {err} |" + (" |" * (repeat + 1) if repeat > 1 else ""))
            continue
        row = f"| {label} | {_fmt(v)} |"
        if repeat > 1:
            pers = [r["per"] for r in runs]
            row += "".join(f" {p:,.0f} |" for p in pers) + f" {spread(pers) * 100:.2f} % |"
        lines.append(row)
    return lines


def _ratio_line(desc: str, value: Optional[float], target: str) -> str:
    got = "n/a" if value is None else f"{value:.2f}x"
    return f"| {desc} | {got} | {target} |"


def ratios(results: dict[str, Any]) -> list[tuple[str, Optional[float], str]]:
    """(description, value, target) for the ratios issue 13's targets use."""
    f = lambda k: figure(results, k)  # noqa: E731
    blocking = f("point:psycopg2-blocking")
    out: list[tuple[str, Optional[float], str]] = []
    pure = "point:psycogreen2-gevent+pure" in results.get("runs", {})
    for fw, variant in (("gevent", ""), ("gevent", "+pure"), ("eventlet", "")):
        if variant and not pure:
            continue
        ours, old = f(f"point:psycogreen2-{fw}{variant}"), f(f"point:psycogreen1-{fw}")
        r = None
        if ours is not None and blocking is not None and old is not None:
            r = overhead_ratio(ours, blocking, old)
        if fw != "gevent":
            target = ""
        elif not pure:
            target = "<= 1.00x pure Python, <= 0.60x accelerated"
        else:
            target = "<= 1.00x" if variant else "<= 0.60x"
        name = f"{fw}{', pure Python' if variant else ''}"
        out.append((f"{name}: (psycogreen 2 - blocking) / (psycogreen 1.0.2 - blocking)", r, target))
    copies = [(k, v) for k in ("copy-out", "copy-out-wide") for v in ("", "+pure")] + [("copy-in", "")]
    targets = {
        "copy-out": ">= 1.0x",
        "copy-out+pure": ">= 0.4x",
        "copy-out-wide": ">= 0.9x",
        "copy-out-wide+pure": "",
        "copy-in": ">= 0.9x",
    }
    for kind, variant in copies:
        if variant and not pure:
            continue
        ours, base = f(f"{kind}:psycogreen2-gevent{variant}"), f(f"{kind}:psycopg2-blocking")
        if ours is None and base is None:
            continue
        r = base / ours if ours and base else None
        wide = kind.endswith("-wide")
        name = kind.removesuffix("-wide").upper().replace("-", " ") + (", pure Python" if variant else "")
        rows = "wide rows (~2 KB)" if wide else "narrow rows"
        line = f"{name} {rows}: blocking / psycogreen 2 (instructions per row)"
        out.append((line, r, targets[kind + variant]))
    for loop in ("asyncio", "uvloop"):
        ours, theirs = f(f"aio:psycogreen.aio-{loop}"), f(f"aio:aiopg-{loop}")
        r = ours / theirs if ours and theirs else None
        out.append(
            (
                f"psycogreen.aio / aiopg instructions per query, {loop}",
                r,
                "<= 1.15x" if loop == "uvloop" else "",
            )
        )
    return out


def render(results: dict[str, Any]) -> str:
    """The markdown section for docs/benchmarks.md."""
    if "error" in results:
        return f"Not measured: {results['error']}."
    lines = ["Point selects, C=1 (one connection), per query:", ""]
    lines += _table(results, ("point",), "instructions / query")
    lines += ["", "COPY of narrow rows (~38 bytes), per row:", ""]
    lines += _table(results, ("copy-out", "copy-in"), "instructions / row")
    if any(k.startswith("copy-out-wide:") for k in results.get("labels", {})):
        lines += ["", "COPY OUT of wide rows (~2 KB), per row:", ""]
        lines += _table(results, ("copy-out-wide",), "instructions / row")
    lines += ["", "psycogreen.aio vs aiopg, one task, per query:", ""]
    lines += _table(results, ("aio",), "instructions / query")
    lines += ["", "| ratio (instructions) | value | target (issue 13) |", "|---|---:|---|"]
    lines += [_ratio_line(*r) for r in ratios(results)]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dsn", help="an existing server (default: start a throwaway one)")
    p.add_argument("--repeat", type=int, default=1, help="measure everything N times (determinism check)")
    p.add_argument("--jobs", type=int, default=2, help="valgrind processes at a time (default 2)")
    p.add_argument("--only", help="comma list of KIND or KIND:SYSTEM prefixes (e.g. point,aio:aiopg)")
    p.add_argument("--pg1-python", help="interpreter of the psycogreen 1.0.2 venv (default: bench's)")
    p.add_argument("--json", help="also write the raw results here")
    args = p.parse_args(argv)
    workloads = default_workloads()
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        workloads = [w for w in workloads if any(key(w).startswith(x) for x in wanted)]
    pg1 = args.pg1_python
    if pg1 is None and any(w.system.startswith("psycogreen1") for w in workloads):
        sys.path.insert(0, ROOT)
        from bench.__main__ import ensure_psycogreen1

        pg1 = ensure_psycogreen1()
    server = None
    dsn = args.dsn
    if dsn is None:
        sys.path.insert(0, ROOT)
        from psycogreen.testing import PostgresServer

        server = PostgresServer().start()
        server.wait_ready()
        dsn = server.dsn
    try:
        log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
        results = run_all(dsn, pg1, workloads, args.repeat, args.jobs, log)
    finally:
        if server is not None:
            server.destroy()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
