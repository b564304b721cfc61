"""Loopback address and port allocation for test worlds.

Parallel test runs (several pytest processes, a demo and a benchmark at the
same time) each need their own mail servers on port 25 and their own DNS
servers on port 53.  Linux routes the whole of 127.0.0.0/8 to the loopback
interface, so every run can take its own "/24-like" block ``127.A.B`` and bind
the privileged ports on ``127.A.B.1``, ``127.A.B.2``, ... without colliding.

The checks here bind and immediately release sockets, so they are advisory:
another process can still take the address between the check and the real
bind.  Picking the block at random out of 16,384 candidates keeps that race
improbable; callers still get a clear bind error if it ever happens.
"""

from __future__ import annotations

import errno
import random
import socket

# Blocks 127.64.x.x .. 127.127.x.x: far from 127.0.0.x (localhost,
# 127.0.0.53 systemd-resolved, 127.0.1.1 Debian hostname) so a test world
# never shadows a service the machine itself uses.
_FIRST_A = 64
_LAST_A = 127
_MAX_ATTEMPTS = 64

# (socket type, port) pairs that must be free on the block's .1 address:
# SMTP (RFC 5321 section 4.5.4 uses port 25) and DNS over UDP and TCP
# (RFC 1035 section 4.2, RFC 7766).
_REQUIRED_BINDS: tuple[tuple[socket.SocketKind, int], ...] = (
    (socket.SOCK_STREAM, 25),
    (socket.SOCK_STREAM, 53),
    (socket.SOCK_DGRAM, 53),
)


class NoFreeLoopbackBlockError(RuntimeError):
    """Raised when no candidate loopback block had the required ports free."""


def loopback_host(block: str, index: int) -> str:
    """Return the address ``index`` (1..254) inside a ``127.A.B`` block."""
    if not 1 <= index <= 254:
        raise ValueError(f"host index must be in 1..254, got {index}")
    return f"{block}.{index}"


def _can_bind(host: str, kind: socket.SocketKind, port: int) -> bool:
    """Try to bind ``host:port`` and release it; True if the bind worked.

    TCP sockets get SO_REUSEADDR, like every real server sets, so that a
    connection lingering in TIME_WAIT from an earlier run does not make a
    block look busy.  UDP sockets do not: on Linux SO_REUSEADDR on UDP lets
    two sockets share a port, which would hide a live DNS server.
    """
    with socket.socket(socket.AF_INET, kind) as sock:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
                return False
            # Anything else, notably EACCES (ports < 1024 need root or
            # CAP_NET_BIND_SERVICE), would fail for every candidate block
            # too, so it is not a "busy" answer: let it propagate.
            raise
    return True


def block_is_free(block: str) -> bool:
    """True if SMTP (TCP 25) and DNS (UDP+TCP 53) are free on ``block``.1."""
    host = loopback_host(block, 1)
    return all(_can_bind(host, kind, port) for kind, port in _REQUIRED_BINDS)


def pick_loopback_block(seed: int | None = None) -> str:
    """Return a random ``"127.A.B"`` prefix (A in 64..127) free for a world.

    The block's ``.1`` address has TCP port 25 and UDP/TCP port 53 free at
    the time of the check.  ``seed`` makes the sequence of candidates
    reproducible (the first free candidate of that sequence is returned).

    Raises PermissionError if privileged ports cannot be bound at all, and
    NoFreeLoopbackBlockError if every candidate tried was busy.
    """
    rng = random.Random(seed)
    tried: list[str] = []
    for _ in range(_MAX_ATTEMPTS):
        block = f"127.{rng.randint(_FIRST_A, _LAST_A)}.{rng.randint(0, 255)}"
        if block in tried:
            continue
        tried.append(block)
        if block_is_free(block):
            return block
    raise NoFreeLoopbackBlockError(
        f"no free loopback block after {len(tried)} candidates (last tried: {', '.join(tried[-5:])})"
    )


def free_port(host: str) -> int:
    """Return a port on ``host`` that is currently free for both TCP and UDP.

    DNS servers listen on the same port number for UDP and TCP (RFC 7766
    section 5 requires TCP support), so the port is checked for both.  The
    kernel picks the candidate from its ephemeral range.
    """
    for _ in range(_MAX_ATTEMPTS):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((host, 0))
            port: int = tcp.getsockname()[1]
        if _can_bind(host, socket.SOCK_DGRAM, port):
            return port
    raise RuntimeError(f"no port free for both TCP and UDP on {host}")
