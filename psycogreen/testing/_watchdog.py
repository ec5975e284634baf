"""Stops a throwaway PostgreSQL server when the process that started it dies, however it dies.

Run as a script by :class:`psycogreen.testing.PostgresServer` (``python _watchdog.py FD DATADIR
BASE``), in a session of its own so a signal to the owner's process group does not reach it. It
holds the read end of a pipe whose only write end the owner keeps: the read returns when the owner
exits, also by SIGKILL or a crash, where no ``finally`` or ``atexit`` runs. Then the postmaster
gets SIGQUIT (immediate shutdown) and the cluster's directory is removed. A server already stopped
by the owner leaves nothing to do. Without this a killed test run leaves one server per run
behind, each holding memory and a port.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time


def _postmaster(datadir: str) -> int:
    try:
        with open(os.path.join(datadir, "postmaster.pid")) as f:
            return int(f.readline().strip() or 0)
    except (OSError, ValueError):
        return 0


def _stop(datadir: str) -> None:
    pid = _postmaster(datadir)
    if pid <= 0:
        return
    try:
        os.kill(pid, signal.SIGQUIT)
    except OSError:
        return
    end = time.monotonic() + 30
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.1)


def main(argv: list[str]) -> None:
    fd, datadir, base = int(argv[1]), argv[2], argv[3]
    while True:
        try:
            if not os.read(fd, 1):
                break  # EOF: the owner is gone
        except InterruptedError:
            continue
        except OSError:
            break
    _stop(datadir)
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv)
