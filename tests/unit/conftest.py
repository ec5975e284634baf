"""The unit tier: no PostgreSQL, no subprocess. Nothing here may ask for the ``dsn`` fixture."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/unit/" in str(item.fspath).replace("\\", "/"):
            assert "dsn" not in getattr(item, "fixturenames", ()), f"{item.nodeid} needs a server"
