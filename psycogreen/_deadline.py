"""Deadlines that follow the current greenlet/task: ``psycogreen.timeout()`` and connect deadlines.

Both live in ``contextvars``: gevent, eventlet (greenlet >= 1.0) and asyncio tasks each have their own
context, so a deadline set in one greenlet never leaks into another, and threads are separate too.
"""

from __future__ import annotations

import contextlib
import numbers
import os
import time
import warnings
from contextvars import ContextVar
from typing import Iterator, NamedTuple, Optional

__all__ = [
    "ConnectDeadline",
    "cancel_grace",
    "connect_deadline",
    "connecting",
    "current",
    "grace_end",
    "override",
    "set_cancel_grace",
    "timeout",
]

#: (absolute monotonic deadline, seconds asked for) of the tightest enclosing ``timeout()``.
_op_deadline: ContextVar[Optional[tuple[float, float]]] = ContextVar("psycogreen_timeout", default=None)


class ConnectDeadline(NamedTuple):
    """Set while psycogreen connects to one host address, read by the wait callback."""

    deadline: Optional[float]
    target: str  # how libpq names the server in its messages, e.g. 'server at "h", port 5432'


_connecting: ContextVar[Optional[ConnectDeadline]] = ContextVar("psycogreen_connect", default=None)

#: How long to wait, after a deadline or an interrupt, for the server to confirm the cancel before
#: giving up on the connection (closing it). A healthy server answers in milliseconds; a dead network
#: never does, and a caller who asked for ``timeout(1)`` wants control back near 1 s, not 1 s plus a
#: long wait for a server that cannot answer: so every timed-out or interrupted call returns within
#: its deadline plus this grace. The one home of this setting: ``PSYCOGREEN_CANCEL_GRACE`` (seconds)
#: sets it at import, :func:`set_cancel_grace` at run time.
DEFAULT_CANCEL_GRACE = 1.0


def _grace_from_env() -> float:
    raw = os.environ.get("PSYCOGREEN_CANCEL_GRACE", "").strip()
    if not raw:
        return DEFAULT_CANCEL_GRACE
    try:
        return _check_grace(float(raw))
    except ValueError:
        raise ValueError(
            f"PSYCOGREEN_CANCEL_GRACE={raw!r} is not a number of seconds > 0; unset it for the "
            f"default ({DEFAULT_CANCEL_GRACE:g} s) or give e.g. PSYCOGREEN_CANCEL_GRACE=5"
        ) from None


def _check_grace(seconds: float) -> float:
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"the cancel grace must be a finite number of seconds > 0, got {seconds!r}")
    return float(seconds)


_cancel_grace = _grace_from_env()


def cancel_grace() -> float:
    """Seconds to wait for the server to confirm a cancel before closing the connection."""
    return _cancel_grace


def set_cancel_grace(seconds: float) -> float:
    """Set the cancel grace for the whole process (see :data:`DEFAULT_CANCEL_GRACE`); return the
    previous value. Raise it for servers that are slow to confirm a cancel but must keep their
    connections; every interrupted call may then take that long to return on a dead network."""
    global _cancel_grace
    previous, _cancel_grace = _cancel_grace, _check_grace(seconds)
    return previous


@contextlib.contextmanager
def timeout(seconds: float) -> Iterator[None]:
    """Bound every psycopg2 operation in this block (in this greenlet/task) to ``seconds``.

    The deadline is absolute: several queries inside the block share it. Nested blocks keep the
    tightest deadline. On expiry the running statement is cancelled on the server and
    :class:`psycogreen.errors.QueryTimeout` (a ``QueryCanceledError``) is raised; the connection stays
    usable (roll back first if a transaction was open). If the server cannot confirm the cancel
    within :func:`cancel_grace` (a dead network), the connection is closed instead and the error says
    so: control returns within ``seconds`` plus the grace either way. Connecting inside the block is
    bounded too.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, numbers.Real):
        raise TypeError(
            f"psycogreen.timeout() takes a number of seconds (int or float), got "
            f"{type(seconds).__name__} {seconds!r}; convert it first, e.g. timeout(float(value)), "
            "or use no timeout() block for no deadline"
        )
    if seconds != seconds or seconds < 0:
        raise ValueError(
            f"psycogreen.timeout() needs a number of seconds >= 0, got {seconds!r}; "
            "use a larger value or no timeout() block for no deadline"
        )
    _warn_if_unpatched()
    deadline = time.monotonic() + float(seconds)
    outer = _op_deadline.get()
    if outer is not None and outer[0] <= deadline:
        yield
        return
    token = _op_deadline.set((deadline, float(seconds)))
    try:
        yield
    finally:
        _op_deadline.reset(token)


_warned = False


def _warn_if_unpatched() -> None:
    """Deadlines are enforced by psycogreen's wait callback: without one they cannot work."""
    global _warned
    if _warned:
        return
    import psycopg2.extensions

    if psycopg2.extensions.get_wait_callback() is None:
        _warned = True
        warnings.warn(
            "psycogreen.timeout() has no effect: psycopg2 is not patched, so it waits inside libpq "
            "where no deadline can reach it; call psycogreen.patch() first (it works with plain "
            "threads too)",
            RuntimeWarning,
            stacklevel=3,
        )


# -- the small API the rest of psycogreen uses (nobody else touches the ContextVars) -------------------

#: The tightest ``timeout()`` deadline in force here, as (monotonic deadline, seconds asked for), or
#: None. The ContextVar's own ``get``: a C call, as cheap as reading the variable on the hot path.
current = _op_deadline.get

#: The connect deadline of the attempt being made in this greenlet/task, or None when not
#: connecting (read by the wait callback on every call, hence the bare ``get`` as well).
connect_deadline = _connecting.get


@contextlib.contextmanager
def override(seconds: float) -> Iterator[None]:
    """A deadline of ``seconds`` from now for the block, *replacing* any enclosing ``timeout()``
    (unlike ``timeout()``, which keeps the tightest): for psycogreen's own housekeeping (a pool
    resetting a returned connection), which must be bounded whatever the caller's budget is."""
    token = _op_deadline.set((time.monotonic() + seconds, seconds))
    try:
        yield
    finally:
        _op_deadline.reset(token)


@contextlib.contextmanager
def connecting(deadline: Optional[float], target: str) -> Iterator[None]:
    """Connecting to ``target`` (how libpq names the server in messages) until the monotonic
    ``deadline`` (None: no connect_timeout) in this block; the wait callback enforces it."""
    token = _connecting.set(ConnectDeadline(deadline, target))
    try:
        yield
    finally:
        _connecting.reset(token)


def context_vars() -> tuple[ContextVar[Optional[ConnectDeadline]], ContextVar[Optional[tuple[float, float]]]]:
    """The connect and ``timeout()`` ContextVars, for the C accelerator's wait callback only (it
    reads them with ``PyContextVar_Get``, as :data:`connect_deadline` and :data:`current` do)."""
    return _connecting, _op_deadline


def grace_end() -> float:
    """When a cancel starting now must have been confirmed (the one place the grace is applied)."""
    return time.monotonic() + _cancel_grace
