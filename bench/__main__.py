"""``python -m bench`` (``make bench``): psycogreen 2 against its peers, measured side by side.

Every cell — one system at one concurrency — runs in a fresh subprocess (``bench/worker.py``),
because gevent's and eventlet's monkey-patching is process-wide and psycogreen 1.0.2 has the same
import name as psycogreen 2 (it lives in its own venv, ``bench/.venvs/psycogreen1``, created on first
use). Cells are interleaved and repeated (``--rounds``), and each table entry is the median, so a
burst of load from elsewhere on the machine hits every system alike instead of one of them.

Writes ``docs/benchmarks.md`` (tables and ratios) and ``docs/benchmarks.png`` (qps vs concurrency);
``--no-write`` only prints. The cancel benchmark (``bench/cancel_worker.py``) and the standalone
scripts ``bench/pool_bench.py``, ``bench/copy_bench.py``, ``bench/aio_bench.py`` (when present) are
run too and their tables included.

``--instructions`` adds the deterministic figure beside qps: user-space instructions per query (per
COPY row) counted by callgrind (``bench/instructions.py``); ``--instructions-only`` measures just
those and rewrites only their section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PG1_VENV = os.path.join(HERE, ".venvs", "psycogreen1")
PG1_PYTHON = os.path.join(PG1_VENV, "bin", "python")
PG1_REQUIREMENTS = ["psycogreen==1.0.2", "gevent", "eventlet", "psycopg2-binary"]

#: (name, label) in table order; "pgbench" is pgbench itself, the practical limit.
SYSTEMS = [
    ("psycogreen2-gevent", "psycogreen 2, gevent"),
    ("psycogreen1-gevent", "psycogreen 1.0.2, gevent"),
    ("psycogreen2-eventlet", "psycogreen 2, eventlet"),
    ("psycogreen1-eventlet", "psycogreen 1.0.2, eventlet"),
    ("psycopg2-threads", "psycopg2 blocking, C OS threads"),
    ("psycopg3-gevent", "psycopg 3, gevent"),
    ("psycopg3-asyncio", "psycopg 3, asyncio"),
    ("aiopg", "aiopg, asyncio"),
    ("asyncpg", "asyncpg, asyncio"),
    ("asyncpg-uvloop", "asyncpg, uvloop"),
    ("pgbench", "pgbench -S (C client, the limit)"),
]
LABELS = dict(SYSTEMS)

#: (numerator, denominator, concurrency, target or None, description)
RATIOS: list[tuple[str, str, int, Optional[float], str]] = [
    ("psycogreen2-gevent", "psycogreen1-gevent", 1, None, "gevent C=1 vs psycogreen 1.0.2"),
    ("psycogreen2-gevent", "psycogreen1-gevent", 16, 1.35, "gevent C=16 vs psycogreen 1.0.2"),
    ("psycogreen2-gevent", "psycogreen1-gevent", 64, None, "gevent C=64 vs psycogreen 1.0.2"),
    ("psycogreen2-eventlet", "psycogreen1-eventlet", 16, 1.25, "eventlet C=16 vs psycogreen 1.0.2 eventlet"),
    ("psycogreen2-gevent", "psycopg2-threads", 1, 0.97, "gevent C=1 vs blocking psycopg2"),
    ("psycogreen2-gevent", "psycopg2-threads", 16, None, "gevent C=16 vs blocking psycopg2, 16 threads"),
    ("psycogreen2-gevent", "psycopg3-gevent", 16, None, "gevent C=16 vs psycopg 3 gevent"),
    ("psycogreen2-gevent", "asyncpg-uvloop", 16, None, "gevent C=16 vs asyncpg + uvloop"),
    ("psycogreen2-gevent", "pgbench", 16, None, "gevent C=16 vs pgbench"),
]

CANCEL_SYSTEMS = [
    ("psycogreen2", {}, "psycogreen 2, gevent, kill(): libpq 17 non-blocking cancel"),
    ("psycogreen2", {"PSYCOGREEN_CANCEL": "thread"}, "psycogreen 2, gevent, kill(): thread-pool fallback"),
    ("psycogreen1", {}, "psycogreen 1.0.2, gevent, conn.cancel() (blocking PQcancel)"),
    ("psycopg3", {}, "psycopg 3, gevent, conn.cancel_safe()"),
]

STANDALONE = [
    ("pool_bench.py", "Pool"),
    ("copy_bench.py", "COPY"),
    ("aio_bench.py", "asyncio and trio"),
]


def instructions_module() -> Any:
    """``bench/instructions.py``, imported whether this file runs as ``python -m bench`` or is
    loaded by path (the tests)."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from bench import instructions

    return instructions


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- environment --------------------------------------------------------------------------------
def ensure_psycogreen1() -> Optional[str]:
    """The interpreter of the psycogreen 1.0.2 venv, creating it on first use; None if impossible."""
    if os.path.exists(PG1_PYTHON):
        return PG1_PYTHON
    log(f"creating {PG1_VENV} with {' '.join(PG1_REQUIREMENTS)} ...")
    try:
        subprocess.run([sys.executable, "-m", "venv", PG1_VENV], check=True)
        subprocess.run([PG1_PYTHON, "-m", "pip", "install", "-q", *PG1_REQUIREMENTS], check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        log(f"cannot create the psycogreen 1.0.2 venv ({e}); its cells are skipped")
        return None
    return PG1_PYTHON


def pgbench_init(dsn: str, scale: int) -> None:
    log(f"pgbench -i -s {scale} ...")
    subprocess.run(["pgbench", "-i", "-q", "-s", str(scale), dsn], check=True, capture_output=True)


def machine() -> str:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.+)", f.read())
            cpu = m.group(1).strip() if m else "?"
    except OSError:
        pass
    system = f"{platform.system()} {platform.release()}"
    return f"{os.cpu_count()} CPUs ({cpu}), {system}, Python {platform.python_version()}"


