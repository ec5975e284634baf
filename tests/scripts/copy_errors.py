"""COPY with a failing file, blocking psycopg2 vs psycogreen under one framework (argv[1]).

Every scenario runs twice on the same file objects: on a blocking connection (psycogreen unpatched,
so psycopg2's own C COPY runs) and on a green one (patched). The script emits both outcome lists,
the green errors' ``__cause__`` and the hub's worst stall during the green runs; the test compares.
"""

from __future__ import annotations

import io
from typing import Any

import kit
import psycopg2
from copy_files import Lines

import psycogreen


def boom() -> Any:
    return 1 / 0


class BrokenWrite(io.TextIOBase):
    def write(self, data: Any) -> int:
        raise ZeroDivisionError("division by zero")


def describe(e: BaseException) -> list[Any]:
    diag = getattr(e, "diag", None)
    return [
        type(e).__name__,
        str(e),
        getattr(e, "pgcode", None),
        getattr(diag, "sqlstate", None),
        getattr(diag, "message_primary", None),
    ]


def run_all(conn: Any, causes: list[Any]) -> list[Any]:
    cur = conn.cursor()
    cur.execute("drop table if exists copy_err; create table copy_err (i int)")
    conn.commit()
    res: list[Any] = []
    reads = [("none", lambda: None), ("int", lambda: 42), ("raise", boom)]
    for name, bad in reads:
        for how in ("copy_from", "copy_expert"):
            f = Lines(200, bad)
            try:
                if how == "copy_from":
                    cur.copy_from(f, "copy_err")
                else:
                    cur.copy_expert("COPY copy_err FROM STDIN", f)
                conn.commit()
                res.append([name, how, "no error"])
            except Exception as e:
                res.append([name, how, *describe(e)])
                cause = e.__cause__
                causes.append([name, how, type(cause).__name__ if cause else None, str(cause or "")])
                conn.rollback()
            cur.execute("select count(*) from copy_err")
            res.append(["rows committed", cur.fetchone()[0]])
    # write() raising: the file's exception, the transaction keeps what it had
    cur.execute("insert into copy_err select generate_series(1, 5000)")
    for how in ("copy_to", "copy_expert"):
        try:
            if how == "copy_to":
                cur.copy_to(BrokenWrite(), "copy_err")
            else:
                cur.copy_expert("COPY copy_err TO STDOUT", BrokenWrite())
            res.append(["write", how, "no error"])
        except Exception as e:
            res.append(["write", how, *describe(e)])
        cur.execute("select count(*) from copy_err")
        res.append(["after write error", how, cur.fetchone()[0]])
    conn.commit()
    conn.autocommit = True
    try:
        cur.copy_to(BrokenWrite(), "copy_err")
    except Exception as e:
        res.append(["autocommit write", *describe(e)])
    cur.execute("select count(*) from copy_err")
    res.append(["autocommit after", cur.fetchone()[0]])
    cur.execute("drop table copy_err")
    return res


psycogreen.unpatch()
blocking = psycopg2.connect(kit.DSN)
expected = run_all(blocking, [])
blocking.close()
psycogreen.patch(kit.FRAMEWORK)

ticker = kit.Ticker() if kit.FRAMEWORK != "threads" else None
green = psycopg2.connect(kit.DSN)
causes: list[Any] = []
got = kit.result(kit.spawn(run_all, green, causes))
green.close()
gap = ticker.stop() if ticker else 0.0
# An interruption inside read() (the file waits, the framework's Timeout fires): the Timeout itself
# propagates, as before; nothing is stored and the connection is usable.
timeout_outcome = None
if kit.Timeout is not None:
    conn = psycopg2.connect(kit.DSN)
    cur = conn.cursor()
    cur.execute("create temp table slow (i int)")
    conn.commit()

    def slow() -> Any:
        kit.sleep(30)  # behaviour: a file that stalls, until the framework's Timeout interrupts it
        return ""

    try:
        with kit.Timeout(0.3):
            cur.copy_from(Lines(50, slow), "slow")
        timeout_outcome = "no timeout"
    except kit.Timeout as e:
        timeout_outcome = type(e).__name__
    conn.rollback()
    cur.execute("select count(*) from slow")
    timeout_outcome = [timeout_outcome, cur.fetchone()[0]]
    conn.close()
kit.emit(expected=expected, got=got, causes=causes, max_gap=gap, timeout=timeout_outcome)
