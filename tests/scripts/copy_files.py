"""File-like objects for COPY tests, shared by the pytest tests and the framework scripts
(importable without side effects, unlike ``kit``)."""

from __future__ import annotations

from typing import Any, Callable


class Lines:
    """``n`` good lines, then whatever ``bad`` returns (or raises) on the next read."""

    def __init__(self, n: int, bad: Callable[[], Any]) -> None:
        self.n, self.i, self.bad = n, 0, bad

    def read(self, size: int = -1) -> Any:
        self.i += 1
        if self.i > self.n:
            return self.bad()
        return f"{self.i}\n"
