"""A world whose mail hosts this host cannot reach: for the "our side is broken" probe window.

Run inside a fresh network namespace (``unshare -rn``) in which only loopback is up: connecting to any
address outside 127.0.0.0/8 then fails at once with ENETUNREACH, before a packet exists, so nothing
leaves the namespace. A dnslib server on loopback answers for ``DOMAINS`` domains whose MX hosts
resolve to 10.9.0.0/16; the scanner's own command runs against it and its exit code is returned::

    unshare -rn python -m worlds.no_route WORKDIR DOMAINS -- SCAN-OPTIONS...
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from worlds.dns import FaultyDnsServer, Record
from worlds.ports import free_port

ZONE = "noroute.test"


def behaviours(domains: int) -> dict[str, list[Record]]:
    """Domain i: one MX host with one address in 10.9.0.0/16 (private: scans need --allow-private)."""
    out: dict[str, list[Record]] = {}
    for i in range(domains):
        out[f"d{i}.{ZONE}"] = [Record("@", "MX", f"10 mx{i}.{ZONE}.")]
        out[f"mx{i}.{ZONE}"] = [Record("@", "A", f"10.9.{i // 250}.{i % 250 + 1}")]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    workdir, domains, rest = Path(args[0]), int(args[1]), args[args.index("--") + 1:]
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    source = workdir / "domains.txt"
    source.write_text("".join(f"d{i}.{ZONE}\n" for i in range(domains)), encoding="ascii")
    with FaultyDnsServer(behaviours(domains), address="127.0.0.1", port=free_port("127.0.0.1")) as dns:
        scan = [sys.executable, "-m", "scanner", "scan", str(source), "--resolver", dns.resolver, *rest]
        return subprocess.run(scan, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
