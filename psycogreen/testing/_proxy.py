"""A loopback TCP proxy that injects real network faults.

It forwards bytes between clients and an upstream server with plain threads (so it keeps working in a
test process that is not monkey-patched, while the code under test runs elsewhere). On command it:

- ``stall()``: stops forwarding in both directions but keeps the sockets open (a peer that vanished
  behind a dead network: the client sees silence, no error);
- ``drop()``: closes every proxied connection cleanly (FIN);
- ``reset()``: closes every proxied connection with RST;
- ``resume()``: forwards again (new connections always work unless ``refuse_new``/``silent_new``).

``silent_new = True`` makes the proxy accept new connections and never answer: an unreachable server
without leaving loopback.
"""

from __future__ import annotations

import socket
import struct
import threading


class FaultProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port: int = self._listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._closed = False
        self.silent_new = False
        self._silent: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept_loop, daemon=True, name="fault-proxy")
        self._thread.start()

    def dsn(self, base_dsn: str = "user=postgres dbname=postgres") -> str:
        return f"host=127.0.0.1 port={self.port} {base_dsn}"

    # -- faults -------------------------------------------------------------------------------
    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def drop(self) -> None:
        self._close_all(rst=False)

    def reset(self) -> None:
        self._close_all(rst=True)

    def close(self) -> None:
        self._closed = True
        self._flowing.set()
        try:
            self._listener.close()
        except OSError:
            pass
        self._close_all(rst=False)
        for s in self._silent:
            s.close()

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    # -- internals ----------------------------------------------------------------------------
    def _close_all(self, rst: bool) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            for s in (a, b):
                try:
                    if rst:
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    s.close()
                except OSError:
                    pass

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.silent_new:
                self._silent.append(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=10)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, server))
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                self._flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
