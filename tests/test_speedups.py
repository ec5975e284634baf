"""Issue 13: the optional C accelerator (psycogreen._speedups) and the pure-Python path agree.

Each framework's scenario script (tests/scripts/speedups.py) runs twice, once as is and once with
``PSYCOGREEN_NO_EXTENSIONS=1``; the two reports must be identical apart from which path ran:
results, server errors, interrupts handed over mid-wait, deadlines, misuse from another greenlet,
a killed greenlet, many greenlets at once. Without a built extension both runs are pure Python,
and the test still checks the behaviour itself.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

from psycogreen import _accel

FRAMEWORKS = ["gevent", "eventlet", "threads"]


def _check(out: dict[str, Any], framework: str) -> None:
    """What either path must report, whichever it is."""
    res = out["results"]
    assert res["rows"] == ["ok", [200, 200, 200]]
    assert res["vars"] == ["ok", [42, "kw"]]
    assert res["big"] == ["ok", 640000]
    assert res["server_error"][:2] == ["raised", "DivisionByZero"]
    assert res["after_error"] == ["ok", 42]
    assert res["bad_call"][:2] == ["raised", "TypeError"]
    expected = "QueryTimeout" if framework == "threads" else "Timeout"
    assert out["interrupt"]["got"][:2] == ["raised", expected], out["interrupt"]
    assert out["interrupt"]["within"] and out["interrupt"]["after"] == ["ok", 42]
    assert out["deadline"]["is_query_timeout"] and out["deadline"]["after"] == ["ok", 42]
    assert out["misuse"]["owner"] == ["raised", "QueryCanceled"]
    assert out["misuse"]["after"] == ["ok", 42]
    if framework != "threads":
        assert out["misuse"]["second"] == ["raised", "ConcurrentUseError", True]
        assert out["killed"]["end"] == "GreenletExit" and out["killed"]["after"] == ["ok", 42]
    assert out["crowd"] == {"done": 20, "sum_ok": True, "hub_ran": True}
    if framework == "gevent":
        assert out["switch_out"] == {"class_seen": True, "instance_seen": True, "results": [1, 1]}


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_accelerated_and_pure_paths_agree(run_script: Callable[..., Any], framework: str) -> None:
    accelerated = run_script("speedups.py", framework, timeout=180)
    pure = run_script("speedups.py", framework, env={_accel.ENV: "1"}, timeout=180)
    assert pure["paths"] == {
        "active": False,
        "poll_in_c": False,
        "execute_in_c": False,
        "callback_in_c": False,
        "callback_ours": True,
    }
    if _accel.active():
        in_c = framework != "threads"  # plain threads block in libpq: no poll loop to accelerate
        assert accelerated["paths"] == {
            "active": True,
            "poll_in_c": in_c,
            "execute_in_c": True,
            "callback_in_c": in_c,  # threads keep the Python callback: no C loop to run
            "callback_ours": True,
        }
    _check(accelerated, framework)
    _check(pure, framework)
    accelerated.pop("paths")
    pure.pop("paths")
    assert accelerated == pure
