"""psycogreen: psycopg2, cooperative and safe under gevent, eventlet, asyncio, trio and threads.

The public surface is this module, :mod:`psycogreen.errors`, :mod:`psycogreen.gevent`,
:mod:`psycogreen.eventlet` (psycogreen 1.0.2's API), :mod:`psycogreen.pool`, :mod:`psycogreen.copy`
and :mod:`psycogreen.aio`. Modules starting with ``_`` are private.
"""

from __future__ import annotations

from . import errors
from ._deadline import set_cancel_grace, timeout
from ._notify import notifies
from ._patch import patch, patched, unpatch

__version__ = "2.0.0.dev0"

__all__ = [
    "__version__",
    "errors",
    "notifies",
    "patch",
    "patched",
    "set_cancel_grace",
    "timeout",
    "unpatch",
]
