"""Address policy: which addresses and names the scanner may touch.

By default only globally routable unicast addresses are probed (an MX can point anywhere, including
at 127.0.0.1 or a customer's RFC 1918 network). ``allow_private`` is the explicit opt-in for tests and
labs. An opt-out list (CIDRs and domain suffixes) is honoured before any packet is sent.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from scanner.names import host_key
from scanner.status import FailureClass

__all__ = ["AddressPolicy", "ExcludeList", "ExcludeListError", "IpAddress", "embedded_ipv4"]

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class ExcludeListError(ValueError):
    """The opt-out file cannot be read or has a line that is neither a CIDR nor a domain."""


def _to_ranges(networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> list[tuple[int, int]]:
    collapsed = ipaddress.collapse_addresses(networks)  # type: ignore[type-var]
    return [(int(n.network_address), int(n.broadcast_address)) for n in collapsed]


@dataclass(frozen=True, slots=True)
class ExcludeList:
    """Opt-out entries: address ranges (sorted, merged intervals) and domain suffixes."""

    v4: tuple[tuple[int, int], ...] = ()
    v6: tuple[tuple[int, int], ...] = ()
    suffixes: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_lines(cls, lines: Iterable[str]) -> ExcludeList:
        v4: list[ipaddress.IPv4Network] = []
        v6: list[ipaddress.IPv6Network] = []
        suffixes: set[str] = set()
        for line_no, line in enumerate(lines, start=1):
            entry = line.split("#", 1)[0].strip().lower()
            if not entry:
                continue
            try:
                net = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                if not all(part and part.replace("-", "").isalnum() for part in entry.strip(".").split(".")):
                    raise ExcludeListError(f"line {line_no}: {entry!r} is neither a CIDR nor a domain") from None
                suffixes.add(entry.strip("."))
                continue
            (v4 if net.version == 4 else v6).append(net)  # type: ignore[arg-type]
        return cls(tuple(_to_ranges(v4)), tuple(_to_ranges(v6)), frozenset(suffixes))

    @classmethod
    def from_file(cls, path: Path) -> ExcludeList:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ExcludeListError(f"cannot read exclude file {path}: {exc}") from exc
        return cls.from_lines(text.splitlines())

    def excludes_address(self, ip: IpAddress) -> bool:
        ranges = self.v4 if ip.version == 4 else self.v6
        value = int(ip)
        # Ranges are disjoint and sorted: the only candidate is the last one starting at or before ip.
        index = bisect.bisect_right(ranges, (value, 1 << 129)) - 1
        return index >= 0 and ranges[index][0] <= value <= ranges[index][1]

    def excludes_name(self, name: str) -> bool:
        """True for a listed domain and every name below it (``example.com`` covers ``mx.example.com``)."""
        labels = host_key(name).split(".")
        return any(".".join(labels[i:]) in self.suffixes for i in range(len(labels)))

    def first_excluded(self, names: Iterable[str]) -> str | None:
        """The first excluded name among ``names`` (a host and the CNAME targets it led to), if any."""
        if not self.suffixes:
            return None
        return next((name for name in names if self.excludes_name(name)), None)


# IPv6 forms that carry an IPv4 address in their low 32 bits: NAT64's well-known prefix (RFC 6052
# §2.1), SIIT's IPv4-translated addresses (RFC 2765 §2.1) and the deprecated IPv4-compatible
# addresses (RFC 4291 §2.5.5.1). A packet to one of them can reach the IPv4 address inside
# (through a NAT64 or a stack that still honours the old forms), so that address is judged.
_LOW32_EMBEDDING = tuple(ipaddress.IPv6Network(n) for n in ("64:ff9b::/96", "::ffff:0:0:0/96", "::/96"))
# RFC 8215: the local-use NAT64 prefix. Where the IPv4 address sits depends on a prefix length only the
# local operator knows (RFC 6052 §2.2), and IANA lists the block as not globally reachable.
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, NAT64, SIIT, IPv4-compatible, 6to4), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:  # RFC 3056 §2: 2002:V4ADDR::/48
        return ip.sixtofour
    if int(ip) >> 32 != 0 or int(ip) > 1:  # ::/96 holds :: and ::1, which are not IPv4-compatible
        for network in _LOW32_EMBEDDING:
            if ip in network:
                return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    allow_private: bool = False
    exclude: ExcludeList = field(default_factory=ExcludeList)

    def refusal(self, ip: IpAddress) -> FailureClass | None:
        """Why ``ip`` must not be probed, or None if it may be."""
        if self.exclude.excludes_address(ip):
            return FailureClass.EXCLUDED
        # Never, even with allow_private: these cannot be a mail server's unicast address.
        if ip.is_multicast or ip.is_unspecified:
            return FailureClass.RESERVED_ADDRESS
        if isinstance(ip, ipaddress.IPv6Address):
            inner = embedded_ipv4(ip)
            if inner is not None and (reason := self.refusal(inner)) is not None:
                return reason
            if ip in _LOCAL_NAT64 and not self.allow_private:
                return FailureClass.RESERVED_ADDRESS
        # is_global is False for loopback, RFC 1918, link-local, CGNAT (100.64/10), documentation,
        # benchmarking (198.18/15) and the other IANA special-purpose blocks.
        if not self.allow_private and not ip.is_global:
            return FailureClass.RESERVED_ADDRESS
        return None
