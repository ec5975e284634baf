"""The pytest plugin as a user's project sees it: an inner pytest run in a subprocess, in an empty
directory, with the plugin loaded through its entry point as ``pip install psycogreen`` leaves it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterator

import pytest

from psycogreen.testing._server import free_port

ROOT = Path(__file__).resolve().parent.parent

INNER_TESTS = """
import os
import psycopg2

SEEN = []

def test_first(psycogreen_server, psycogreen_dsn):
    SEEN.append(psycogreen_server)
    want = os.environ.get("EXPECT_PORT")
    if want:
        assert psycogreen_server.port == int(want)
        assert f"port={want}" in psycogreen_dsn
    conn = psycopg2.connect(psycogreen_dsn)
    with conn.cursor() as cur:
        cur.execute("select current_user, current_setting('port')")
        assert cur.fetchone() == ("postgres", str(psycogreen_server.port))
    conn.close()

def test_same_server_for_the_session(psycogreen_server):
    assert SEEN == [psycogreen_server]
"""


def run_inner(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None, tests: str = INNER_TESTS
) -> subprocess.CompletedProcess[str]:
    """``pytest`` in ``tmp_path`` on ``tests``, outside this session's environment variables."""
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(tests))
    full_env = {
        k: v for k, v in os.environ.items() if k not in ("PSYCOGREEN_TEST_DSN", "PSYCOGREEN_TEST_PORT")
    }
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=tmp_path,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        yield busy.getsockname()[1]


def test_port_option_puts_the_server_there_and_wins_over_the_variable(tmp_path: Path, busy_port: int) -> None:
    port = free_port()
    env = {"PSYCOGREEN_TEST_PORT": str(busy_port), "EXPECT_PORT": str(port)}
    r = run_inner(tmp_path, f"--psycogreen-port={port}", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 passed" in r.stdout


@pytest.mark.parametrize("source", ["option", "variable"])
def test_a_busy_port_says_which_and_what_to_do(tmp_path: Path, busy_port: int, source: str) -> None:
    if source == "option":
        r = run_inner(tmp_path, f"--psycogreen-port={busy_port}")
    else:
        r = run_inner(tmp_path, env={"PSYCOGREEN_TEST_PORT": str(busy_port)})
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"cannot start the test PostgreSQL on 127.0.0.1:{busy_port}" in r.stdout
    assert "choose another port" in r.stdout


@pytest.mark.parametrize("value", ["abc", "70000"])
def test_a_bad_port_is_a_usage_error(tmp_path: Path, value: str) -> None:
    for r in (
        run_inner(tmp_path, f"--psycogreen-port={value}"),
        run_inner(tmp_path, env={"PSYCOGREEN_TEST_PORT": value}),
    ):
        assert r.returncode == 4, r.stdout + r.stderr  # pytest's usage-error exit code
        assert "expected a TCP port number between 1 and 65535" in r.stderr


def test_existing_server_dsn_starts_nothing(tmp_path: Path, dsn: str) -> None:
    tests = f"""
    def test_dsn(psycogreen_server, psycogreen_dsn):
        assert psycogreen_server is None
        assert psycogreen_dsn == {dsn!r}
    """
    # The port settings are ignored: there is no server to put on a port.
    r = run_inner(tmp_path, env={"PSYCOGREEN_TEST_DSN": dsn, "PSYCOGREEN_TEST_PORT": "1"}, tests=tests)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed" in r.stdout


OWNER = """
import sys, time
from psycogreen.testing import PostgresServer

server = PostgresServer().start()
print(server.datadir, server.base, server.port, flush=True)
time.sleep(600)  # killed by the test long before
"""


def _postmaster_pid(datadir: str) -> int:
    with open(os.path.join(datadir, "postmaster.pid")) as f:
        return int(f.readline())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_until(cond: Any, timeout: float, what: str) -> None:
    import time

    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.05)


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_a_killed_owner_leaves_no_server_behind(how: str) -> None:
    import signal

    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert owner.stdout is not None
        datadir, base, port = owner.stdout.readline().split()
        pid = _postmaster_pid(datadir)
        assert _alive(pid)
        owner.send_signal(getattr(signal, how))  # no finally, no atexit runs for SIGKILL
        owner.wait(30)
        _wait_until(lambda: not _alive(pid), 60, "the orphaned server to be stopped")
        _wait_until(lambda: not os.path.exists(base), 30, "its directory to be removed")
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", int(port))) != 0  # nothing listens there any more
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
