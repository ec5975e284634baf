"""Shared test fixtures.

Monkey-patching is process-wide, so scenarios that need gevent or eventlet run as scripts in
``tests/scripts/`` in a subprocess: ``run_script("name.py", "gevent")`` returns the JSON object the
script prints on its last line (see ``tests/scripts/kit.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import psycopg2
import pytest
from sidebyside import unpatched

import psycogreen

SCRIPTS = Path(__file__).parent / "scripts"
FRAMEWORKS = ["gevent", "eventlet", "threads"]


def pytest_configure(config: pytest.Config) -> None:
    """Parallel runs (pytest-xdist): ``-n N`` alone means ``--dist load``, which ignores groups; use
    ``loadgroup`` so ``xdist_group("serial")`` holds. That group (``pytestmark`` of test_bench.py,
    test_recipes.py, test_cooperation.py) is the tests that must not run at the same time as each
    other: the bench smoke tests (a callgrind run, CPU-heavy), the deployment recipes (whole app
    servers, and an "overlapped: done in under half the serial time" bound) and the cooperation
    proofs (a wall-time bound on concurrent queries). They run one after another on one worker."""
    if getattr(config.option, "dist", None) == "load":
        config.option.dist = "loadgroup"


@pytest.fixture(scope="session")
def dsn(psycogreen_dsn: str) -> str:
    return psycogreen_dsn


@pytest.fixture
def run_script(dsn: str) -> Callable[..., Any]:
    def run(name: str, *args: str, timeout: float = 240, env: dict[str, str] | None = None) -> Any:
        # Keep an outer PYTHONPATH (a checkout tested with another checkout's venv) after the scripts.
        path = os.pathsep.join(p for p in (str(SCRIPTS), os.environ.get("PYTHONPATH", "")) if p)
        full_env = dict(os.environ, PSYCOGREEN_TEST_DSN=dsn, PYTHONPATH=path)
        full_env.update(env or {})
        proc = subprocess.run(
            [sys.executable, str(SCRIPTS / name), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
        )
        if proc.returncode != 0:
            pytest.fail(
                f"{name} {' '.join(args)} exited {proc.returncode}\n--- stdout\n{proc.stdout}"
                f"\n--- stderr\n{proc.stderr[-6000:]}"
            )
        lines = proc.stdout.strip().splitlines()
        assert lines, f"{name} printed nothing; stderr:\n{proc.stderr[-4000:]}"
        return json.loads(lines[-1])

    return run


@pytest.fixture(autouse=True)
def _leave_unpatched() -> Iterator[None]:
    """psycogreen's pool and Django backend patch by themselves (ensure_patched): a test that
    started unpatched leaves this process unpatched for the next one."""
    was = psycogreen.patched()
    yield
    if was is None and psycogreen.patched() is not None:
        psycogreen.unpatch()


@pytest.fixture
def threads_patched() -> Iterator[str]:
    """psycogreen patched for plain threads in this (pytest) process; unpatched afterwards."""
    name = psycogreen.patch("threads")
    try:
        yield name
    finally:
        psycogreen.unpatch()


@pytest.fixture
def conn(dsn: str) -> Iterator[Any]:
    c = psycopg2.connect(dsn)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def monitor(dsn: str) -> Iterator[Any]:
    """An unpatched autocommit connection to look at pg_stat_activity from the side."""
    c = psycopg2.connect(dsn)
    c.autocommit = True
    try:
        yield c
    finally:
        c.close()


#: psycogreen.aio runs on each of these event loops; every ``pytest.mark.anyio`` test runs on all three.
AIO_BACKENDS = [
    pytest.param(("asyncio", {}), id="asyncio"),
    pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    pytest.param(("trio", {}), id="trio"),
]


@pytest.fixture(params=AIO_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


@pytest.fixture
def pair(dsn: str, threads_patched: str) -> Iterator[tuple[Any, Any]]:
    """(blocking, green): the blocking one is made and used while unpatched."""
    with unpatched():
        blocking = psycopg2.connect(dsn)
    green = psycopg2.connect(dsn)
    try:
        yield blocking, green
    finally:
        green.close()
        with unpatched():
            blocking.close()
