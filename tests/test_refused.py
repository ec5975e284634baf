"""COPY, large objects, replication and LISTEN/NOTIFY under gevent, eventlet and threads: the calls
psycopg2 refuses in green mode work, cooperatively, with the same expectations everywhere."""

from __future__ import annotations

from typing import Any, Callable

import pytest

FRAMEWORKS = ["gevent", "eventlet", "threads"]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_refused_calls_work_cooperatively(run_script: Callable[..., Any], framework: str) -> None:
    out = run_script("refused.py", framework)
    assert out["patched"] == framework
    # 1. a long COPY in and out: complete, and the ticker (5 ms cadence) never stalled for long
    assert out["copy_in_rows"] == 200_000
    assert out["copy_out_rows"] == 200_000
    assert out["copy_out_bytes"] > 20_000_000
    if framework != "threads":
        assert out["copy_max_gap"] < 0.25, out
    # 2. three copies that nap in their file overlap instead of running one after the other
    assert out["parallel_wall"] < out["parallel_sum"], out
    # 3. a deadline during COPY IN: QueryTimeout, nothing stored, nothing left running
    assert out["in_timeout"] == "QueryTimeout"
    assert out["in_timeout_rows_unchanged"] is True
    assert out["in_timeout_active"] == 0
    # 4. a deadline during COPY OUT: cancelled on the server, connection usable
    assert out["out_timeout"] == "QueryTimeout"
    assert out["out_timeout_usable"] is True
    assert out["out_timeout_active"] == 0
    # 5. a failing file: the server's QueryCanceled (as psycopg2), the file's exception as cause
    assert out["file_error"] == "the file failed"
    assert out["file_error_context"] == "QueryCanceled"
    assert out["file_error_rows_unchanged"] is True
    # 6. a malformed row: psycopg2's error class for the SQLSTATE
    assert out["bad_row"] == ["BadCopyFileFormat", "22P04"]
    # 7. a killed greenlet: the COPY is cancelled on the server, the connection survives
    if framework != "threads":
        assert out["kill_usable"] is True
        assert out["kill_active"] == 0
    # 8. large objects, with a 3 GB sparse offset
    assert out["lo_tell"] == 3 * 1024**3 + 1
    assert out["lo_head"] == "hello"
    assert out["lo_bytes"] == "hello"
    # 9. notifications: the queued one first, then the ones sent while waiting; time budget kept
    assert out["notifies"] == ["queued", "0", "1", "2"]
    assert out["notifies_empty"] == []
    assert 0.15 < out["notifies_budget"] < 2.0
    if framework != "threads":
        assert out["notify_max_gap"] < 0.25, out
    # 10. replication: a consumer in one greenlet while two others write
    assert out["repl_result"] == "stopped"
    assert out["repl_inserts"] == 10
    assert out["repl_wal_end"] is True
    if framework != "threads":
        assert out["repl_max_gap"] < 0.25, out
        assert out["repl_kill_s"] < 1.0
