"""The C accelerator's pieces without a server (issue 13): the selector, and ``getlines`` (COPY
OUT's per-row loop) against the Python loop it replaces, on a fake ``PQgetlineAsync``."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from typing import Any, Callable, Iterator

import pytest

from psycogreen import _accel, _libpq

needs_c = pytest.mark.skipif(not _accel.active(), reason=_accel.reason)


def _selector(env: dict[str, str]) -> str:
    code = "from psycogreen import _accel; print(_accel.active(), _accel.reason)"
    out = subprocess.run(
        [sys.executable, "-c", code], env=dict(os.environ, **env), capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def test_the_environment_variable_forces_pure_python() -> None:
    assert _selector({_accel.ENV: "1"}) == f"False pure Python: disabled by {_accel.ENV}=1"


def test_without_the_variable_the_extension_is_used_when_built() -> None:
    got = _selector({_accel.ENV: ""})
    if _accel.built():
        assert got.startswith("True C accelerator"), got
    else:
        assert got.startswith("False pure Python: the C accelerator is not built"), got


# -- getlines: the COPY OUT loop in C agrees with the Python loop -------------------------------------

GETLINE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int)


class FakeLibpq:
    """``PQgetlineAsync`` over a script of results: a row (bytes), 0 (nothing buffered) or -1
    (the end). A row longer than the room offered comes in parts, as libpq gives it."""

    def __init__(self, script: list[Any]) -> None:
        self.script = list(script)
        self.calls = 0

    def getline(self, conn: Any, buffer: int, room: int) -> int:
        self.calls += 1
        if not self.script:
            return -1
        item = self.script[0]
        if isinstance(item, int):
            self.script.pop(0)
            return item
        part, rest = item[:room], item[room:]
        if rest:
            self.script[0] = rest
        else:
            self.script.pop(0)
        ctypes.memmove(buffer, part, len(part))
        return len(part)


def _python_loop(
    get: Callable[[int, int], int], buf: Any, pos: int, room: int, batch: int
) -> tuple[int, int]:
    """The pure-Python per-row loop of ``_core.copy._copy_out``, on its own."""
    while True:
        n = get(ctypes.addressof(buf) + pos, room)
        if 0 < n < room:
            pos += n
            if pos < batch:
                continue
        return pos, n


@pytest.fixture
def fake_init() -> Iterator[Callable[[FakeLibpq], Any]]:
    """Points the extension's ``PQgetlineAsync`` at a fake; the real one is restored after."""
    assert _accel.speedups is not None
    keep: list[Any] = []

    def install(fake: FakeLibpq) -> Any:
        fn = GETLINE(fake.getline)
        keep.append(fn)
        address = ctypes.cast(fn, ctypes.c_void_p).value
        _accel.speedups.init(address, Exception, lambda: None)  # type: ignore[union-attr]
        return fn

    yield install
    import psycopg2

    from psycogreen import _guard

    real = ctypes.cast(_libpq.lib.PQgetlineAsync, ctypes.c_void_p).value
    _accel.speedups.init(real, psycopg2.Error, _guard.getcurrent)


SCRIPTS = {
    "rows then nothing": [b"a\n", b"bb\n", b"ccc\n", 0, b"d\n", -1],
    "rows then the end": [b"x\n"] * 5 + [-1],
    "a full batch": [b"0123456789\n"] * 10 + [0],
    "a long row": [b"ab\n", b"y" * 40 + b"\n", 0],
    "a row exactly the room": [b"z" * 16, b"q\n", -1],
    "nothing": [0],
    "the end": [-1],
}


@needs_c
@pytest.mark.parametrize("script", list(SCRIPTS))
def test_getlines_agrees_with_the_python_loop(script: str, fake_init: Callable[[FakeLibpq], Any]) -> None:
    assert _accel.speedups is not None
    room, batch = 16, 32
    results = []
    for path in ("c", "python"):
        fake = FakeLibpq(SCRIPTS[script])
        buf = ctypes.create_string_buffer(batch + room)
        steps = []
        pos = 0
        for _ in range(20):  # as _copy_out calls it: hand a full batch over, skip past a long row
            if path == "c":
                fake_init(fake)
                pos, n = _accel.speedups.getlines(1, ctypes.addressof(buf), pos, room, batch)
            else:
                pos, n = _python_loop(lambda b, r, f=fake: f.getline(None, b, r), buf, pos, room, batch)
            steps.append((pos, n, buf.raw[:pos]))
            if n < 0:
                break
            if n >= room or pos >= batch:
                pos = 0
        results.append((steps, fake.script))
    assert results[0] == results[1]


@needs_c
def test_getlines_refuses_bad_arguments() -> None:
    assert _accel.speedups is not None
    buf = ctypes.create_string_buffer(8)
    with pytest.raises(ValueError, match="invalid connection, buffer or sizes"):
        _accel.speedups.getlines(0, ctypes.addressof(buf), 0, 8, 8)
    with pytest.raises(TypeError):
        _accel.speedups.getlines(1, ctypes.addressof(buf))
