"""The demo behind ``make demo`` / ``python -m psycogreen demo``.

Runs under gevent against a throwaway PostgreSQL (or ``--dsn``) and shows, with numbers measured
here and now: many greenlets waiting on the server at once, point-select throughput green vs
blocking, and a timeout that cancels the query on the server while the connection survives.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from typing import Any, Callable, Iterator, Optional  # noqa: E402

import gevent  # noqa: E402
import psycopg2  # noqa: E402

import psycogreen  # noqa: E402
from psycogreen._demo_table import table  # noqa: E402
from psycogreen.errors import QueryTimeout  # noqa: E402


class Bar:
    """A one-line progress bar (no dependency)."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self.done = label, total, 0
        self.tty = sys.stdout.isatty()

    def step(self) -> None:
        self.done += 1
        if self.tty or self.done == self.total:
            filled = int(30 * self.done / self.total)
            end = "\n" if self.done == self.total else ""
            sys.stdout.write(
                f"\r  {self.label:<28} [{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total}{end}"
            )
            sys.stdout.flush()


@contextmanager
def server(dsn: Optional[str]) -> Iterator[str]:
    if dsn:
        yield dsn
        return
    from psycogreen.testing import PostgresServer

    print("Starting a throwaway PostgreSQL ...", flush=True)
    srv = PostgresServer().start()
    try:
        yield srv.dsn
    finally:
        srv.destroy()


def sleepers(dsn: str, n: int) -> tuple[float, float]:
    """n greenlets, each on its own connection, run pg_sleep(0.2) three times."""
    conns = [psycopg2.connect(dsn) for _ in range(n)]
    bar = Bar(f"{n} greenlets x 3 x 0.2 s", n * 3)

    def work(c: Any) -> None:
        cur = c.cursor()
        for _ in range(3):
            cur.execute("select pg_sleep(0.2)")
            bar.step()

    t0 = time.monotonic()
    gevent.joinall([gevent.spawn(work, c) for c in conns], raise_error=True)
    green = time.monotonic() - t0
    for c in conns:
        c.close()
    # Blocking: measure a small sample and extrapolate instead of waiting n * 0.6 s.
    psycogreen.unpatch()
    c = psycopg2.connect(dsn)
    cur = c.cursor()
    t0 = time.monotonic()
    for _ in range(5):
        cur.execute("select pg_sleep(0.2)")
    per_query = (time.monotonic() - t0) / 5
    c.close()
    psycogreen.patch("gevent")
    return green, per_query * n * 3


def throughput(dsn: str, seconds: float = 2.0, workers: int = 16) -> tuple[float, float]:
    setup = psycopg2.connect(dsn)
    setup.autocommit = True
    setup.cursor().execute(
        "create table if not exists demo_accounts (aid int primary key, abalance int);"
        "insert into demo_accounts select i, 0 from generate_series(1, 10000) i on conflict do nothing"
    )
    setup.close()

    def run(n_workers: int, spawn: Callable[..., Any]) -> float:
        conns = [psycopg2.connect(dsn) for _ in range(n_workers)]
        count = [0]
        end = time.monotonic() + seconds

        def work(c: Any) -> None:
            cur = c.cursor()
            i = 0
            while time.monotonic() < end:
                i = (i * 7919 + 1) % 10000
                cur.execute("select abalance from demo_accounts where aid = %s", (i + 1,))
                cur.fetchone()
                count[0] += 1

        spawn(work, conns)
        for c in conns:
            c.close()
        return count[0] / seconds

    def green(work: Callable[..., None], conns: list[Any]) -> None:
        gevent.joinall([gevent.spawn(work, c) for c in conns], raise_error=True)

    def blocking(work: Callable[..., None], conns: list[Any]) -> None:
        for c in conns:
            work(c)

    green_qps = run(workers, green)
    psycogreen.unpatch()
    blocking_qps = run(1, blocking)
    psycogreen.patch("gevent")
    return green_qps, blocking_qps


def timeout_demo(dsn: str) -> list[tuple[str, ...]]:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    mon = psycopg2.connect(dsn)
    mon.autocommit = True

    def running() -> int:
        cur = mon.cursor()
        cur.execute(
            "select count(*) from pg_stat_activity where query like 'select pg_sleep(10)%' and state='active'"
        )
        row = cur.fetchone()
        return int(row[0]) if row else 0

    rows: list[tuple[str, ...]] = [("interrupt", "raised", "after", "still running on server", "connection")]
    for label, ctx in (
        ("psycogreen.timeout(0.5)", lambda: psycogreen.timeout(0.5)),
        ("gevent.Timeout(0.5)", lambda: gevent.Timeout(0.5)),
    ):
        t0 = time.monotonic()
        raised = "nothing"
        try:
            with ctx():
                conn.cursor().execute("select pg_sleep(10)")
        except (QueryTimeout, gevent.Timeout) as e:
            raised = type(e).__name__
        after = time.monotonic() - t0
        gevent.sleep(0.05)
        cur = conn.cursor()
        cur.execute("select 1")
        ok = "usable" if cur.fetchone() == (1,) else "broken"
        rows.append((label, raised, f"{after:.2f} s", str(running()), ok))
    conn.close()
    mon.close()
    return rows


