"""Connect planning (``psycogreen._connect.plan``): which attempts psycogreen makes, in which order,
named how, with a fake resolver (no DNS, no server)."""

from __future__ import annotations

import socket
from typing import Any, Iterator

import psycopg2
import pytest

from psycogreen._connect import connect_timeout, plan


@pytest.fixture(autouse=True)
def _no_pg_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("PGHOST", "PGHOSTADDR", "PGPORT", "PGCONNECT_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    yield


def resolver(table: dict[str, list[str]]) -> Any:
    def resolve(host: str, port: str, *args: Any) -> list[Any]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, int(port))) for ip in table[host]]

    return resolve


def no_resolve(*args: Any) -> list[Any]:
    raise AssertionError("must not resolve")


@pytest.mark.parametrize(
    "params",
    [{"host": "127.0.0.1"}, {"host": "/tmp"}, {}, {"hostaddr": "127.0.0.1", "host": "db"}],
)
def test_one_numeric_host_without_deadline_is_handed_to_libpq(params: dict[str, str]) -> None:
    assert plan(params, no_resolve) is None


def test_a_name_is_resolved_once_per_address_in_order() -> None:
    attempts = plan({"host": "db", "port": "6432"}, resolver({"db": ["127.0.0.2", "127.0.0.3", "127.0.0.2"]}))
    assert attempts is not None
    assert [a.params["hostaddr"] for a in attempts] == ["127.0.0.2", "127.0.0.3"]
    assert all(a.params["host"] == "db" and a.params["port"] == "6432" for a in attempts)
    assert attempts[0].target == 'server at "db" (127.0.0.2), port 6432'


def test_multi_host_ports_pair_up_and_unknown_names_become_failed_attempts() -> None:
    attempts = plan({"host": "a,nowhere,127.0.0.9", "port": "1,2,3"}, resolver({"a": ["127.0.0.1"]}))
    assert attempts is not None
    assert [a.params.get("port") for a in attempts] == ["1", None, "3"]
    assert attempts[1].params == {} and 'could not translate host name "nowhere"' in attempts[1].target
    assert attempts[2].target == 'server at "127.0.0.9", port 3'


def test_a_deadline_makes_even_one_numeric_host_an_attempt() -> None:
    attempts = plan({"host": "127.0.0.1", "connect_timeout": "3"}, no_resolve)
    assert attempts is not None and len(attempts) == 1
    assert attempts[0].params["connect_timeout"] == "3" and attempts[0].params["port"] == "5432"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"host": "a,b", "hostaddr": "127.0.0.1"}, "could not match 2 host names to 1 hostaddr"),
        ({"host": "a,b,c", "port": "1,2"}, "could not match 2 port numbers to 3 hosts"),
    ],
)
def test_dsns_libpq_would_refuse(params: dict[str, str], message: str) -> None:
    with pytest.raises(psycopg2.OperationalError, match=message):
        plan(params, no_resolve)


@pytest.mark.parametrize(("raw", "seconds"), [("5", 5.0), ("0", None), ("-1", None), (" ", None)])
def test_connect_timeout(raw: str, seconds: Any) -> None:
    assert connect_timeout({"connect_timeout": raw}) == seconds


def test_connect_timeout_not_a_number() -> None:
    with pytest.raises(psycopg2.OperationalError, match='invalid integer value "soon"'):
        connect_timeout({"connect_timeout": "soon"})
