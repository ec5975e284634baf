"""A large COPY in and out under one framework (argv[1]) with memory measured: RSS must stay flat.

Size in MB from argv[2] (tests use 200; ``python copy_large.py gevent 1024`` is the 1 GB check).
The file objects generate and discard data on the fly, so any growth would be psycogreen's.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import kit
import psycopg2

MB = int(sys.argv[2]) if len(sys.argv) > 2 else 200
ROW = b"x" * 1000


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Source:
    def __init__(self, total: int) -> None:
        self.left = total
        self.i = 0

    def read(self, size: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        n = max(1, size // (len(ROW) + 12))
        rows = []
        for _ in range(n):
            rows.append(b"%d\t%s\n" % (self.i, ROW))
            self.i += 1
        data = b"".join(rows)
        self.left -= len(data)
        return data


class Sink:
    def __init__(self) -> None:
        self.n = 0
        self.peak = 0.0

    def write(self, data: Any) -> None:
        self.n += len(data)
        if self.n % (1 << 24) < len(data):  # about every 16 MB
            self.peak = max(self.peak, rss_mb())


conn = psycopg2.connect(kit.DSN)
cur = conn.cursor()
cur.execute("create temp table big (id int, pad text) with (autovacuum_enabled = off)")
conn.commit()
ticker = kit.Ticker()
base = rss_mb()
t0 = time.monotonic()
src = Source(MB << 20)
cur.copy_expert("copy big from stdin", src, size=1 << 16)
t_in = time.monotonic() - t0
after_in = rss_mb()
sink = Sink()
t0 = time.monotonic()
cur.copy_expert("copy big to stdout", sink)
t_out = time.monotonic() - t0
after_out = max(rss_mb(), sink.peak)
gap = ticker.stop()
conn.rollback()
kit.emit(
    mb=MB,
    rows=src.i,
    out_bytes=sink.n,
    rss_base=base,
    rss_growth_in=after_in - base,
    rss_growth_out=after_out - base,
    in_mb_s=MB / t_in,
    out_mb_s=sink.n / (1 << 20) / t_out,
    max_gap=gap,
)
