"""``make compat``'s bookkeeping (compat/run.py), without running psycopg2's suite: how records
become final outcomes, the table, and the per-test differences."""

from __future__ import annotations

import json
from pathlib import Path

from compat import run


def test_finish_keeps_the_last_outcome_and_marks_unfinished_tests() -> None:
    records = [
        {"id": "a", "outcome": "started"},
        {"id": "a", "outcome": "passed", "detail": ""},
        {"id": "b", "outcome": "started"},
        {"id": "b", "outcome": "hung", "detail": "silent for 60s"},
        {"id": "c", "outcome": "started"},  # its process died
    ]
    final = {r["id"]: r["outcome"] for r in run.finish(records)}
    assert final == {"a": "passed", "b": "hung", "c": "error"}


def test_read_records_skips_a_cut_last_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"id": "a", "outcome": "passed"}) + '\n{"id": "b", "outc')
    assert [r["id"] for r in run.read_records(str(path))] == ["a"]
    assert run.read_records(str(tmp_path / "missing.jsonl")) == []


def test_table_and_differences() -> None:
    results = {
        "blocking": [
            {"id": "t.a", "outcome": "passed"},
            {"id": "t.b", "outcome": "passed"},
            {"id": "t.c", "outcome": "skipped", "detail": "no tpc"},
        ],
        "psycogreen2": [
            {"id": "t.a", "outcome": "passed"},
            {"id": "t.b", "outcome": "failed", "detail": "Traceback\n  x\nAssertionError: 1 != 2\n"},
            {"id": "t.c", "outcome": "skipped", "detail": "no tpc"},
        ],
        "psycogreen1": [
            {"id": "t.a", "outcome": "hung", "detail": "silent for 60s"},
            {"id": "t.b", "outcome": "xfail"},
            {"id": "t.c", "outcome": "skipped"},
        ],
    }
    table = run.summarise(results)
    assert dict(table["blocking"]) == {"passed": 2, "failed": 0, "errors": 0, "skipped": 1}
    assert dict(table["psycogreen2"]) == {"passed": 1, "failed": 1, "errors": 0, "skipped": 1}
    assert dict(table["psycogreen1"]) == {"passed": 1, "failed": 0, "errors": 1, "skipped": 1}
    text = run.format_table(table)
    assert "| blocking psycopg2 | 2 | 0 | 0 | 1 | 3 |" in text
    assert "| psycogreen 2 (gevent) | 1 | 1 | 0 | 1 | 3 |" in text
    diffs = run.differences(results)
    assert len(diffs) == 2  # t.c is skipped everywhere
    assert diffs[0].startswith("t.a: blocking=passed, psycogreen2=passed, psycogreen1=hung")
    assert "psycogreen2: AssertionError: 1 != 2" in diffs[1]


def test_green_skips_are_neutralised_by_what_is_appended() -> None:
    namespace: dict[str, object] = {}
    exec(run.NEUTRALISE, namespace)  # noqa: S102 - our own constant

    def f() -> None:
        pass

    assert namespace["skip_if_green"]("reason")(f) is f  # type: ignore[operator]
    assert namespace["skip_copy_if_green"](f) is f  # type: ignore[operator]
