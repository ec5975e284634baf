"""``patch()``: the one place where the waiter is chosen and psycopg2 is switched to green mode.

Patching does three things, all undone by ``unpatch()``:

1. registers :func:`psycogreen._wait.wait_callback` (or its C twin, see ``_wait.installed_callback``)
   with ``psycopg2.extensions.set_wait_callback``;
2. replaces ``psycopg2._connect`` (what ``psycopg2.connect`` calls) so connections honour the connect
   deadline, resolve host names cooperatively and are of psycogreen's connection classes;
3. records the framework, so pools and the asyncio bridge wait the same way.

**Right whatever the set-up order.** ``patch()`` without a framework, called before gevent or
eventlet has monkey-patched the process (gunicorn runs ``post_fork`` *before* its gevent/eventlet
worker patches), cannot know yet which framework will run. It settles *provisionally* on plain
threads with an :class:`_AutoWaiter`, which hands over to the gevent/eventlet waiter the first time
it is used after monkey-patching (seen cheaply: ``socket.socket`` is no longer the class it was).
From then on the framework's own waiter is the chosen one (:func:`current_waiter`) and the per-query path is
exactly that of an explicit ``patch("gevent")``. An explicit ``patch("threads")`` stays threads.

**Forgetting patch().** psycogreen's pool and Django backend call :func:`ensure_patched` (using them
expresses the intent). Plain ``psycopg2.connect()`` in a monkey-patched process with no wait
callback at all serialises the whole process on every query; importing psycogreen installs a
connect-time check (never on the per-query path) that warns once, naming the fix.
"""

from __future__ import annotations

import functools
import logging
import socket
import sys
import threading
import warnings
from typing import Any, Optional

import psycopg2
import psycopg2.extensions

from ._waiters import Waiter

try:
    from greenlet import getcurrent as _getcurrent
except ImportError:  # pragma: no cover - greenlet ships with gevent and eventlet
    _getcurrent = None

FRAMEWORKS = ("gevent", "eventlet", "asyncio", "threads")

logger = logging.getLogger("psycogreen")

_lock = threading.Lock()
_original_connect: Any = None
_active: Optional[str] = None
#: ``patch()`` chose threads only because nothing was monkey-patched yet: re-resolve when it is.
_auto = False
#: One waiter per framework, shared by ``patch()`` and the psycogreen 1.0.2 entry points.
_waiters: dict[str, Waiter] = {}
#: The process's waiter: set by ``patch()``, cleared by ``unpatch()``; an :class:`_AutoWaiter` when
#: psycogreen's own code waits before anything was patched. Read through :func:`current_waiter`.
_chosen: Optional[Waiter] = None


def current_waiter() -> Waiter:
    """The waiter for the running context: a bridge greenlet (psycogreen.aio) carries its own, else
    the process's chosen one. Not patched at all: psycogreen's own waits (pool, COPY) block the thread
    until gevent/eventlet monkey-patches, then use that framework (see :class:`_AutoWaiter`)."""
    global _chosen
    if _getcurrent is not None:
        w = getattr(_getcurrent(), "psycogreen_waiter", None)
        if w is not None:
            return w  # type: ignore[no-any-return]
    w = _chosen
    if w is None:
        w = _chosen = _AutoWaiter()
    return w


def chosen_waiter() -> Optional[Waiter]:
    """The process's waiter if one was chosen (by ``patch()`` or by first use), else None."""
    return _chosen


def _require_wait_callback() -> None:
    if not hasattr(psycopg2.extensions, "set_wait_callback"):
        raise ImportError(
            "support for coroutines available only from psycopg2 2.2; "
            f"this psycopg2 is {getattr(psycopg2, '__version__', '?')}: "
            "upgrade psycopg2 (pip install -U psycopg2)"
        )


def _gevent_patched() -> bool:
    mod = sys.modules.get("gevent.monkey")
    return bool(mod is not None and mod.is_module_patched("socket"))


def _eventlet_patched() -> bool:
    mod = sys.modules.get("eventlet.patcher")
    return bool(mod is not None and mod.is_monkey_patched("socket"))


def detect() -> str:
    """gevent or eventlet if that framework has monkey-patched the process, else threads."""
    if _gevent_patched():
        return "gevent"
    if _eventlet_patched():
        return "eventlet"
    return "threads"


def _require_module(name: str) -> None:
    try:
        __import__(name)
    except ImportError as e:
        raise ImportError(
            f"psycogreen.patch({name!r}) needs {name}, which cannot be imported ({e}); "
            f"install it: pip install 'psycogreen[{name}]'"
        ) from e


