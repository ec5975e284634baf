"""pytest plugin: a real PostgreSQL for the test session.

Fixtures:

- ``psycogreen_server``: a :class:`~psycogreen.testing.PostgresServer` started once per session (or
  None when ``PSYCOGREEN_TEST_DSN`` points at an existing server);
- ``psycogreen_dsn``: the DSN to connect to.

The server log is attached to the report of every failed test.
"""

from __future__ import annotations

import os
from typing import Any, Iterator, Optional

import pytest

from ._server import PostgresServer

_server: Optional[PostgresServer] = None


@pytest.fixture(scope="session")
def psycogreen_server() -> Iterator[Optional[PostgresServer]]:
    global _server
    if os.environ.get("PSYCOGREEN_TEST_DSN"):
        yield None
        return
    server = PostgresServer()
    try:
        server.start()
    except Exception:
        server.destroy()
        raise
    _server = server
    try:
        yield server
    finally:
        _server = None
        server.destroy()


@pytest.fixture(scope="session")
def psycogreen_dsn(psycogreen_server: Optional[PostgresServer]) -> str:
    if psycogreen_server is None:
        return os.environ["PSYCOGREEN_TEST_DSN"]
    return psycogreen_server.dsn


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Iterator[None]:
    outcome: Any = yield
    report = outcome.get_result()
    if report.failed and _server is not None:
        report.sections.append(("PostgreSQL server log (tail)", _server.log_tail()))
