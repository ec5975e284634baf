"""Django's postgresql backend (psycopg2 flavour) taking connections from a psycogreen pool.

For gunicorn gevent/eventlet workers: every greenlet handling a request has its own Django
connection wrapper (Django's connections are thread-local, and monkey-patching makes that
greenlet-local), so without a pool each in-flight request holds its own server connection. Here
``close()`` (called by Django at the end of each request with ``CONN_MAX_AGE = 0``) returns the
connection to a process-wide :class:`psycogreen.pool.ConnectionPool`, and a request beyond
``max_size`` waits its turn (up to ``timeout``) instead of opening one more backend::

    DATABASES = {
        "default": {
            "ENGINE": "psycogreen.contrib.django",
            "NAME": "app", "USER": "app", "HOST": "127.0.0.1",
            "CONN_MAX_AGE": 0,
            "OPTIONS": {"pool": {"min_size": 2, "max_size": 10, "timeout": 10}},
        }
    }

Django 5.x picks psycopg 3 when it is importable and then only supports psycopg_pool. This backend
imports Django's postgresql backend with psycopg 3 hidden, so it always runs on psycopg2 (the driver
psycogreen makes cooperative). That choice is process-wide in Django: do not mix this ENGINE with
``django.db.backends.postgresql`` on psycopg 3 in one process.

Without ``OPTIONS["pool"]`` the backend behaves exactly like Django's psycopg2 backend.

Either way, choosing this ENGINE means "cooperative psycopg2": its first connection patches
psycogreen for the running framework if nobody called ``psycogreen.patch()`` (an explicit earlier
choice is kept).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Optional

from django.core.exceptions import ImproperlyConfigured

from psycogreen._patch import ensure_patched
from psycogreen.pool import ConnectionPool


def _import_psycopg2_backend() -> Any:
    """Import django.db.backends.postgresql.base with ``import psycopg`` failing, so Django's
    ``psycopg_any`` settles on psycopg2 (the decision is cached in that module, process-wide)."""
    any_mod = sys.modules.get("django.db.backends.postgresql.psycopg_any")
    if any_mod is not None:
        if getattr(any_mod, "is_psycopg3", False):
            raise ImproperlyConfigured(
                "psycogreen.contrib.django needs Django's postgresql backend on psycopg2, but it was "
                "already loaded on psycopg 3 in this process; use only the psycogreen ENGINE (or "
                "import psycogreen.contrib.django before any other PostgreSQL database is used)"
            )
        from django.db.backends.postgresql import base as loaded

        return loaded
    hidden = {name: sys.modules.get(name) for name in ("psycopg",)}
    sys.modules["psycopg"] = None  # type: ignore[assignment]
    try:
        from django.db.backends.postgresql import base as pg_base
    finally:
        for name, mod in hidden.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod
    return pg_base


_pg = _import_psycopg2_backend()

# Keep the names Django looks up on a backend's ``base`` module.
Database = _pg.Database
DatabaseClient = _pg.DatabaseClient
DatabaseCreation = _pg.DatabaseCreation
DatabaseFeatures = _pg.DatabaseFeatures
DatabaseIntrospection = _pg.DatabaseIntrospection
DatabaseOperations = _pg.DatabaseOperations
DatabaseSchemaEditor = _pg.DatabaseSchemaEditor

# (alias, pid) -> pool: one pool per alias per process; a forked worker builds its own.
_pools: dict[tuple[str, int], ConnectionPool] = {}


_BaseWrapper: Any = _pg.DatabaseWrapper


class DatabaseWrapper(_BaseWrapper):  # type: ignore[misc]
    display_name = "PostgreSQL (psycogreen pool)"

    settings_dict: dict[str, Any]
    connection: Any
    alias: str

    _pg_pool: Optional[ConnectionPool] = None

    @property
    def pool(self) -> Optional[ConnectionPool]:
        options = self.settings_dict["OPTIONS"].get("pool")
        if self.alias == _pg.NO_DB_ALIAS or not options:
            return None
        key = (self.alias, os.getpid())
        pool = _pools.get(key)
        if pool is None or pool.closed:
            if self.settings_dict.get("CONN_MAX_AGE", 0) != 0:
                raise ImproperlyConfigured(
                    f"database {self.alias!r}: OPTIONS['pool'] needs CONN_MAX_AGE = 0 (the pool keeps "
                    "the connections; Django must give them back at the end of each request)"
                )
            kwargs = dict(options) if isinstance(options, dict) else {}
            kwargs.setdefault("name", f"django-{self.alias}")
            pool = ConnectionPool(
                "",
                kwargs=self.get_connection_params(),
                configure=self._configure_pooled_connection,
                open=False,
                **kwargs,
            )
            pool = _pools.setdefault(key, pool)
        return pool

    def close_pool(self) -> None:
        pool = _pools.pop((self.alias, os.getpid()), None)
        if pool is not None:
            pool.close()

    def get_connection_params(self) -> dict[str, Any]:
        options = self.settings_dict["OPTIONS"]
        if "pool" not in options:
            return super().get_connection_params()  # type: ignore[no-any-return]
        saved = self.settings_dict
        self.settings_dict = {**saved, "OPTIONS": {k: v for k, v in options.items() if k != "pool"}}
        try:
            return super().get_connection_params()  # type: ignore[no-any-return]
        finally:
            self.settings_dict = saved

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        # Choosing this ENGINE means "cooperative psycopg2": patch for the running framework if
        # nobody did (a gevent worker without patch() would otherwise serialise every request).
        ensure_patched()
        pool = self.pool
        if pool is not None and pool.closed:
            pool.open()
        conn = super().get_new_connection(conn_params)
        self._pg_pool = pool
        return conn

    def _configure_pooled_connection(self, conn: Any) -> None:
        # Time zone and role once per new connection, committed at once so the pool gets it idle.
        conn.autocommit = True
        self._configure_connection(conn)

    def _close(self) -> None:
        if self.connection is None:
            return None
        pool = self._pg_pool
        if pool is None:
            return super()._close()  # type: ignore[no-any-return]
        with self.wrap_database_errors:
            conn, self.connection, self._pg_pool = self.connection, None, None
            pool.putconn(conn)
        return None