def _check_compatible(framework: str) -> None:
    """The other framework's hub would never run this one's watchers: refuse instead of hanging."""
    if framework == "gevent" and _eventlet_patched():
        raise RuntimeError(
            "psycogreen: patch('gevent') in a process monkey-patched by eventlet would hang; "
            "use psycogreen.eventlet.patch_psycopg() or patch('eventlet')"
        )
    if framework == "eventlet" and _gevent_patched():
        raise RuntimeError(
            "psycogreen: patch('eventlet') in a process monkey-patched by gevent would hang; "
            "use psycogreen.gevent.patch_psycopg() or patch('gevent')"
        )


def _make_waiter(framework: str) -> Waiter:
    if framework == "gevent":
        from ._waiters.gevent import GeventWaiter

        return GeventWaiter()
    if framework == "eventlet":
        from ._waiters.eventlet import EventletWaiter

        return EventletWaiter()
    if framework == "asyncio":
        # Code inside psycogreen.aio's bridge waits on the loop through the bridge greenlet's own
        # waiter; anything else waits in its thread, with a warning if that thread runs a loop.
        from ._waiters.loop import LoopGuardWaiter

        return LoopGuardWaiter()
    if framework == "threads":
        from ._waiters.blocking import BlockingWaiter

        return BlockingWaiter()
    raise ValueError(
        f"psycogreen.patch(): unknown framework {framework!r}; "
        f"use one of {', '.join(FRAMEWORKS)} or None to detect it"
    )


def waiter_for(framework: str) -> Waiter:
    """The process's one waiter for ``framework`` (created on first use; waiters keep no per-caller
    state, so ``patch()`` and ``gevent_wait_callback`` share watchers and warnings)."""
    _check_compatible(framework)
    if framework in ("gevent", "eventlet"):
        _require_module(framework)  # checked every time: a cached waiter must not hide a broken install
    waiter = _waiters.get(framework)
    if waiter is None:
        waiter = _waiters.setdefault(framework, _make_waiter(framework))
    return waiter


class _AutoWaiter:
    """Plain-threads waiting until gevent or eventlet monkey-patches the process, then the
    framework's waiter (see the module docstring). Used by ``patch()`` without a framework before
    monkey-patching, and by psycogreen's own code when nothing is patched at all."""

    name = "threads"

    def __init__(self) -> None:
        self._seen: Any = socket.socket
        self._blocking = _make_waiter("threads")

    def _target(self) -> Waiter:
        if socket.socket is self._seen:
            return self._blocking
        return _resolve(self) or self._blocking

    def wait_fd(self, fd: int, events: int, timeout: Optional[float] = None, shield: bool = False) -> int:
        return self._target().wait_fd(fd, events, timeout, shield)

    def run_in_thread(self, fn: Any, *args: Any) -> Any:
        return self._target().run_in_thread(fn, *args)

    def getaddrinfo(self, host: str, port: Any, *args: Any) -> list[Any]:
        return self._target().getaddrinfo(host, port, *args)

    def current(self) -> object:
        return self._target().current()

    def sleep(self, seconds: float) -> None:
        self._target().sleep(seconds)

    def spawn(self, fn: Any, *args: Any) -> Any:
        return self._target().spawn(fn, *args)

    def Event(self) -> Any:
        return self._target().Event()

    def Lock(self) -> Any:
        return self._target().Lock()

    def forget_fd(self, fd: int) -> None:
        self._target().forget_fd(fd)

    def park_token(self) -> Any:
        return self._target().park_token()

    def park(self, token: Any) -> Any:
        return self._target().park(token)

    def unpark(self, token: Any, value: Any) -> None:
        self._target().unpark(token, value)


def _resolve(auto: _AutoWaiter) -> Optional[Waiter]:
    """``socket.socket`` changed: if gevent/eventlet monkey-patched, switch to its waiter for good."""
    global _active, _auto, _chosen
    from . import _wait

    switched = unpatched = False
    with _lock:
        name = detect()
        if name == "threads":
            auto._seen = socket.socket  # replaced by something else (a test double, a proxy lib)
            return None
        waiter = waiter_for(name)
        # psycogreen's own waits cooperate from now on; psycopg2's only if something is patched.
        unpatched = _active is None and psycopg2.extensions.get_wait_callback() is None
        if _chosen is auto:
            _chosen = waiter
            if _wait.is_ours(psycopg2.extensions.get_wait_callback()):
                psycopg2.extensions.set_wait_callback(_wait.installed_callback(waiter))
            if _auto:
                _active, _auto, switched = name, False, True
    if switched:
        logger.info("psycogreen: %s monkey-patched the process after patch(); now waiting with it", name)
    if unpatched:
        _warn_unpatched("psycogreen used")
    return waiter


