"""The bridge without a server: the one socket wait (``Sockets.arm``, epoll and loop-reader
implementations) on a socketpair, and the call protocol (results, errors, shielded waits, reuse of
greenlets) with plain functions, on asyncio and uvloop."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any, Callable, Iterator

import pytest

from psycogreen._core import READ, WRITE
from psycogreen.aio import _runtime, _waiter

LOOPS = ["asyncio", "uvloop"]
KINDS = ["epoll", "loop"]


def _run(loop_name: str, main: Callable[[], Any]) -> Any:
    factory: Any = None
    if loop_name == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def _sockets(kind: str, loop: asyncio.AbstractEventLoop) -> _waiter.Sockets:
    if kind == "epoll" and not _waiter._HAS_EPOLL:
        pytest.skip("no epoll here")
    return _waiter._EpollSockets(loop) if kind == "epoll" else _waiter._LoopSockets(loop)


@pytest.mark.parametrize("loop_name", LOOPS)
@pytest.mark.parametrize("kind", KINDS)
def test_arm_reports_readiness_timeout_and_forget(
    loop_name: str, kind: str, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair

    async def main() -> None:
        loop = asyncio.get_running_loop()
        sockets = _sockets(kind, loop)
        try:
            # Writable at once; not readable until the peer writes.
            assert await asyncio.wait_for(sockets.arm(loop, a.fileno(), WRITE), 5) == WRITE
            assert await sockets.arm(loop, a.fileno(), READ, 0.05) == 0  # timed out: "not ready"
            fut = sockets.arm(loop, a.fileno(), READ)
            loop.call_later(0.01, b.send, b"x")
            assert await asyncio.wait_for(fut, 5) == READ
            assert a.recv(10) == b"x"
            # Forgetting the fd wakes a task still waiting on it (it would wait forever).
            fut = sockets.arm(loop, a.fileno(), READ)
            loop.call_soon(sockets.forget, a.fileno())
            assert await asyncio.wait_for(fut, 5) == READ
            # The same wait again after the forget: registered afresh.
            fut = sockets.arm(loop, a.fileno(), READ)
            loop.call_later(0.01, b.send, b"y")
            assert await asyncio.wait_for(fut, 5) == READ
        finally:
            sockets.close()

    _run(loop_name, main)


@pytest.mark.parametrize("loop_name", LOOPS)
@pytest.mark.parametrize("kind", KINDS)
def test_arm_on_a_closed_fd_resolves_at_once(loop_name: str, kind: str) -> None:
    # A number no file holds (a just-closed one would be handed out again at once, to the loop).
    fd = 4000
    with pytest.raises(OSError):
        os.fstat(fd)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        sockets = _sockets(kind, loop)
        try:
            # libpq finds out the socket is gone when it reads: the wait must not hang.
            assert await asyncio.wait_for(sockets.arm(loop, fd, READ), 5) == READ
        finally:
            sockets.close()

    _run(loop_name, main)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_call_protocol_results_errors_and_reuse(
    loop_name: str, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair

    def wait_then_read() -> bytes:
        ready = _waiter.WAITER.wait_fd(a.fileno(), READ, 5.0)
        assert ready == READ
        return a.recv(10)

    def boom() -> None:
        raise ZeroDivisionError("inside the call")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert await _runtime.call(lambda x, y=0: x + y, 1, y=2) == 3
        loop.call_later(0.01, b.send, b"z")
        assert await _runtime.call(wait_then_read) == b"z"
        with pytest.raises(ZeroDivisionError, match="inside the call"):
            await _runtime.call(boom)
        # Greenlets are reused: a thousand calls make at most a handful.
        seen: set[int] = set()
        for _ in range(1000):
            seen.add(await _runtime.call(lambda: id(_runtime.getcurrent())))
        assert len(seen) <= 2

    _run(loop_name, main)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_shielded_wait_survives_cancellation(
    loop_name: str, pair: tuple[socket.socket, socket.socket]
) -> None:
    """A shielded wait (the drain after an interrupt) ends when the socket is ready, not when the
    task is cancelled; the cancellation is delivered when the call ends."""
    a, b = pair

    def shielded_wait() -> int:
        return _waiter.WAITER.wait_fd(a.fileno(), READ, 5.0, True)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(_runtime.call(shielded_wait))
        await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.sleep(0.01)
        assert not task.done()  # still waiting for the socket
        b.send(b"!")
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        assert loop.is_running()

    _run(loop_name, main)
