"""A scripted ``ByteStream``: plays a server's bytes from a script and records what the client wrote
(model: httpcore's ``_backends/mock.py``). Replay tests drive the real SMTP driver and dialogue over it,
with no socket, so every phase's timeout, failure and cancellation can be staged exactly.

Script items, consumed one per ``read``: ``bytes`` (returned as they are: a reply may be split anywhere),
a ``StreamError`` (raised, as the asyncio adapter would after classifying a socket error), or ``STALL``
(the server says nothing: the read waits for its timeout and then raises TIMEOUT, like the adapter; with
no timeout it waits until cancelled). An exhausted script reads as EOF (``b""``).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable
from enum import Enum

from scanner.net.stream import ByteStream, StreamError, StreamOpener
from scanner.records import TlsInfo
from scanner.status import FailureClass

__all__ = ["STALL", "ScriptedStream", "Stall", "scripted_opener"]


class Stall(Enum):
    STALL = "stall"


STALL = Stall.STALL

DEFAULT_TLS = TlsInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384", 256, (b"leaf-der",), True)


class ScriptedStream:
    """One scripted connection. ``written`` holds every write; ``stalled`` is set while a read stalls."""

    def __init__(
        self,
        script: Iterable[bytes | StreamError | Stall],
        *,
        buffered: bytes = b"",
        tls: TlsInfo | StreamError | Stall = DEFAULT_TLS,
        after_tls: Iterable[bytes | StreamError | Stall] = (),
    ) -> None:
        self._script = list(script)
        self._buffered = buffered
        self._tls = tls
        self._after_tls = list(after_tls)
        self.written: list[bytes] = []
        self.tls_server_name: str | None = None
        self.tls_started = False
        self.closed = False
        self.stalled = asyncio.Event()

    @property
    def commands(self) -> list[bytes]:
        """Every line written, without its CRLF (the SMTP commands; a crafted ClientHello shows as bytes)."""
        return [line for chunk in self.written for line in chunk.split(b"\r\n") if line]

    async def _stall(self, timeout: float | None) -> None:
        self.stalled.set()
        if timeout is None:
            await asyncio.Event().wait()  # until cancelled
        await asyncio.sleep(timeout or 0)
        raise StreamError(FailureClass.TIMEOUT, "timed out")

    async def read(self, max_bytes: int, timeout: float | None) -> bytes:
        assert not self.closed, "read after close"
        if not self._script:
            return b""
        item = self._script.pop(0)
        if item is STALL:
            await self._stall(timeout)
        if isinstance(item, StreamError):
            raise item
        assert isinstance(item, bytes)
        if len(item) > max_bytes:
            self._script.insert(0, item[max_bytes:])
        return item[:max_bytes]

    async def write(self, data: bytes, timeout: float | None) -> None:
        assert not self.closed, "write after close"
        self.written.append(data)

    async def start_tls(self, context: ssl.SSLContext, server_name: str | None, timeout: float) -> TlsInfo:
        self.tls_started = True
        self.tls_server_name = server_name
        if self._tls is STALL:
            await self._stall(timeout)
        if isinstance(self._tls, StreamError):
            raise self._tls
        assert isinstance(self._tls, TlsInfo)
        self._script = self._after_tls
        return self._tls

    def take_buffered(self) -> bytes:
        taken, self._buffered = self._buffered, b""
        return taken

    async def close(self) -> None:
        self.closed = True


def scripted_opener(*streams: ScriptedStream | StreamError | Stall) -> tuple[StreamOpener, list[str]]:
    """An opener handing out ``streams`` in order (a ``StreamError`` fails that connect; ``STALL`` waits
    for the connect timeout); also returns the list of addresses it was asked to connect to."""
    queue = list(streams)
    connects: list[str] = []

    async def open_stream(address: str, port: int, timeout: float) -> ByteStream:
        connects.append(address)
        item = queue.pop(0)
        if item is STALL:
            await asyncio.sleep(timeout)
            raise StreamError(FailureClass.TIMEOUT, "timed out")
        if isinstance(item, StreamError):
            raise item
        assert isinstance(item, ScriptedStream)
        return item

    return open_stream, connects
