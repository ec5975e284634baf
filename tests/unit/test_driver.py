"""The driver (``psycogreen._wait.drive``) with a fake generator and a fake waiter: the deadline,
and the interrupt table (cancel -> drain -> park | raise | close), with no server."""

from __future__ import annotations

from typing import Any, Iterator, Optional

import psycopg2
import pytest

from psycogreen import _deadline, _guard, _wait
from psycogreen._core import READ, WRITE
from psycogreen._core.generators import wait_socket
from psycogreen.errors import QueryTimeout

FD = 99


class Interrupt(BaseException):
    """Stands for gevent.Timeout, GreenletExit, KeyboardInterrupt, a task's cancellation."""


class FakeWaiter:
    """Answers ``wait_fd`` from a script: an int is the ready events (0: the timeout passed), an
    exception is raised (an interrupt arriving mid-wait). An exhausted script times out."""

    name = "fake"

    def __init__(self, *script: Any) -> None:
        self.script = list(script)
        self.calls: list[tuple[int, int, Optional[float], bool]] = []

    def wait_fd(self, fd: int, events: int, timeout: Optional[float] = None, shield: bool = False) -> int:
        self.calls.append((fd, events, timeout, shield))
        step = self.script.pop(0) if self.script else 0
        if isinstance(step, BaseException):
            raise step
        return int(step)

    def forget_fd(self, fd: int) -> None:
        pass


class FakeConn(_guard.GreenState):
    closed = 0

    def close(self) -> None:
        self.closed = 1


def conversation(rounds: int = 2, result: str = "done", fail_on: Optional[int] = None) -> Iterator[Any]:
    """A generator like the ``_core`` ones: waits ``rounds`` times, then returns ``result``."""
    sent = []
    for i in range(rounds):
        if fail_on == i:
            raise psycopg2.OperationalError("server closed the connection unexpectedly")
        sent.append((yield FD, READ if i % 2 else WRITE))
    return result, sent


@pytest.fixture
def grace() -> Iterator[float]:
    previous = _deadline.set_cancel_grace(0.2)
    yield 0.2
    _deadline.set_cancel_grace(previous)


def no_cancel() -> None:
    pass


def test_runs_to_completion_sending_ready_events() -> None:
    w = FakeWaiter(WRITE, READ)
    assert _wait.drive(conversation(), waiter=w) == ("done", [WRITE, READ])
    assert [c[:2] for c in w.calls] == [(FD, WRITE), (FD, READ)]


@pytest.mark.parametrize("exc", [Interrupt("early"), QueryTimeout("early"), psycopg2.OperationalError("x")])
def test_exception_before_the_first_yield_propagates_unchanged(exc: BaseException) -> None:
    def gen() -> Iterator[Any]:
        raise exc
        yield  # pragma: no cover

    w = FakeWaiter()
    with pytest.raises(type(exc)) as info:
        _wait.drive(gen(), FakeConn(), waiter=w)
    assert info.value is exc and not w.calls


def test_deadline_cancels_drains_and_raises_query_timeout(grace: float) -> None:
    cancels: list[int] = []
    w = FakeWaiter(0, READ, READ, READ)  # the deadline passes; the drain finishes the conversation
    conn = FakeConn()
    with _deadline.override(0.01):
        with pytest.raises(QueryTimeout, match="cancelled on the server and the connection is still usable"):
            _wait.drive(conversation(3), conn, waiter=w, on_interrupt=lambda: cancels.append(1))
    assert cancels == [1] and not conn.closed
    assert all(c[3] for c in w.calls[1:]), "the drain waits shielded"


def test_interrupt_with_keep_is_parked_and_drive_returns(grace: float) -> None:
    exc = Interrupt("killed")
    w = FakeWaiter(exc, READ, READ)
    conn = FakeConn()
    with pytest.raises(Interrupt):  # raised by leaving the guarded call
        with _guard.using(conn):
            assert _wait.drive(conversation(2), conn, waiter=w, on_interrupt=no_cancel, keep=True) is None
            assert _guard.parked(conn)
    assert not conn.closed


