"""COPY, large objects and notifications behave as psycopg2 documents: each scenario runs once on a
blocking psycopg2 connection (unpatched) and once on a green one (patched, plain threads), and the
observable results must be identical. Hypothesis round-trips arbitrary rows both ways."""

from __future__ import annotations

import io
import os
import threading
import time
import uuid
from typing import Any, Callable, Iterator

import psycopg2
import psycopg2.errors
import psycopg2.extensions as ext
import psycopg2.extras
import psycopg2.sql as sql
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sidebyside import unpatched
from until import wait_until

import psycogreen
import psycogreen.copy
from psycogreen import _guard


def both(pair: tuple[Any, Any], scenario: Callable[[Any], Any]) -> tuple[Any, Any]:
    blocking, green = pair
    with unpatched():
        expected = scenario(blocking)
    got = scenario(green)
    return expected, got


def outcome(fn: Callable[[], Any], code: bool = True) -> Any:
    try:
        return ("ok", fn())
    except Exception as e:
        return ("error", type(e).__name__, getattr(e, "pgcode", None) if code else "-", str(e))


def state(cur: Any) -> Any:
    return (cur.rowcount, cur.statusmessage, cur.query, cur.description, cur.connection.status)


class ReadFails(io.RawIOBase):
    def read(self, size: int = -1) -> bytes:
        raise ValueError("boom")


def test_copy_from_to_expert_match_psycopg2(pair: tuple[Any, Any]) -> None:
    def scenario(conn: Any) -> list[Any]:
        cur = conn.cursor()
        res: list[Any] = []
        cur.execute('create temp table "my table" (id int, "t x" text, b bytea)')
        cur.execute("select 1 as a")
        res.append(outcome(lambda: cur.copy_from(io.StringIO("1\tx\t\\\\x00ff\n2\tyé\t\\N\n"), "my table")))
        res.append(state(cur))
        res.append(conn.get_transaction_status())
        out = io.StringIO()
        res.append(outcome(lambda: cur.copy_to(out, "my table")))
        res.append((out.getvalue(), state(cur)))
        bout = io.BytesIO()
        res.append(
            outcome(lambda: cur.copy_to(bout, "my table", sep="|", null="NULL", columns=["t x", "id"]))
        )
        res.append((bout.getvalue(), state(cur)))
        res.append(
            outcome(
                lambda: cur.copy_from(
                    io.BytesIO("3|zé\n".encode()), "my table", sep="|", columns=("id", "t x")
                )
            )
        )
        res.append(state(cur))
        q = sql.SQL("COPY {} ({}) TO STDOUT WITH (FORMAT csv, HEADER)").format(
            sql.Identifier("my table"), sql.Identifier("t x")
        )
        cout = io.StringIO()
        res.append(outcome(lambda: cur.copy_expert(q, cout)))
        res.append((cout.getvalue(), state(cur)))
        res.append(outcome(lambda: cur.copy_expert("COPY (SELECT 1 WHERE false) TO STDOUT", io.StringIO())))
        res.append(state(cur))
        # a schema-qualified name is one identifier, as in psycopg2 2.9
        res.append(outcome(lambda: cur.copy_from(io.StringIO(""), "public.my table")))
        conn.rollback()
        # malformed rows: the server's error class, transaction aborted
        cur.execute("create temp table t (id int)")
        res.append(outcome(lambda: cur.copy_from(io.StringIO("1\t2\n"), "t")))
        res.append(conn.get_transaction_status())
        conn.rollback()
        cur.execute("create temp table t (id int)")
        res.append(outcome(lambda: cur.copy_from(io.StringIO("nope\n"), "t")))
        conn.rollback()
        # argument errors
        res.append(outcome(lambda: cur.copy_from(object(), "t")))
        res.append(outcome(lambda: cur.copy_to(object(), "t")))
        res.append(outcome(lambda: cur.copy_expert("COPY t TO STDOUT", object())))
        # autocommit: each copy commits on its own
        conn.autocommit = True
        cur.execute("create temp table a (id int)")
        res.append(outcome(lambda: cur.copy_from(io.StringIO("1\n2\n"), "a")))
        res.append((state(cur), conn.get_transaction_status()))
        conn.autocommit = False
        cur.close()
        res.append(outcome(lambda: cur.copy_from(io.StringIO("1\n"), "a")))
        return res

    expected, got = both(pair, scenario)
    assert got == expected


