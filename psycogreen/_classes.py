"""Classes made on demand: psycopg2's classes (or a user's subclasses of them) with psycogreen's
mixins. Made once per key and cached, so ``isinstance`` and class identity hold across calls; named
and documented like the class they stand in for, so reprs and ``help()`` read as the user expects."""

from __future__ import annotations

from typing import Any, Optional


def derived(
    cache: dict[Any, type],
    key: Any,
    like: type,
    bases: tuple[type, ...],
    slots: Optional[tuple[str, ...]] = None,
) -> type:
    """The class with ``bases`` (and ``__slots__`` when given), named and documented like ``like``:
    made the first time ``key`` is asked for, then the same class every time."""
    klass = cache.get(key)
    if klass is None:
        namespace: dict[str, Any] = {"__module__": like.__module__}
        if slots is not None:
            namespace["__slots__"] = slots
        klass = type(like.__name__, bases, namespace)
        klass.__doc__ = like.__doc__
        cache[key] = klass
    return klass
