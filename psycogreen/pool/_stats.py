"""The pool's counters: every key in one place, one way to add to each.

``get_stats()`` reports the counters that moved (as psycopg_pool does) plus the gauges.
"""

from __future__ import annotations

#: Gauges, computed when asked.
POOL_MIN = "pool_min"
POOL_MAX = "pool_max"
POOL_SIZE = "pool_size"
POOL_AVAILABLE = "pool_available"
REQUESTS_QUEUED = "requests_queued"

#: Counters.
REQUESTS_NUM = "requests_num"  # checkouts asked for
REQUESTS_WAITING = "requests_waiting"  # checkouts that had to wait for a connection
REQUESTS_WAIT_MS = "requests_wait_ms"  # total time they waited
REQUESTS_ERRORS = "requests_errors"  # checkouts that failed (timeout, too many, interrupted)
USAGE_MS = "usage_ms"  # total time connections were checked out (recorded once per return)
RETURNS_BAD = "returns_bad"  # connections returned broken or in an unknown state
CONNECTIONS_NUM = "connections_num"  # connections made
CONNECTIONS_MS = "connections_ms"  # total time spent connecting
CONNECTIONS_ERRORS = "connections_errors"  # failed connection attempts
CONNECTIONS_LOST = "connections_lost"  # connections found broken on checkout

COUNTERS = (
    REQUESTS_NUM,
    REQUESTS_WAITING,
    REQUESTS_WAIT_MS,
    REQUESTS_ERRORS,
    USAGE_MS,
    RETURNS_BAD,
    CONNECTIONS_NUM,
    CONNECTIONS_MS,
    CONNECTIONS_ERRORS,
    CONNECTIONS_LOST,
)


class Counters:
    """The counters of one pool. Add only with the pool's lock held (threads share it)."""

    __slots__ = ("values",)

    def __init__(self) -> None:
        self.values: dict[str, int] = dict.fromkeys(COUNTERS, 0)

    def add(self, key: str, n: int = 1) -> None:
        self.values[key] += n

    def snapshot(self) -> dict[str, int]:
        """The counters that moved since the pool opened (or since the last ``pop_stats``)."""
        return {k: v for k, v in self.values.items() if v}

    def reset(self) -> None:
        self.values = dict.fromkeys(COUNTERS, 0)