def test_failing_file_aborts_copy_and_raises_query_canceled(pair: tuple[Any, Any]) -> None:
    """psycopg2 turns the file's exception into the server's QueryCanceled; so do we, keeping the
    file's exception as ``__cause__`` (more cases in test_copy_errors.py)."""
    blocking, green = pair
    with unpatched():
        bcur = blocking.cursor()
        bcur.execute("create temp table t (id int)")
        with pytest.raises(psycopg2.errors.QueryCanceled) as bexc:
            bcur.copy_from(ReadFails(), "t")
        blocking.rollback()
    cur = green.cursor()
    cur.execute("create temp table t (id int)")
    with pytest.raises(psycopg2.errors.QueryCanceled) as gexc:
        cur.copy_from(ReadFails(), "t")
    assert str(gexc.value) == str(bexc.value)
    assert gexc.value.pgcode == bexc.value.pgcode == "57014"
    assert gexc.value.diag.sqlstate == bexc.value.diag.sqlstate == "57014"
    assert isinstance(gexc.value.__cause__, ValueError) and str(gexc.value.__cause__) == "boom"
    green.rollback()
    cur.execute("select 1")
    assert cur.fetchone() == (1,)


def test_copy_joins_transaction_and_rolls_back(pair: tuple[Any, Any], dsn: str) -> None:
    _, green = pair
    name = f"copy_tx_{uuid.uuid4().hex[:8]}"
    cur = green.cursor()
    cur.execute(f"create table {name} (id int)")
    green.commit()
    try:
        assert green.status == ext.STATUS_READY
        cur.copy_from(io.StringIO("1\n2\n"), name)
        assert green.status == ext.STATUS_BEGIN  # psycopg2 knows a transaction is open
        assert green.get_transaction_status() == ext.TRANSACTION_STATUS_INTRANS
        green.rollback()
        cur.execute(f"select count(*) from {name}")
        assert cur.fetchone() == (0,)
        green.rollback()
        cur.copy_from(io.StringIO("1\n2\n"), name)
        green.commit()
        other = psycopg2.connect(dsn)
        try:
            ocur = other.cursor()
            ocur.execute(f"select count(*) from {name}")
            assert ocur.fetchone() == (2,)
        finally:
            other.close()
    finally:
        green.rollback()
        cur.execute(f"drop table {name}")
        green.commit()


def test_isolation_level_applies_to_copy_transaction(pair: tuple[Any, Any]) -> None:
    _, green = pair
    green.set_session(isolation_level="SERIALIZABLE", readonly=True)
    cur = green.cursor()
    with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
        cur.copy_expert("COPY pg_catalog.pg_am FROM STDIN", io.StringIO(""))
    green.rollback()
    cur.copy_expert("COPY (SELECT current_setting('transaction_isolation')) TO STDOUT", out := io.StringIO())
    assert out.getvalue() == "serializable\n"
    green.rollback()


class LoggingCursor(psycopg2.extras.LoggingCursor):
    pass


@pytest.mark.parametrize(
    "factory",
    [psycopg2.extras.RealDictCursor, psycopg2.extras.NamedTupleCursor, LoggingCursor],
    ids=["RealDictCursor", "NamedTupleCursor", "LoggingCursor"],
)
def test_user_cursor_classes(dsn: str, threads_patched: str, factory: Any) -> None:
    conn = psycopg2.connect(dsn, connection_factory=psycopg2.extras.DictConnection)
    try:
        if factory is LoggingCursor:
            logconn = psycopg2.connect(dsn, connection_factory=psycopg2.extras.LoggingConnection)
            logconn.initialize(io.StringIO())
            conn.close()
            conn = logconn
        cur = conn.cursor(cursor_factory=factory)
        assert isinstance(cur, factory)
        cur.execute("create temp table t (id int, v text)")
        cur.copy_from(io.StringIO("1\ta\n2\tb\n"), "t")
        assert cur.rowcount == 2
        out = io.StringIO()
        cur.copy_to(out, "t")
        assert out.getvalue() == "1\ta\n2\tb\n"
        cur.execute("select id, v from t order by id")
        rows = cur.fetchall()
        assert [tuple(r.values()) if isinstance(r, dict) else tuple(r) for r in rows] == [(1, "a"), (2, "b")]
    finally:
        conn.close()


def test_function_api_on_any_cursor(pair: tuple[Any, Any]) -> None:
    blocking, green = pair
    # green: through psycogreen.copy directly
    cur = green.cursor()
    cur.execute("create temp table t (id int)")
    psycogreen.copy.copy_from(cur, io.StringIO("1\n2\n3\n"), "t")
    assert cur.rowcount == 3
    out = io.StringIO()
    psycogreen.copy.copy_to(cur, out, "t")
    assert out.getvalue() == "1\n2\n3\n"
    # unpatched: the functions are psycopg2's own methods
    with unpatched():
        bcur = blocking.cursor()
        bcur.execute("create temp table t (id int)")
        psycogreen.copy.copy_expert(bcur, "COPY t FROM STDIN", io.StringIO("5\n"))
        assert bcur.rowcount == 1
        blocking.rollback()


