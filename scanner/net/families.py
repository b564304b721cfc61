"""Which address families this vantage point can reach, decided once at the start of a scan.

Many scanning hosts have no IPv6 route while many MX hosts publish AAAA records. Probing those
addresses would only collect "no route" failures and turn every dual-stack domain into "incomplete",
so addresses of an unreachable family are not probed (status ``skipped_family_unreachable``) and the
domain verdicts say which families they cover.

The test is a route lookup, not a packet: ``connect()`` on a UDP socket only asks the kernel for a
route and a source address (Linux ``ip4_datagram_connect``/``ip6_datagram_connect``); nothing is
sent. The targets are global unicast addresses, so a host whose only route is a default route (the
usual case) is judged by that route; ``--ipv4``/``--ipv6 on|off`` override the detection.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from scanner.status import Family

__all__ = ["FAMILY_SETTINGS", "Family", "Reachability", "detect_families", "family_of", "has_route"]

FAMILY_SETTINGS: Final = ("auto", "on", "off")
# Route-lookup targets: global unicast addresses (public resolvers' anycast addresses). Never sent to.
_ROUTE_TARGETS: Final = {socket.AF_INET: "8.8.8.8", socket.AF_INET6: "2001:4860:4860::8888"}
_DISCARD_PORT: Final = 9  # RFC 863; irrelevant, as no datagram is sent


def family_of(address: str) -> Family:
    return Family.IPV6 if ipaddress.ip_address(address).version == 6 else Family.IPV4


@dataclass(frozen=True, slots=True)
class Reachability:
    """The families this scan probes, and how that was decided (for the run record)."""

    ipv4: bool
    ipv6: bool
    detail: str

    def covers(self, address: str) -> bool:
        return self.ipv6 if family_of(address) is Family.IPV6 else self.ipv4

    @property
    def families(self) -> tuple[Family, ...]:
        return tuple(f for f, on in ((Family.IPV4, self.ipv4), (Family.IPV6, self.ipv6)) if on)


def has_route(family: socket.AddressFamily) -> tuple[bool, str]:
    """Does the kernel have a route to a global address of ``family``? A route lookup: no packet."""
    target = _ROUTE_TARGETS[family]
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((target, _DISCARD_PORT))
            source = sock.getsockname()[0]
    except OSError as exc:  # ENETUNREACH, EADDRNOTAVAIL, EAFNOSUPPORT (no IPv6 in the kernel), ...
        return False, f"no route to {target}: {exc.strerror or exc}"
    return True, f"route to {target} from {source}"


def _decide(name: str, setting: str, family: socket.AddressFamily,
            probe: Callable[[socket.AddressFamily], tuple[bool, str]]) -> tuple[bool, str]:
    if setting == "on":
        return True, f"{name}: on (forced)"
    if setting == "off":
        return False, f"{name}: off (forced)"
    reachable, why = probe(family)
    return reachable, f"{name}: {'reachable' if reachable else 'unreachable'} ({why})"


def detect_families(ipv4: str = "auto", ipv6: str = "auto",
                    probe: Callable[[socket.AddressFamily], tuple[bool, str]] = has_route,
                    lab: bool = False) -> Reachability:
    """Decide per family: forced on/off, or (``auto``) whether the kernel has a route for it.

    ``lab`` (``--allow-private``): when no family has a route to the Internet, the targets are lab
    addresses (loopback, a private network) that need none, so every family not forced off is tried
    and the kernel decides per address; if nothing answers, the probe failure window stops the scan
    (scanner.health). A public scan on such a host is refused before it starts (scanner.preflight).
    """
    v4, why4 = _decide("IPv4", ipv4, socket.AF_INET, probe)
    v6, why6 = _decide("IPv6", ipv6, socket.AF_INET6, probe)
    if lab and not (v4 or v6):
        return Reachability(ipv4 != "off", ipv6 != "off",
                            f"{why4}; {why6}; lab scan (--allow-private): every address is tried")
    return Reachability(v4, v6, f"{why4}; {why6}")
