"""A loopback SMTP server that falls silent in a chosen phase, and a listener whose accept queue is full.

For the cleanup tests: a probe that times out or is cancelled in any phase must leave no socket behind.
The server runs in threads with blocking sockets, so the test's event loop holds only the client side;
``open_connections`` drops to zero only when the client has closed its socket (the server reads EOF).

Phases: ``banner`` (never greets), ``ehlo`` (no reply to EHLO), ``starttls`` (no reply to STARTTLS),
``handshake`` (220 to STARTTLS, then reads the ClientHello and never answers it: the same silence stalls
an ssl handshake and a crafted-hello probe). ``StalledConnect`` makes connect() itself hang: a listener
with a backlog of 0 whose one queue place is taken, so Linux drops further SYNs.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType
from typing import Final

__all__ = ["PHASES", "StalledConnect", "StallingSmtpServer"]

PHASES: Final = ("banner", "ehlo", "starttls", "handshake")
_EHLO: Final = b"250-stall.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n"


class StallingSmtpServer:
    def __init__(self, address: str, stall_at: str) -> None:
        if stall_at not in PHASES:
            raise ValueError(f"unknown phase {stall_at!r}; one of {PHASES}")
        self.stall_at = stall_at
        self._listener = socket.create_server((address, 0))
        self.address, self.port = self._listener.getsockname()[:2]
        self.stalled = threading.Event()  # set when a connection reached its stall
        self._lock = threading.Lock()
        self._open = 0
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept_loop, daemon=True)

    @property
    def open_connections(self) -> int:
        with self._lock:
            return self._open

    def __enter__(self) -> StallingSmtpServer:
        self._accepting.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept() (Linux)
        self._listener.close()
        self._accepting.join(5)
        for thread in self._threads:
            thread.join(5)

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._open += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                self._converse(conn)
                self.stalled.set()
                while conn.recv(4096):  # silent until the client closes (EOF) or resets
                    pass
        except OSError:
            pass
        finally:
            with self._lock:
                self._open -= 1

    def _converse(self, conn: socket.socket) -> None:
        if self.stall_at == "banner":
            return
        conn.sendall(b"220 stall.test ESMTP\r\n")
        command = _read_line(conn)  # EHLO
        if self.stall_at == "ehlo" or not command:
            return
        conn.sendall(_EHLO)
        command = _read_line(conn)  # STARTTLS
        if self.stall_at == "starttls" or not command:
            return
        conn.sendall(b"220 2.0.0 Ready to start TLS\r\n")
        conn.recv(4096)  # the ClientHello, never answered


def _read_line(conn: socket.socket) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        chunk = conn.recv(1)
        if not chunk:
            return b""
        line += chunk
    return line


class StalledConnect:
    """A listener on which connect() hangs (until the client's timeout or cancellation)."""

    def __init__(self, address: str) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind((address, 0))
        self._listener.listen(0)
        self.address, self.port = self._listener.getsockname()[:2]
        self._filler = socket.create_connection((self.address, self.port), timeout=5)  # takes the one place

    def __enter__(self) -> StalledConnect:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._filler.close()
        self._listener.close()
