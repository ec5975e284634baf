"""Give the psycopg2 errors we build from a ``PGresult`` the same ``diag`` psycopg2's own have.

psycopg2 fills ``Error.diag`` (``sqlstate``, ``message_primary``, ``severity``, ``context``...)
from the ``PGresult *`` its C ``errorObject`` keeps, and ``Diagnostics`` cannot be constructed from
Python. Errors we raise for COPY and replication come from results we read through libpq
ourselves, so this module hands such a result to the error the way psycopg2 does: it stores the
pointer (and the connection's decoder) in the error object's own fields. psycopg2 then serves
``diag`` from it and frees it with the error, exactly as for an error of its own; the exception
keeps its exact psycopg2 class (``type(e) is psycopg2.errors.QueryCanceled``) and pickles as usual.

This writes into a C struct, so the layout is *verified* once on a probe error before anything is
written (psycopg2 2.8+: ``pgerror, pgcode, cursor, pydecoder, pgres`` after the exception header);
if it does not match, errors keep ``pgerror``/``pgcode`` only and ``diag`` stays empty.
"""

from __future__ import annotations

import ctypes
from typing import Any, Optional

import psycopg2

from . import _libpq

__all__ = ["attach_result", "has_layout", "move_result"]

_WORD = ctypes.sizeof(ctypes.c_void_p)
#: word offsets (bytes) of pydecoder and pgres in psycopg2's errorObject, once verified
_layout: Optional[tuple[int, int]] = None
_probed = False


def _probe() -> Optional[tuple[int, int]]:
    """Offsets of ``pydecoder``/``pgres``, or None if the struct is not the one we know."""
    size = psycopg2.Error.__basicsize__
    header = BaseException.__basicsize__
    if size != header + 5 * _WORD:
        return None
    err = psycopg2.Error("probe")
    pgerror, pgcode = "psycogreen layout probe", "PRB01"
    err.__setstate__({"pgerror": pgerror, "pgcode": pgcode})  # type: ignore[no-untyped-call]
    words = (ctypes.c_void_p * 5).from_address(id(err) + header)
    if words[0] != id(pgerror) or words[1] != id(pgcode) or any(words[2:5]):
        return None
    return header + 3 * _WORD, header + 4 * _WORD


def has_layout() -> bool:
    """True when errors can carry a ``PGresult`` (psycopg2's struct layout was recognised)."""
    global _layout, _probed
    if not _probed:
        try:
            _layout = _probe()
        except Exception:  # noqa: BLE001 - an unknown psycopg2: diag stays empty, nothing breaks
            _layout = None
        _probed = True
    return _layout is not None


def _slots(err: psycopg2.Error) -> Any:
    assert _layout is not None
    return ctypes.c_void_p.from_address(id(err) + _layout[0]), ctypes.c_void_p.from_address(
        id(err) + _layout[1]
    )


def attach_result(err: psycopg2.Error, res: int, decoder: Any = None) -> bool:
    """Make ``err`` own the ``PGresult *`` ``res`` (psycopg2 frees it with the error) so
    ``err.diag`` reports the server's fields; ``decoder`` (``codecs.getdecoder(encoding)``)
    decodes them as psycopg2 would. Returns False, and frees ``res``, when that is impossible."""
    if not res:
        return False
    if not isinstance(err, psycopg2.Error) or not has_layout():
        _libpq.lib.PQclear(res)
        return False
    pydecoder, pgres = _slots(err)
    if pgres.value:
        _libpq.lib.PQclear(res)  # already has one: never leak or double-free
        return False
    if decoder is not None and not pydecoder.value:
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(decoder))  # psycopg2 releases it with the error
        pydecoder.value = id(decoder)
    pgres.value = res
    return True


def move_result(src: psycopg2.Error, dst: psycopg2.Error) -> bool:
    """Hand ``src``'s ``PGresult`` (and so its ``diag``) over to ``dst``: for an error re-raised
    as another class (``src`` is then kept as ``__cause__``, with an empty ``diag``)."""
    if not isinstance(src, psycopg2.Error) or not isinstance(dst, psycopg2.Error) or not has_layout():
        return False
    src_decoder, src_res = _slots(src)
    res = src_res.value
    if not res:
        return False
    dst_decoder, dst_res = _slots(dst)
    if dst_res.value:
        return False
    src_res.value = None
    dst_res.value = res
    if src_decoder.value and not dst_decoder.value:
        # the reference moves too: src's pointer is cleared, so psycopg2 releases it once, via dst
        dst_decoder.value = src_decoder.value
        src_decoder.value = None
    return True
