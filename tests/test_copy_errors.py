"""COPY with a failing file ends exactly as with blocking psycopg2 (issue 9.5).

- ``read()`` returning ``None``/a non-string mid-way, or raising: the COPY is aborted on the
  server, *nothing* is committed, and psycopg2's ``QueryCanceled`` ("COPY from stdin failed: error
  in .read() call: ZeroDivisionError division by zero") is raised; we add the file's exception as
  ``__cause__``.
- ``write()`` raising: the file's own exception (as psycopg2), the connection stays usable and, in
  a transaction, the transaction too.
- errors built from the server's answer carry psycopg2's exact class and a full ``diag``.

Compared side by side with blocking psycopg2 (same file objects): threads in-process, gevent,
eventlet and threads in scripts, and asyncio/uvloop/trio through ``psycogreen.aio``.
"""

from __future__ import annotations

import io
import pickle
from typing import Any, Callable

import anyio
import psycopg2
import psycopg2.errors
import psycopg2.extensions as ext
import pytest
from copy_files import Lines
from sidebyside import unpatched

import psycogreen.aio as aio

DIAG_FIELDS = [a for a in dir(ext.Diagnostics) if not a.startswith("_")]


class Boom(Exception):
    pass


def boom() -> Any:
    raise Boom("disk on fire")


def failing_copy(conn: Any, bad: Callable[[], Any]) -> tuple[BaseException, int]:
    """copy_from a file that goes bad after 200 lines: (the error, rows committed afterwards)."""
    cur = conn.cursor()
    cur.execute("create table if not exists copy_err (i int)")
    cur.execute("truncate copy_err")
    conn.commit()
    with pytest.raises(psycopg2.Error) as exc:
        cur.copy_from(Lines(200, bad), "copy_err")
    conn.rollback()
    cur.execute("select count(*) from copy_err")
    rows = cur.fetchone()[0]
    cur.execute("drop table copy_err")
    conn.commit()
    return exc.value, rows


@pytest.mark.parametrize(
    "bad",
    [lambda: None, lambda: 42, boom],
    ids=["read-returns-None", "read-returns-int", "read-raises"],
)
def test_bad_read_commits_nothing_and_raises_query_canceled(pair: tuple[Any, Any], bad: Any) -> None:
    blocking, green = pair
    with unpatched():
        expected, expected_rows = failing_copy(blocking, bad)
    got, rows = failing_copy(green, bad)
    assert expected_rows == rows == 0
    assert type(got) is type(expected) is psycopg2.errors.QueryCanceled
    assert str(got) == str(expected)
    assert got.pgcode == expected.pgcode == "57014"
    assert {f: getattr(got.diag, f) for f in DIAG_FIELDS} == {
        f: getattr(expected.diag, f) for f in DIAG_FIELDS
    }
    assert expected.__cause__ is None  # psycopg2 drops the file's exception; we keep it
    if bad is boom:
        assert "error in .read() call: Boom disk on fire" in str(got)
        assert isinstance(got.__cause__, Boom)
    else:
        assert isinstance(got.__cause__, TypeError)
        assert "expected str or bytes" in str(got.__cause__)


def test_failing_write_raises_its_exception_and_keeps_the_transaction(pair: tuple[Any, Any]) -> None:
    class BrokenWrite(io.TextIOBase):
        def write(self, data: Any) -> int:
            raise Boom("disk full")

    def scenario(conn: Any) -> list[Any]:
        cur = conn.cursor()
        cur.execute("create temp table w (i int)")
        cur.execute("insert into w select generate_series(1, 20000)")  # more than one batch
        res: list[Any] = []
        for call in (
            lambda: cur.copy_to(BrokenWrite(), "w"),
            lambda: cur.copy_expert("COPY (SELECT 1) TO STDOUT", BrokenWrite()),  # fails on the last row
        ):
            with pytest.raises(Boom):
                call()
            cur.execute("select count(*) from w")
            res.append(cur.fetchone()[0])
        conn.rollback()
        conn.autocommit = True
        with pytest.raises(Boom):
            cur.copy_expert("COPY (SELECT generate_series(1, 100000)) TO STDOUT", BrokenWrite())
        cur.execute("select 1")
        res.append(cur.fetchone()[0])
        conn.autocommit = False
        return res

    blocking, green = pair
    with unpatched():
        expected = scenario(blocking)
    assert scenario(green) == expected == [20000, 20000, 1]


