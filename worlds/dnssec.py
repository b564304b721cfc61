"""DNSSEC for test worlds: zones signed with ldns (``ldns-signzone``) behind a validating unbound.

* :func:`sign_zone` writes a :class:`~worlds.dns.Zone`, makes a KSK and a ZSK (ECDSA P-256,
  algorithm 13, RFC 6605) with ``ldns-keygen`` and signs it with ``ldns-signzone`` (NSEC). It
  returns the signed zone file (for :class:`~worlds.dns.NsdServer`) and the KSK's DNSKEY record,
  the trust anchor a validator needs. ``tamper`` replaces record data *after* signing, so those
  RRsets carry signatures that no longer verify: a validator calls them bogus (RFC 4035 §5.5).
* :class:`UnboundServer` runs unbound (Debian package ``unbound``) as a validating recursive
  resolver on a loopback address, with a stub zone per authoritative zone and a trust anchor per
  signed zone. Zones without an anchor (and there is no root anchor) validate as insecure: their
  answers come back with AD=0, as an unsigned zone's do on the Internet.

Nothing here sends a packet beyond loopback: unbound has no root hints it could use (every name
the tests ask for lies in a stub zone, and ``do-not-query-localhost: no`` lets it reach nsd).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dnslib import RCODE

from worlds.dns import ZoneFile, _stop_process_group, absolute, udp_query
from worlds.procs import ServerLifecycle

__all__ = ["SignedZone", "UnboundServer", "UnboundStartError", "sign_zone"]

_ALGORITHM = "ECDSAP256SHA256"
_LOG_TAIL_LINES = 40


@dataclass(frozen=True)
class SignedZone:
    origin: str
    zone_file: ZoneFile  # the signed zone, ready for NsdServer
    trust_anchor: str  # the KSK's DNSKEY record in presentation form


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/sbin")
    if found is None:
        raise FileNotFoundError(f"{name} not found (Debian package ldnsutils / unbound; see scripts/setup.sh)")
    return found


def _keygen(workdir: Path, origin: str, *, ksk: bool) -> Path:
    args = [_tool("ldns-keygen"), "-a", _ALGORITHM, *(["-k"] if ksk else []), origin.rstrip(".")]
    base = subprocess.run(args, cwd=workdir, check=True, capture_output=True, text=True).stdout.strip()
    return workdir / base


def sign_zone(zone_path: Path, origin: str, workdir: Path, tamper: Mapping[str, str] | None = None) -> SignedZone:
    """Sign the zone file at ``zone_path``; ``tamper`` maps lower-case hex data to replace → new data.

    Tampering happens in the signed text, so the RRSIG over the changed RRset stays the one made for
    the original data and fails to verify.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    ksk = _keygen(workdir, origin, ksk=True)
    zsk = _keygen(workdir, origin, ksk=False)
    subprocess.run([_tool("ldns-signzone"), "-f", str(workdir / "signed.zone"), str(zone_path), str(ksk), str(zsk)],
                   cwd=workdir, check=True, capture_output=True, text=True)
    signed = workdir / "signed.zone"
    text = signed.read_text(encoding="ascii")
    for old, new in (tamper or {}).items():
        pattern = re.compile(re.escape(old), re.IGNORECASE)
        if not pattern.search(text):
            raise ValueError(f"nothing to tamper with: {old!r} is not in the signed zone")
        text = pattern.sub(new, text)
    signed.write_text(text, encoding="ascii")
    anchor = " ".join(Path(f"{ksk}.key").read_text(encoding="ascii").split())
    return SignedZone(absolute(origin), ZoneFile(absolute(origin), signed), anchor)


class UnboundStartError(RuntimeError):
    pass


class UnboundServer(ServerLifecycle):
    """A validating unbound on ``address:port`` that resolves ``stubs`` (zone → nsd "addr@port")."""

    def __init__(self, workdir: Path, address: str, port: int, stubs: Mapping[str, str],
                 trust_anchors: Sequence[str] = (), *, start_timeout: float = 30.0) -> None:
        self.workdir = workdir
        self.address = address
        self.port = port
        self._stubs = dict(stubs)
        self._anchors = list(trust_anchors)
        self._start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def resolver(self) -> str:
        return f"{self.address}:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.workdir / "unbound.log"

    def config_text(self) -> str:
        wd = self.workdir.resolve()
        lines = [
            "server:",
            f"    interface: {self.address}",
            f"    port: {self.port}",
            "    do-ip6: no",
            "    do-daemonize: no",
            '    username: ""',
            '    chroot: ""',
            f'    directory: "{wd}"',
            f'    pidfile: "{wd / "unbound.pid"}"',
            "    use-syslog: no",
            f'    logfile: "{self.log_file.resolve()}"',
            "    verbosity: 1",
            "    val-log-level: 2",
            "    num-threads: 1",
            "    so-reuseport: no",
            "    access-control: 127.0.0.0/8 allow",
            # nsd listens on loopback, which unbound refuses to query unless told otherwise.
            "    do-not-query-localhost: no",
            "    module-config: \"validator iterator\"",
            "    qname-minimisation: no",
            "    minimal-responses: no",
            # Extended DNS Errors (RFC 8914) name the validation failure in a SERVFAIL.
            "    ede: yes",
            # No root trust anchor and no root hints are used: every name asked lies in a stub zone.
            "    harden-referral-path: no",
        ]
        # unbound serves RFC 6761 names such as "test." itself unless told not to.
        tops = dict.fromkeys(absolute(origin).rstrip(".").rsplit(".", 1)[-1] + "." for origin in self._stubs)
        lines += [f'    local-zone: "{top}" nodefault' for top in tops]
        lines += [f'    trust-anchor: "{anchor}"' for anchor in self._anchors]
        for origin, target in self._stubs.items():
            lines += ["stub-zone:", f'    name: "{absolute(origin)}"', f"    stub-addr: {target}"]
        lines += ["remote-control:", "    control-enable: no"]
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        if self._proc is not None:
            raise RuntimeError("UnboundServer already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "unbound.conf"
        conf.write_text(self.config_text(), encoding="utf-8")
        check = subprocess.run([_tool("unbound-checkconf"), str(conf)], check=False, capture_output=True, text=True)
        if check.returncode != 0:
            raise UnboundStartError(f"unbound-checkconf: {check.stdout}{check.stderr}")
        self._proc = subprocess.Popen([_tool("unbound"), "-d", "-c", str(conf)], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_ready(time.monotonic() + self._start_timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, deadline: float) -> None:
        origin = next(iter(self._stubs), ".")
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise UnboundStartError(f"unbound exited with {self._proc.returncode}\n{self._log_tail()}")
            if time.monotonic() > deadline:
                raise UnboundStartError(f"unbound did not answer on {self.resolver}\n{self._log_tail()}")
            with contextlib.suppress(ConnectionRefusedError, OSError):
                reply = udp_query(self.address, self.port, absolute(origin), "SOA", timeout=0.25)
                if reply is not None and RCODE[reply.header.rcode] in ("NOERROR", "SERVFAIL", "NXDOMAIN"):
                    return
            time.sleep(0.05)

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:])
        except FileNotFoundError:
            return "(no unbound log)"

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            _stop_process_group(proc, grace=10.0)
