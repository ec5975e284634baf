"""The waiter contract, for every waiter, on socket pairs (no server): ``wait_fd`` returns the events
that are ready, 0 when the timeout passes first, and READ|WRITE reports what actually happened."""

from __future__ import annotations

import socket
from typing import Any, Callable, Iterator

import pytest

from psycogreen._core import READ, READ_WRITE, WRITE


def _blocking() -> Any:
    from psycogreen._waiters.blocking import BlockingWaiter

    return BlockingWaiter()


def _gevent() -> Any:
    pytest.importorskip("gevent")
    from psycogreen._waiters.gevent import GeventWaiter

    return GeventWaiter()


def _eventlet() -> Any:
    pytest.importorskip("eventlet")
    from psycogreen._waiters.eventlet import EventletWaiter

    return EventletWaiter()


WAITERS: dict[str, Callable[[], Any]] = {"threads": _blocking, "gevent": _gevent, "eventlet": _eventlet}


@pytest.fixture(params=list(WAITERS))
def waiter(request: pytest.FixtureRequest) -> Any:
    return WAITERS[request.param]()


@pytest.fixture
def pair(waiter: Any) -> Iterator[tuple[socket.socket, socket.socket]]:
    """Two connected sockets; forgotten by the waiter before they close, as psycogreen does for
    every socket (a cached gevent watcher must not outlive its fd number)."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    for s in (a, b):
        waiter.forget_fd(s.fileno())
        s.close()


def _clog(s: socket.socket) -> None:
    """Fill ``s``'s send buffer, so it is not writable."""
    try:
        while True:
            s.send(b"x" * 65536)
    except BlockingIOError:
        pass


def test_writable(waiter: Any, pair: tuple[socket.socket, socket.socket]) -> None:
    a, _ = pair
    assert waiter.wait_fd(a.fileno(), WRITE, 5.0) == WRITE
    assert waiter.wait_fd(a.fileno(), WRITE) == WRITE


def test_readable(waiter: Any, pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    b.send(b"y")
    assert waiter.wait_fd(a.fileno(), READ, 5.0) == READ


def test_timeout_returns_zero(waiter: Any, pair: tuple[socket.socket, socket.socket]) -> None:
    a, _ = pair
    assert waiter.wait_fd(a.fileno(), READ, 0.05) == 0
    _clog(a)
    assert waiter.wait_fd(a.fileno(), WRITE, 0.05) == 0
    assert waiter.wait_fd(a.fileno(), READ_WRITE, 0.05) == 0


def test_read_write_reports_what_happened(waiter: Any, pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    assert waiter.wait_fd(a.fileno(), READ_WRITE, 5.0) == WRITE  # writable, nothing to read
    _clog(a)
    b.send(b"y")
    assert waiter.wait_fd(a.fileno(), READ_WRITE, 5.0) == READ  # readable, not writable


def test_forget_fd_then_a_new_socket_on_the_same_number(waiter: Any) -> None:
    """A cached watcher must not outlive its socket: after forget_fd, a new socket that got the
    same fd number is waited on correctly."""
    a, b = socket.socketpair()
    fd = a.fileno()
    assert waiter.wait_fd(fd, WRITE, 5.0) == WRITE
    waiter.forget_fd(fd)
    a.close()
    b.close()
    c, d = socket.socketpair()
    try:
        d.send(b"z")
        assert waiter.wait_fd(c.fileno(), READ, 5.0) == READ
    finally:
        waiter.forget_fd(c.fileno())
        c.close()
        d.close()
