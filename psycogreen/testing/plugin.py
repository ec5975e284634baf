"""pytest plugin: a real PostgreSQL for the test session.

Fixtures (both session-scoped):

- ``psycogreen_server``: a :class:`~psycogreen.testing.PostgresServer` started once per session (or
  None when ``PSYCOGREEN_TEST_DSN`` points at an existing server);
- ``psycogreen_dsn``: the DSN to connect to (the ``postgres`` superuser, database ``postgres``).

Options: ``--psycogreen-port=PORT`` (or ``PSYCOGREEN_TEST_PORT``) puts the throwaway server on a
fixed port instead of a free one picked at random — for a firewall rule, a client configured
outside the tests, or a second process that needs to find it.

Parallel runs (pytest-xdist, ``-n N``): every worker is a session of its own, so every worker gets
a server of its own — tests on different workers never see each other's tables, backends,
replication slots or restarts. A fixed port is then the first worker's: worker ``gwK`` listens on
``PORT + K``. With ``PSYCOGREEN_TEST_DSN`` the workers share that server; each gets a database of
its own (``<dbname>_gwK``, created for the session and dropped after it), so tables do not collide.

The server log is attached to the report of every failed test. See docs/testing.md.
"""

from __future__ import annotations

import contextlib
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


def worker_id(config: Any) -> Optional[str]:
    """The pytest-xdist worker this process is (``"gw0"``, ``"gw1"``, …), or None when not a worker.

    Read from the config xdist hands its workers, not from ``$PYTEST_XDIST_WORKER``: that variable
    is inherited by every subprocess a test starts, including an inner pytest run of its own."""
    workerinput = getattr(config, "workerinput", None)
    return None if workerinput is None else str(workerinput["workerid"])


def _worker_index(worker: Optional[str]) -> int:
    return int(worker[2:]) if worker and worker.startswith("gw") and worker[2:].isdigit() else 0


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
        port += _worker_index(worker_id(pytestconfig))
        if port > 65535:
            raise RuntimeError(f"--psycogreen-port / {PORT_ENV}: the port of worker {port} is past 65535")
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
def psycogreen_dsn(psycogreen_server: Optional[PostgresServer], pytestconfig: Any) -> Iterator[str]:
    if psycogreen_server is not None:
        yield psycogreen_server.dsn
        return
    dsn = os.environ["PSYCOGREEN_TEST_DSN"]
    worker = worker_id(pytestconfig)
    if worker is None:
        yield dsn
        return
    # Workers sharing an existing server: a database each, so their tables cannot collide.
    with _worker_database(dsn, worker) as worker_dsn:
        yield worker_dsn


@contextlib.contextmanager
def _worker_database(dsn: str, worker: str) -> Iterator[str]:
    """A fresh database ``<dbname>_<worker>`` on the server of ``dsn``, dropped afterwards."""
    import psycopg2
    from psycopg2 import sql
    from psycopg2.extensions import make_dsn, parse_dsn

    base = parse_dsn(dsn).get("dbname") or "postgres"
    name = f"{base}_{worker}"
    try:
        admin = psycopg2.connect(dsn)
    except psycopg2.Error as e:
        raise RuntimeError(f"PSYCOGREEN_TEST_DSN: cannot connect to create {name!r}: {e}") from None
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            _drop_database(cur, name)
            try:
                cur.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
            except psycopg2.Error as e:
                raise RuntimeError(
                    f"worker {worker} cannot create its database {name!r} on the PSYCOGREEN_TEST_DSN "
                    f"server ({e.pgerror or e}); grant the role CREATEDB, or run serially (-n 0)"
                ) from None
        yield make_dsn(dsn, dbname=name)
    finally:
        try:
            with admin.cursor() as cur:
                _drop_database(cur, name)
        finally:
            admin.close()


def _drop_database(cur: Any, name: str) -> None:
    """Drop ``name`` even if a test left a session in it (``with (force)``, PostgreSQL 13+)."""
    import psycopg2.errors
    from psycopg2 import sql

    try:
        cur.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
    except psycopg2.errors.SyntaxError:  # before PostgreSQL 13
        cur.execute(sql.SQL("drop database if exists {}").format(sql.Identifier(name)))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Iterator[None]:
    outcome: Any = yield
    report = outcome.get_result()
    if report.failed and _server is not None:
        report.sections.append(("PostgreSQL server log (tail)", _server.log_tail()))