def versions() -> str:
    import importlib.metadata as md

    out = []
    for dist in (
        "psycopg2-binary",
        "gevent",
        "eventlet",
        "greenlet",
        "psycopg",
        "aiopg",
        "asyncpg",
        "uvloop",
    ):
        try:
            out.append(f"{dist} {md.version(dist)}")
        except md.PackageNotFoundError:
            pass
    try:
        import psycopg2.extensions

        lv = psycopg2.extensions.libpq_version()
        out.append(f"libpq {lv // 10000}.{lv % 10000}")
    except Exception:
        pass
    return ", ".join(out)


# -- running cells ------------------------------------------------------------------------------
def run_cell(
    system: str, dsn: str, c: int, duration: float, accounts: int, pg1: Optional[str]
) -> dict[str, Any]:
    if system == "pgbench":
        return run_pgbench(dsn, c, duration)
    python = pg1 if system.startswith("psycogreen1") else sys.executable
    if python is None:
        return {"error": "psycogreen 1.0.2 venv unavailable"}
    cmd = [python, os.path.join(HERE, "worker.py"), system, "--dsn", dsn, "-c", str(c)]
    cmd += ["-t", str(duration), "--accounts", str(accounts)]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    env.pop("PYTHONPATH", None)  # psycogreen 1.0.2 must not see psycogreen 2
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, env=env, cwd=HERE)
    except subprocess.TimeoutExpired:
        return {"error": "timed out"}
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode or not lines:
        return {"error": (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]}
    res: dict[str, Any] = json.loads(lines[-1])
    if res.get("errors"):
        res["error"] = res["errors"][0]
    return res


def run_pgbench(dsn: str, c: int, duration: float) -> dict[str, Any]:
    seconds = max(1, round(duration))
    cmd = ["pgbench", "-n", "-S", "-M", "simple", "-c", str(c), "-j", str(min(2, c)), "-T", str(seconds), dsn]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    m = re.search(r"tps = ([\d.]+) \(without initial", r.stdout)
    n = re.search(r"number of transactions actually processed: (\d+)", r.stdout)
    if r.returncode or not m or not n:
        return {"error": (r.stderr.strip().splitlines() or ["pgbench failed"])[-1]}
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"qps": float(m.group(1)), "cpu_us": cpu / int(n.group(1)) * 1e6, "queries": int(n.group(1))}


