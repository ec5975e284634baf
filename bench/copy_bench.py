"""COPY throughput: psycogreen under gevent vs blocking psycopg2 vs psycopg 3 under gevent.

    python bench/copy_bench.py --dsn "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
    python bench/copy_bench.py --dsn ... --mb 10 --drivers blocking,psycogreen --instructions

Prints a markdown table of MB/s for COPY FROM STDIN and COPY TO STDOUT, for narrow (~40 byte) and
wide (~1 KB) rows, since per-row cost and per-byte cost are different stories. Each driver runs in
its own subprocess (gevent's monkey-patching is process-wide); data is generated in memory first,
so only the driver is measured. Targets for psycogreen: COPY IN >= 0.9x blocking psycopg2, COPY
OUT >= 0.4x for narrow rows (pure Python), wide rows not slower than before.

Throughput on a shared machine is noisy; ``--instructions`` adds the deterministic figure:
instructions per row in the client process, counted by ``valgrind --tool=callgrind`` over two
sizes (``--mb`` and 1/6 of it) so start-up cancels out, minus the cost of generating the rows in
Python (measured by a run that only generates them).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional

DRIVERS = ["blocking", "psycogreen", "psycopg3"]
WIDTHS = {"narrow": 30, "wide": 1000}


def make_data(mb: int, width: int) -> bytes:
    """About ``mb`` MB of rows: a block of 1,000 numbered rows repeated, so that generating the
    data costs almost nothing per row next to the COPY being measured."""
    pad = b"x" * width
    block = b"".join(b"%d\t%s\n" % (i, pad) for i in range(1000))
    return block * -(-(mb << 20) // len(block))


class Sink:
    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

    def write(self, data: Any) -> None:
        self.n += len(data)


def run_one(
    driver: str, dsn: str, mb: int, width: int, repeat: int, only: Optional[str] = None
) -> dict[str, float]:
    """Best MB/s each way for one driver (``only``: one direction, for instruction counts)."""
    if driver in ("psycogreen", "psycopg3"):
        from gevent import monkey

        monkey.patch_all()
    data = make_data(mb, width)
    if driver == "none":  # the cost of the run without any COPY: generating the data
        return {"rows": data.count(b"\n")}
    if driver == "psycopg3":
        return run_psycopg3(dsn, data, mb, repeat)
    import psycopg2

    if driver == "psycogreen":
        import psycogreen

        psycogreen.patch("gevent")
    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    cur.execute("create temp table b (id int, pad text)")
    best_in = best_out = 0.0
    for _ in range(repeat):
        if only == "out":  # fill the table on the server: only COPY OUT runs in this process
            cur.execute("truncate b")
            cur.execute(
                "insert into b select i, repeat('x', %s) from generate_series(0, %s) i",
                (width, data.count(b"\n") - 1),
            )
        elif only in (None, "in"):
            cur.execute("truncate b")
            src = io.BytesIO(data)
            t0 = time.perf_counter()
            cur.copy_expert("copy b from stdin", src, size=1 << 16)
            best_in = max(best_in, mb / (time.perf_counter() - t0))
        if only in (None, "out"):
            sink = Sink()
            t0 = time.perf_counter()
            cur.copy_expert("copy b to stdout", sink)
            best_out = max(best_out, sink.n / (1 << 20) / (time.perf_counter() - t0))
    conn.close()
    return {"in": best_in, "out": best_out, "rows": data.count(b"\n")}


def run_psycopg3(dsn: str, data: bytes, mb: int, repeat: int) -> dict[str, float]:
    import psycopg

    best_in = best_out = 0.0
    conn3 = psycopg.connect(dsn)
    cur3 = conn3.cursor()
    cur3.execute("create temp table b (id int, pad text)")
    for _ in range(repeat):
        cur3.execute("truncate b")
        src = io.BytesIO(data)
        t0 = time.perf_counter()
        with cur3.copy("copy b from stdin") as cp:
            while chunk := src.read(1 << 16):
                cp.write(chunk)
        best_in = max(best_in, mb / (time.perf_counter() - t0))
        sink = Sink()
        t0 = time.perf_counter()
        with cur3.copy("copy b to stdout") as cp:
            for block in cp:
                sink.write(block)
        best_out = max(best_out, sink.n / (1 << 20) / (time.perf_counter() - t0))
    conn3.close()
    return {"in": best_in, "out": best_out, "rows": data.count(b"\n")}


def child(
    args: argparse.Namespace, driver: str, width: str, mb: int, only: Optional[str] = None
) -> list[str]:
    """The command measuring one case in a fresh process (one run when counting instructions)."""
    repeat = 1 if only else args.repeat
    cmd = [sys.executable, __file__, "--dsn", args.dsn, "--mb", str(mb), "--repeat", str(repeat)]
    cmd += ["--one", driver, width]
    return cmd + (["--only", only] if only else [])


def callgrind(args: argparse.Namespace, driver: str, width: str, mb: int, only: str) -> tuple[int, int]:
    """(instructions, rows) of one run of ``driver`` under callgrind; runs without a driver
    ("none") are counted once per size."""
    key = (driver, width, mb, "" if driver == "none" else only)
    if key not in _COUNTS:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "callgrind.out")
            cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
            proc = subprocess.run(
                cmd + child(args, driver, width, mb, only), capture_output=True, text=True, check=False
            )
            if proc.returncode:
                raise RuntimeError(f"callgrind run failed:\n{proc.stderr[-2000:]}")
            rows = int(json.loads(proc.stdout.strip().splitlines()[-1])["rows"])
            with open(out) as f:
                found = re.search(r"^summary: (\d+)", f.read(), re.M)
            assert found, "no summary line in the callgrind output"
            _COUNTS[key] = (int(found.group(1)), rows)
    return _COUNTS[key]


_COUNTS: dict[tuple[str, str, int, str], tuple[int, int]] = {}


def instructions(args: argparse.Namespace, driver: str, width: str, only: str) -> Optional[float]:
    """Client instructions per row of ``driver`` copying ``only`` ("in"/"out"), by callgrind: the
    difference between two sizes (start-up cancels out) minus the same difference for a run that
    only generates the rows in Python (every run does: COPY IN sends them, COPY OUT counts them)."""
    small = max(1, args.mb // 6)
    (i1, r1), (i2, r2) = (callgrind(args, driver, width, mb, only) for mb in (small, args.mb))
    (g1, _), (g2, _) = (callgrind(args, "none", width, mb, only) for mb in (small, args.mb))
    return (i2 - i1 - (g2 - g1)) / (r2 - r1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dsn", default=os.environ.get("PSYCOGREEN_BENCH_DSN", ""))
    p.add_argument("--mb", type=int, default=100, help="MB copied each way per run (default 100)")
    p.add_argument("--repeat", type=int, default=3, help="runs per case; the best is reported")
    p.add_argument(
        "--drivers", default=",".join(DRIVERS), help="comma-separated subset of " + ",".join(DRIVERS)
    )
    p.add_argument(
        "--instructions",
        action="store_true",
        help="also count client instructions per row with callgrind (slow: use --mb 10)",
    )
    p.add_argument("--one", nargs=2, metavar=("DRIVER", "WIDTH"), help=argparse.SUPPRESS)
    p.add_argument("--only", choices=["in", "out"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if not args.dsn:
        p.error("--dsn is required (or set PSYCOGREEN_BENCH_DSN)")
    if args.one:
        driver, width = args.one
        print(json.dumps(run_one(driver, args.dsn, args.mb, WIDTHS[width], args.repeat, args.only)))
        return
    drivers = [d for d in args.drivers.split(",") if d]
    unknown = set(drivers) - set(DRIVERS)
    if unknown:
        p.error(f"unknown driver(s) {sorted(unknown)}: choose from {DRIVERS}")
    results = measure(args, drivers)
    report(args, drivers, results)
    if args.instructions:
        report_instructions(args, [d for d in drivers if d != "psycopg3"])


def measure(args: argparse.Namespace, drivers: list[str]) -> dict[tuple[str, str], dict[str, float]]:
    results: dict[tuple[str, str], dict[str, float]] = {}
    for width in WIDTHS:
        for driver in drivers:
            proc = subprocess.run(child(args, driver, width, args.mb), capture_output=True, text=True)
            if proc.returncode:
                print(f"{driver}/{width} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            results[(driver, width)] = json.loads(proc.stdout.strip().splitlines()[-1])
    return results


def report(
    args: argparse.Namespace, drivers: list[str], results: dict[tuple[str, str], dict[str, float]]
) -> None:
    print(
        f"COPY throughput, {args.mb} MB each way, best of {args.repeat} (MB/s; ratio vs blocking psycopg2)\n"
    )
    print("| driver | rows | COPY IN MB/s | vs blocking | COPY OUT MB/s | vs blocking |")
    print("|---|---|---:|---:|---:|---:|")
    for width in WIDTHS:
        base = results.get(("blocking", width))
        for driver in drivers:
            r = results.get((driver, width))
            if r is None:
                continue
            rin = f"{r['in'] / base['in']:.2f}x" if base else "-"
            rout = f"{r['out'] / base['out']:.2f}x" if base else "-"
            print(
                f"| {NAMES[driver]} | {width} (~{WIDTHS[width] + 8} B) "
                f"| {r['in']:.0f} | {rin} | {r['out']:.0f} | {rout} |"
            )


def report_instructions(args: argparse.Namespace, drivers: list[str]) -> None:
    print(
        f"\nClient instructions per row (callgrind, {max(1, args.mb // 6)} vs {args.mb} MB; "
        "ratio = blocking / driver)\n"
    )
    print("| driver | rows | COPY IN | vs blocking | COPY OUT | vs blocking |")
    print("|---|---|---:|---:|---:|---:|")
    for width in WIDTHS:
        counts = {(d, only): instructions(args, d, width, only) for d in drivers for only in ("in", "out")}
        for driver in drivers:
            cells = []
            for only in ("in", "out"):
                mine, base = counts[(driver, only)], counts.get(("blocking", only))
                cells.append(f"{mine:.0f}" if mine is not None else "-")
                cells.append(f"{base / mine:.2f}x" if mine and base and mine > 0 and base > 0 else "-")
            print(f"| {NAMES[driver]} | {width} | " + " | ".join(cells) + " |")


NAMES = {
    "blocking": "psycopg2 (blocking)",
    "psycogreen": "psycogreen + gevent",
    "psycopg3": "psycopg 3 copy() + gevent",
}


if __name__ == "__main__":
    main()
