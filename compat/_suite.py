"""Run one module of psycopg2's test suite in one mode, recording every test's outcome as it ends.

Started by :mod:`compat.run` in a fresh interpreter per (mode, module), because monkey-patching and
``psycogreen.patch()`` are process-wide and a hung test must cost one process, not the whole run.

Each line of ``--out`` is a JSON object: ``{"id": ..., "outcome": "started"}`` when a test starts,
then ``{"id": ..., "outcome": "passed|failed|error|skipped|xfail|xpass", "detail": ...}`` when it
ends, flushed at once: if the process is killed, the last ``started`` without an end is the test
that hung. Tests whose ids are in ``--exclude`` (already recorded by an earlier attempt) are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
import unittest
from typing import Any, Optional, TextIO

MODES = ("blocking", "psycogreen2", "psycogreen1")


def setup_mode(mode: str) -> str:
    """Make psycopg2 green the way a user of that mode would; return a one-line description."""
    if mode == "blocking":
        return "blocking psycopg2 (no wait callback)"
    from gevent import monkey

    monkey.patch_all()
    import psycogreen

    if mode == "psycogreen2":
        psycogreen.patch()
    elif mode == "psycogreen1":
        from psycogreen.gevent import patch_psycopg

        patch_psycopg()
    else:
        raise SystemExit(f"unknown mode {mode!r}: one of {', '.join(MODES)}")
    version = getattr(psycogreen, "__version__", "1.0.x")
    return f"gevent + psycogreen {version} from {os.path.dirname(psycogreen.__file__)}"


class RecordingResult(unittest.TestResult):
    """A TestResult writing one JSON line per event, flushed, so a killed run loses nothing."""

    def __init__(self, out: TextIO) -> None:
        super().__init__()
        self.out = out

    def _emit(self, test: Any, outcome: str, detail: str = "") -> None:
        self.out.write(json.dumps({"id": test.id(), "outcome": outcome, "detail": detail[-2000:]}) + "\n")
        self.out.flush()

    def startTest(self, test: Any) -> None:  # noqa: N802 - unittest's API
        super().startTest(test)
        self._emit(test, "started")

    def addSuccess(self, test: Any) -> None:  # noqa: N802
        super().addSuccess(test)
        self._emit(test, "passed")

    def addFailure(self, test: Any, err: Any) -> None:  # noqa: N802
        super().addFailure(test, err)
        self._emit(test, "failed", _format(err))

    def addError(self, test: Any, err: Any) -> None:  # noqa: N802
        super().addError(test, err)
        # unittest reports setUpClass/setUpModule failures with a placeholder "test"
        self._emit(test, "error", _format(err))

    def addSkip(self, test: Any, reason: str) -> None:  # noqa: N802
        super().addSkip(test, reason)
        self._emit(test, "skipped", reason)

    def addExpectedFailure(self, test: Any, err: Any) -> None:  # noqa: N802
        super().addExpectedFailure(test, err)
        self._emit(test, "xfail", _format(err))

    def addUnexpectedSuccess(self, test: Any) -> None:  # noqa: N802
        super().addUnexpectedSuccess(test)
        self._emit(test, "xpass")

    def addSubTest(self, test: Any, subtest: Any, err: Any) -> None:  # noqa: N802
        super().addSubTest(test, subtest, err)
        if err is not None:
            failed = issubclass(err[0], test.failureException)
            self._emit(subtest, "failed" if failed else "error", _format(err))


def _format(err: Any) -> str:
    return "".join(traceback.format_exception(*err))


def _filter(suite: unittest.TestSuite, exclude: set[str]) -> unittest.TestSuite:
    kept = unittest.TestSuite()
    for test in suite:
        if isinstance(test, unittest.TestSuite):
            kept.addTest(_filter(test, exclude))
        elif test.id() not in exclude:
            kept.addTest(test)
    return kept


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--mode", choices=MODES, required=True)
    p.add_argument("--root", required=True, help="directory containing psycopg2's tests/ package")
    p.add_argument("--module", required=True, help="e.g. test_copy")
    p.add_argument("--out", required=True)
    p.add_argument("--exclude", default="", help="file of test ids to skip, one a line")
    args = p.parse_args(argv)

    print(setup_mode(args.mode), flush=True)
    sys.path.insert(0, args.root)
    exclude: set[str] = set()
    if args.exclude and os.path.exists(args.exclude):
        with open(args.exclude) as f:
            exclude = {line.strip() for line in f if line.strip()}
    module = __import__(f"tests.{args.module}", fromlist=["*"])
    suite = _filter(unittest.defaultTestLoader.loadTestsFromModule(module), exclude)
    with open(args.out, "a") as out:
        suite.run(RecordingResult(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
