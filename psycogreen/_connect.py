"""Connecting in green mode with libpq's semantics for ``connect_timeout`` and multiple hosts.

libpq ignores ``connect_timeout`` under ``PQconnectPoll`` (the non-blocking API green mode uses), and
it resolves host names with a blocking ``getaddrinfo``. So psycogreen plans the attempts itself:
every host of ``host=a,b`` and every address a name resolves to (resolved through the framework's
cooperative resolver) is tried in turn, each with its own ``connect_timeout`` as libpq does, handing
libpq ``hostaddr`` while keeping ``host`` for TLS verification and the password file. The errors of
all attempts are joined the way libpq joins them.
"""

from __future__ import annotations

import ipaddress
import os
import random
import socket
import time
from typing import Any, Callable, NamedTuple, Optional

import psycopg2
from psycopg2.extensions import make_dsn, parse_dsn

from . import _deadline
from ._connection import green_connection_class
from ._patch import current_waiter


class Attempt(NamedTuple):
    params: dict[str, str]
    target: str


def _split(value: Optional[str]) -> list[str]:
    return [] if value is None else value.split(",")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_socket_dir(host: str) -> bool:
    return host.startswith("/") or host.startswith("@")


def connect_timeout(params: dict[str, str]) -> Optional[float]:
    """libpq's connect_timeout: keyword, else PGCONNECT_TIMEOUT; <= 0 or absent means none."""
    raw = params.get("connect_timeout", os.environ.get("PGCONNECT_TIMEOUT"))
    if raw is None or raw.strip() == "":
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        raise psycopg2.OperationalError(
            f'invalid integer value "{raw}" for connection option "connect_timeout"'
        ) from None
    return float(value) if value > 0 else None


def _target(host: str, addr: Optional[str], port: str) -> str:
    if _is_socket_dir(host):
        return f'server on socket "{host.rstrip("/")}/.s.PGSQL.{port}"'
    if addr and addr != host:
        return f'server at "{host}" ({addr}), port {port}'
    return f'server at "{addr or host}", port {port}'


#: glibc's text for EAI_NONAME, which libpq prints for a name its resolver refuses.
_NONAME = "Name or service not known"


def plan(params: dict[str, str], resolve: Callable[..., list[Any]]) -> Optional[list[Attempt]]:
    """The attempts to make, or None when libpq can be handed the DSN as is (one numeric host or
    socket, no deadline to enforce). Raises OperationalError for a DSN libpq would refuse."""
    hosts = _split(params.get("host", os.environ.get("PGHOST")))
    addrs = _split(params.get("hostaddr", os.environ.get("PGHOSTADDR")))
    ports = _split(params.get("port", os.environ.get("PGPORT")))
    timeout = connect_timeout(params)
    count = max(len(hosts), len(addrs), 1)
    if hosts and addrs and len(hosts) != len(addrs):
        raise psycopg2.OperationalError(
            f"could not match {len(hosts)} host names to {len(addrs)} hostaddr values"
        )
    if len(ports) > 1 and len(ports) != count:
        raise psycopg2.OperationalError(f"could not match {len(ports)} port numbers to {count} hosts")
    simple = count == 1 and (
        bool(addrs and addrs[0]) or not hosts or not hosts[0] or _is_socket_dir(hosts[0]) or _is_ip(hosts[0])
    )
    if simple and timeout is None:
        return None
    order = list(range(count))
    if params.get("load_balance_hosts") == "random":
        random.shuffle(order)
    attempts: list[Attempt] = []
    for i in order:
        host = hosts[i] if i < len(hosts) else ""
        addr = addrs[i] if i < len(addrs) else ""
        port = (ports[i] if len(ports) > 1 else (ports[0] if ports else "")) or "5432"
        base = {k: v for k, v in params.items() if k not in ("host", "hostaddr", "port")}
        base["port"] = port
        if addr or not host or _is_socket_dir(host) or _is_ip(host):
            one = dict(base)
            if host:
                one["host"] = host
            if addr:
                one["hostaddr"] = addr
            shown = host or "/var/run/postgresql" if not addr else host or addr
            attempts.append(Attempt(one, _target(shown, addr or None, port)))
            continue
        try:
            infos = resolve(host, port, 0, socket.SOCK_STREAM)
        except OSError as e:
            attempts.append(Attempt({}, f'could not translate host name "{host}" to address: {e.args[-1]}'))
            continue
        except UnicodeError:  # Python's IDNA encoding refuses the name (an empty or long label)
            attempts.append(Attempt({}, f'could not translate host name "{host}" to address: {_NONAME}'))
            continue
        seen: list[str] = []
        for info in infos:
            ip = info[4][0]
            if ip not in seen:
                seen.append(ip)
        for ip in seen:
            one = dict(base, host=host, hostaddr=ip)
            attempts.append(Attempt(one, _target(host, ip, port)))
    return attempts


def connect(
    original: Callable[..., Any],
    dsn: str,
    connection_factory: Any = None,
    **kwasync: Any,
) -> Any:
    """Replacement for ``psycopg2._connect`` installed by ``patch()``."""
    if kwasync.get("async") or kwasync.get("async_"):
        from .replication import prepare_async

        return prepare_async(original(dsn, connection_factory=connection_factory, **kwasync))
    factory = green_connection_class(connection_factory or psycopg2.extensions.connection)
    params = parse_dsn(dsn)
    attempts = plan(params, current_waiter().getaddrinfo)
    timeout = connect_timeout(params)
    if attempts is None:
        with _deadline.connecting(None, "server"):
            return original(dsn, connection_factory=factory)
    errors: list[str] = []
    for attempt in attempts:
        if not attempt.params:
            errors.append(attempt.target + "\n")
            continue
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            with _deadline.connecting(deadline, attempt.target):
                return original(make_dsn(**attempt.params), connection_factory=factory)
        except psycopg2.OperationalError as e:
            from .errors import QueryTimeout

            if isinstance(e, QueryTimeout):
                raise
            errors.append(str(e) if str(e).endswith("\n") else f"{e}\n")
    raise psycopg2.OperationalError("".join(errors) or "no host to connect to")
