"""pytest plugin: a real PostgreSQL for the test session.

Fixtures (both session-scoped):

- ``psycogreen_server``: a :class:`~psycogreen.testing.PostgresServer` started once per session (or
  None when ``PSYCOGREEN_TEST_DSN`` points at an existing server);
- ``psycogreen_dsn``: the DSN to connect to (the ``postgres`` superuser, database ``postgres``).

Options: ``--psycogreen-port=PORT`` (or ``PSYCOGREEN_TEST_PORT``) puts the throwaway server on a
fixed port instead of a free one picked at random — for a firewall rule, a client configured
outside the tests, or a second process that needs to find it.

The server log is attached to the report of every failed test. See docs/testing.md.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Iterator, Optional

import pytest

from ._server import PostgresServer

_server: Optional[PostgresServer] = None

PORT_ENV = "PSYCOGREEN_TEST_PORT"


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("psycogreen", "psycogreen: a throwaway PostgreSQL for the tests")
    group.addoption(
        "--psycogreen-port",
        action="store",
        default=None,
        metavar="PORT",
        help=f"TCP port of the throwaway server on 127.0.0.1 (default: ${PORT_ENV}, else a free port)",
    )


def pytest_configure(config: Any) -> None:
    # A bad port is a usage error at start-up, not an error in every test that needs the server.
    if not os.environ.get("PSYCOGREEN_TEST_DSN"):
        requested_port(config)


def _parse_port(value: str, source: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise pytest.UsageError(f"{source}={value!r}: expected a TCP port number between 1 and 65535")
    return port


def requested_port(config: Any) -> Optional[int]:
    """The port asked for with ``--psycogreen-port`` or ``$PSYCOGREEN_TEST_PORT`` (the option wins),
    or None for a free port."""
    value = config.getoption("--psycogreen-port", default=None)
    if value is not None:
        return _parse_port(str(value), "--psycogreen-port")
    env = os.environ.get(PORT_ENV)
    if env:
        return _parse_port(env, PORT_ENV)
    return None


def _check_port_free(port: int, source: str) -> None:
    """Fail before initdb, with the fix, rather than with a server log about a failed bind."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            raise RuntimeError(
                f"cannot start the test PostgreSQL on 127.0.0.1:{port} ({source}): {e.strerror}; "
                "stop what listens there, choose another port, or unset it to use a free one"
            ) from None


@pytest.fixture(scope="session")
def psycogreen_server(pytestconfig: Any) -> Iterator[Optional[PostgresServer]]:
    global _server
    if os.environ.get("PSYCOGREEN_TEST_DSN"):
        yield None
        return
    port = requested_port(pytestconfig)
    if port is not None:
        _check_port_free(port, "--psycogreen-port / " + PORT_ENV)
    server = PostgresServer(port=port)
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
