"""``python -m psycogreen demo | doctor | bench``."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import Optional


def doctor() -> int:
    """Say what this machine gives psycogreen: versions, libpq features, frameworks."""
    import platform

    import psycopg2

    import psycogreen
    from psycogreen import _libpq

    v = _libpq.LIBPQ_VERSION
    print(f"psycogreen   {psycogreen.__version__}")
    print(f"python       {platform.python_version()} ({platform.python_implementation()})")
    print(f"psycopg2     {getattr(psycopg2, '__version__', '?')}  ({psycopg2.__file__})")
    print(f"libpq        {v // 10000}.{v % 10000}")
    cancel = "non-blocking (PQcancelStart)" if _libpq.HAS_NONBLOCKING_CANCEL else "thread pool (PQcancel)"
    print(f"cancel       {cancel}")
    for mod in ("gevent", "eventlet", "greenlet", "anyio", "trio", "uvloop"):
        try:
            m = __import__(mod)
            print(f"{mod:<12} {getattr(m, '__version__', 'installed')}")
        except ImportError:
            print(f"{mod:<12} not installed")
    print(f"patched      {psycogreen.patched()}")
    return 0


def demo(dsn: Optional[str], greenlets: int) -> int:
    """Start (unless given a DSN) a throwaway PostgreSQL, then run the gevent demo and the asyncio
    demo, each in a fresh process: the gevent one monkey-patches its whole process."""
    server = None
    if not dsn:
        from psycogreen.testing import PostgresServer

        print("Starting a throwaway PostgreSQL ...", flush=True)
        server = PostgresServer().start()
        dsn = server.dsn
    try:
        rc = subprocess.call(
            [sys.executable, "-m", "psycogreen._demo", "--dsn", dsn, "--greenlets", str(greenlets)]
        )
        if rc == 0:
            rc = subprocess.call(
                [sys.executable, "-m", "psycogreen._demo_aio", "--dsn", dsn, "--tasks", str(greenlets)]
            )
        return rc
    finally:
        if server is not None:
            server.destroy()


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m psycogreen", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo_p = sub.add_parser("demo", help="show cooperative psycopg2 against a throwaway PostgreSQL")
    demo_p.add_argument("--dsn", default=os.environ.get("PSYCOGREEN_DSN"), help="use this server instead")
    demo_p.add_argument("--greenlets", type=int, default=50)
    sub.add_parser("doctor", help="report versions, libpq features and frameworks")
    bench = sub.add_parser("bench", help="run the benchmark suite (from a source checkout)")
    bench.add_argument("args", nargs=argparse.REMAINDER)
    ns = parser.parse_args(argv)
    if ns.command == "doctor":
        return doctor()
    if ns.command == "demo":
        return demo(ns.dsn, ns.greenlets)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.isdir(os.path.join(here, "bench")):
        print("the benchmark suite lives in the source checkout: git clone, then `make bench`")
        return 2
    return subprocess.call([sys.executable, "-m", "bench", *ns.args], cwd=here)


if __name__ == "__main__":
    sys.exit(main())
