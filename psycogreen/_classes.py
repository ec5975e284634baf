"""Classes made on demand: psycopg2's classes (or a user's subclasses of them) with psycogreen's
mixins. Made once per key and cached, so ``isinstance`` and class identity hold across calls; named
and documented like the class they stand in for, so reprs and ``help()`` read as the user expects."""

from __future__ import annotations

from typing import Any


def derived(cache: dict[Any, type], key: Any, like: type, bases: tuple[type, ...]) -> type:
    """The class with ``bases``, named and documented like ``like``: made the first time ``key`` is
    asked for, then the same class every time."""
    klass = cache.get(key)
    if klass is None:
        klass = type(like.__name__, bases, {"__module__": like.__module__})
        klass.__doc__ = like.__doc__
        cache[key] = klass
    return klass
