"""COPY under gevent, eventlet and threads (psycopg2 refuses it in green mode): cooperative, with
the same deadlines, errors and interrupts everywhere. Scenarios in tests/scripts/copy_green.py."""

from __future__ import annotations

from typing import Any, Callable

import pytest

FRAMEWORKS = ["gevent", "eventlet", "threads"]
GREEN = ["gevent", "eventlet"]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_copy_long_stream_keeps_the_hub_running(run_script: Callable[..., Any], framework: str) -> None:
    out = run_script("copy_green.py", framework, "stream")
    assert out["patched"] == framework
    assert out["in_rows"] == 200_000
    assert out["out_rows"] == 200_000
    assert out["out_bytes"] > 20_000_000
    if framework != "threads":
        assert out["max_gap"] < 0.25, out  # a 5 ms ticker never stalled for long


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_copy_from_slow_files_overlaps(run_script: Callable[..., Any], framework: str) -> None:
    out = run_script("copy_green.py", framework, "overlap")
    assert out["wall"] < out["sum"], out  # three napping copies ran at once, not one after another


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_copy_deadline_cancels_on_server(run_script: Callable[..., Any], framework: str) -> None:
    out = run_script("copy_green.py", framework, "deadlines")
    # COPY IN: QueryTimeout, nothing stored, nothing left running
    assert out["in"] == "QueryTimeout"
    assert out["in_rows"] == 0
    assert out["in_active"] == 0
    # COPY OUT: cancelled on the server, the connection usable
    assert out["out"] == "QueryTimeout"
    assert out["out_usable"] is True
    assert out["out_active"] == 0


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_copy_file_errors_raise_psycopg2_classes(run_script: Callable[..., Any], framework: str) -> None:
    out = run_script("copy_green.py", framework, "file_errors")
    # a failing file: the server's QueryCanceled (as psycopg2), the file's exception as cause
    assert out["file_error"] == "the file failed"
    assert out["file_error_class"] == "QueryCanceled"
    assert out["file_error_rows"] == 0
    # a malformed row: psycopg2's error class for the SQLSTATE
    assert out["bad_row"] == ["BadCopyFileFormat", "22P04"]


@pytest.mark.parametrize("framework", GREEN)
def test_copy_killed_greenlet_cancels_and_keeps_connection(
    run_script: Callable[..., Any], framework: str
) -> None:
    out = run_script("copy_green.py", framework, "kill")
    assert out["usable"] is True
    assert out["active"] == 0