def patch(framework: Optional[str] = None) -> str:
    """Make psycopg2 cooperative for ``framework`` (detected when None). Idempotent.

    Returns the framework in use. Patching again with another framework switches to it. Without a
    framework and before any monkey-patching, it returns "threads" and moves to gevent/eventlet by
    itself once that framework patches the process (gunicorn's ``post_fork`` runs before).
    """
    global _original_connect, _active, _auto, _chosen
    from . import _wait

    _require_wait_callback()
    name = framework or detect()
    provisional = framework is None and name == "threads"
    with _lock:
        if _active == name and (provisional or not _auto):
            return name  # same choice, or a detected "threads" over an explicit one: keep it
        waiter: Waiter = _AutoWaiter() if provisional else waiter_for(name)
        _chosen = waiter
        psycopg2.extensions.set_wait_callback(_wait.installed_callback(waiter))
        if _original_connect is None:
            from . import _connect

            _original_connect = psycopg2._connect  # type: ignore[attr-defined]
            inner = _psycopg2_connect if _original_connect is _watched_connect else _original_connect
            psycopg2._connect = functools.partial(_connect.connect, inner)  # type: ignore[attr-defined]
        _active, _auto = name, provisional
        return name


def unpatch() -> None:
    """Restore psycopg2's blocking behaviour and its own ``_connect``. Idempotent.

    Connections made while patched keep their class; they work in blocking mode afterwards.
    """
    global _original_connect, _active, _auto, _chosen
    with _lock:
        if _active is None and _original_connect is None:
            return
        psycopg2.extensions.set_wait_callback(None)
        if _original_connect is not None:
            psycopg2._connect = _original_connect  # type: ignore[attr-defined]
            _original_connect = None
        _chosen = None
        _active, _auto = None, False


def patched() -> Optional[str]:
    """The framework psycogreen is patched for, or None.

    After a provisional ``patch()`` this looks again, so it names the framework actually waiting.
    """
    if _auto:
        waiter = _chosen
        if isinstance(waiter, _AutoWaiter):
            waiter._target()
    return _active


def ensure_patched() -> str:
    """Patch for the running framework unless psycogreen is patched already; return the framework.

    Called by psycogreen's pool and Django backend: using them says "make psycopg2 cooperative",
    and forgetting ``patch()`` must not silently serialise every query. An explicit choice made
    before (even "threads" in a gevent process) is kept. Cheap when already patched.
    """
    active = _active
    if active is None:
        name = patch()
        logger.debug("psycogreen: patched for %s on first use (psycogreen.patch() was not called)", name)
        return name
    if _auto:
        return patched() or active
    return active


# ---------------------------------------------------------------- psycopg2 used without patch()

UNPATCHED_MESSAGE = (
    "{what} in a process monkey-patched by {framework}, but psycopg2 is not patched: "
    "every query will block the whole process (all greenlets wait for it). Call psycogreen.patch() "
    "once, after monkey-patching (gunicorn: in post_fork or at the top of the app; see "
    "docs/deployment.md). This warning is shown once."
)
_warned = False
#: psycopg2's own ``_connect`` (through a reload of this module too).
_psycopg2_connect: Any = getattr(psycopg2._connect, "psycogreen_wraps", psycopg2._connect)  # type: ignore[attr-defined]


def _warn_unpatched(what: str) -> None:
    """Warn once when psycopg2 is used in blocking mode inside a monkey-patched process."""
    global _warned
    framework = detect()
    if framework == "threads" or _warned:
        return
    _warned = True
    message = UNPATCHED_MESSAGE.format(what=what, framework=framework)
    logger.warning("%s", message)
    warnings.warn(message, RuntimeWarning, stacklevel=4)


def _watched_connect(dsn: str, connection_factory: Any = None, **kwasync: Any) -> Any:
    """``psycopg2._connect`` while psycogreen is imported but not patched: psycopg2's own connect,
    plus a check (per connection, never per query) that warns if the process is monkey-patched and
    no wait callback is set."""
    if not _warned and psycopg2.extensions.get_wait_callback() is None:
        _warn_unpatched("psycopg2.connect()")
    return _psycopg2_connect(dsn, connection_factory=connection_factory, **kwasync)


_watched_connect.psycogreen_wraps = _psycopg2_connect  # type: ignore[attr-defined]
psycopg2._connect = _watched_connect  # type: ignore[attr-defined]
