"""The waiter contract: wait_fd returns the events that are ready, 0 on timeout (READ|WRITE too)."""

from __future__ import annotations

import socket

import kit

from psycogreen import _wait

w = _wait.current_waiter()


def clogged() -> tuple[socket.socket, socket.socket]:
    """A socket pair whose first end cannot be written to (send buffer full)."""
    a, b = socket.socketpair()
    a.setblocking(False)
    try:
        while True:
            a.send(b"x" * 65536)
    except BlockingIOError:
        pass
    return a, b


out = {}
a, b = socket.socketpair()
out["writable"] = w.wait_fd(a.fileno(), 3, 1.0)
out["writable_no_timeout"] = w.wait_fd(a.fileno(), 3)
c, d = clogged()
d.send(b"y")
out["readable"] = w.wait_fd(c.fileno(), 3, 1.0)
e, f = clogged()
out["timeout"] = w.wait_fd(e.fileno(), 3, 0.1)
out["read_timeout"] = w.wait_fd(a.fileno(), 1, 0.1)
out["write"] = w.wait_fd(a.fileno(), 2, 1.0)
kit.emit(waiter=w.name, **out)
