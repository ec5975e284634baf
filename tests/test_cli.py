"""``python -m psycogreen demo`` and ``doctor`` run end to end against the real server."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest


def _run(*args: str, env: dict[str, str] | None = None, code: str | None = None) -> Any:
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "psycogreen", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})


def test_doctor_reports_libpq_and_frameworks() -> None:
    proc = _run("doctor")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "libpq" in out and "cancel path" in out and "gevent" in out
    assert "monkey-patched  no" in out and "patch() would choose threads" in out
    assert "Eventlet is deprecated" not in out + proc.stderr  # versions are read without importing


def test_doctor_says_which_hot_path_runs_and_why() -> None:
    from psycogreen import _accel

    pure = _run("doctor", env={_accel.ENV: "1"})
    assert f"hot paths       pure Python: disabled by {_accel.ENV}=1" in pure.stdout, pure.stdout
    default = _run("doctor", env={_accel.ENV: ""})
    expected = "C accelerator (_speedups" if _accel.built() else "pure Python: the C accelerator is not built"
    assert f"hot paths       {expected}" in default.stdout, default.stdout


def test_doctor_checks_the_server_and_masks_the_password(dsn: str) -> None:
    # The test server trusts loopback, so the password is sent nowhere; it must not be printed.
    proc = _run("doctor", "--dsn", f"{dsn} password=s3cret-pw")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "s3cret-pw" not in out + proc.stderr and "password=***" in out
    assert "server version  15." in out
    assert "round trip" in out and "ms (median of 20" in out
    assert "ssl             no" in out
    assert "pg_sleep(5) cancelled" in out and "connection usable" in out
    assert "no known-bad combination" in out


def test_doctor_unreachable_server_fails_without_leaking(dsn: str) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on (bound, never listening)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        proc = _run("doctor", "--dsn", f"postgresql://bob:hunter2@127.0.0.1:{port}/nodb?connect_timeout=3")
    assert proc.returncode == 1, proc.stdout
    assert "hunter2" not in proc.stdout + proc.stderr and "password=***" in proc.stdout
    assert "FAIL  cannot connect" in proc.stdout


@pytest.mark.parametrize(
    ("framework", "waiter"), [("gevent", "GeventWaiter"), ("eventlet", "EventletWaiter")]
)
def test_doctor_as_a_green_application(dsn: str, framework: str, waiter: str) -> None:
    proc = _run("doctor", "--framework", framework, "--dsn", dsn)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert f"monkey-patched  {framework}" in out and f"patched for {framework}" in out
    assert f"waiter          {waiter}" in out and "wait callback   psycogreen" in out
    assert f"cooperative     yes ({framework})" in out
    assert "pg_sleep(5) cancelled" in out and "connection usable" in out
    assert "Eventlet is deprecated" not in out + proc.stderr  # no banner, on either stream
    if framework == "eventlet":
        assert "WARN  eventlet is deprecated upstream" in out


def test_doctor_flags_the_thread_cancel_fallback(dsn: str) -> None:
    proc = _run("doctor", "--framework", "gevent", "--dsn", dsn, env={"PSYCOGREEN_CANCEL": "thread"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "thread fallback (blocking PQcancel, gevent's thread pool)" in proc.stdout
    assert "WARN  non-blocking cancel disabled" in proc.stdout
    assert "pg_sleep(5) cancelled" in proc.stdout and "connection usable" in proc.stdout


def test_doctor_inside_an_unpatched_gevent_process_says_not_cooperative() -> None:
    code = (
        "from gevent import monkey; monkey.patch_all()\n"
        "import sys; from psycogreen.__main__ import doctor; sys.exit(doctor())\n"
    )
    proc = _run(code=code)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "cooperative     NO" in proc.stdout
    assert "FAIL  gevent monkey-patched this process but psycopg2 has no wait callback" in proc.stdout


def test_doctor_flags_gevent_and_eventlet_together() -> None:
    code = (
        "import warnings; warnings.simplefilter('ignore')\n"
        "import gevent, eventlet, sys; from psycogreen.__main__ import doctor; sys.exit(doctor())\n"
    )
    proc = _run(code=code)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARN  gevent and eventlet are both imported" in proc.stdout


@pytest.mark.parametrize("args", [(), ("doctor",), ("demo",), ("bench",)])
def test_help_is_plain_text(args: tuple[str, ...]) -> None:
    proc = _run(*args, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python -m psycogreen")
    for markup in ("``", ":func:", ":mod:", "`"):
        assert markup not in proc.stdout, (markup, proc.stdout)


def test_demo_runs(dsn: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "psycogreen", "demo", "--dsn", dsn, "--greenlets", "20"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "20 greenlets" in out and "speed-up" in out
    assert "QueryTimeout" in out and "usable" in out
    assert "cooperative pool" in out and "(pool max 10)" in out
    assert "copy_from (in)" in out and "200,000" in out
    assert "asyncio: 20 tasks" in out and "TimeoutError after" in out and "returned 1000" in out
