"""Cooperative whatever the set-up order (issue 10.2).

- ``patch()`` before monkey-patching (gunicorn's ``post_fork`` runs before its gevent worker patches)
  ends on the gevent/eventlet waiter and ``patched()`` says so; an explicit ``patch("threads")``
  stays threads;
- psycogreen's pool and Django ENGINE are cooperative with no ``patch()`` at all;
- plain ``psycopg2.connect()`` in a monkey-patched process without a wait callback warns once;
- a real ``gunicorn -k gevent`` worker with the documented ``gunicorn.conf.py`` serves concurrent
  requests concurrently.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import psycopg2
import pytest
from until import wait_until

import psycogreen
from psycogreen import _patch

GREEN = ["gevent", "eventlet"]
EXAMPLE = Path(__file__).parent.parent / "docs" / "examples" / "gunicorn"


def _concurrent(out: dict[str, Any], part: str = "") -> None:
    """N queries of ``sleep`` seconds overlapped (serially they take N * sleep) and the hub ran."""
    serial = out["n"] * out["sleep"]
    timing = out[part] if part else out
    assert timing["elapsed"] < serial / 2, out
    assert timing["max_gap"] < serial / 4, out


@pytest.mark.parametrize("framework", GREEN)
def test_patch_before_monkey_patching_ends_on_the_framework(
    run_script: Callable[..., Any], framework: str
) -> None:
    out = run_script("patch_order.py", framework, "late")
    assert out["before"] == "threads", out  # nothing to detect yet
    assert out["patched"] == framework, out
    assert out["waiter"] == {"gevent": "GeventWaiter", "eventlet": "EventletWaiter"}[framework], out
    _concurrent(out)


@pytest.mark.parametrize("framework", GREEN)
def test_explicit_threads_stays_threads(run_script: Callable[..., Any], framework: str) -> None:
    out = run_script("patch_order.py", framework, "explicit")
    assert out["before"] == "threads" and out["patched"] == "threads", out
    assert out["waiter"] == "BlockingWaiter", out


@pytest.mark.parametrize("framework", GREEN)
def test_pool_without_patch_is_cooperative(run_script: Callable[..., Any], framework: str) -> None:
    out = run_script("patch_order.py", framework, "pool")
    assert out["patched"] == framework, out
    _concurrent(out)


@pytest.mark.parametrize("framework", GREEN)
def test_django_engine_without_patch_is_cooperative(run_script: Callable[..., Any], framework: str) -> None:
    out = run_script("patch_order.py", framework, "django")
    assert out["patched"] == framework, out
    _concurrent(out, "default")  # OPTIONS["pool"]
    _concurrent(out, "plain")  # the ENGINE without a pool


def test_unpatched_connect_under_gevent_warns_once(run_script: Callable[..., Any]) -> None:
    out = run_script("patch_order.py", "gevent", "warn")
    assert out["patched"] is None and out["wait_callback"] == "None", out
    assert len(out["warnings"]) == 1, out  # three connects, one warning
    assert "monkey-patched by gevent" in out["warnings"][0] and "psycogreen.patch()" in out["warnings"][0]


def test_eventlet_own_callback_is_not_warned_about(run_script: Callable[..., Any]) -> None:
    """eventlet.monkey_patch() registers its own psycopg2 wait callback: cooperative, no warning."""
    out = run_script("patch_order.py", "eventlet", "warn")
    assert out["warnings"] == [] and "eventlet_wait_callback" in out["wait_callback"], out


# ------------------------------------------------------------------ in this (unpatched) process


@pytest.fixture
def clean() -> Iterator[None]:
    assert psycogreen.patched() is None
    try:
        yield
    finally:
        psycogreen.unpatch()


def test_unpatched_connect_without_monkey_patching_is_silent(dsn: str, clean: None) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        psycopg2.connect(dsn).close()
    assert [w for w in caught if issubclass(w.category, RuntimeWarning)] == []


def test_detected_threads_is_provisional_explicit_is_not(clean: None) -> None:
    assert psycogreen.patch() == "threads"
    assert type(_patch.chosen_waiter()).__name__ == "_AutoWaiter"
    assert psycogreen.patch("threads") == "threads"  # the explicit choice replaces the provisional one
    assert type(_patch.chosen_waiter()).__name__ == "BlockingWaiter"
    assert psycogreen.patch() == "threads"  # detection does not undo an explicit choice
    assert type(_patch.chosen_waiter()).__name__ == "BlockingWaiter"


def test_ensure_patched_is_idempotent_and_keeps_a_choice(clean: None) -> None:
    assert _patch.ensure_patched() == "threads"
    waiter = _patch.chosen_waiter()
    assert _patch.ensure_patched() == "threads" and _patch.chosen_waiter() is waiter
    psycogreen.patch("asyncio")
    assert _patch.ensure_patched() == "asyncio"


def test_ensure_patched_when_already_patched_does_no_work(
    clean: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Already patched, it only reads the choice: no patch(), no detection (its cost is a global read;
    speed belongs in bench/, not in a timed unit test)."""
    psycogreen.patch("threads")

    def refuse(*args: object) -> str:
        raise AssertionError("ensure_patched() patched again although psycogreen was patched")

    monkeypatch.setattr(_patch, "patch", refuse)
    monkeypatch.setattr(_patch, "detect", refuse)
    for _ in range(3):
        assert _patch.ensure_patched() == "threads"


