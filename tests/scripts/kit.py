"""Scenario kit: import first in a test script; argv[1] names the framework.

It monkey-patches (gevent/eventlet) *before* anything else is imported, calls psycogreen.patch, and
offers the same few helpers under every framework so one script tests all three:
``spawn``, ``sleep``, ``joinall``, ``Timeout`` (the framework's own), ``Ticker`` (measures the
largest gap between ticks: proof that the hub kept running), ``DSN``, ``monitor()`` and ``emit()``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Callable

FRAMEWORK = sys.argv[1] if len(sys.argv) > 1 else "gevent"

if FRAMEWORK == "gevent":
    from gevent import monkey

    monkey.patch_all()
    import gevent

    def spawn(fn: Callable[..., Any], *args: Any) -> Any:
        return gevent.spawn(fn, *args)

    def sleep(s: float) -> None:
        gevent.sleep(s)

    def joinall(gs: list[Any], timeout: float | None = None) -> None:
        gevent.joinall(gs, timeout=timeout)

    def result(g: Any) -> Any:
        return g.get()

    def kill(g: Any) -> None:
        g.kill()

    Timeout: Any = gevent.Timeout
elif FRAMEWORK == "eventlet":
    import eventlet

    eventlet.monkey_patch()

    def spawn(fn: Callable[..., Any], *args: Any) -> Any:
        return eventlet.spawn(fn, *args)

    def sleep(s: float) -> None:
        eventlet.sleep(s)

    def joinall(gs: list[Any], timeout: float | None = None) -> None:
        for g in gs:
            try:
                g.wait()
            except BaseException:
                pass

    def result(g: Any) -> Any:
        return g.wait()

    def kill(g: Any) -> None:
        # eventlet's kill() only schedules the GreenletExit: wait for the greenthread to end, as
        # gevent's kill() does by default.
        g.kill()
        try:
            g.wait()
        except BaseException:
            pass

    Timeout = eventlet.Timeout
else:
    import threading

    class _T:
        def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
            self.value: Any = None
            self.exc: BaseException | None = None

            def run() -> None:
                try:
                    self.value = fn(*args)
                except BaseException as e:
                    self.exc = e

            self.t = threading.Thread(target=run, daemon=True)
            self.t.start()

    def spawn(fn: Callable[..., Any], *args: Any) -> Any:
        return _T(fn, *args)

    def sleep(s: float) -> None:
        time.sleep(s)

    def joinall(gs: list[Any], timeout: float | None = None) -> None:
        for g in gs:
            g.t.join(timeout)

    def result(g: Any) -> Any:
        g.t.join()
        if g.exc:
            raise g.exc
        return g.value

    def kill(g: Any) -> None:
        raise NotImplementedError("threads cannot be killed")

    Timeout = None

import psycopg2  # noqa: E402
import ticker as _ticker  # noqa: E402
import until  # noqa: E402

import psycogreen  # noqa: E402

PATCHED = psycogreen.patch(FRAMEWORK if FRAMEWORK != "threads" else "threads")
DSN = os.environ["PSYCOGREEN_TEST_DSN"]


class Ticker(_ticker.Ticker):
    """Ticks every ``interval`` seconds in its own greenlet of this framework; ``max_gap`` is the
    worst stall seen (see ``ticker.py``, shared with ``patch_order.py``)."""

    def __init__(self, interval: float = 0.005) -> None:
        super().__init__(spawn, sleep, interval)


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Yield to other greenlets/threads until ``predicate()`` holds: order scenario steps by the
    state they need, not by a guessed sleep (``until.wait_until`` with this framework's sleep)."""
    return until.wait_until(predicate, timeout, what, sleep=sleep)


def monitor() -> Any:
    """An autocommit connection for looking at pg_stat_activity."""
    c = psycopg2.connect(DSN)
    c.autocommit = True
    return c


def running(mon: Any, pattern: str) -> int:
    cur = mon.cursor()
    cur.execute(
        "select count(*) from pg_stat_activity where state = 'active' and query like %s "
        "and pid <> pg_backend_pid()",
        (pattern,),
    )
    n: int = cur.fetchone()[0]
    return n


def emit(**data: Any) -> None:
    print(json.dumps(data), flush=True)
