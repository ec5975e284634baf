"""Behaviours psycopg2's own test suite relies on, closed under ``patch()`` (issue 12): each is
checked against blocking psycopg2 where psycopg2 can run the same code."""

from __future__ import annotations

import contextlib
import select
import time
import uuid
from typing import Any, Iterator

import psycopg2
import psycopg2.extensions as ext
import psycopg2.extras
import pytest
from sidebyside import unpatched

import psycogreen


def test_lobject_mode_none_is_the_default_mode(dsn: str, threads_patched: str) -> None:
    def modes(conn: Any) -> list[str]:
        rv = [conn.lobject().mode, conn.lobject(mode=None).mode, conn.lobject(mode="").mode]
        oid = conn.lobject().oid
        rv.append(conn.lobject(oid, mode=None).mode)
        conn.rollback()
        return rv

    with unpatched():
        blocking = psycopg2.connect(dsn)
        expected = modes(blocking)
        blocking.close()
    green = psycopg2.connect(dsn)
    try:
        assert modes(green) == expected == ["wt", "wt", "wt", "rt"]
    finally:
        green.close()


def test_lobject_factory_may_subclass_psycopg2s_c_lobject(dsn: str, threads_patched: str) -> None:
    class Shouting(ext.lobject):  # type: ignore[misc]
        def write(self, data: Any) -> int:
            written: int = super().write(data.upper())
            return written

    conn = psycopg2.connect(dsn)
    try:
        lo = conn.lobject(mode="wb", lobject_factory=Shouting)
        assert isinstance(lo, Shouting) and isinstance(lo, ext.lobject)
        assert lo.write(b"quiet") == 5
        again = conn.lobject(lo.oid, "rb", lobject_factory=Shouting)
        assert again.read() == b"QUIET"
        assert type(again) is type(lo)  # one class per factory
        lo.close()
        assert lo.closed
        again.unlink()
        conn.commit()
    finally:
        conn.close()


def test_async_replication_connection_under_patch(dsn: str, threads_patched: str) -> None:
    """psycopg2's asynchronous streaming (the caller polls) works although a wait callback is set."""
    conn = psycopg2.connect(dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection, async_=1)
    name = f"s_{uuid.uuid4().hex[:10]}"
    writer = psycopg2.connect(dsn)
    writer.autocommit = True

    def wait() -> None:
        deadline = time.monotonic() + 10
        while conn.poll() != ext.POLL_OK:
            assert time.monotonic() < deadline, "async replication connection never became ready"
            select.select([conn], [conn], [], 1)

    try:
        wait()
        cur = conn.cursor()
        cur.create_replication_slot(name, output_plugin="test_decoding")
        wait()
        cur.start_replication(name)
        wait()
        table = f"t_{uuid.uuid4().hex[:10]}"
        writer.cursor().execute(f"create table {table} as select generate_series(1, 3) as id")
        with pytest.raises(psycopg2.ProgrammingError):
            cur.consume_stream(lambda msg: None)  # psycopg2: not in asynchronous mode
        payloads: list[Any] = []
        deadline = time.monotonic() + 10
        while len(payloads) < 3 and time.monotonic() < deadline:
            msg = cur.read_message()
            if msg is None:
                select.select([cur], [], [], 1)
                continue
            payloads.append(msg.payload)
            cur.send_feedback(flush_lsn=msg.data_start)
        assert len(payloads) >= 3
    finally:
        conn.close()
        with contextlib.suppress(psycopg2.Error):
            writer.cursor().execute("select pg_drop_replication_slot(%s)", (name,))
        writer.close()


@pytest.mark.parametrize("framework", ["gevent", "eventlet", "threads"])
def test_real_os_threads_sharing_a_connection_are_serialised(run_script: Any, framework: str) -> None:
    """psycopg2 serialises threads on a shared connection; in green mode it releases its mutex while
    waiting, so without psycogreen's turn-taking the second thread got "asynchronous query is
    underway". Greenlets of one thread keep getting ConcurrentUseError."""
    out = run_script("shared_threads.py", framework)
    assert out["errors"] == []
    assert out["checked"] == {str(n): out["rounds"] for n in range(3)}
    if framework != "threads":
        assert out["greenlet_error"] == "ConcurrentUseError"


# -- two-phase commit: psycopg2's "prepared" checks -------------------------------------------------


@pytest.fixture(scope="module")
def tpc_dsn() -> Iterator[str]:
    """A server of its own with two-phase commit enabled (the shared one has it off)."""
    from psycogreen.testing import PostgresServer

    server = PostgresServer().start()
    try:
        server.wait_ready()
        with unpatched_module():
            conn = psycopg2.connect(server.dsn)
            conn.autocommit = True
            conn.cursor().execute("ALTER SYSTEM SET max_prepared_transactions = 5")
            conn.close()
        server.restart()
        server.wait_ready()
        yield server.dsn
    finally:
        server.destroy()


@contextlib.contextmanager
def unpatched_module() -> Iterator[None]:
    """Unpatched for a moment, restoring whatever was active (module fixtures run outside tests)."""
    active = psycogreen.patched()
    psycogreen.unpatch()
    try:
        yield
    finally:
        if active:
            psycogreen.patch(active)


def test_prepared_transaction_refuses_cancel_and_lobjects_like_psycopg2(
    tpc_dsn: str, threads_patched: str
) -> None:
    def scenario(conn: Any) -> list[Any]:
        res: list[Any] = []
        conn.tpc_begin(conn.xid(1, f"g{uuid.uuid4().hex[:8]}", "b"))
        lo = conn.lobject()
        conn.tpc_prepare()
        for call in (conn.cancel, lambda: lo.read(5), conn.lobject):
            try:
                call()
                res.append("ok")
            except psycopg2.Error as e:
                res.append((type(e).__name__, str(e)))
        lo.close()  # a no-op once prepared, as psycopg2's
        conn.tpc_rollback()
        return res

    with unpatched():
        blocking = psycopg2.connect(tpc_dsn)
        expected = scenario(blocking)
        blocking.close()
    green = psycopg2.connect(tpc_dsn)
    try:
        got = scenario(green)
    finally:
        green.close()
    assert [r[0] for r in got] == [r[0] for r in expected] == ["ProgrammingError"] * 3
    assert got[0] == expected[0] and got[2] == expected[2]
