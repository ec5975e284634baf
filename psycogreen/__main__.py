"""python -m psycogreen demo | doctor | bench"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import warnings
from typing import Any, Callable, Optional

DESCRIPTION = "psycopg2, cooperative under gevent, eventlet, asyncio, trio and threads."
EPILOG = """examples:
  python -m psycogreen demo
  python -m psycogreen doctor --dsn "dbname=app"
  python -m psycogreen doctor --framework gevent --dsn "host=db.internal dbname=app"
"""

OK, WARN, FAIL = "ok", "WARN", "FAIL"


class Report:
    """The doctor's output: aligned ``name  value`` lines under headings, and findings at the end."""

    def __init__(self, out: Callable[[str], None] = print) -> None:
        self.out = out
        self.findings: list[tuple[str, str]] = []

    def section(self, title: str) -> None:
        self.out("")
        self.out(title)

    def line(self, name: str, value: str) -> None:
        self.out(f"  {name:<15} {value}")

    def flag(self, level: str, text: str) -> None:
        self.findings.append((level, text))

    def finish(self) -> int:
        self.section("findings")
        if not self.findings:
            self.out(f"  {OK:<5} no known-bad combination found")
        for level, text in self.findings:
            self.out(f"  {level:<5} {text}")
        return 1 if any(level == FAIL for level, _ in self.findings) else 0