def test_streaming_input_is_read_in_chunks(pair: tuple[Any, Any]) -> None:
    _, green = pair
    sizes: list[int] = []

    class Src(io.RawIOBase):
        left = 200

        def read(self, size: int = -1) -> bytes:
            sizes.append(size)
            self.left -= 1
            return b"1\n" * 1000 if self.left >= 0 else b""

    cur = green.cursor()
    cur.execute("create temp table t (id int)")
    cur.copy_expert("COPY t FROM STDIN", Src(), size=1234)
    assert set(sizes) == {1234}
    assert cur.rowcount == 200_000


# -- hypothesis round trips -------------------------------------------------------------------------

text_values = st.one_of(
    st.none(),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40),
)
byte_values = st.one_of(st.none(), st.binary(max_size=40))


def _escape(v: Any) -> str:
    if v is None:
        return "\\N"
    if isinstance(v, bytes):
        return "\\\\x" + v.hex()
    return v.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


@pytest.fixture(scope="module")
def roundtrip_table(dsn: str) -> Iterator[str]:
    name = f"rt_{uuid.uuid4().hex[:8]}"
    c = psycopg2.connect(dsn)
    c.autocommit = True
    c.cursor().execute(f"create table {name} (id int, t text, b bytea)")
    yield name
    c.cursor().execute(f"drop table {name}")
    c.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(text_values, byte_values), max_size=20), binary_file=st.booleans())
def test_roundtrip_matches_blocking_psycopg2(
    pair: tuple[Any, Any], roundtrip_table: str, rows: list[tuple[Any, Any]], binary_file: bool
) -> None:
    blocking, green = pair
    payload = "".join(f"{i}\t{_escape(t)}\t{_escape(b)}\n" for i, (t, b) in enumerate(rows))
    src: Any = io.BytesIO(payload.encode()) if binary_file else io.StringIO(payload)
    cur = green.cursor()
    cur.execute(f"truncate {roundtrip_table}")
    cur.copy_from(src, roundtrip_table, size=7)
    assert cur.rowcount == len(rows)
    green.commit()
    gout: Any = io.BytesIO() if binary_file else io.StringIO()
    cur.copy_to(gout, roundtrip_table)
    green.commit()
    with unpatched():
        bout: Any = io.BytesIO() if binary_file else io.StringIO()
        bcur = blocking.cursor()
        bcur.copy_to(bout, roundtrip_table)
        bcur.execute(f"select t, b from {roundtrip_table} order by id")
        stored = [(t, None if b is None else bytes(b)) for t, b in bcur.fetchall()]
        blocking.rollback()
    assert gout.getvalue() == bout.getvalue()
    assert stored == rows


# -- large objects ------------------------------------------------------------------------------------


def _lobject_scenario(conn: Any, tmp: str) -> list[Any]:
    res: list[Any] = []
    r = res.append

    def outcome(fn: Callable[[], Any]) -> Any:
        # psycopg2 leaves pgcode empty on lo_* errors; ours carry the server's code, which is
        # more, not different.
        return globals()["outcome"](fn, code=False)

    lo = conn.lobject()
    r((lo.mode, lo.closed, lo.write("héllo"), lo.tell(), lo.seek(0)))
    r(lo.read())
    oid = lo.oid
    conn.commit()
    r((outcome(lo.read), outcome(lo.close), outcome(lo.tell), lo.closed))
    lo2 = conn.lobject(oid, "rb")
    r((lo2.mode, lo2.read(2), lo2.tell()))
    r(outcome(lambda: lo2.write(b"x")))
    conn.rollback()
    lo2 = conn.lobject(oid, "rb")
    lo2.close()
    r((lo2.closed, outcome(lo2.read), outcome(lo2.close)))
    lo3 = conn.lobject(oid, "n")
    r((lo3.mode, lo3.closed, outcome(lo3.read)))
    for m in ["r", "w", "rw", "rt", "wb", "r+", "a", "rwt", "rwb"]:
        r(outcome(lambda m=m: conn.lobject(oid, m).mode))
    lo = conn.lobject(oid, "w")
    r((lo.mode, lo.write(b"abc")))
    lo = conn.lobject(oid, "rt")
    r((lo.mode, lo.read()))
    lo = conn.lobject(oid, "rw")
    r((lo.seek(2), lo.seek(1, 1), lo.seek(-1, 2), lo.tell()))
    lo.truncate(3)
    lo.seek(0)
    r(lo.read())
    lo.truncate()
    r((lo.tell(), lo.seek(0, 2)))
    r(outcome(lambda: lo.seek(0, 5)))
    conn.rollback()
    src = os.path.join(tmp, "in.bin")
    with open(src, "wb") as f:
        f.write(bytes(range(256)) * 5000)
    lo = conn.lobject(0, "rb", new_file=src)
    r((lo.mode, len(lo.read()), lo.tell()))
    dst = os.path.join(tmp, "out.bin")
    lo.export(dst)
    with open(dst, "rb") as f, open(src, "rb") as g:
        r(f.read() == g.read())
    lo.unlink()
    r(lo.closed)
    r(outcome(lambda: conn.lobject(2**31 + 12345)))
    conn.rollback()
    lo = conn.lobject()
    r((lo.read(), type(lo.read()).__name__))
    lo.write(b"\xff\xfe")
    lo.seek(0)
    r(outcome(lo.read))
    conn.rollback()
    lo = conn.lobject(mode="wb")
    lo.seek(3 * 1024**3)
    lo.write(b"end")
    r((lo.tell(), lo.seek(0, 2), lo.seek(3 * 1024**3), lo.read(10)))
    lo.truncate(5 * 1024**3)
    r(lo.seek(0, 2))
    conn.rollback()
    conn.autocommit = True
    r(outcome(conn.lobject))
    conn.autocommit = False
    return res


