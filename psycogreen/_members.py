"""Set psycopg2's read-only C attributes (``cursor.rowcount``, ``statusmessage``, ``query``).

psycopg2 fills these from the ``PGresult`` of a COPY it runs itself. We run the COPY through libpq,
so to leave the cursor exactly as psycopg2 would, we write the slots psycopg2's own member table
points at: a ``member_descriptor`` carries its ``PyMemberDef`` (name, type, offset). Every step is
checked — the descriptor's type and name pointers, the member's name and C type — and on any
mismatch (another Python ABI, a future psycopg2) nothing is written and the attribute keeps
psycopg2's value (``rowcount`` -1), which is documented.
"""

from __future__ import annotations

import ctypes
import logging
import sys
from typing import Any, Optional

logger = logging.getLogger("psycogreen")

T_LONG = 2
T_OBJECT = 6

_PTR = ctypes.sizeof(ctypes.c_void_p)
# PyDescr_COMMON: PyObject_HEAD (refcnt, type), d_type, d_name, d_qualname; then d_member.
_HEAD = 2 * _PTR
_cache: dict[tuple[type, str], Optional[tuple[int, int]]] = {}


def _member(cls: type, name: str) -> Optional[tuple[int, int]]:
    """(offset, C type) of a C member ``name`` defined on ``cls`` or a base, checked; else None."""
    key = (cls, name)
    if key in _cache:
        return _cache[key]
    found: Optional[tuple[int, int]] = None
    try:
        if hasattr(sys, "getobjects") or not hasattr(ctypes, "pythonapi"):  # debug/odd builds
            raise ValueError("unsupported interpreter layout")
        for klass in cls.__mro__:
            d = klass.__dict__.get(name)
            if d is None:
                continue
            if type(d).__name__ != "member_descriptor":
                break
            base = id(d)
            d_type = ctypes.c_void_p.from_address(base + _HEAD).value
            d_name = ctypes.c_void_p.from_address(base + _HEAD + _PTR).value
            if d_type != id(klass) or d_name != id(d.__name__):
                break
            mdef = ctypes.c_void_p.from_address(base + _HEAD + 3 * _PTR).value
            if not mdef:
                break
            mname = ctypes.c_char_p.from_address(mdef).value
            mtype = ctypes.c_int.from_address(mdef + _PTR).value
            offset = ctypes.c_ssize_t.from_address(mdef + 2 * _PTR).value
            if mname == name.encode() and mtype in (T_LONG, T_OBJECT) and 0 < offset < 4096:
                found = (offset, mtype)
            break
    except Exception as e:  # noqa: BLE001 - best effort, see the module docstring
        logger.debug("cannot locate C member %s.%s: %r", cls.__name__, name, e)
    _cache[key] = found
    return found


def set_member(obj: Any, name: str, value: Any) -> bool:
    """Write a read-only C member of ``obj``; False if its layout could not be verified."""
    info = _member(type(obj), name)
    if info is None:
        return False
    offset, mtype = info
    addr = id(obj) + offset
    if mtype == T_LONG:
        ctypes.c_long.from_address(addr).value = int(value)
        return True
    slot = ctypes.c_void_p.from_address(addr)
    old = slot.value
    _incref(id(value))
    slot.value = id(value)
    if old:
        _decref(old)
    return True


_incref = ctypes.PYFUNCTYPE(None, ctypes.c_void_p)(("Py_IncRef", ctypes.pythonapi))
_decref = ctypes.PYFUNCTYPE(None, ctypes.c_void_p)(("Py_DecRef", ctypes.pythonapi))
