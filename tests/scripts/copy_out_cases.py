"""COPY TO STDOUT cases whose output must match blocking psycopg2 byte for byte.

Shared by ``copy_out_exact.py`` (gevent, eventlet, threads) and ``tests/test_copy_out.py``
(asyncio, uvloop, trio). The rows are chosen against the reader's buffer: psycogreen reads COPY
rows with ``PQgetlineAsync`` into a 128 KB buffer and hands whole rows over in ~64 KB batches, so
the sizes straddle both (a row longer than the buffer arrives in parts), plus an empty table,
binary COPY (rows with NUL bytes) and client encodings other than UTF-8 (rows decoded by text
files). Only deterministic, session-local data: every connection builds its own temp tables (in
autocommit: ``set_client_encoding()`` rolls back an open transaction).
"""

from __future__ import annotations

import hashlib
import io
from typing import Any, Optional

#: Text row lengths ("i<TAB>pad<LF>") around the room offered per row (64 KB), the buffer
#: (128 KB) and well past them, mixed with short rows so long ones also start mid-buffer.
SIZES = [3, 65535, 65536, 65537, 4, 5, 131071, 131072, 131073, 6, 262200, 65536, 400000, 7, 65537]

SETUP = [
    "create temp table o_narrow as select i, repeat('x', 30) as pad from generate_series(1, 20000) i",
    "create temp table o_sizes as select i, repeat('y', n - length(i::text) - 2) as pad "
    f"from unnest(array{SIZES}) with ordinality as u(n, i)",
    "create temp table o_types as select i, "
    "case when i % 7 = 0 then null else decode(repeat('00ff0a5c', i % 50 * 10), 'hex') end as b, "
    "(i * 1.5)::numeric as n, 'é\u00e8 ' || i as t, "
    "timestamptz '2020-01-02 03:04:05+00' + i * interval '1 hour' as ts "
    "from generate_series(1, 2000) i",
    "create temp table o_empty (i int, t text)",
    # characters every encoding below can represent; rows up to ~400 KB once encoded
    "create temp table o_latin as select i, repeat('éñÿ\u00e0', i * 9000) as t from generate_series(1, 12) i",
    "create temp table o_jp as select i, repeat('日本語テキスト', i * 9000) as t "
    "from generate_series(1, 8) i",
]

#: (name, client encoding, statement, file kind): "bytes" writes to a BytesIO, "text" to a StringIO
#: (decoded with the connection encoding, one ``write()`` at a time).
CASES: list[tuple[str, str, str, str]] = [
    ("narrow text", "UTF8", "copy o_narrow to stdout", "bytes"),
    ("narrow into a text file", "UTF8", "copy o_narrow to stdout", "text"),
    ("rows larger than the buffer", "UTF8", "copy o_sizes to stdout", "bytes"),
    ("rows larger than the buffer, csv text", "UTF8", "copy o_sizes to stdout (format csv)", "text"),
    ("rows larger than the buffer, binary", "UTF8", "copy o_sizes to stdout (format binary)", "bytes"),
    ("types, binary", "UTF8", "copy o_types to stdout (format binary)", "bytes"),
    ("types, text", "UTF8", "copy o_types to stdout", "text"),
    ("empty table", "UTF8", "copy o_empty to stdout", "bytes"),
    ("empty table, binary", "UTF8", "copy o_empty to stdout (format binary)", "bytes"),
    ("empty table, csv header", "UTF8", "copy o_empty to stdout (format csv, header)", "text"),
    ("empty query", "UTF8", "copy (select 1 where false) to stdout", "text"),
    ("latin1 bytes", "LATIN1", "copy o_latin to stdout", "bytes"),
    ("latin1 text", "LATIN1", "copy o_latin to stdout", "text"),
    ("win1252 text", "WIN1252", "copy o_latin to stdout (format csv)", "text"),
    ("euc_jp bytes", "EUC_JP", "copy o_jp to stdout", "bytes"),
    ("euc_jp text", "EUC_JP", "copy o_jp to stdout", "text"),
    ("sjis text", "SJIS", "copy o_jp to stdout (format csv)", "text"),
]


class Recorder:
    """A file that keeps what it is given and counts writes that end mid-row (text formats)."""

    def __init__(self, kind: str) -> None:
        self.file: Any = io.StringIO() if kind == "text" else io.BytesIO()
        self.writes = 0
        self.split_rows = 0

    def write(self, data: Any) -> Any:
        self.writes += 1
        if data and data[-1:] not in ("\n", b"\n"):
            self.split_rows += 1
        return self.file.write(data)


class TextRecorder(Recorder, io.TextIOBase):
    """The same, seen as a text file (psycogreen decodes for ``io.TextIOBase`` files)."""


def make_file(kind: str) -> Recorder:
    return TextRecorder(kind) if kind == "text" else Recorder(kind)


def summary(name: str, rec: Recorder, rowcount: int, binary: bool) -> list[Any]:
    """What must match: the exact output (length and digest), the row count, and for text formats
    whether any write split a row (psycopg2 writes whole rows; so must we)."""
    data = rec.file.getvalue()
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    split: Optional[int] = None if binary else rec.split_rows
    return [name, len(raw), hashlib.sha256(raw).hexdigest(), rowcount, split]


def run_all(conn: Any) -> list[Any]:
    """Every case on ``conn`` (sync: blocking or green), as the list of summaries compared."""
    conn.autocommit = True
    cur = conn.cursor()
    for stmt in SETUP:
        cur.execute(stmt)
    res: list[Any] = []
    for name, encoding, sql, kind in CASES:
        conn.set_client_encoding(encoding)
        rec = make_file(kind)
        cur.copy_expert(sql, rec)
        res.append(summary(name, rec, cur.rowcount, "binary" in sql))
    return res