def pool_demo(dsn: str, clients: int = 200, size: int = 10) -> list[tuple[str, ...]]:
    """Many greenlets share a small cooperative pool; some give up (timeouts) without leaking."""
    from psycogreen.pool import ConnectionPool

    bar = Bar(f"{clients} greenlets, {size} conns", clients)
    gave_up = [0]
    with ConnectionPool(dsn, min_size=size, max_size=size, timeout=10, name="demo") as pool:
        pool.wait()

        def work(n: int) -> None:
            try:
                # every 10th client is impatient: it gives up while waiting or mid-query
                with gevent.Timeout(0.05 if n % 10 == 0 else None):
                    with pool.connection() as conn:
                        conn.cursor().execute("select pg_sleep(0.02)")
            except gevent.Timeout:
                gave_up[0] += 1
            bar.step()

        t0 = time.monotonic()
        gevent.joinall([gevent.spawn(work, n) for n in range(clients)], raise_error=True)
        elapsed = time.monotonic() - t0
        stats = pool.get_stats()
        mon = psycopg2.connect(dsn)
        cur = mon.cursor()
        cur.execute(
            "select count(*) from pg_stat_activity where backend_type = 'client backend'"
            " and pid <> pg_backend_pid()"
        )
        row = cur.fetchone()
        backends = row[0] if row else "?"
        mon.close()
        return [
            ("", "value"),
            ("wall time", f"{elapsed:.2f} s"),
            ("clients that gave up (timeouts)", str(gave_up[0])),
            ("requests served by the pool", str(stats.get("requests_num", 0))),
            ("server backends at the end", f"{backends} (pool max {size})"),
            ("pool", repr(pool)),
        ]


def copy_demo(dsn: str, rows: int = 200_000) -> list[tuple[str, ...]]:
    """COPY in and out through the unchanged psycopg2 calls, while a ticker greenlet keeps time."""
    import io

    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    cur.execute("create temp table demo_copy (id int, name text, amount numeric)")
    data = "".join(f"{i}\tcustomer {i}\t{i * 1.5}\n" for i in range(rows)).encode()
    gaps: list[float] = []
    running = [True]

    def ticker() -> None:
        last = time.monotonic()
        while running[0]:
            gevent.sleep(0.005)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    tick = gevent.spawn(ticker)
    t0 = time.monotonic()
    cur.copy_from(io.BytesIO(data), "demo_copy")
    t_in = time.monotonic() - t0
    loaded = cur.rowcount
    out = io.BytesIO()
    t0 = time.monotonic()
    cur.copy_expert("copy demo_copy to stdout", out)
    t_out = time.monotonic() - t0
    running[0] = False
    tick.join()
    conn.commit()
    conn.close()
    mb = len(data) / 1e6
    return [
        ("", "rows", "MB", "MB/s", "ticker: ticks / worst gap"),
        ("cursor.copy_from (in)", f"{loaded:,}", f"{mb:.1f}", f"{mb / t_in:.0f}", ""),
        (
            "cursor.copy_expert (out)",
            f"{rows:,}",
            f"{len(out.getvalue()) / 1e6:.1f}",
            f"{mb / t_out:.0f}",
            "",
        ),
        ("meanwhile, a 5 ms ticker", "", "", "", f"{len(gaps)} / {max(gaps, default=0) * 1000:.0f} ms"),
    ]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn")
    parser.add_argument("--greenlets", type=int, default=50)
    ns = parser.parse_args()
    psycogreen.patch("gevent")
    with server(ns.dsn) as dsn:
        print(f"\npsycogreen {psycogreen.__version__} under gevent\n")
        print("1. Many greenlets waiting on the server at once")
        green, blocking = sleepers(dsn, ns.greenlets)
        table(
            [
                ("", "wall time"),
                (f"green: {ns.greenlets} greenlets", f"{green:.2f} s"),
                ("blocking psycopg2 (estimated)", f"{blocking:.1f} s"),
                ("speed-up", f"{blocking / green:.0f}x"),
            ]
        )
        print("\n2. Point selects for 2 s")
        gq, bq = throughput(dsn)
        table(
            [
                ("", "queries/s"),
                ("green, 16 greenlets", f"{gq:,.0f}"),
                ("blocking, 1 connection", f"{bq:,.0f}"),
            ]
        )
        print("\n3. Timeouts cancel on the server and keep the connection (pg_sleep(10))")
        table(timeout_demo(dsn))
        print("\n4. A cooperative pool: 200 greenlets share 10 connections")
        table(pool_demo(dsn))
        print("\n5. COPY, which green mode used to refuse, now cooperative")
        table(copy_demo(dsn))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
