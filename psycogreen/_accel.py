"""Which implementation of the hot paths runs: the optional C accelerator or pure Python.

``psycogreen._speedups`` (``psycogreen/_speedups.c``) is built when a C compiler is available at
install time; without one psycogreen is pure Python and behaves the same, a little slower. Setting
``PSYCOGREEN_NO_EXTENSIONS=1`` (the convention of aiohttp, yarl and multidict) forces pure Python
even where the extension is built: to rule it out when debugging, and so CI tests both paths.

The pure-Python code is the reference; the extension only replaces the common case of a few hot
loops and hands everything unusual back to Python (see the C file's header). What it needs from
the rest of psycogreen is handed in here once (libpq's ``PQgetlineAsync`` address, from the same
library psycopg2 uses), and by the modules whose hot paths it replaces (the waiters, the cursor).
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Optional

__all__ = ["ENV", "active", "built", "reason", "speedups"]

#: The environment variable that forces the pure-Python path.
ENV = "PSYCOGREEN_NO_EXTENSIONS"


def _disabled() -> bool:
    return os.environ.get(ENV, "").strip() not in ("", "0")


def _load() -> tuple[Optional[ModuleType], str]:
    """The initialised extension module (or None), and a sentence saying which path runs and why."""
    if _disabled():
        return None, f"pure Python: disabled by {ENV}={os.environ.get(ENV)}"
    try:
        from . import _speedups
    except ImportError as e:
        return None, (
            f"pure Python: the C accelerator is not built ({e}); reinstall psycogreen with a C "
            "compiler and the Python headers available to build it"
        )
    import ctypes

    import psycopg2

    from . import _guard, _libpq

    address = ctypes.cast(_libpq.lib.PQgetlineAsync, ctypes.c_void_p).value or 0
    _speedups.init(address, psycopg2.Error, _guard.getcurrent)
    return _speedups, f"C accelerator ({os.path.basename(_speedups.__file__ or '_speedups')})"


#: The extension module, initialised, when it is built and not disabled; else None.
speedups: Optional[ModuleType]
#: Which implementation runs, and why, in a sentence (shown by ``python -m psycogreen doctor``).
reason: str
speedups, reason = _load()


def active() -> bool:
    """True when the C accelerator runs the hot paths."""
    return speedups is not None


def built() -> bool:
    """True when the extension is installed (whether or not the environment disables it)."""
    import importlib.util

    return importlib.util.find_spec("psycogreen._speedups") is not None
