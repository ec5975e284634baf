"""The guard (psycogreen._guard) on fake connections, and the inlined ``cursor.execute`` fast path
agreeing with the general ``with using(conn)`` path in every state."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any, Callable, Optional

import greenlet
import psycopg2
import psycopg2.extensions as ext
import psycopg2.extras as extras
import pytest

from psycogreen import _accel, _connection, _guard
from psycogreen.errors import ConcurrentUseError, QueryTimeout


class FakeConn(_guard.GreenState):
    """Carries the guard state like a psycogreen connection, without a server."""

    closed = 0


class Interrupt(BaseException):
    """Stands for gevent.Timeout, GreenletExit, KeyboardInterrupt."""


def test_is_green() -> None:
    assert _guard.is_green(FakeConn())
    assert not _guard.is_green(object())
    assert issubclass(_connection.green_connection_class(ext.connection), _guard.GreenState)


def test_enter_leave_nesting_and_reads() -> None:
    conn = FakeConn()
    assert not _guard.in_use(conn) and not _guard.inside(conn)
    with _guard.using(conn):
        assert _guard.in_use(conn) and _guard.inside(conn) and not _guard.in_use_by_other(conn)
        with _guard.using(conn):
            assert conn._pg_depth == 2
        assert _guard.in_use(conn)
    assert not _guard.in_use(conn) and not _guard.busy(conn)


def test_other_greenlet_of_this_thread_gets_concurrent_use_error() -> None:
    conn = FakeConn()
    seen: list[BaseException] = []
    with _guard.using(conn):

        def other() -> None:
            assert _guard.in_use_by_other(conn)
            try:
                with _guard.using(conn):
                    pass
            except ConcurrentUseError as e:
                seen.append(e)

        greenlet.greenlet(other).switch()
    assert len(seen) == 1 and "already in use" in str(seen[0])


def test_parked_interrupt_is_raised_by_the_outermost_call() -> None:
    conn = FakeConn()
    exc = Interrupt()
    with pytest.raises(Interrupt) as info:
        with _guard.using(conn):
            with _guard.using(conn):
                _guard.park(conn, exc)
                assert _guard.parked(conn)
            assert _guard.parked(conn)  # still inside: not delivered yet
    assert info.value is exc
    assert not _guard.parked(conn) and not _guard.in_use(conn)


def test_not_green_runs_unguarded() -> None:
    plain = SimpleNamespace()
    with _guard.using(plain):
        pass
    assert not hasattr(plain, "_pg_owner")


def test_compat_names_stay_importable() -> None:
    assert _connection.in_use_by_other is _guard.in_use_by_other
    assert _connection.stop_other_user is _guard.stop_other_user
    assert _connection._enter is _guard.enter and _connection._leave is _guard.leave


# -- the execute fast path agrees with the general path ------------------------------------------


def _general(cur: Any, query: Any, vars: Any = None) -> None:
    with _guard.using(cur.connection):
        _connection._cursor_execute(cur, query, vars)


_fast = _connection.execute_python


def _fast_paths() -> list[Any]:
    """The pure-Python fast path, and the C one when the accelerator is active."""
    paths = [pytest.param("python", id="python")]
    paths.append(
        pytest.param(
            "c",
            id="c",
            marks=pytest.mark.skipif(not _accel.active(), reason=_accel.reason),
        )
    )
    return paths


def _behaviours() -> dict[str, Callable[[Any], None]]:
    def ok(conn: Any) -> None:
        pass

    def fails(conn: Any) -> None:
        raise psycopg2.DatabaseError("boom")

    def parks_timeout(conn: Any) -> None:
        _guard.park(conn, QueryTimeout("deadline"))

    def parks_and_fails(conn: Any) -> None:
        _guard.park(conn, QueryTimeout("deadline"))
        raise ext.QueryCanceledError("canceling statement due to user request")

    def parks_interrupt_and_fails(conn: Any) -> None:
        _guard.park(conn, Interrupt("killed"))
        raise ext.QueryCanceledError("canceling statement due to user request")

    return {f.__name__: f for f in (ok, fails, parks_timeout, parks_and_fails, parks_interrupt_and_fails)}


def _start_states() -> dict[str, Callable[[FakeConn], None]]:
    def free(conn: FakeConn) -> None:
        pass

    def mine(conn: FakeConn) -> None:
        _guard.enter(conn)

    def stale_parked(conn: FakeConn) -> None:
        conn._pg_pending = Interrupt("left over")

    def other_greenlet(conn: FakeConn) -> None:
        conn._pg_owner = greenlet.greenlet(lambda: None)
        conn._pg_depth = 1

    return {f.__name__: f for f in (free, mine, stale_parked, other_greenlet)}


def _outcome(
    path: Any, start: Callable[[FakeConn], None], behaviour: Callable[[Any], None]
) -> tuple[Any, ...]:
    conn = FakeConn()
    start(conn)
    cur = SimpleNamespace(connection=conn)
    error: Optional[BaseException] = None
    try:
        path(cur, "select 1")
    except BaseException as e:  # noqa: BLE001 - compared below
        error = e
    owner = conn._pg_owner
    state = (
        "none" if owner is None else "me" if owner is greenlet.getcurrent() else "other",
        conn._pg_depth,
        type(conn._pg_pending).__name__,
    )
    text = re.sub(r"<greenlet.*?>", "<greenlet>", str(error))
    err = None if error is None else (type(error).__name__, text, type(error.__cause__).__name__)
    return err, state


@pytest.mark.parametrize("path", _fast_paths())
@pytest.mark.parametrize("start", list(_start_states()))
@pytest.mark.parametrize("behaviour", list(_behaviours()))
def test_execute_fast_path_agrees_with_general_path(
    path: str, start: str, behaviour: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    do = _behaviours()[behaviour]

    def fake_execute(cur: Any, q: Any, v: Any) -> None:
        do(cur.connection)

    monkeypatch.setattr(_connection, "_cursor_execute", fake_execute)
    fast: Any = _fast
    if path == "c":
        assert _accel.speedups is not None
        fast = _accel.speedups.execute
        _accel.speedups.setup_guard(fake_execute, _fast, _guard.leave)
    try:
        got = _outcome(fast, _start_states()[start], do)
    finally:
        if path == "c":
            _connection._accelerate_execute()  # back to psycopg2's own execute
    general = _outcome(_general, _start_states()[start], do)
    assert got == general


def test_c_execute_is_installed_when_the_accelerator_is_active() -> None:
    installed = _connection.GreenCursorMixin.__dict__["execute"]
    if _accel.active():
        assert _accel.speedups is not None and installed is _accel.speedups.execute_method
    else:
        assert installed is _connection.execute_python


# -- the guard state in __slots__ on psycogreen's concrete connection classes ---------------------


@pytest.mark.parametrize(
    "base",
    [ext.connection, extras.DictConnection, extras.LoggingConnection, extras.LogicalReplicationConnection],
    ids=lambda b: b.__name__,
)
def test_concrete_connection_classes_keep_the_guard_state_in_slots(base: type) -> None:
    klass = _connection.green_connection_class(base)
    assert set(_guard.SLOTS) <= set(klass.__dict__)
    conn = klass.__new__(klass, "dbname=unused")  # created, never connected
    defaults = {name: getattr(_guard.GreenState, name) for name in _guard.SLOTS}
    assert {name: getattr(conn, name) for name in _guard.SLOTS} == defaults
    conn.set_by_an_application = 1  # a __dict__ too, as before (Django, pools set attributes)
    assert conn.set_by_an_application == 1 and _guard.is_green(conn)
