"""The sans-IO kernel: libpq conversations written as generators.

Every generator here drives libpq (through ``conn.poll()`` or :mod:`psycogreen._libpq`) and *yields
what it waits for* — a ``(fd, events)`` pair — and receives the ready events back. It never sleeps,
selects or switches. The waiters in :mod:`psycogreen._waiters` do the waiting, and
:func:`psycogreen._wait.drive` is the one loop that connects the two and owns deadlines and
interruptions. A protocol feature is therefore written once and works under gevent, eventlet, plain
threads and the asyncio/trio bridge alike.
"""

from __future__ import annotations

from typing import Generator, Tuple, TypeVar

#: Readiness flags, the same values as ``selectors.EVENT_READ``/``EVENT_WRITE`` and libev's.
READ = 1
WRITE = 2
READ_WRITE = READ | WRITE

RV = TypeVar("RV")

#: What a generator yields: wait for ``events`` on ``fd``; it is sent back the events that are ready.
Wait = Tuple[int, int]
PQGen = Generator[Wait, int, RV]

__all__ = ["PQGen", "READ", "READ_WRITE", "RV", "WRITE", "Wait"]