def test_legacy_gevent_entry_point_uses_the_one_waiter(clean: None) -> None:
    pytest.importorskip("gevent")
    import psycogreen.gevent

    psycogreen.gevent.patch_psycopg()
    assert psycogreen.patched() == "gevent"
    assert psycogreen.gevent._gevent_waiter() is _patch.chosen_waiter() is _patch.waiter_for("gevent")


def test_refusal_under_eventlet_holds_for_a_cached_waiter(
    clean: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """patch('gevent') in an eventlet-patched process would hang: refused even when the gevent
    waiter already exists (waiters are cached per framework)."""
    pytest.importorskip("gevent")
    _patch.waiter_for("gevent")
    monkeypatch.setattr(_patch, "_eventlet_patched", lambda: True)
    with pytest.raises(RuntimeError, match="would hang"):
        psycogreen.patch("gevent")
    assert psycogreen.patched() is None


# ------------------------------------------------------------------ a real gunicorn


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def _gunicorn_worker_available(worker: str) -> bool:
    import importlib.util

    module = {"gevent": "gunicorn.workers.ggevent", "eventlet": "gunicorn.workers.geventlet"}[worker]
    return importlib.util.find_spec(module) is not None


@pytest.mark.parametrize("worker", GREEN)
def test_gunicorn_post_fork_patch(dsn: str, worker: str, tmp_path: Path) -> None:
    """docs/examples/gunicorn as documented: post_fork patches before the worker monkey-patches."""
    pytest.importorskip("gunicorn")
    if not _gunicorn_worker_available(worker):
        import gunicorn

        pytest.skip(f"gunicorn {gunicorn.__version__} has no {worker} worker (removed upstream)")
    port = _free_port()
    cmd = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "-k", worker, "-w", "1"]
    cmd += ["-b", f"127.0.0.1:{port}", "--graceful-timeout", "2", "app:app"]
    help_text = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--help"], capture_output=True, text=True
    ).stdout
    if "--no-control-socket" in help_text:
        cmd.insert(-1, "--no-control-socket")
    path = os.pathsep.join(p for p in (str(EXAMPLE), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, APP_DSN=dsn, PYTHONPATH=path)
    log = (tmp_path / "gunicorn.log").open("w+")
    proc = subprocess.Popen(cmd, cwd=EXAMPLE, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:

        def answers() -> bool:
            try:
                _get(base + "/debug")
                return True
            except OSError:
                assert proc.poll() is None, log.seek(0) or log.read()
                return False

        wait_until(answers, 30, "gunicorn to answer", interval=0.1)
        _get(base + "/")  # one request first: the provisional waiter resolves on first use
        n, sleep = 20, 0.2
        with ThreadPoolExecutor(n) as ex:
            t0 = time.monotonic()
            pids = list(ex.map(lambda _: _get(base + "/")["pid"], range(n)))
            elapsed = time.monotonic() - t0
        debug = _get(base + "/debug")
    finally:
        proc.terminate()
        proc.wait(30)
        log.seek(0)
        output = log.read()
        log.close()
    assert debug == {"patched": worker}, output
    assert len(set(pids)) == n  # each request had its own connection
    assert elapsed < n * sleep / 2, (elapsed, output)  # one worker: only concurrency gets this
    assert "Traceback" not in output, output


def test_deployment_doc_shows_the_tested_files() -> None:
    """docs/deployment.md's gunicorn section quotes exactly the files the gunicorn test runs."""
    doc = (EXAMPLE.parent.parent / "deployment.md").read_text()
    for name in ("gunicorn.conf.py", "app.py"):
        assert (EXAMPLE / name).read_text().rstrip() in doc, name