def test_server_errors_carry_psycopg2s_class_and_full_diag(pair: tuple[Any, Any]) -> None:
    def scenario(conn: Any) -> psycopg2.Error:
        cur = conn.cursor()
        cur.execute("create table copy_u (i int primary key, t text)")  # not temp: same schema_name
        with pytest.raises(psycopg2.Error) as exc:
            cur.copy_from(io.StringIO("1\té\n1\tè\n"), "copy_u")
        conn.rollback()
        return exc.value

    blocking, green = pair
    with unpatched():
        expected = scenario(blocking)
    got = scenario(green)
    assert type(got) is type(expected) is psycopg2.errors.UniqueViolation
    diag = {f: getattr(got.diag, f) for f in DIAG_FIELDS}
    assert diag == {f: getattr(expected.diag, f) for f in DIAG_FIELDS}
    assert diag["sqlstate"] == "23505" and diag["table_name"] == "copy_u" and diag["context"]
    again = pickle.loads(pickle.dumps(got))
    assert type(again) is psycopg2.errors.UniqueViolation and again.pgcode == "23505"


def test_large_object_errors_carry_diag(pair: tuple[Any, Any]) -> None:
    conn = pair[1]
    with pytest.raises(psycopg2.OperationalError) as exc:
        conn.lobject(987654321)
    assert exc.value.pgcode == "42704"
    assert exc.value.diag.sqlstate == "42704"
    assert "987654321" in (exc.value.diag.message_primary or "")
    conn.rollback()


@pytest.mark.parametrize("framework", ["gevent", "eventlet", "threads"])
def test_failing_files_match_blocking_under_each_framework(run_script: Any, framework: str) -> None:
    out = run_script("copy_errors.py", framework)
    assert out["got"] == out["expected"]
    kinds = [r[2] for r in out["expected"] if len(r) > 3 and r[0] in ("none", "int", "raise")]
    assert kinds == ["QueryCanceled"] * 6
    assert [r[1] for r in out["expected"] if r[0] == "rows committed"] == [0] * 6
    assert [c[2] for c in out["causes"]] == ["BadChunk"] * 4 + ["ZeroDivisionError"] * 2
    assert out["max_gap"] < 2.0  # the hub kept running
    if framework != "threads":  # the framework's Timeout inside read(): itself, nothing stored
        assert out["timeout"] == ["Timeout", 0]


# -- psycogreen.aio --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_aio_failing_files(dsn: str) -> None:
    conn = await aio.connect(dsn)
    try:
        cur = conn.cursor()
        await cur.execute("create temp table a (i int)")
        await conn.commit()

        class AsyncLines:
            def __init__(self) -> None:
                self.i = 0

            async def read(self, size: int = -1) -> Any:
                self.i += 1
                return f"{self.i}\n" if self.i <= 200 else None

        with pytest.raises(psycopg2.errors.QueryCanceled, match="error in .read.. call") as exc:
            await cur.copy_from(AsyncLines(), "a")
        assert isinstance(exc.value.__cause__, TypeError)
        assert exc.value.diag.sqlstate == "57014"
        await conn.rollback()

        with pytest.raises(psycopg2.errors.QueryCanceled, match="Boom disk on fire") as exc:
            await cur.copy_expert("COPY a FROM STDIN", Lines(100, boom))
        assert isinstance(exc.value.__cause__, Boom)
        await conn.rollback()
        await cur.execute("select count(*) from a")
        assert await cur.fetchone() == (0,)

        class BrokenWrite:
            async def write(self, data: Any) -> None:
                raise Boom("disk full")

        await cur.execute("insert into a select generate_series(1, 10)")
        with pytest.raises(Boom):
            await cur.copy_to(BrokenWrite(), "a")
        await cur.execute("select count(*) from a")
        assert await cur.fetchone() == (10,)  # the transaction survived
        await conn.rollback()
    finally:
        await conn.close()


@pytest.mark.anyio
async def test_aio_cancel_mid_copy_still_interrupts(dsn: str) -> None:
    """A task cancelled while its COPY waits on the file: the cancellation propagates (not a
    QueryCanceled: it is not a file error), nothing is stored, the connection stays usable."""
    conn = await aio.connect(dsn)
    try:
        cur = conn.cursor()
        await cur.execute("create temp table slow (i int)")
        await conn.commit()
        started = anyio.Event()

        async def slow_rows() -> Any:
            for i in range(10**9):
                if i == 100:
                    started.set()
                    await anyio.sleep(3600)  # behaviour: a source that stalls until cancelled
                yield f"{i}\n".encode()

        with anyio.move_on_after(30) as scope:
            async with anyio.create_task_group() as tg:

                async def copy() -> None:
                    await cur.copy_expert("COPY slow FROM STDIN", slow_rows())

                tg.start_soon(copy)
                await started.wait()
                tg.cancel_scope.cancel()
        assert not scope.cancelled_caught  # cancelled by us, not by the 30 s guard
        await conn.rollback()
        await cur.execute("select count(*) from slow")
        assert await cur.fetchone() == (0,)
    finally:
        await conn.close()