def _dist_version(name: str) -> Optional[str]:
    """Installed version without importing (eventlet prints a deprecation notice on import)."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _import_quietly(name: str) -> Any:
    """Import ``name`` with its import-time warnings silenced (eventlet's deprecation banner)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return __import__(name)


def set_up(framework: str) -> None:
    """``doctor --framework``: make this process what a correctly set-up application on that
    framework is (monkey-patched, then ``psycogreen.patch()``), so the checks use its waiter."""
    import psycogreen

    if framework == "gevent":
        _import_quietly("gevent.monkey").monkey.patch_all()
    elif framework == "eventlet":
        _import_quietly("eventlet").monkey_patch()
    psycogreen.patch(framework)


def mask_dsn(dsn: str) -> str:
    """The DSN as ``key=value`` pairs with any password shown as ``***`` (URIs too)."""
    import psycopg2.extensions

    try:
        params = psycopg2.extensions.parse_dsn(dsn)
    except Exception:  # noqa: BLE001 - never echo an unparsable DSN: it may hold a password
        return "<unparsable DSN>"
    if "password" in params:
        params["password"] = "***"
    return " ".join(f"{k}={v}" for k, v in params.items()) or "(libpq defaults)"


def _versions(report: Report) -> None:
    import platform

    import psycopg2

    import psycogreen
    from psycogreen import _libpq

    report.section("versions")
    report.line("psycogreen", psycogreen.__version__)
    report.line("python", f"{platform.python_version()} ({platform.python_implementation()})")
    report.line("psycopg2", f"{getattr(psycopg2, '__version__', '?')}  ({psycopg2.__file__})")
    v = _libpq.LIBPQ_VERSION
    report.line("libpq", f"{v // 10000}.{v % 10000}  (the one psycopg2 is linked with)")
    for mod in ("gevent", "eventlet", "greenlet", "anyio", "trio", "uvloop", "django", "gunicorn"):
        version = _dist_version(mod)
        if mod == "eventlet" and version:
            version += "  (deprecated upstream)"
        report.line(mod, version or "not installed")


def _cancel_path(waiter_name: str) -> tuple[str, bool]:
    """How a statement is cancelled here, and whether that path is the non-blocking one."""
    from psycogreen import _libpq

    if _libpq.HAS_NONBLOCKING_CANCEL:
        return "non-blocking (libpq >= 17: PQcancelStart/PQcancelPoll)", True
    where = (
        "inline, blocking this thread"
        if waiter_name in ("threads", "asyncio")
        else f"{waiter_name}'s thread pool"
    )
    return f"thread fallback (blocking PQcancel, {where})", False


def _callback_name(cb: Any) -> str:
    if cb is None:
        return "none (psycopg2 blocks inside libpq)"
    from psycogreen import _wait

    if _wait.is_ours(cb):
        return "psycogreen"
    return f"{getattr(cb, '__module__', '?')}.{getattr(cb, '__qualname__', repr(cb))} (not psycogreen's)"


def _process(report: Report) -> None:
    """Would psycopg2 be cooperative in this process, and how would it wait and cancel?"""
    import psycopg2.extensions

    import psycogreen
    from psycogreen import _patch

    report.section("this process")
    gevent_mp, eventlet_mp = _patch._gevent_patched(), _patch._eventlet_patched()
    monkey = [name for name, on in (("gevent", gevent_mp), ("eventlet", eventlet_mp)) if on]
    report.line("monkey-patched", " and ".join(monkey) if monkey else "no")
    detected = _patch.detect()
    report.line("framework", f"{detected} (detected)")
    active = psycogreen.patched()
    callback = psycopg2.extensions.get_wait_callback()
    if active is None:
        report.line("psycogreen", f"not patched (psycogreen.patch() would choose {detected})")
        waiter_name = detected
    else:
        report.line("psycogreen", f"patched for {active}")
        waiter = _patch.chosen_waiter()
        waiter_name = getattr(waiter, "name", "?")
        report.line("waiter", f"{type(waiter).__name__} ({waiter_name})")
    report.line("wait callback", _callback_name(callback))
    cancel, nonblocking = _cancel_path(waiter_name)
    report.line("cancel path", cancel)
    _accelerator(report)
    _cooperation(report, monkey, active, callback)
    _process_warnings(report, nonblocking, eventlet_mp)


def _cooperation(report: Report, monkey: list[str], active: Optional[str], callback: Any) -> None:
    """Is psycopg2 cooperative here: the monkey-patching seen against what psycogreen waits with."""
    if monkey and callback is None:
        report.line("cooperative", "NO: every query blocks the whole process")
        report.flag(
            FAIL,
            f"{monkey[0]} monkey-patched this process but psycopg2 has no wait callback: call "
            "psycogreen.patch() after monkey-patching (gunicorn: post_fork; see docs/deployment.md)",
        )
    elif monkey and active not in (None, monkey[0]):
        report.line("cooperative", f"partly: psycogreen waits with {active} in a {monkey[0]} process")
        report.flag(WARN, f"psycogreen is patched for {active!r} but {monkey[0]} monkey-patched the process")
    elif monkey and active is None:
        report.line("cooperative", f"yes, through {_callback_name(callback)}")
        report.flag(
            WARN,
            "psycopg2's wait callback is not psycogreen's: no deadlines, no cancel on interrupt; "
            "call psycogreen.patch()",
        )
    elif monkey:
        report.line("cooperative", f"yes ({active})")
    else:
        report.line("cooperative", "threads: each thread waits for itself (no green framework in use)")


def _process_warnings(report: Report, nonblocking: bool, eventlet_mp: bool) -> None:
    """What in this process's set-up deserves a warning (cancel path, frameworks imported)."""
    from psycogreen import _libpq

    if not nonblocking:
        if getattr(_libpq, "_has_cancel_api", False):
            report.flag(WARN, "non-blocking cancel disabled by PSYCOGREEN_CANCEL=thread")
        else:
            report.flag(
                WARN,
                f"psycopg2 is linked with libpq {_libpq.LIBPQ_VERSION // 10000}, which has no non-blocking "
                "cancel: each cancel ties up a thread until the server answers; a psycopg2 built on "
                "libpq >= 17 (psycopg2-binary 2.9.13 bundles libpq 17) cancels without one",
            )
    if "gevent" in sys.modules and "eventlet" in sys.modules:
        report.flag(
            WARN,
            "gevent and eventlet are both imported: only one may monkey-patch a process, and "
            "psycogreen refuses to wait with the other one",
        )
    if "eventlet" in sys.modules or eventlet_mp:
        report.flag(WARN, "eventlet is deprecated upstream (bugfix-only); prefer gevent or psycogreen.aio")


def _accelerator(report: Report) -> None:
    """Which implementation of the hot paths runs (the optional C accelerator, issue 13); the
    sentence says why when it is pure Python (disabled by the environment, or not built)."""
    from psycogreen import _accel

    report.line("hot paths", _accel.reason)


def _server(report: Report, dsn: str) -> None:
    """Connect, measure, and send a real cancel, with psycogreen patched (as an application is)."""
    import psycopg2
    import psycopg2.extensions

    import psycogreen

    report.section(f"server  {mask_dsn(dsn)}")
    password = psycopg2.extensions.parse_dsn(dsn).get("password") if _parsable(dsn) else None
    kwargs: dict[str, Any] = {}
    if not _parsable(dsn) or "connect_timeout" not in psycopg2.extensions.parse_dsn(dsn):
        kwargs["connect_timeout"] = 10
    patched_here = psycogreen.patched() is None
    if patched_here:
        psycogreen.patch()
    try:
        t0 = time.monotonic()
        try:
            conn = psycopg2.connect(dsn, **kwargs)
        except psycopg2.Error as e:
            message = _scrub("; ".join(part.strip() for part in str(e).strip().splitlines()), password)
            report.line("connect", f"FAILED after {time.monotonic() - t0:.2f} s")
            report.flag(FAIL, f"cannot connect: {message}")
            return
        try:
            report.line("connected", f"in {(time.monotonic() - t0) * 1000:.1f} ms")
            _measure(report, conn)
            _check_cancel(report, conn)
        finally:
            conn.close()
    finally:
        if patched_here:
            psycogreen.unpatch()


def _parsable(dsn: str) -> bool:
    import psycopg2.extensions

    try:
        psycopg2.extensions.parse_dsn(dsn)
    except Exception:  # noqa: BLE001
        return False
    return True


def _scrub(message: str, password: Optional[str]) -> str:
    return message.replace(password, "***") if password else message


def _measure(report: Report, conn: Any) -> None:
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("show server_version")
    report.line("server version", cur.fetchone()[0])
    samples = []
    for _ in range(20):
        t = time.perf_counter()
        cur.execute("select 1")
        cur.fetchone()
        samples.append(time.perf_counter() - t)
    report.line("round trip", f"{statistics.median(samples) * 1000:.2f} ms (median of 20 'select 1')")
    info = conn.info
    if getattr(info, "ssl_in_use", False):
        detail = ", ".join(v for v in (info.ssl_attribute("protocol"), info.ssl_attribute("cipher")) if v)
        report.line("ssl", f"yes ({detail})" if detail else "yes")
    else:
        report.line("ssl", "no")


def _check_cancel(report: Report, conn: Any) -> None:
    """``select pg_sleep(5)`` under a 0.5 s ``psycogreen.timeout()``: the statement must be cancelled
    on the server (a real cancel request) and the connection stay usable."""
    import psycopg2.extensions

    import psycogreen

    deadline = 0.5
    cur = conn.cursor()
    t0 = time.monotonic()
    try:
        with psycogreen.timeout(deadline):
            cur.execute("select pg_sleep(5)")
    except psycopg2.extensions.QueryCanceledError:
        took = time.monotonic() - t0
    except psycopg2.Error as e:
        report.line("cancel", f"FAILED: {type(e).__name__}: {str(e).strip()}")
        report.flag(FAIL, f"the cancel path does not work: {e}".strip())
        return
    else:
        report.line("cancel", "FAILED: pg_sleep(5) was not interrupted")
        report.flag(FAIL, "a 0.5 s psycogreen.timeout() did not cancel pg_sleep(5)")
        return
    try:
        cur.execute("select 1")
        usable = cur.fetchone() == (1,)
    except psycopg2.Error:
        usable = False
    report.line(
        "cancel",
        f"pg_sleep(5) cancelled {took:.2f} s after it started (deadline {deadline} s, so the cancel "
        f"took {max(took - deadline, 0) * 1000:.0f} ms); connection {'usable' if usable else 'BROKEN'}",
    )
    if not usable:
        report.flag(FAIL, "the connection was not usable after a cancel")
    elif took > deadline + 2:
        report.flag(WARN, f"a cancel took {took - deadline:.1f} s to be confirmed by the server")


def doctor(
    dsn: Optional[str] = None, framework: Optional[str] = None, out: Callable[[str], None] = print
) -> int:
    """Say what this environment gives psycogreen and whether psycopg2 would be cooperative; with a
    DSN, check the server end to end. Returns 1 if something is broken, else 0. Callable from inside
    an application too, to see that process as it is."""
    if framework:
        set_up(framework)
    report = Report(out)
    out("psycogreen doctor")
    _versions(report)
    _process(report)
    if dsn:
        _server(report, dsn)
    return report.finish()


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
    parser = argparse.ArgumentParser(
        prog="python -m psycogreen",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{demo,doctor,bench}")
    demo_p = sub.add_parser(
        "demo", help="show cooperative psycopg2 against a throwaway PostgreSQL (or --dsn)"
    )
    demo_p.add_argument("--dsn", default=os.environ.get("PSYCOGREEN_DSN"), help="use this server instead")
    demo_p.add_argument("--greenlets", type=int, default=50, help="concurrent greenlets/tasks (default 50)")
    doc_p = sub.add_parser(
        "doctor",
        help="versions, whether psycopg2 would be cooperative here, and (with --dsn) a server check",
        description="Report versions and libpq features, whether psycopg2 would be cooperative in this "
        "process (monkey-patching, waiter, cancel path) and, with --dsn, check a server: version, "
        "round trip, SSL and a real cancel of a running statement. Passwords are never printed. "
        "Exits 1 when something is broken.",
    )
    doc_p.add_argument("--dsn", help="a libpq connection string or URI to check (password is masked)")
    doc_p.add_argument(
        "--framework",
        choices=("gevent", "eventlet", "threads"),
        help="set this process up as an application on that framework is (monkey-patched, then "
        "psycogreen.patch()) before checking",
    )
    bench = sub.add_parser("bench", help="run the benchmark suite (from a source checkout)")
    bench.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the benchmark runner")
    ns = parser.parse_args(argv)
    if ns.command == "doctor":
        return doctor(ns.dsn, ns.framework)
    if ns.command == "demo":
        return demo(ns.dsn, ns.greenlets)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.isdir(os.path.join(here, "bench")):
        print("the benchmark suite lives in the source checkout: git clone, then `make bench`")
        return 2
    return subprocess.call([sys.executable, "-m", "bench", *ns.args], cwd=here)


if __name__ == "__main__":
    sys.exit(main())
