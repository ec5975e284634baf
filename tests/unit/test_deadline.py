"""Deadline nesting and the ``_deadline`` API, with no server."""

from __future__ import annotations

import time
import warnings
from typing import Iterator

import pytest

from psycogreen import _deadline


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "not patched": irrelevant here
        yield


def test_no_deadline_outside_blocks() -> None:
    assert _deadline.current() is None and _deadline.connect_deadline() is None


def test_nesting_keeps_the_tightest() -> None:
    with _deadline.timeout(10):
        outer = _deadline.current()
        assert outer is not None and outer[1] == 10.0
        with _deadline.timeout(60):
            assert _deadline.current() == outer  # a looser inner block changes nothing
        with _deadline.timeout(1):
            inner = _deadline.current()
            assert inner is not None and inner[1] == 1.0 and inner[0] < outer[0]
        assert _deadline.current() == outer
    assert _deadline.current() is None


def test_override_replaces_even_a_tighter_deadline() -> None:
    with _deadline.timeout(0.5):
        with _deadline.override(30):
            now = _deadline.current()
            assert now is not None and now[1] == 30 and now[0] > time.monotonic() + 20
        got = _deadline.current()
        assert got is not None and got[1] == 0.5


def test_connecting_sets_and_restores() -> None:
    with _deadline.connecting(123.0, 'server at "h", port 1'):
        assert _deadline.connect_deadline() == _deadline.ConnectDeadline(123.0, 'server at "h", port 1')
    assert _deadline.connect_deadline() is None


@pytest.mark.parametrize("bad", ["1", None, True])
def test_timeout_type_errors(bad: object) -> None:
    with pytest.raises(TypeError, match="takes a number of seconds"):
        with _deadline.timeout(bad):  # type: ignore[arg-type]
            pass


@pytest.mark.parametrize("bad", [-1, float("nan")])
def test_timeout_value_errors(bad: float) -> None:
    with pytest.raises(ValueError, match=">= 0"):
        with _deadline.timeout(bad):
            pass


def test_cancel_grace_set_and_grace_end() -> None:
    previous = _deadline.set_cancel_grace(2.5)
    try:
        assert _deadline.cancel_grace() == 2.5
        assert 2.0 < _deadline.grace_end() - time.monotonic() <= 2.5
        for bad in (0, -1, float("inf")):
            with pytest.raises(ValueError):
                _deadline.set_cancel_grace(bad)
    finally:
        _deadline.set_cancel_grace(previous)
