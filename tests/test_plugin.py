"""The pytest plugin as a user's project sees it: an inner pytest run in a subprocess, in an empty
directory, with the plugin loaded through its entry point as ``pip install psycogreen`` leaves it."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Iterator

import psycopg2
import pytest
from until import wait_until

from psycogreen.testing import PostgresServer
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


WORKER_TESTS = """
import os
import psycopg2

def _where(dsn):
    conn = psycopg2.connect(dsn)
    with conn.cursor() as cur:
        cur.execute("select current_setting('port'), current_database()")
        port, db = cur.fetchone()
    conn.close()
    return port, db

def test_a(psycogreen_dsn, worker_id):
    with open(os.path.join(os.environ["OUT_DIR"], "a"), "w") as f:
        f.write(worker_id + " " + " ".join(_where(psycogreen_dsn)))

def test_b(psycogreen_dsn, worker_id):
    with open(os.path.join(os.environ["OUT_DIR"], "b"), "w") as f:
        f.write(worker_id + " " + " ".join(_where(psycogreen_dsn)))
"""


def _seen(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """worker id -> (port, database) that worker's test connected to."""
    rows = [(tmp_path / name).read_text().split() for name in ("a", "b")]
    return {worker: (port, db) for worker, port, db in rows}


def _free_pair() -> int:
    """A port P with P + 1 free too, below the ephemeral range (where client sockets come and go)."""
    for port in random.sample(range(20000, 32000, 2), 50):
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise AssertionError("no two free ports in a row below 32000")


def test_xdist_workers_get_a_server_each_on_port_plus_index(tmp_path: Path) -> None:
    """Two workers, two throwaway servers; with a fixed port, worker gwK listens on PORT + K."""
    port = _free_pair()
    args = ["-n", "2", "--dist", "each", f"--psycogreen-port={port}"]
    r = run_inner(tmp_path, *args, env={"OUT_DIR": str(tmp_path)}, tests=WORKER_TESTS)
    assert r.returncode == 0, r.stdout + r.stderr
    # --dist each: every worker runs both tests; the files hold the last writer of each
    seen = _seen(tmp_path)
    assert all(p == str(port + int(w[2:])) and db == "postgres" for w, (p, db) in seen.items()), seen


def test_xdist_workers_sharing_an_existing_server_get_a_database_each(tmp_path: Path, dsn: str) -> None:
    r = run_inner(
        tmp_path,
        "-n",
        "2",
        "--dist",
        "each",
        env={"OUT_DIR": str(tmp_path), "PSYCOGREEN_TEST_DSN": dsn},
        tests=WORKER_TESTS,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    seen = _seen(tmp_path)
    assert all(db == f"postgres_{w}" for w, (_, db) in seen.items()), seen
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("select count(*) from pg_database where datname like 'postgres\\_gw%'")
            assert cur.fetchone()[0] == 0  # dropped at the end of each worker's session
    finally:
        conn.close()


def test_a_picked_port_taken_before_the_server_binds_it_moves(busy_port: int) -> None:
    """Parallel workers pick free ports at the same time: losing the race moves the server."""
    server = PostgresServer()
    server.port = busy_port  # as if another process had bound the picked port meanwhile
    try:
        server.start()
        assert server.port != busy_port
        assert f"port={server.port}" in server.dsn
        server.restart()  # clients know the port now: a restart keeps it
        assert psycopg2.connect(server.dsn).close() is None
    finally:
        server.destroy()


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
        wait_until(lambda: not _alive(pid), 60, "the orphaned server to be stopped")
        wait_until(lambda: not os.path.exists(base), 30, "its directory to be removed")
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", int(port))) != 0  # nothing listens there any more
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