def run_matrix(args: argparse.Namespace, dsn: str, systems: list[str], pg1: Optional[str]) -> dict[str, Any]:
    """{system: {c: {"qps": median, "cpu_us": median, "runs": [...], "error": ...}}}"""
    raw: dict[str, dict[int, list[dict[str, Any]]]] = {s: {c: [] for c in args.concurrency} for s in systems}
    total = args.rounds * len(args.concurrency) * len(systems)
    done = 0
    for rnd in range(args.rounds):
        for c in args.concurrency:
            # Alternate the order between rounds so no system always runs right after another.
            order = systems if rnd % 2 == 0 else list(reversed(systems))
            for s in order:
                res = run_cell(s, dsn, c, args.duration, args.scale * 100_000, pg1)
                raw[s][c].append(res)
                done += 1
                shown = (
                    f"{res['qps']:9.0f} qps  {res['cpu_us']:6.1f} us cpu/q" if "qps" in res else res["error"]
                )
                log(f"[{done:3d}/{total}] round {rnd + 1} C={c:<3d} {s:22s} {shown}")
    out: dict[str, Any] = {}
    for s, per_c in raw.items():
        out[s] = {}
        for c, runs in per_c.items():
            ok = [r for r in runs if "qps" in r and not r.get("error")]
            cell: dict[str, Any] = {"runs": [r.get("qps") for r in runs]}
            if ok:
                cell["qps"] = statistics.median(r["qps"] for r in ok)
                cpus = [r["cpu_us"] for r in ok if r.get("cpu_us") is not None]
                cell["cpu_us"] = statistics.median(cpus) if cpus else None
            else:
                cell["error"] = runs[0].get("error", "failed") if runs else "not run"
            out[s][c] = cell
    return out


def run_cancel(dsn: str, runs: int, pg1: Optional[str]) -> list[dict[str, Any]]:
    results = []
    for system, extra_env, label in CANCEL_SYSTEMS:
        python = pg1 if system == "psycogreen1" else sys.executable
        if python is None:
            results.append({"label": label, "error": "psycogreen 1.0.2 venv unavailable"})
            continue
        env = dict(os.environ, PYTHONWARNINGS="ignore", **extra_env)
        env.pop("PYTHONPATH", None)
        cmd = [python, os.path.join(HERE, "cancel_worker.py"), system, "--dsn", dsn, "--runs", str(runs)]
        log(f"cancel: {label} ...")
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=HERE)
            lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
            if r.returncode or not lines:
                raise RuntimeError((r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1])
            res = json.loads(lines[-1])
        except Exception as e:
            results.append({"label": label, "error": str(e)})
            continue
        res["label"] = label
        results.append(res)
    return results


def run_standalone(dsn: str) -> list[tuple[str, str]]:
    sections = []
    for script, title in STANDALONE:
        path = os.path.join(HERE, script)
        if not os.path.exists(path):
            continue
        log(f"standalone: {script} ...")
        env = dict(os.environ, PYTHONWARNINGS="ignore")
        try:
            r = subprocess.run(
                [sys.executable, path, "--dsn", dsn],
                capture_output=True,
                text=True,
                timeout=600,
                env=env,
                cwd=ROOT,
            )
            body = r.stdout.strip() if r.returncode == 0 else f"(failed: {r.stderr.strip()[-500:]})"
        except subprocess.TimeoutExpired:
            body = "(timed out after 600 s)"
        sections.append((f"{title} (`bench/{script}`)", body))
    return sections


# -- reporting ----------------------------------------------------------------------------------
def fmt_qps(cell: dict[str, Any]) -> str:
    if "qps" not in cell:
        return "error"
    cpu = cell.get("cpu_us")
    return f"{cell['qps']:,.0f} ({cpu:.0f} µs)" if cpu is not None else f"{cell['qps']:,.0f}"


def ratio(matrix: dict[str, Any], a: str, b: str, c: int) -> Optional[float]:
    try:
        return float(matrix[a][c]["qps"] / matrix[b][c]["qps"])
    except (KeyError, ZeroDivisionError):
        return None


def cpu_ratio(matrix: dict[str, Any], a: str, b: str, c: int) -> Optional[float]:
    try:
        return float(matrix[b][c]["cpu_us"] / matrix[a][c]["cpu_us"])
    except (KeyError, TypeError, ZeroDivisionError):
        return None


