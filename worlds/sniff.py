"""Count TCP connection attempts (SYNs) on the loopback interface, from outside the code under test.

A test that must bound how many connections something opens cannot trust that code's own counters,
and a closed port leaves nothing listening to count. A packet socket (``AF_PACKET``, needs root or
CAP_NET_RAW) on ``lo`` sees every SYN, answered or not. IPv4 only: the worlds use 127.0.0.0/8.
"""

from __future__ import annotations

import ipaddress
import select
import socket
import struct
import threading
from collections import Counter
from types import TracebackType
from typing import Self

__all__ = ["SynCounter"]

_ETH_P_ALL = 0x0003
_ETH_HEADER = 14
_IPPROTO_TCP = 6
_TCP_SYN, _TCP_ACK = 0x02, 0x10


class SynCounter:
    """``with SynCounter("127.77.5", 443) as syns:`` ... ``syns.counts`` maps address -> SYNs seen.

    Only SYNs without ACK (a client's first segment) to ``port`` on an address starting with
    ``prefix`` are counted. Raises PermissionError where packet sockets are not allowed.
    """

    def __init__(self, prefix: str, port: int) -> None:
        self._prefix = prefix.rstrip(".") + "."
        self._port = port
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
        self._sock.bind(("lo", 0))
        self._thread = threading.Thread(target=self._run, name="syn-counter", daemon=True)

    @property
    def counts(self) -> Counter[str]:
        with self._lock:
            return Counter(self._counts)

    def _run(self) -> None:
        # After the stop request, keep reading until the socket stays quiet: a SYN sent just before the
        # ``with`` block ended may still wait in the socket's queue, and must be counted.
        while True:
            ready, _, _ = select.select([self._sock], [], [], 0.2 if self._stop.is_set() else 0.05)
            if not ready:
                if self._stop.is_set():
                    return
                continue
            frame, meta = self._sock.recvfrom(65535)
            if meta[2] == socket.PACKET_OUTGOING:  # lo shows each packet twice: count the incoming copy
                continue
            self._count(frame)

    def _count(self, frame: bytes) -> None:
        ip = frame[_ETH_HEADER:]
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != _IPPROTO_TCP:
            return
        tcp = ip[(ip[0] & 0x0F) * 4:]
        if len(tcp) < 14:
            return
        (dst_port,) = struct.unpack("!H", tcp[2:4])
        flags = tcp[13]
        destination = str(ipaddress.IPv4Address(ip[16:20]))
        first_segment = flags & _TCP_SYN and not flags & _TCP_ACK
        if dst_port == self._port and first_segment and destination.startswith(self._prefix):
            with self._lock:
                self._counts[destination] += 1

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()
