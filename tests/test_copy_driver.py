"""The driver's half of COPY (``psycogreen.copy.with_file``), with a scripted protocol: no server.

The protocol generator only asks; the driver reads the file, writes the rows, passes waits through
to ``drive()`` untouched, and hands the file's exceptions back as values (so the protocol, not an
exception unwinding it, ends the COPY on the server).
"""

from __future__ import annotations

from typing import Any, Generator

import pytest

from psycogreen._core import READ, WRITE
from psycogreen._core.copy import NEED_DATA, CopyOutcome
from psycogreen.copy import with_file


def scripted(log: list[Any]) -> Generator[Any, Any, CopyOutcome]:
    """A protocol that waits, asks for two chunks, hands over rows, waits again; logs replies."""
    log.append(("ready", (yield 7, WRITE)))
    log.append(("data", (yield NEED_DATA)))
    log.append(("data", (yield NEED_DATA)))
    log.append(("written", (yield b"1\tone\n2\ttwo\n")))
    log.append(("ready", (yield 7, READ)))
    outcome = CopyOutcome()
    outcome.rowcount = 2
    return outcome


def run(gen: Any, ready: int = READ | WRITE) -> tuple[list[Any], Any]:
    """What ``drive()`` would do: send readiness back for every wait; collect the waits."""
    waits = []
    try:
        request = next(gen)
        while True:
            waits.append(request)
            request = gen.send(ready)
    except StopIteration as stop:
        return waits, stop.value


def test_file_io_happens_in_the_driver_and_waits_pass_through() -> None:
    log: list[Any] = []
    chunks = iter([b"abc", b""])
    written: list[bytes] = []
    waits, outcome = run(with_file(scripted(log), lambda: next(chunks), written.append), ready=WRITE)
    assert waits == [(7, WRITE), (7, READ)]  # only waits reach drive()
    assert log == [("ready", WRITE), ("data", b"abc"), ("data", b""), ("written", None), ("ready", WRITE)]
    assert written == [b"1\tone\n2\ttwo\n"]
    assert outcome.rowcount == 2


@pytest.mark.parametrize("exc", [ValueError("bad file"), KeyboardInterrupt()])
def test_file_exceptions_are_sent_to_the_protocol_as_values(exc: BaseException) -> None:
    log: list[Any] = []

    def fail(*args: Any) -> Any:
        raise exc

    run(with_file(scripted(log), fail, fail))
    assert log[1] == ("data", exc) and log[2] == ("data", exc)
    assert log[3] == ("written", exc)


def test_closing_the_driver_closes_the_protocol() -> None:
    closed = []

    def protocol() -> Generator[Any, Any, CopyOutcome]:
        try:
            yield 3, READ
        finally:
            closed.append(True)
        return CopyOutcome()  # pragma: no cover

    gen = with_file(protocol(), None, None)
    assert next(gen) == (3, READ)
    gen.close()  # what drive() does when the cancel grace period runs out
    assert closed == [True]
