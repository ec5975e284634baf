"""COPY TO STDOUT through ``PQgetlineAsync`` writes exactly what blocking psycopg2 writes.

psycogreen reads COPY rows into a reusable buffer, several rows per batch, and a row larger than the
buffer arrives in parts; none of that may show: the cases in ``scripts/copy_out_cases.py`` (rows
straddling the batch and buffer sizes, empty tables, binary COPY, LATIN1/WIN1252/EUC_JP/SJIS client
encodings, text files that decode each write) must produce the same bytes and row counts as
psycopg2's own C COPY, and text formats must never be split mid-row between two writes. Under
gevent, eventlet and threads (scripts) and asyncio, uvloop and trio (``psycogreen.aio``).

The protocol half is checked on its own too: it only yields waits, ``NEED_DATA`` and ``bytes``,
never touching a file.
"""

from __future__ import annotations

import select
from typing import Any, Callable

import copy_out_cases as cases
import psycopg2
import pytest

import psycogreen.aio as aio
from psycogreen import _libpq
from psycogreen._core import READ, WRITE
from psycogreen._core.copy import BATCH, BUFFER, NEED_DATA, ROOM, CopyOutcome, copy


def blocking_summaries(dsn: str) -> list[Any]:
    conn = psycopg2.connect(dsn)
    try:
        return cases.run_all(conn)
    finally:
        conn.close()


def test_cases_cover_the_buffer_edges() -> None:
    """The sizes keep meaning what they claim if BATCH/BUFFER change."""
    assert BUFFER == BATCH + ROOM == 2 * ROOM
    edges = {ROOM - 1, ROOM, ROOM + 1, BUFFER - 1, BUFFER, BUFFER + 1}
    assert set(cases.SIZES) >= edges
    assert max(cases.SIZES) > 2 * BUFFER


@pytest.mark.parametrize("framework", ["gevent", "eventlet", "threads"])
def test_copy_out_matches_blocking_byte_for_byte(run_script: Callable[..., Any], framework: str) -> None:
    out = run_script("copy_out_exact.py", framework)
    assert [c[0] for c in out["got"]] == [c[0] for c in cases.CASES]
    for got, expected in zip(out["got"], out["expected"]):
        assert got == expected
    assert all(split in (0, None) for *_, split in out["got"])  # whole rows per write()
    assert out["max_gap"] < 2.0  # the hub kept running


@pytest.mark.anyio
async def test_aio_copy_out_matches_blocking_byte_for_byte(dsn: str) -> None:
    expected = blocking_summaries(dsn)
    conn = await aio.connect(dsn)
    try:
        conn.autocommit = True
        cur = conn.cursor()
        for stmt in cases.SETUP:
            await cur.execute(stmt)
        got = []
        for name, encoding, sql, kind in cases.CASES:
            await conn.set_client_encoding(encoding)
            rec = cases.make_file(kind)
            await cur.copy_expert(sql, rec)
            got.append(cases.summary(name, rec, cur.rowcount, "binary" in sql))
    finally:
        await conn.close()
    for g, e in zip(got, expected):
        assert g == e
    assert len(got) == len(expected)


def _run_protocol(conn: Any, sql: bytes, chunks: list[bytes]) -> tuple[list[Any], CopyOutcome]:
    """Drive the protocol generator by hand (select for waits, a list for data): what it asks."""
    requests: list[Any] = []
    gen = copy(_libpq.pgconn(conn), sql, None)
    reply: Any = None
    feed = iter(chunks)
    try:
        while True:
            request = gen.send(reply)
            requests.append(request)
            if isinstance(request, tuple):
                fd, events = request
                r, w, _ = select.select([fd] if events & READ else [], [fd] if events & WRITE else [], [], 10)
                reply = (READ if r else 0) | (WRITE if w else 0)
            elif request is NEED_DATA:
                reply = next(feed, b"")
            else:
                reply = None
    except StopIteration as stop:
        return requests, stop.value


def test_protocol_takes_and_gives_bytes(dsn: str, threads_patched: str) -> None:
    conn = psycopg2.connect(dsn)  # green: non-blocking, so the protocol can run on it
    try:
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("create temp table p (i int, t text)")
        rows = [b"%d\t%s\n" % (i, b"z" * (i * 997 % 150000)) for i in range(60)]
        requests, outcome = _run_protocol(
            conn, b"copy p from stdin", [b"".join(rows[:30]), b"".join(rows[30:])]
        )
        assert outcome.rowcount == 60 and outcome.error is None
        assert [r for r in requests if not isinstance(r, tuple)] == [NEED_DATA] * 3
        requests, outcome = _run_protocol(conn, b"copy p to stdout", [])
        data = [r for r in requests if isinstance(r, bytes)]
        assert b"".join(data) == b"".join(rows)
        assert all(chunk.endswith(b"\n") for chunk in data)  # whole rows only
        assert len(data) < 60  # batched
        assert all(isinstance(r, (tuple, bytes)) for r in requests)
        assert outcome.rowcount == 60
    finally:
        conn.close()


class Boom(Exception):
    pass


class FailingWrite:
    """Fails on write number ``at`` (1-based), after keeping the earlier ones."""

    def __init__(self, at: int) -> None:
        self.at, self.writes = at, 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        if self.writes == self.at:
            raise Boom(f"write {self.at} failed")


@pytest.mark.parametrize("at", [1, 2])
@pytest.mark.parametrize("autocommit", [False, True])
def test_failing_write_during_long_rows(dsn: str, threads_patched: str, at: int, autocommit: bool) -> None:
    """A write() failing while long rows are being reassembled raises the file's exception and
    leaves the connection usable (and the transaction alive), as with short rows."""
    conn = psycopg2.connect(dsn)
    try:
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute(cases.SETUP[1])  # o_sizes: rows around and beyond the buffer
        conn.autocommit = autocommit
        with pytest.raises(Boom):
            cur.copy_expert("copy o_sizes to stdout", FailingWrite(at))
        cur.execute("select count(*) from o_sizes")
        assert cur.fetchone() == (len(cases.SIZES),)
        rec = cases.make_file("bytes")
        cur.copy_expert("copy o_sizes to stdout", rec)  # and COPY works again
        assert rec.file.getvalue().count(b"\n") == len(cases.SIZES)
    finally:
        conn.close()
