"""A dual-stack world scanned from inside a network namespace (``ip netns``), for address-family coverage.

Run as ``python -m worlds.families OUT_DIR [scan options]`` (or ``check DOMAIN [options]``, which
prints the one-domain check instead) *inside* a namespace the test prepared
(:func:`namespace`): it starts nsd and a mail server on 127.0.0.10 and, when the namespace has IPv6,
on [::1], publishes ``dual.family.test`` (one MX host with an A and an AAAA record) and
``v4only.family.test``, scans both through the real CLI into ``OUT_DIR`` and exits with the scan's code.

:func:`namespace` creates a namespace whose only interface is loopback. Loopback carries 127.0.0.0/8
and, with ``ipv6=True``, ::1; a default route per family via ``lo`` gives the scanner's route lookup
(``scanner.net.families``) something to find, the way a host's default route does. With
``ipv6=False`` IPv6 is disabled on every interface: no ::1, no route. Nothing leaves the namespace.
Needs root (CAP_NET_ADMIN), as CI has.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["DOMAINS", "ZONE", "main", "namespace"]

ZONE = "family.test"
DOMAINS = (f"dual.{ZONE}", f"v4only.{ZONE}")
_V4, _V6, _DNS = "127.0.0.10", "::1", "127.0.0.53"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@contextlib.contextmanager
def namespace(*, ipv6: bool) -> Iterator[str]:
    """A fresh network namespace with loopback up (and IPv6 on it only when ``ipv6``); removed on exit."""
    name = f"sts-fam-{secrets.token_hex(4)}"
    _ip("netns", "add", name)
    try:
        run = ["netns", "exec", name]
        if not ipv6:
            for scope in ("all", "default", "lo"):
                _ip(*run, "sysctl", "-q", "-w", f"net.ipv6.conf.{scope}.disable_ipv6=1")
        _ip(*run, "ip", "link", "set", "lo", "up")
        _ip(*run, "ip", "route", "add", "default", "dev", "lo")
        if ipv6:
            _ip(*run, "ip", "-6", "route", "add", "default", "dev", "lo")
        yield name
    finally:
        _ip("netns", "delete", name)


def _has_ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind((_V6, 0))
    except OSError:
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    from scanner.cli import main as scan_main
    from worlds.ca import TestCA
    from worlds.dns import NsdServer, Zone
    from worlds.smtp import SmtpFarm, SmtpServerSpec

    args = list(sys.argv[1:] if argv is None else argv)
    check = args[0] == "check"
    target, scan_args = (args[1], args[2:]) if check else (args[0], args[1:])
    with tempfile.TemporaryDirectory(prefix="family-world-") as tmp:
        workdir = Path(tmp)
        ca = TestCA(workdir / "ca")
        cert = ca.issue([f"mx.{ZONE}", f"mx4.{ZONE}"])
        addresses = [_V4, _V6] if _has_ipv6_loopback() else [_V4]
        specs = [SmtpServerSpec(a, 25, f"mx.{ZONE}", cert_file=cert.cert_file, key_file=cert.key_file)
                 for a in addresses]
        zone = (Zone(ZONE).a("mx", _V4).aaaa("mx", _V6).mx("dual", 10, "mx")
                .a("mx4", _V4).mx("v4only", 10, "mx4"))
        domains = workdir / "domains.txt"
        domains.write_text("\n".join(DOMAINS) + "\n", encoding="utf-8")
        with NsdServer(workdir / "nsd", [zone], address=_DNS, port=53) as nsd:
            farm = SmtpFarm(specs)
            farm.start_in_thread()
            common = ["--resolver", nsd.resolver, "--ca-file", str(ca.ca_file), "--ehlo-name", "scanner.test",
                      "--allow-private", "--per-ip-interval", "0", "--connect-timeout", "2", *scan_args]
            try:
                if check:
                    return scan_main(["check", target, *common])
                return scan_main(["scan", str(domains), "-o", target, "--no-progress", "--no-policy", *common])
            finally:
                farm.stop_in_thread()


if __name__ == "__main__":
    sys.exit(main())
