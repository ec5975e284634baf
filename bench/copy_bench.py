"""COPY throughput: psycogreen under gevent vs blocking psycopg2 vs psycopg 3 under gevent.

    python bench/copy_bench.py --dsn "host=127.0.0.1 port=5432 user=postgres dbname=postgres"

Prints a markdown table of MB/s for COPY FROM STDIN and COPY TO STDOUT, for narrow (~40 byte) and
wide (~1 KB) rows, since per-row cost and per-byte cost are different stories. Each driver runs in
its own subprocess (gevent's monkey-patching is process-wide); data is generated in memory first,
so only the driver is measured. The goal for psycogreen is >= 0.9x blocking psycopg2 both ways.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from typing import Any

DRIVERS = ["blocking", "psycogreen", "psycopg3"]
WIDTHS = {"narrow": 30, "wide": 1000}


def make_data(mb: int, width: int) -> bytes:
    pad = b"x" * width
    target = mb << 20
    rows = []
    size = 0
    i = 0
    while size < target:
        row = b"%d\t%s\n" % (i, pad)
        rows.append(row)
        size += len(row)
        i += 1
    return b"".join(rows)


class Sink:
    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

    def write(self, data: Any) -> None:
        self.n += len(data)


def run_one(driver: str, dsn: str, mb: int, width: int, repeat: int) -> dict[str, float]:
    if driver in ("psycogreen", "psycopg3"):
        from gevent import monkey

        monkey.patch_all()
    data = make_data(mb, width)
    best_in = best_out = 0.0
    if driver == "psycopg3":
        import psycopg

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
        return {"in": best_in, "out": best_out}
    import psycopg2

    if driver == "psycogreen":
        import psycogreen

        psycogreen.patch("gevent")
    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    cur.execute("create temp table b (id int, pad text)")
    for _ in range(repeat):
        cur.execute("truncate b")
        src = io.BytesIO(data)
        t0 = time.perf_counter()
        cur.copy_expert("copy b from stdin", src, size=1 << 16)
        best_in = max(best_in, mb / (time.perf_counter() - t0))
        sink = Sink()
        t0 = time.perf_counter()
        cur.copy_expert("copy b to stdout", sink)
        best_out = max(best_out, sink.n / (1 << 20) / (time.perf_counter() - t0))
    conn.close()
    return {"in": best_in, "out": best_out}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dsn", default=os.environ.get("PSYCOGREEN_BENCH_DSN", ""))
    p.add_argument("--mb", type=int, default=100, help="MB copied each way per run (default 100)")
    p.add_argument("--repeat", type=int, default=3, help="runs per case; the best is reported")
    p.add_argument("--one", nargs=2, metavar=("DRIVER", "WIDTH"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if not args.dsn:
        p.error("--dsn is required (or set PSYCOGREEN_BENCH_DSN)")
    if args.one:
        driver, width = args.one
        print(json.dumps(run_one(driver, args.dsn, args.mb, WIDTHS[width], args.repeat)))
        return
    results: dict[tuple[str, str], dict[str, float]] = {}
    for width in WIDTHS:
        for driver in DRIVERS:
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--dsn",
                    args.dsn,
                    "--mb",
                    str(args.mb),
                    "--repeat",
                    str(args.repeat),
                ]
                + ["--one", driver, width],
                capture_output=True,
                text=True,
            )
            if proc.returncode:
                print(f"{driver}/{width} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            results[(driver, width)] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(
        f"COPY throughput, {args.mb} MB each way, best of {args.repeat} (MB/s; ratio vs blocking psycopg2)\n"
    )
    print("| driver | rows | COPY IN MB/s | vs blocking | COPY OUT MB/s | vs blocking |")
    print("|---|---|---:|---:|---:|---:|")
    for width in WIDTHS:
        base = results.get(("blocking", width))
        for driver in DRIVERS:
            r = results.get((driver, width))
            if r is None:
                continue
            rin = f"{r['in'] / base['in']:.2f}x" if base else "-"
            rout = f"{r['out'] / base['out']:.2f}x" if base else "-"
            name = {"blocking": "psycopg2 (blocking)", "psycogreen": "psycogreen + gevent"}.get(
                driver, "psycopg 3 copy() + gevent"
            )
            print(
                f"| {name} | {width} (~{WIDTHS[width] + 8} B) "
                f"| {r['in']:.0f} | {rin} | {r['out']:.0f} | {rout} |"
            )


if __name__ == "__main__":
    main()
