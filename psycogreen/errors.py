"""Exceptions raised by psycogreen.

Every error subclasses the psycopg2 exception a caller already catches, so adopting psycogreen never
requires new ``except`` clauses: a deadline is a ``QueryCanceledError`` (as if the server's
``statement_timeout`` fired), pool problems are ``OperationalError`` (and ``psycopg2.pool.PoolError``,
what code written for ``psycopg2.pool`` catches) and misuse is a ``ProgrammingError``.
"""

from __future__ import annotations

import psycopg2
import psycopg2.extensions
import psycopg2.pool

__all__ = [
    "ConcurrentUseError",
    "PoolClosed",
    "PoolTimeout",
    "QueryTimeout",
    "TooManyRequests",
]


class ConcurrentUseError(psycopg2.ProgrammingError):
    """A second greenlet/task tried to use a connection another one is using.

    A libpq connection carries one conversation at a time; interleaving two would corrupt it, so the
    second caller is refused at once and the first caller's query is left alone.
    """


class QueryTimeout(psycopg2.extensions.QueryCanceledError):
    """An operation ran past a :func:`psycogreen.timeout` deadline and was cancelled on the server.

    It is a ``QueryCanceledError`` so handlers written for the server's ``statement_timeout`` keep
    working. The connection stays usable; inside a transaction, roll back first.
    """


class PoolTimeout(psycopg2.OperationalError, psycopg2.pool.PoolError):
    """No connection could be obtained from a pool within the timeout."""


class PoolClosed(psycopg2.OperationalError, psycopg2.pool.PoolError):
    """The pool is closed (or not opened yet) and cannot hand out connections."""


class TooManyRequests(psycopg2.OperationalError, psycopg2.pool.PoolError):
    """The pool's queue of waiting clients is full (``max_waiting``)."""
