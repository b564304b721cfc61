"""The standard loopback world: a real DNS server (nsd) and mail servers with different TLS postures.

Used by the integration tests and by the demo. Every domain carries the outcome it is built to
produce (``Expected``), so tests compare the scanner's rows with the world's design, not with
numbers copied from a previous run.

Layout inside one ``127.A.B`` block (``.N`` = host index):
    .53 nsd (DNS)        .10 good (trusted, TLS 1.2/1.3)    .11 no STARTTLS      .12 self-signed
    .13 expired cert     .14 wrong name                      .15 garbage after 220
    .16 slow banner      .17 554 banner                      .18 421 banner       .19 refused (nothing listens)
    .20 good #2 (lower-preference MX)                        .21 multi-line banner, TLS 1.2 only
    .30 Postfix, STARTTLS, trusted cert   .31 Postfix without TLS   .32 Postfix limited to TLS <= 1.2
    .40 nginx serving MTA-STS policies (enforce, testing, enforce with a failing MX or uncovered MX)
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from worlds.ca import CertFiles, TestCA, self_signed
from worlds.dns import NsdServer, Zone
from worlds.nginx import NginxServer, Site
from worlds.ports import loopback_host
from worlds.postfix import PostfixInstance
from worlds.smtp import Behaviour, SmtpFarm, SmtpServerSpec

__all__ = ["EPOCH_CHANGES", "SLOW_BANNER_DELAY", "Expected", "ScanWorld", "World", "standard_world"]

ZONE = "world.test"
BROKEN_ZONE = "broken.test"  # configured in nsd with an invalid zone file: answers SERVFAIL
SLOW_BANNER_DELAY = 6.0  # seconds; scans of this world use a shorter banner timeout


@dataclass(frozen=True, slots=True)
class Expected:
    """What the scanner should conclude for a domain of this world."""

    domain_status: str
    starttls: str  # domain verdict
    probe_statuses: tuple[str, ...] = ()  # of its addresses, in MX order
    mx_hosts: tuple[str, ...] = ()
    mx_source: str = "mx"
    cert_trust: str | None = None  # of the first address
    name_match: str | None = None  # of the first address, for the first MX host


@dataclass(frozen=True, slots=True)
class ScanWorld:
    """What a scan of a small purpose-built world needs: its resolver, trust store and input file."""

    resolver: str
    ca_file: Path
    domains_file: Path


@dataclass(slots=True)
class World:
    block: str
    resolver: str
    ca_file: Path
    domains_file: Path
    expected: dict[str, Expected] = field(default_factory=dict)
    farm: SmtpFarm | None = None
    _set_epoch: Callable[[int], None] | None = None
    epoch: int = 0

    def host(self, index: int) -> str:
        return loopback_host(self.block, index)

    def set_epoch(self, epoch: int) -> None:
        """Move the world to ``epoch`` (see ``EPOCH_CHANGES``): DNS and policy hosts are rewritten and
        restarted; ``expected`` keeps describing epoch 0."""
        if self._set_epoch is None:
            raise RuntimeError("this world cannot change")
        self._set_epoch(epoch)
        self.epoch = epoch


# name → (host index, behaviour, certificate kind)
_SERVERS: dict[str, tuple[int, Behaviour, str]] = {
    "mx-good": (10, Behaviour.NORMAL, "trusted"),
    "mx-notls": (11, Behaviour.NO_STARTTLS, "none"),
    "mx-selfsigned": (12, Behaviour.NORMAL, "self_signed"),
    "mx-expired": (13, Behaviour.NORMAL, "expired"),
    "mx-wrongname": (14, Behaviour.NORMAL, "wrong_name"),
    "mx-tlsfail": (15, Behaviour.TLS_FAIL_AFTER_220, "none"),
    "mx-slow": (16, Behaviour.SLOW_BANNER, "trusted"),
    "mx-554": (17, Behaviour.BANNER_554, "none"),
    "mx-421": (18, Behaviour.BANNER_421, "none"),
    "mx-good2": (20, Behaviour.NORMAL, "trusted"),
    "mx-multiline": (21, Behaviour.MULTILINE_BANNER, "trusted"),
}
_REFUSED = ("mx-refused", 19)
# MTA-STS policies served by nginx at .40 (RFC 8461 §3.3 policy text)
_NGINX_INDEX = 40
_POLICIES = {
    "good": "version: STSv1\nmode: enforce\nmx: mx-good.world.test\nmax_age: 86400\n",
    "ordered": "version: STSv1\nmode: testing\nmx: *.world.test\nmax_age: 86400\n",
    # enforce, but the MX presents a certificate for another name: an enforcing sender would refuse it
    "wrongname": "version: STSv1\nmode: enforce\nmx: mx-wrongname.world.test\nmax_age: 86400\n",
    # enforce with a pattern that covers neither MX
    "mixed": "version: STSv1\nmode: enforce\nmx: mail.elsewhere.test\nmax_age: 86400\n",
}
# What changes in later epochs of the world (for series of scans), cumulatively:
#   1: the server at mx-multiline loses STARTTLS (its name now points at the no-STARTTLS server's address)
#   2: shared2's MX moves to mx-expired (its certificate has expired), and the "ordered" domain's MTA-STS
#      policy moves from testing to enforce (new policy text and a new TXT id, RFC 8461 §3.1)
EPOCH_CHANGES = {1: ("multiline.world.test: mx-multiline loses STARTTLS",),
                 2: ("shared2.world.test: certificate expired", "ordered.world.test: MTA-STS policy to enforce")}


def _policies(epoch: int) -> dict[str, str]:
    policies = dict(_POLICIES)
    if epoch >= 2:
        policies["ordered"] = policies["ordered"].replace("mode: testing", "mode: enforce")
    return policies


# Real Postfix instances: name → (host index, STARTTLS on, smtpd_tls_protocols)
_POSTFIX: dict[str, tuple[int, bool, str | None]] = {
    "mx-postfix": (30, True, None),
    "mx-postfix-notls": (31, False, None),
    "mx-postfix-tls12": (32, True, "<=TLSv1.2"),
}


def _fqdn(label: str) -> str:
    return f"{label}.{ZONE}"


def _abs(name: str) -> str:
    """Zone-file spelling: an absolute name ends with a dot (RFC 1035 §5.1)."""
    return name if name.endswith(".") else name + "."


def _single(label: str, status: str, verdict: str, trust: str | None = None, match: str | None = None) -> Expected:
    return Expected("ok", verdict, (status,), (_fqdn(label),), "mx", trust, match)


def _expectations() -> dict[str, Expected]:
    d = _fqdn
    return {
        d("good"): _single("mx-good", "starttls_ok", "all", "trusted", "san"),
        d("notls"): _single("mx-notls", "no_starttls", "none"),
        d("selfsigned"): _single("mx-selfsigned", "starttls_ok", "all", "self_signed", "san"),
        d("expired"): _single("mx-expired", "starttls_ok", "all", "expired", "san"),
        d("wrongname"): _single("mx-wrongname", "starttls_ok", "all", "trusted", "mismatch"),
        d("tlsfail"): _single("mx-tlsfail", "tls_handshake_failed", "none"),
        d("slow"): _single("mx-slow", "timeout", "incomplete"),
        d("banner554"): _single("mx-554", "smtp_rejected", "incomplete"),
        d("banner421"): _single("mx-421", "throttled", "incomplete"),
        d("refused"): _single("mx-refused", "unreachable", "incomplete"),
        d("multiline"): _single("mx-multiline", "starttls_ok", "all", "trusted", "san"),
        d("shared1"): _single("mx-good", "starttls_ok", "all", "trusted", "san"),
        d("shared2"): _single("mx-good", "starttls_ok", "all", "trusted", "san"),
        d("ordered"): Expected("ok", "some", ("starttls_ok", "no_starttls"),
                               (d("mx-good2"), d("mx-notls")), "mx", "trusted", "san"),
        d("mixed"): Expected("ok", "some", ("starttls_ok", "tls_handshake_failed"),
                             (d("mx-good"), d("mx-tlsfail")), "mx", "trusted", "san"),
        d("implicit"): Expected("ok", "all", ("starttls_ok",), (d("implicit"),), "implicit", "trusted", "san"),
        d("nullmx"): Expected("null_mx", "not_applicable", (), (), "null_mx"),
        d("nothing"): Expected("dns_no_mail_host", "not_applicable", (), (d("nothing"),), "implicit"),
        d("missing"): Expected("dns_nxdomain", "not_applicable", (), (), "none"),
        d("ghostmx"): Expected("mx_no_address", "not_applicable", (), (d("ghost"),), "mx"),
        d("literalmx"): Expected("mx_no_address", "not_applicable", (), ("192.0.2.25",), "mx"),
        f"victim.{BROKEN_ZONE}": Expected("dns_servfail", "not_applicable", (), (), "none"),
        d("postfix"): _single("mx-postfix", "starttls_ok", "all", "trusted", "san"),
        d("postfix-notls"): _single("mx-postfix-notls", "no_starttls", "none"),
        d("postfix-tls12"): _single("mx-postfix-tls12", "starttls_ok", "all", "trusted", "san"),
        # IPv6 is probed too; nothing listens on [::1]:25, so that address is untested, never "no TLS".
        d("dualstack"): Expected("ok", "incomplete", ("starttls_ok", "unreachable"), (d("mx-dual"),), "mx"),
    }


class _AbsoluteZone(Zone):
    """A zone whose helper methods take fully qualified names without the trailing dot."""

    def add(self, name: str, rtype: str, rdata: str, ttl: int = 300) -> _AbsoluteZone:
        if rtype in ("MX",):
            pref, _, host = rdata.partition(" ")
            rdata = f"{pref} {_abs(host)}"
        super().add(_abs(name), rtype, rdata, ttl)
        return self


def _zone(block: str, certs: dict[str, CertFiles | None], epoch: int = 0) -> Zone:
    zone = _AbsoluteZone(ZONE, [])
    _add_policies(zone, block, certs, epoch)

    def host(index: int) -> str:
        return loopback_host(block, index)

    for label, (index, _, _) in _SERVERS.items():
        moved = epoch >= 1 and label == "mx-multiline"
        zone.a(_fqdn(label), host(_SERVERS["mx-notls"][0] if moved else index))
    zone.a(_fqdn(_REFUSED[0]), host(_REFUSED[1]))
    for label, (index, _, _) in _POSTFIX.items():
        zone.a(_fqdn(label), host(index))
        zone.mx(_fqdn(label.removeprefix("mx-")), 10, _fqdn(label))
    for name in ("good", "notls", "selfsigned", "expired", "wrongname", "tlsfail", "slow", "multiline"):
        zone.mx(_fqdn(name), 10, _fqdn(f"mx-{name}"))
    zone.mx(_fqdn("banner554"), 10, _fqdn("mx-554"))
    zone.mx(_fqdn("banner421"), 10, _fqdn("mx-421"))
    zone.mx(_fqdn("refused"), 10, _fqdn("mx-refused"))
    zone.mx(_fqdn("shared1"), 10, _fqdn("mx-good"))
    zone.mx(_fqdn("shared2"), 5, _fqdn("mx-expired" if epoch >= 2 else "mx-good"))
    # Published out of order on purpose: the scanner must sort by preference.
    zone.mx(_fqdn("ordered"), 20, _fqdn("mx-notls"))
    zone.mx(_fqdn("ordered"), 10, _fqdn("mx-good2"))
    zone.mx(_fqdn("mixed"), 10, _fqdn("mx-good"))
    zone.mx(_fqdn("mixed"), 20, _fqdn("mx-tlsfail"))
    zone.a(_fqdn("mx-dual"), host(10))
    zone.aaaa(_fqdn("mx-dual"), "::1")
    zone.mx(_fqdn("dualstack"), 10, _fqdn("mx-dual"))
    zone.a(_fqdn("implicit"), host(10))  # no MX: the A record is the implicit MX (RFC 5321 §5.1)
    zone.mx(_fqdn("nullmx"), 0, ".")
    zone.txt(_fqdn("nothing"), "v=spf1 -all")  # exists, but neither MX nor address
    zone.mx(_fqdn("ghostmx"), 10, _fqdn("ghost"))  # MX host that does not exist
    zone.mx(_fqdn("literalmx"), 10, "192.0.2.25.")  # an IP literal as exchange (RFC 5321 §5.1 forbids)
    return zone


def _broken_zone() -> str:
    return BROKEN_ZONE


def _cert_for(kind: str, label: str, ca: TestCA, workdir: Path) -> CertFiles | None:
    name = _fqdn(label)
    now = datetime.now(UTC)
    if kind == "none":
        return None
    if kind == "trusted":
        return ca.issue([name, _fqdn("implicit")] if label == "mx-good" else [name])
    if kind == "self_signed":
        return self_signed(workdir, [name])
    if kind == "expired":
        return ca.issue([name], not_before=now - timedelta(days=400), not_after=now - timedelta(days=30))
    if kind == "wrong_name":
        return ca.issue(["somebody-else.example"])
    raise ValueError(kind)


def _issue_certs(ca: TestCA, workdir: Path) -> dict[str, CertFiles | None]:
    certs = {}
    for label, (_, behaviour, kind) in _SERVERS.items():
        # Advertising STARTTLS needs a certificate configured even if the handshake is never done.
        certs[label] = _cert_for("trusted" if behaviour is Behaviour.TLS_FAIL_AFTER_220 else kind, label, ca, workdir)
    return certs


def _specs(block: str, certs: dict[str, CertFiles | None]) -> list[SmtpServerSpec]:
    specs = []
    for label, (index, behaviour, _) in _SERVERS.items():
        cert = certs[label]
        specs.append(SmtpServerSpec(
            address=loopback_host(block, index), port=25, hostname=_fqdn(label), behaviour=behaviour,
            cert_file=cert.cert_file if cert else None, key_file=cert.key_file if cert else None,
            banner_delay=SLOW_BANNER_DELAY if behaviour is Behaviour.SLOW_BANNER else 0.0,
            tls_max="TLSv1.2" if label == "mx-multiline" else None,
        ))
    return specs


def _spki_sha256(leaf_der: bytes) -> bytes:
    spki = x509.load_der_x509_certificate(leaf_der).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).digest()


def _add_policies(zone: Zone, block: str, certs: dict[str, CertFiles | None], epoch: int = 0) -> None:
    """MTA-STS (TXT + nginx policy host), TLS-RPT and TLSA records for a few domains."""
    for domain, text in _POLICIES.items():
        changed = _policies(epoch)[domain] != text
        zone.txt(f"_mta-sts.{_fqdn(domain)}", f"v=STSv1; id=20261122T00000{epoch if changed else 0};")
        zone.a(f"mta-sts.{_fqdn(domain)}", loopback_host(block, _NGINX_INDEX))
    zone.txt(f"_smtp._tls.{_fqdn('good')}", f"v=TLSRPTv1; rua=mailto:tlsrpt@{_fqdn('good')}")
    zone.txt(f"_smtp._tls.{_fqdn('wrongname')}", "v=TLSRPTv1; rua=ftp://reports.example")  # invalid scheme
    good = certs["mx-good"]
    assert good is not None
    zone.tlsa(f"_25._tcp.{_fqdn('mx-good')}", 3, 1, 1, _spki_sha256(good.leaf_der))  # DANE-EE, matches
    zone.tlsa(f"_25._tcp.{_fqdn('mx-selfsigned')}", 3, 1, 1, bytes(32))  # stale: does not match


def _policy_sites(ca: TestCA, epoch: int = 0) -> list[Site]:
    cert = ca.issue([f"mta-sts.{_fqdn(d)}" for d in _POLICIES])
    return [Site(f"mta-sts.{_fqdn(d)}", cert.cert_file, cert.key_file, text) for d, text in _policies(epoch).items()]


@contextmanager
def standard_world(workdir: Path, block: str) -> Iterator[World]:
    """Start nsd and the mail servers of the standard world in ``block``; stop them on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    ca = TestCA(workdir / "ca")
    expected = _expectations()
    domains_file = workdir / "domains.txt"
    domains_file.write_text("# the standard world\n" + "\n".join(expected) + "\n", encoding="utf-8")
    certs = _issue_certs(ca, workdir / "certs")
    with ExitStack() as stack:
        nsd = NsdServer(workdir / "nsd", [_zone(block, certs)], address=loopback_host(block, 53), port=53,
                        broken_zones=[_broken_zone()])
        nsd.start()
        stack.callback(nsd.stop)
        nginx = NginxServer(workdir / "nginx", loopback_host(block, _NGINX_INDEX), _policy_sites(ca))
        nginx.start()
        stack.callback(nginx.stop)
        farm = SmtpFarm(_specs(block, certs))
        farm.start_in_thread()
        stack.callback(farm.stop_in_thread)
        # Postfix drops privileges to its own user, which must be able to traverse every parent
        # directory: pytest's and tempfile's directories are 0700, so use a 0755 one of our own.
        postfix_dir = Path(tempfile.mkdtemp(prefix="smtp-tls-postfix-"))
        postfix_dir.chmod(0o755)
        stack.callback(shutil.rmtree, postfix_dir, True)
        for label, (index, tls, protocols) in _POSTFIX.items():
            cert = ca.issue([_fqdn(label)]) if tls else None
            postfix = PostfixInstance(
                postfix_dir / label, loopback_host(block, index), 25, _fqdn(label),
                cert.cert_file if cert else None, cert.key_file if cert else None,
                tls=tls, tls_protocols=protocols,
            )
            postfix.start()
            stack.callback(postfix.stop)

        def set_epoch(epoch: int) -> None:
            nsd.replace_zones([_zone(block, certs, epoch)])
            nginx.replace_sites(_policy_sites(ca, epoch))

        yield World(block, nsd.resolver, ca.ca_file, domains_file, expected, farm, set_epoch)
