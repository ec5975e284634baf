"""Attributes of psycogreen.aio's wrappers that are the wrapped sync object's own.

``AsyncConnection``, ``AsyncCursor`` and the async pools expose many attributes of the object they
wrap unchanged (``conn.autocommit`` is ``conn.raw.autocommit``). A descriptor says that once per
attribute, with its type, instead of a property (and a setter) written out each time.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")


class Delegated(Generic[T]):
    """A read-only attribute: ``obj.<name>`` is ``obj.<target>.<name>``."""

    __slots__ = ("name", "target")

    def __init__(self, target: str = "raw") -> None:
        self.target = target
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type) -> Delegated[T]: ...

    @overload
    def __get__(self, obj: object, owner: type) -> T: ...

    def __get__(self, obj: Any, owner: type) -> Any:
        if obj is None:
            return self
        return getattr(getattr(obj, self.target), self.name)


class Settable(Delegated[T]):
    """A read-write attribute: ``obj.<name> = v`` sets ``obj.<target>.<name>``."""

    __slots__ = ()

    def __set__(self, obj: Any, value: T) -> None:
        setattr(getattr(obj, self.target), self.name, value)
