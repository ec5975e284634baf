"""``patch()``: the one place where the waiter is chosen and psycopg2 is switched to green mode.

Patching does three things, all undone by ``unpatch()``:

1. registers :func:`psycogreen._wait.wait_callback` with ``psycopg2.extensions.set_wait_callback``;
2. replaces ``psycopg2._connect`` (what ``psycopg2.connect`` calls) so connections honour the connect
   deadline, resolve host names cooperatively and are of psycogreen's connection classes;
3. records the framework, so pools and the asyncio bridge wait the same way.
"""

from __future__ import annotations

import functools
import sys
import threading
from typing import Any, Optional

import psycopg2
import psycopg2.extensions

from . import _wait

FRAMEWORKS = ("gevent", "eventlet", "asyncio", "threads")

_lock = threading.Lock()
_original_connect: Any = None
_active: Optional[str] = None


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


def _make_waiter(framework: str) -> Any:
    if framework == "gevent":
        if _eventlet_patched():
            raise RuntimeError(
                "psycogreen: patch('gevent') in a process monkey-patched by eventlet would hang; "
                "use psycogreen.eventlet.patch_psycopg() or patch('eventlet')"
            )
        _require_module("gevent")
        from ._waiters.gevent import GeventWaiter

        return GeventWaiter()
    if framework == "eventlet":
        if _gevent_patched():
            raise RuntimeError(
                "psycogreen: patch('eventlet') in a process monkey-patched by gevent would hang; "
                "use psycogreen.gevent.patch_psycopg() or patch('gevent')"
            )
        _require_module("eventlet")
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


def patch(framework: Optional[str] = None) -> str:
    """Make psycopg2 cooperative for ``framework`` (detected when None). Idempotent.

    Returns the framework in use. Patching again with another framework switches to it.
    """
    global _original_connect, _active
    _require_wait_callback()
    name = framework or detect()
    with _lock:
        if _active == name:
            return name
        waiter = _make_waiter(name)
        _wait.state.waiter = waiter
        psycopg2.extensions.set_wait_callback(_wait.wait_callback)
        if _original_connect is None:
            from . import _connect

            _original_connect = psycopg2._connect  # type: ignore[attr-defined]
            psycopg2._connect = functools.partial(_connect.connect, _original_connect)  # type: ignore[attr-defined]
        _active = name
        return name


def unpatch() -> None:
    """Restore psycopg2's blocking behaviour and its own ``_connect``. Idempotent.

    Connections made while patched keep their class; they work in blocking mode afterwards.
    """
    global _original_connect, _active
    with _lock:
        if _active is None and _original_connect is None:
            return
        psycopg2.extensions.set_wait_callback(None)
        if _original_connect is not None:
            psycopg2._connect = _original_connect  # type: ignore[attr-defined]
            _original_connect = None
        _wait.state.waiter = None
        _active = None


def patched() -> Optional[str]:
    """The framework psycogreen is patched for, or None."""
    return _active