def test_lobject_matches_psycopg2(pair: tuple[Any, Any], tmp_path: Any) -> None:
    blocking, green = pair
    with unpatched():
        expected = _lobject_scenario(blocking, str(tmp_path))
    got = _lobject_scenario(green, str(tmp_path))
    assert got == expected


def test_lobject_factory(dsn: str, threads_patched: str) -> None:
    from psycogreen.lobject import LargeObject

    class Mine(LargeObject):
        pass

    conn = psycopg2.connect(dsn)
    try:
        lo = conn.lobject(lobject_factory=Mine)
        assert isinstance(lo, Mine)
        plain = conn.lobject(lobject_factory=ext.lobject)  # psycopg2's class: composed, see test_compat_gaps
        assert isinstance(plain, ext.lobject) and isinstance(plain, LargeObject)
        with pytest.raises(psycopg2.NotSupportedError, match="not a class"):
            conn.lobject(lobject_factory=lambda *args: None)
    finally:
        conn.close()


# -- notifications ------------------------------------------------------------------------------------


def test_notifies(dsn: str, threads_patched: str) -> None:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    other = psycopg2.connect(dsn)
    other.autocommit = True
    try:
        cur = conn.cursor()
        cur.execute("listen a; listen b")
        cur.execute("notify a, 'one'; notify b, 'two'")
        assert [n.payload for n in conn.notifies] == ["one", "two"]  # psycopg2's own list still works
        got = list(psycogreen.notifies(conn, timeout=0))
        assert [(n.channel, n.payload) for n in got] == [("a", "one"), ("b", "two")]
        assert isinstance(got[0], ext.Notify) and got[0].pid == conn.info.backend_pid
        assert conn.notifies == []

        def later() -> None:
            wait_until(lambda: _guard.in_use(conn), what="the listener to wait")  # sent while it waits
            for i in range(5):
                other.cursor().execute("notify a, %s", (str(i),))

        t = threading.Thread(target=later)
        t.start()
        t0 = time.monotonic()
        got = [n.payload for n in psycogreen.notifies(conn, timeout=10, stop_after=3)]
        assert got == ["0", "1", "2"]
        assert time.monotonic() - t0 < 5
        t.join()
        rest = [n.payload for n in psycogreen.notifies(conn, timeout=0.3)]
        assert rest == ["3", "4"]
        t0 = time.monotonic()
        assert list(psycogreen.notifies(conn, timeout=0.2)) == []
        assert 0.15 < time.monotonic() - t0 < 2
        with pytest.raises(ValueError):
            next(psycogreen.notifies(conn, timeout=-1))
        with pytest.raises(ValueError):
            next(psycogreen.notifies(conn, stop_after=0))
    finally:
        conn.close()
        other.close()


def test_text_files_use_the_connection_encoding(pair: tuple[Any, Any]) -> None:
    def scenario(conn: Any) -> Any:
        conn.set_client_encoding("LATIN1")
        cur = conn.cursor()
        cur.execute("create temp table t (v text)")
        cur.copy_from(io.StringIO("café\n"), "t")
        cur.copy_from(io.BytesIO("naïve\n".encode("latin-1")), "t")
        tout, bout = io.StringIO(), io.BytesIO()
        cur.copy_to(tout, "t")
        cur.copy_to(bout, "t")
        res = (tout.getvalue(), bout.getvalue(), outcome(lambda: cur.copy_from(io.StringIO("€\n"), "t")))
        conn.rollback()
        conn.set_client_encoding("UTF8")
        return res

    expected, got = both(pair, scenario)
    assert got[:2] == expected[:2]
    assert got[0] == "café\nnaïve\n"
    # what cannot be encoded fails like a failing file (see test_failing_file_...)
    assert expected[2][1] == "QueryCanceled" and "UnicodeEncodeError" in expected[2][3]
    assert got[2] == expected[2]
