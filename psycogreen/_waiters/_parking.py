"""Parking for greenlet hubs (gevent, eventlet): the pool's hand-off without an Event per waiter.

A client that must wait for a connection parks: it switches to its hub and stays out of the run
queue until ``unpark`` schedules one hub callback that switches back to it. gevent and eventlet
differ only in how that callback is scheduled, so the token and the park loop live here once.
"""

from __future__ import annotations

from typing import Any


class GreenToken:
    """One parked (or about to park) greenlet: what it will be handed, and where it stands."""

    __slots__ = ("greenlet", "hub", "value", "woken", "gone", "parked")

    def __init__(self, glet: Any, hub: Any) -> None:
        self.greenlet = glet
        self.hub = hub
        self.value: Any = None
        self.woken = self.gone = self.parked = False


def park(token: GreenToken) -> Any:
    """Switch to the hub until the token is unparked; return what it was handed. An interrupt
    (kill, Timeout) marks the token gone, so a later ``unpark`` passes the value on instead."""
    if token.woken:
        return token.value
    token.parked = True
    try:
        while not token.woken:  # a stray switch into this greenlet parks it again
            token.hub.switch()
    except BaseException:
        token.gone = True
        raise
    finally:
        token.parked = False
    return token.value


def hand(token: Any, value: Any) -> bool:
    """Give ``value`` to a token (of any waiter: it has ``value``, ``woken`` and ``gone``); False when
    it was already handed something or its client is gone (interrupted, timed out), so the caller
    passes the value on. The waiter then wakes the parked client its own way."""
    if token.woken or token.gone:
        return False
    token.value = value
    token.woken = True
    return True


def wake_parked(token: GreenToken) -> None:
    """In the hub: resume the parked greenlet, unless an interrupt already took it out of park."""
    if token.parked and not token.gone:
        token.greenlet.switch()