def render(
    args: argparse.Namespace,
    matrix: dict[str, Any],
    cancel: list[dict[str, Any]],
    extra: list[tuple[str, str]],
    instr: Optional[dict[str, Any]] = None,
) -> str:
    cs = args.concurrency
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`python -m bench`); see *Method* below. Re-run it on your machine: only",
        "the ratios measured side by side in one run mean anything, the absolute numbers are this machine's.",
        "",
        f"- Run: {args.when}; {args.rounds} round(s) of "
        f"{args.duration:g} s per cell (+ {args.warmup:g} s warm-up), median shown.",
        f"- Machine: {machine()}.",
        f"- Versions: {versions()}.",
        f"- Server: PostgreSQL on the same machine over TCP loopback, `pgbench -i -s {args.scale}`.",
        "",
        "## Point selects (pgbench -S), C workers each owning one connection",
        "",
        "Queries per second (client CPU per query in µs: user + system time of the client process",
        "over the measurement window, divided by the queries completed in it).",
        "",
        "| system | " + " | ".join(f"C={c}" for c in cs) + " |",
        "|---|" + "---:|" * len(cs),
    ]
    for s, cells in matrix.items():
        lines.append(f"| {LABELS[s]} | " + " | ".join(fmt_qps(cells[c]) for c in cs) + " |")
    lines += [
        "",
        "### Ratios (same run)",
        "",
        "qps ratio, and the client-CPU-per-query ratio (the peer's CPU per query divided by ours: above 1",
        "means psycogreen 2 spends less client CPU per query).",
        "",
        "| ratio | qps | client CPU | target (qps) |",
        "|---|---:|---:|---:|",
    ]
    for a, b, c, target, desc in RATIOS:
        if a not in matrix or b not in matrix or c not in cs:
            continue
        r = ratio(matrix, a, b, c)
        got = f"{r:.2f}x" if r is not None else "n/a"
        cr = cpu_ratio(matrix, a, b, c)
        cpu = f"{cr:.2f}x" if cr is not None else "n/a"
        met = "met" if r is not None and target is not None and r >= target else "**not met**"
        tgt = "" if target is None else f">= {target:.2f}x {met}"
        lines.append(f"| {desc} | {got} | {cpu} | {tgt} |")
    if os.path.exists(os.path.join(ROOT, "docs", "benchmarks.png")) or not args.no_write:
        lines += ["", "![qps vs concurrency](benchmarks.png)"]
    if cancel:
        lines += [
            "",
            "## Cancel latency and hub stall (gevent)",
            "",
            "A `SELECT pg_sleep(30)` is interrupted once it is active; latency = interrupt -> the backend",
            "no longer active in `pg_stat_activity` (polled every ~0.5 ms from a monitor connection in the",
            "same process, so it includes one polling round trip); stall = the largest gap of a 1 ms ticker",
            f"greenlet during that time. {args.cancel_runs} runs each. Goal: gone within 50 ms, no stall.",
            "",
            "| system | latency median | latency max | stall median | stall max |",
            "|---|---:|---:|---:|---:|",
        ]
        for res in cancel:
            if "error" in res and "latency_ms" not in res:
                lines.append(f"| {res['label']} | error: {res['error']} | | | |")
                continue
            lat, st = res["latency_ms"], res["stall_ms"]
            lines.append(
                f"| {res['label']} | {statistics.median(lat):.1f} ms | {max(lat):.1f} ms | "
                f"{statistics.median(st):.1f} ms | {max(st):.1f} ms |"
            )
    if instr is not None:
        lines += ["", render_instructions(instr)]
    for title, body in extra:
        lines += ["", f"## {title}", "", body]
    lines += ["", NOTES_MARKER, ""]
    return "\n".join(lines)


INSTR_BEGIN = "<!-- instructions: begin (python -m bench --instructions-only rewrites this section) -->"
INSTR_END = "<!-- instructions: end -->"


def render_instructions(instr: dict[str, Any]) -> str:
    """The callgrind section, between markers so ``--instructions-only`` can replace it alone."""
    return "\n".join(
        [
            INSTR_BEGIN,
            "## User-space instructions per query (callgrind)",
            "",
            "Deterministic, unlike qps: the client process alone under `valgrind --tool=callgrind`, run",
            "with M1 and M2 operations after the same warm-up, (I2 - I1) / (M2 - M1). See *Method*.",
            "",
            *(
                [f"Measured {instr['when']}, {instr.get('repeat', 1)} complete run(s).", ""]
                if "when" in instr
                else []
            ),
            instructions_module().render(instr),
            INSTR_END,
        ]
    )


