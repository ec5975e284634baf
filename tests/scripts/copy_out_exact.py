"""COPY TO STDOUT, blocking psycopg2 vs psycogreen under one framework (argv[1]): byte for byte.

The cases (``copy_out_cases.py``) run on a blocking connection (psycogreen unpatched, psycopg2's own
C COPY) and on a green one (patched, inside a greenlet/thread); the script emits both summaries,
the number of ``write()`` calls the green side made for the big cases, and the hub's worst stall.
"""

from __future__ import annotations

import copy_out_cases as cases
import kit
import psycopg2

import psycogreen

psycogreen.unpatch()
blocking = psycopg2.connect(kit.DSN)
expected = cases.run_all(blocking)
blocking.close()
psycogreen.patch(kit.FRAMEWORK)

ticker = kit.Ticker() if kit.FRAMEWORK != "threads" else None
green = psycopg2.connect(kit.DSN)
got = kit.result(kit.spawn(cases.run_all, green))
green.close()
gap = ticker.stop() if ticker else 0.0
kit.emit(expected=expected, got=got, max_gap=gap)
