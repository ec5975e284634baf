"""docs/deployment.md's recipes, run for real: the example apps under docs/examples/ in their own
servers (uvicorn, a Celery ``-P gevent`` worker, uWSGI with gevent), loopback only, with real
requests. Each asserts that 20 jobs of ``pg_sleep(0.2)`` overlap — done far sooner than the 4 s they
take one after the other — and that the server saw no more connections than the pool allows.

Also: the code blocks in docs/deployment.md are the example files, byte for byte.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import psycopg2
import pytest
from until import wait_until

from psycogreen.testing._server import free_port

# One at a time with the other wall-clock- or CPU-heavy tests under pytest-xdist (tests/conftest.py).
pytestmark = pytest.mark.xdist_group("serial")
ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"
BIN = Path(sys.executable).parent
JOBS = 20
SLEEP = 0.2
SERIAL = JOBS * SLEEP  # 4 s: what the jobs take when they do not overlap
BOUND = SERIAL / 2  # generous: overlapping jobs take ~0.2-0.6 s here


def wait_for(cond: Callable[[], Any], timeout: float, what: str, proc: Optional[Service] = None) -> Any:
    """``until.wait_until`` that also fails at once when ``proc`` exits, and shows its log."""

    def check() -> Any:
        if proc is not None and proc.popen.poll() is not None:
            pytest.fail(f"{proc.name} exited {proc.popen.returncode} while waiting for {what}\n{proc.log()}")
        return cond()

    return wait_until(check, timeout, what, interval=0.05, detail=proc.log if proc else None)


class Service:
    """A server process in its own process group, its output in a file (read on failure)."""

    def __init__(self, name: str, args: list[str], cwd: Path, env: dict[str, str], logfile: Path) -> None:
        self.name = name
        self.logfile = logfile
        self._out = open(logfile, "wb")
        self.popen = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True
        )

    def log(self) -> str:
        return self.logfile.read_text(errors="replace")[-8000:]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Ask politely (the app's shutdown hooks run), then kill what is left of the group."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait()
        self._out.close()
        return self.popen.returncode


@pytest.fixture
def services() -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for s in started:
        s.stop()


def app_env(dsn: str, **extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, APP_DSN=dsn, PYTHONPATH=path, PYTHONUNBUFFERED="1")
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env.update(extra)
    return env


def backends(dsn: str, application_name: str) -> int:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "select count(*) from pg_stat_activity where application_name = %s", (application_name,)
            )
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def http_ok(port: int, path: str) -> bool:
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def concurrent_gets(port: int, path: str, n: int) -> tuple[float, list[Any]]:
    """``n`` GETs sent at once; (seconds until the last answer, the JSON answers)."""
    import httpx

    async def run() -> list[Any]:
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=30, limits=limits
        ) as client:
            responses = await asyncio.gather(*(client.get(path) for _ in range(n)))
        for r in responses:
            r.raise_for_status()
        return [r.json() for r in responses]

    started = time.monotonic()
    answers = asyncio.run(run())
    return time.monotonic() - started, answers


# -- FastAPI / uvicorn with psycogreen.aio ---------------------------------------------------------


def test_fastapi_uvicorn_aio_pool(dsn: str, tmp_path: Path, services: list[Service]) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    port = free_port()
    app_dsn = f"{dsn} application_name=recipe_fastapi"
    svc = Service(
        "uvicorn",
        [sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port", str(port)],
        EXAMPLES / "fastapi",
        app_env(app_dsn),
        tmp_path / "uvicorn.log",
    )
    services.append(svc)
    wait_for(lambda: http_ok(port, "/stats"), 60, "uvicorn to answer", svc)
    http_ok(port, f"/sleep?seconds={SLEEP}")  # warm: the first request of a process pays imports

    elapsed, answers = concurrent_gets(port, f"/sleep?seconds={SLEEP}", JOBS)
    pids = {a["backend_pid"] for a in answers}
    print(f"fastapi: {JOBS} x pg_sleep({SLEEP}) in {elapsed:.2f} s over {len(pids)} connections")
    assert elapsed < BOUND, f"{JOBS} requests took {elapsed:.2f} s: they did not overlap"
    assert 1 < len(pids) <= 10  # the pool's max_size
    assert backends(dsn, "recipe_fastapi") <= 10

    # uvicorn ends by re-raising the SIGTERM it handled
    assert svc.stop() in (0, -signal.SIGTERM), svc.log()
    assert "Application shutdown complete" in svc.log()
    # The lifespan closed the pool: no connection outlives the server.
    wait_for(lambda: backends(dsn, "recipe_fastapi") == 0, 10, "the pool's connections to close")


# -- Celery -P gevent --------------------------------------------------------------------------

CELERY_CONFIG = """
broker_url = "filesystem://"
broker_transport_options = {{
    "data_folder_in": {queue!r},
    "data_folder_out": {queue!r},
    "control_folder": {control!r},
    "store_processed": True,
    "processed_folder": {processed!r},
    "polling_interval": 0.05,
}}
worker_enable_remote_control = False
worker_prefetch_multiplier = 4
"""


def celery_config(tmp_path: Path) -> Path:
    """A filesystem broker in ``tmp_path``: messages are files that the test process writes and the
    worker process reads, so no broker server is needed and the worker is a real one."""
    dirs = {name: tmp_path / "broker" / name for name in ("queue", "control", "processed")}
    for d in dirs.values():
        d.mkdir(parents=True)
    confdir = tmp_path / "conf"
    confdir.mkdir()
    (confdir / "recipe_celeryconfig.py").write_text(
        CELERY_CONFIG.format(**{k: str(v) for k, v in dirs.items()})
    )
    return confdir


def test_celery_gevent_worker(dsn: str, tmp_path: Path, services: list[Service]) -> None:
    celery = pytest.importorskip("celery")
    confdir = celery_config(tmp_path)
    app_dsn = f"{dsn} application_name=recipe_celery"
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    conn.cursor().execute(
        "drop table if exists celery_jobs;"
        " create table celery_jobs (job_id int, started timestamptz, finished timestamptz, backend_pid int)"
    )
    # The tasks are queued before the worker starts: kombu's filesystem transport creates a message
    # file before writing it, so a worker polling meanwhile can read an empty one.
    sys.path.insert(0, str(confdir))
    try:
        client = celery.Celery("client")
        client.config_from_object("recipe_celeryconfig")
        for i in range(JOBS):
            client.send_task("tasks.slow_query", args=(i, SLEEP))
    finally:
        sys.path.remove(str(confdir))
    env = app_env(app_dsn, CELERY_CONFIG_MODULE="recipe_celeryconfig")
    env["PYTHONPATH"] = os.pathsep.join([str(confdir), env["PYTHONPATH"]])
    sent = time.monotonic()
    worker = Service(
        "celery worker",
        [
            str(BIN / "celery"),
            "-A",
            "tasks",
            "worker",
            "-P",
            "gevent",
            "-c",
            str(JOBS),
            "-l",
            "INFO",
            "--without-heartbeat",
            "--without-mingle",
            "--without-gossip",
        ],
        EXAMPLES / "celery",
        env,
        tmp_path / "worker.log",
    )
    services.append(worker)
    try:

        def done() -> bool:
            with conn.cursor() as cur:
                cur.execute("select count(*) from celery_jobs")
                return int(cur.fetchone()[0]) == JOBS

        wait_for(done, 60, f"{JOBS} tasks to finish", worker)
        wall = time.monotonic() - sent
        with conn.cursor() as cur:
            cur.execute(
                "select extract(epoch from max(finished) - min(started)), count(distinct backend_pid),"
                " (select max((select count(*) from celery_jobs b"
                "              where b.started <= a.started and a.started < b.finished)) from celery_jobs a)"
                " from celery_jobs"
            )
            span, pids, overlap = cur.fetchone()
        print(
            f"celery -P gevent: {JOBS} x pg_sleep({SLEEP}) ran within {float(span):.2f} s "
            f"({wall:.2f} s from starting the worker), {pids} connections, up to {overlap} at once"
        )
        assert float(span) < BOUND, f"the tasks ran within {float(span):.2f} s: they did not overlap"
        assert 2 <= overlap <= 10  # at once: more than one, never more than max_size=10
        assert 1 < pids <= 10
        assert wall < SERIAL + 30  # the worker's start-up included

        assert worker.stop() == 0, worker.log()
        # worker_shutdown closed the pool
        wait_for(lambda: backends(dsn, "recipe_celery") == 0, 10, "the pool's connections to close")
    finally:
        conn.cursor().execute("drop table if exists celery_jobs")
        conn.close()


# -- uWSGI with gevent -------------------------------------------------------------------------


def test_uwsgi_gevent(dsn: str, tmp_path: Path, services: list[Service]) -> None:
    uwsgi = shutil.which("uwsgi", path=str(BIN)) or shutil.which("uwsgi")
    if uwsgi is None:
        pytest.skip("uwsgi is not installed (pip install uwsgi)")
    plugins = subprocess.run([uwsgi, "--plugins-list"], capture_output=True, text=True, timeout=30)
    if not re.search(r"^gevent$", plugins.stdout + plugins.stderr, re.M):
        pytest.skip("this uwsgi has no gevent plugin")
    pytest.importorskip("httpx")
    port = free_port()
    app_dsn = f"{dsn} application_name=recipe_uwsgi"
    svc = Service(
        "uwsgi",
        # One worker, so overlapping requests can only come from gevent, not from a second process.
        [uwsgi, "--ini", "uwsgi.ini", "--processes", "1"],
        EXAMPLES / "uwsgi",
        app_env(app_dsn, PORT=str(port)),
        tmp_path / "uwsgi.log",
    )
    services.append(svc)
    wait_for(lambda: http_ok(port, "/health"), 60, "uwsgi to answer", svc)
    _, (health,) = concurrent_gets(port, "/health", 1)
    assert health == {"patched": "gevent"}
    assert "spawned uWSGI worker 2" not in svc.log()

    elapsed, answers = concurrent_gets(port, "/", JOBS)
    pids = {a["backend_pid"] for a in answers}
    print(f"uwsgi --gevent: {JOBS} x pg_sleep({SLEEP}) in {elapsed:.2f} s over {len(pids)} connections")
    assert elapsed < BOUND, f"{JOBS} requests took {elapsed:.2f} s: they did not overlap"
    assert 1 < len(pids) <= 10
    assert backends(dsn, "recipe_uwsgi") <= 10

    svc.stop(signal.SIGTERM)  # die-on-term: the master stops the workers
    wait_for(lambda: backends(dsn, "recipe_uwsgi") == 0, 20, "the worker's connections to close")


# -- the page shows the files the tests run ----------------------------------------------------

SHOWN = ["uwsgi/uwsgi.ini", "uwsgi/app.py", "celery/tasks.py", "celery/celeryconfig.py", "fastapi/app.py"]


def shown_files(page: Path) -> dict[str, str]:
    """Blocks of ``page`` whose preceding line (an HTML comment) names a file under docs/examples/."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found: dict[str, str] = {}
    for i, line in enumerate(lines):
        m = re.match(r"^```\w*\s*$", line)
        named = re.search(r"<!--.*?docs/examples/([\w./-]+?)[,:]?\s", lines[i - 1]) if m and i else None
        if named:
            end = lines.index("```", i + 1)
            found[named.group(1)] = "\n".join(lines[i + 1 : end]) + "\n"
    return found


def test_deployment_page_shows_the_tested_files() -> None:
    shown = shown_files(ROOT / "docs" / "deployment.md")
    for name in SHOWN:
        assert name in shown, f"docs/deployment.md does not show docs/examples/{name}"
        assert shown[name] == (EXAMPLES / name).read_text(), f"docs/deployment.md's copy of {name} differs"