def replace_instructions(text: str, section: str) -> str:
    """``text`` with its instructions section replaced by ``section`` (appended before the notes
    marker when it has none)."""
    if INSTR_BEGIN in text and INSTR_END in text:
        head, rest = text.split(INSTR_BEGIN, 1)
        return head + section + rest.split(INSTR_END, 1)[1]
    if NOTES_MARKER in text:
        head, tail = text.split(NOTES_MARKER, 1)
        return head.rstrip("\n") + "\n\n" + section + "\n\n" + NOTES_MARKER + tail
    return text.rstrip("\n") + "\n\n" + section + "\n"


NOTES_MARKER = "<!-- notes: text below this line is kept when the benchmark rewrites this file -->"


def plot(matrix: dict[str, Any], cs: list[int], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 5.5))
    palette = plt.get_cmap("tab10").colors
    for i, (s, cells) in enumerate(matrix.items()):
        xs = [c for c in cs if "qps" in cells[c]]
        if not xs:
            continue
        style = "-" if s.startswith("psycogreen2") else ("--" if s == "pgbench" else ":")
        width = 2.5 if s.startswith("psycogreen2") else 1.4
        color = "black" if s == "pgbench" else palette[i % len(palette)]
        ys = [cells[c]["qps"] for c in xs]
        ax.plot(xs, ys, style, marker="o", linewidth=width, color=color, label=LABELS[s])
    ax.set_xscale("log", base=2)
    ax.set_xticks(cs)
    ax.set_xticklabels([str(c) for c in cs])
    ax.set_xlabel("concurrency C (workers, one connection each)")
    ax.set_ylabel("queries per second")
    ax.set_ylim(bottom=0)
    ax.set_title("pgbench -S point selects, client and server on one 2-core machine")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_doc(text: str, path: str) -> None:
    """Write ``text``, keeping any hand-written notes below the marker of the existing file."""
    kept = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            old = f.read()
        if NOTES_MARKER in old:
            kept = old.split(NOTES_MARKER, 1)[1].lstrip("\n")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text.rstrip("\n").removesuffix(NOTES_MARKER).rstrip("\n"))
        f.write("\n\n" + NOTES_MARKER + "\n\n" + kept)


# -- main ---------------------------------------------------------------------------------------
def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--dsn", help="an existing server (default: start a throwaway one)")
    p.add_argument("--quick", action="store_true", help="1 round of 1 s cells at C=1,16; fewer cancel runs")
    p.add_argument("--duration", type=float, help="seconds per cell (default 3)")
    p.add_argument("--rounds", type=int, help="interleaved repetitions, median reported (default 2)")
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--concurrency", help="comma list (default 1,16,64)")
    p.add_argument("--only", help="comma list of system names or prefixes (e.g. psycogreen,pgbench)")
    p.add_argument("--scale", type=int, default=1, help="pgbench scale (default 1)")
    p.add_argument("--cancel-runs", type=int, help="cancel benchmark runs per system (default 30)")
    p.add_argument("--no-cancel", action="store_true", help="skip the cancel benchmark")
    p.add_argument("--no-standalone", action="store_true", help="skip pool/copy/aio scripts")
    p.add_argument(
        "--instructions",
        action="store_true",
        help="also count user-space instructions per query/row with callgrind (needs valgrind)",
    )
    p.add_argument(
        "--instructions-only",
        action="store_true",
        help="only the instruction counts; rewrite just their section of the output",
    )
    p.add_argument("--instructions-repeat", type=int, default=1, help="measure the counts N times")
    p.add_argument(
        "--no-instructions",
        action="store_true",
        help="skip the counts even with --instructions (make bench BENCH_ARGS=--no-instructions)",
    )
    p.add_argument("--no-write", action="store_true", help="print the report, do not touch docs/")
    p.add_argument("--output", default=os.path.join(ROOT, "docs", "benchmarks.md"))
    p.add_argument("--list", action="store_true", help="list the systems and exit")
    p.add_argument("--from-json", help="re-render the report from a saved bench/results/*.json")
    args = p.parse_args(argv)
    args.duration = args.duration or (1.0 if args.quick else 3.0)
    args.rounds = args.rounds or (1 if args.quick else 2)
    args.cancel_runs = args.cancel_runs or (5 if args.quick else 30)
    conc = args.concurrency or ("1,16" if args.quick else "1,16,64")
    args.concurrency = [int(x) for x in conc.split(",")]
    if args.no_instructions:
        args.instructions = False
    return args