def test_parked_interrupt_raised_on_leaving_the_guarded_call(grace: float) -> None:
    exc = Interrupt("killed")
    conn = FakeConn()
    with pytest.raises(Interrupt) as info:
        with _guard.using(conn):
            _wait.drive(
                conversation(2), conn, waiter=FakeWaiter(exc, READ, READ), on_interrupt=no_cancel, keep=True
            )
    assert info.value is exc and not _guard.busy(conn)


def test_a_second_interrupt_while_draining_is_ignored(grace: float) -> None:
    first = Interrupt("first")
    w = FakeWaiter(first, Interrupt("second"), READ, READ)
    conn = FakeConn()
    with pytest.raises(Interrupt) as info:
        _wait.drive(conversation(2), conn, waiter=w, on_interrupt=no_cancel)
    assert info.value is first and not conn.closed


def test_grace_runs_out_outside_the_callback_closes_and_raises(grace: float) -> None:
    exc = Interrupt("killed")
    conn = FakeConn()
    with pytest.raises(Interrupt) as info:
        _wait.drive(conversation(3), conn, waiter=FakeWaiter(exc), on_interrupt=no_cancel)
    assert info.value is exc and conn.closed


def test_grace_runs_out_in_the_callback_with_keep_parks_and_raises_the_failure(grace: float) -> None:
    exc = Interrupt("killed")
    conn = FakeConn()
    _guard.enter(conn)  # inside a guarded call (not left: leaving would raise the parked exc)
    with pytest.raises(psycopg2.OperationalError, match="did not confirm the cancel"):
        w = FakeWaiter(exc)
        _wait.drive(conversation(3), conn, waiter=w, on_interrupt=no_cancel, keep=True, in_callback=True)
    assert conn._pg_pending is exc and not conn.closed  # psycopg2 closes it, the guard raises exc


def test_grace_runs_out_in_the_callback_without_keep_raises(grace: float) -> None:
    exc = Interrupt("killed")
    conn = FakeConn()
    with pytest.raises(Interrupt):
        _wait.drive(conversation(3), conn, waiter=FakeWaiter(exc), on_interrupt=no_cancel, in_callback=True)
    assert not conn.closed and not _guard.parked(conn)


def test_connection_breaking_while_draining_closes_and_settles_the_message(grace: float) -> None:
    conn = FakeConn()
    with _deadline.override(0.01):
        with pytest.raises(
            QueryTimeout, match="the connection failed while the statement was being cancelled"
        ):
            _wait.drive(conversation(3, fail_on=1), conn, waiter=FakeWaiter(0, READ), on_interrupt=no_cancel)
    assert conn.closed


def test_idle_wait_raises_at_once_without_cancel_or_drain() -> None:
    exc = Interrupt("killed")
    cancels: list[int] = []
    w = FakeWaiter(exc)
    with pytest.raises(Interrupt) as info:
        _wait.drive(
            wait_socket(FD, READ), FakeConn(), waiter=w, idle=True, on_interrupt=lambda: cancels.append(1)
        )
    assert info.value is exc and not cancels and len(w.calls) == 1


def test_idle_wait_deadline_says_nothing_was_running() -> None:
    with _deadline.override(0.01):
        with pytest.raises(QueryTimeout, match="no statement was running"):
            _wait.drive(wait_socket(FD, READ), FakeConn(), waiter=FakeWaiter(0), idle=True)


def test_own_timeout_ends_the_wait_with_zero() -> None:
    w = FakeWaiter(0)
    assert _wait.drive(wait_socket(FD, READ), waiter=w, timeout=0.01, idle=True) == 0
    assert w.calls[0][2] is not None and w.calls[0][2] <= 0.01


def test_own_timeout_inside_a_tighter_deadline_raises_query_timeout() -> None:
    with _deadline.override(0.01):
        with pytest.raises(QueryTimeout):
            _wait.drive(wait_socket(FD, READ), waiter=FakeWaiter(0), timeout=60, idle=True)
    with _deadline.override(60):
        assert _wait.drive(wait_socket(FD, READ), waiter=FakeWaiter(0), timeout=0.01, idle=True) == 0
