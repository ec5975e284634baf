"""A tiny markdown-style table printer shared by the demo scripts (no dependency)."""

from __future__ import annotations


def table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print("  | " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
        if n == 0:
            print("  |" + "|".join("-" * (w + 2) for w in widths) + "|")