def rerender(args: argparse.Namespace) -> int:
    """Rebuild docs/benchmarks.md and the plot from saved results (no measuring)."""
    with open(args.from_json) as f:
        saved = json.load(f)
    for key in ("duration", "rounds", "warmup", "scale", "cancel_runs", "concurrency", "when"):
        setattr(args, key, saved["args"].get(key, "?"))
    matrix = {s: {int(c): cell for c, cell in cells.items()} for s, cells in saved["matrix"].items()}
    text = render(
        args, matrix, saved["cancel"], [tuple(x) for x in saved["extra"]], saved.get("instructions")
    )
    print(text)
    if not args.no_write:
        plot(matrix, args.concurrency, os.path.join(os.path.dirname(args.output), "benchmarks.png"))
        write_doc(text, args.output)
    return 0


def start_server() -> Any:
    sys.path.insert(0, ROOT)
    from psycogreen.testing import PostgresServer

    log("starting a throwaway PostgreSQL ...")
    server = PostgresServer().start()
    server.wait_ready()
    return server


def instructions_only(args: argparse.Namespace) -> int:
    """Count instructions (no wall-clock cells) and replace only that section of the output."""
    pg1 = ensure_psycogreen1()
    server = start_server() if args.dsn is None else None
    dsn = args.dsn or server.dsn
    try:
        instr = instructions_module().run_all(dsn, pg1, repeat=args.instructions_repeat, log=log)
    finally:
        if server is not None:
            server.destroy()
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "instructions.json"), "w") as f:
        json.dump(instr, f, indent=1)
    section = render_instructions(instr)
    print(section)
    if not args.no_write and os.path.exists(args.output):
        with open(args.output, encoding="utf-8") as f:
            old = f.read()
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(replace_instructions(old, section))
        log(f"rewrote the instructions section of {args.output}")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    args.when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    if args.from_json:
        return rerender(args)
    if args.list:
        for s, label in SYSTEMS:
            print(f"{s:22s} {label}")
        return 0
    if args.instructions_only:
        return instructions_only(args)
    systems = [s for s, _ in SYSTEMS]
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        systems = [s for s in systems if any(s == w or s.startswith(w) for w in wanted)]
        if not systems:
            log(f"--only {args.only!r} matches no system; see --list")
            return 2
    pg1 = (
        ensure_psycogreen1()
        if any(s.startswith("psycogreen1") for s in systems) or not args.no_cancel or args.instructions
        else None
    )

    server = None
    dsn = args.dsn
    if dsn is None:
        server = start_server()
        dsn = server.dsn
    try:
        pgbench_init(dsn, args.scale)
        started = time.monotonic()
        matrix = run_matrix(args, dsn, systems, pg1)
        cancel = [] if args.no_cancel else run_cancel(dsn, args.cancel_runs, pg1)
        extra = [] if args.no_standalone else run_standalone(dsn)
        instr = None
        if args.instructions:
            instr = instructions_module().run_all(dsn, pg1, repeat=args.instructions_repeat, log=log)
        log(f"done in {time.monotonic() - started:.0f} s")
    finally:
        if server is not None:
            server.destroy()
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "last.json"), "w") as f:
        saved = {
            "matrix": matrix,
            "cancel": cancel,
            "extra": extra,
            "instructions": instr,
            "args": vars(args),
        }
        json.dump(saved, f, indent=1)
    text = render(args, matrix, cancel, extra, instr)
    print(text)
    if not args.no_write:
        os.makedirs(os.path.dirname(args.output), exist_ok=True)
        plot(matrix, args.concurrency, os.path.join(os.path.dirname(args.output), "benchmarks.png"))
        write_doc(text, args.output)
        log(f"wrote {args.output} and benchmarks.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
