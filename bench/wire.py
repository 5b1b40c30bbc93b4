"""A loopback TCP relay that counts the bytes each way: what a client really puts on the wire.

Works for HTTP/1.1 and gRPC (HTTP/2 cleartext) alike, since it only copies bytes. Used by
``bench_compression.py`` and ``tests/test_compression.py`` to measure request compression.

    with CountingProxy("127.0.0.1", 8000) as proxy:
        client = GliodeployClient(proxy.address, ...)
        proxy.reset(); client.predict_file(scan); print(proxy.sent)
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

_BUF = 1 << 16


class CountingProxy:
    """Relay ``127.0.0.1:<free port>`` -> ``host:port``; ``sent`` / ``received`` count client bytes."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, int(port))
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._lock = threading.Lock()
        self.sent = 0  # client -> server
        self.received = 0  # server -> client
        self._sockets: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="counting-proxy", daemon=True)

    @property
    def address(self) -> str:
        """``127.0.0.1:port`` to give the client instead of the server's address."""
        return f"127.0.0.1:{self.port}"

    def reset(self) -> None:
        """Zero both counters (call after the client's set-up requests, before the measured ones)."""
        with self._lock:
            self.sent = self.received = 0

    def counts(self) -> tuple[int, int]:
        """``(sent, received)`` so far."""
        with self._lock:
            return self.sent, self.received

    def __enter__(self) -> CountingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop accepting and close every relayed connection."""
        self._stop.set()
        with contextlib.suppress(OSError):
            self._server.close()
        for s in list(self._sockets):
            with contextlib.suppress(OSError):
                s.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._sockets.append(s)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while chunk := src.recv(_BUF):
                with self._lock:
                    if upstream:
                        self.sent += len(chunk)
                    else:
                        self.received += len(chunk)
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
