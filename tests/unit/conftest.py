"""The unit tier: no PostgreSQL, no subprocess. Nothing here may ask for the ``dsn`` fixture."""

from __future__ import annotations

import pytest

#: The fixtures that start (or need) the throwaway PostgreSQL of psycogreen.testing.
_SERVER = {"dsn", "psycogreen_dsn", "psycogreen_server", "run_script", "conn", "monitor"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/unit/" in str(item.fspath).replace("\\", "/"):
            names = set(getattr(item, "fixturenames", ()))
            assert not names & _SERVER, f"{item.nodeid} asks for a server ({names & _SERVER})"
