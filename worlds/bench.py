"""A synthetic loopback world for benchmarks: many domains over a skewed set of MX addresses.

Shape (as on the Internet, a few providers host most domains and a long tail hosts itself):
- ``providers`` providers, each with 2 MX hosts of 2 addresses; provider popularity follows a Zipf law;
- ``tail`` self-hosted domains, each with its own MX address and a random TLS posture;
- a few per cent of domains use an implicit MX, publish a null MX, point at an MX host with no address,
  or do not exist at all (listed in the input, absent from the zone).
Everything lives in one zone ``bench.test`` served by nsd; mail servers run in a farm subprocess.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from worlds.ca import CertFiles, TestCA, self_signed
from worlds.dns import Record, ZoneFile, write_zone_file
from worlds.smtp import Behaviour, SmtpServerSpec

ZONE = "bench.test"
# Postures of self-hosted servers, with weights (behaviour, certificate kind).
TAIL_POSTURES = [
    ((Behaviour.NORMAL, "trusted"), 60),
    ((Behaviour.NO_STARTTLS, "none"), 18),
    ((Behaviour.NORMAL, "self_signed"), 8),
    ((Behaviour.NORMAL, "expired"), 5),
    ((Behaviour.NORMAL, "wrong_name"), 5),
    ((Behaviour.BANNER_554, "none"), 2),
    ((Behaviour.TLS_FAIL_AFTER_220, "trusted"), 2),
]


@dataclass(slots=True)
class BenchWorld:
    domains_file: Path
    zone_file: ZoneFile
    specs: list[SmtpServerSpec]
    ca_file: Path
    dns_address: str
    domain_count: int
    address_count: int
    kinds: dict[str, int] = field(default_factory=dict)


def _addresses(second_octet: int) -> Iterator[str]:
    for third in range(255):
        for fourth in range(1, 255):
            if (third, fourth) != (255, 53):
                yield f"127.{second_octet}.{third}.{fourth}"


def _certs(workdir: Path) -> dict[str, CertFiles]:
    ca = TestCA(workdir / "ca")
    now = datetime.now(UTC)
    wildcard = f"*.{ZONE}"
    return {
        "trusted": ca.issue([wildcard]),
        "self_signed": self_signed(workdir, [wildcard]),
        "expired": ca.issue([wildcard], not_before=now - timedelta(days=400), not_after=now - timedelta(days=1)),
        "wrong_name": ca.issue(["somebody-else.example"]),
        "_ca": CertFiles(ca.ca_file, ca.ca_file, b""),
    }


def build(workdir: Path, domains: int, addresses: int, second_octet: int, seed: int = 7) -> BenchWorld:
    """Write the zone file, the domain list and the server specs; start nothing."""
    rng = random.Random(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    certs = _certs(workdir)
    pool = _addresses(second_octet)
    specs: list[SmtpServerSpec] = []
    records: list[Record] = []

    def server(host: str, behaviour: Behaviour, kind: str) -> str:
        address = next(pool)
        cert = certs.get(kind)
        specs.append(SmtpServerSpec(address=address, port=25, hostname=f"{host}.{ZONE}", behaviour=behaviour,
                                    cert_file=cert.cert_file if cert else None,
                                    key_file=cert.key_file if cert else None))
        records.append(Record(f"{host}.{ZONE}.", "A", address))
        return host

    provider_count = max(1, addresses // 20)  # 5% of addresses belong to providers (4 each)
    providers = []
    for p in range(provider_count):
        hosts = []
        for h in (1, 2):
            name = f"mx{h}-p{p}"
            for _ in range(2):
                address = next(pool)
                specs.append(SmtpServerSpec(address=address, port=25, hostname=f"{name}.{ZONE}",
                                            cert_file=certs["trusted"].cert_file, key_file=certs["trusted"].key_file))
                records.append(Record(f"{name}.{ZONE}.", "A", address))
            hosts.append(name)
        providers.append(hosts)
    tail = addresses - 4 * provider_count
    weights = [1 / (rank + 1) for rank in range(provider_count)]  # Zipf, exponent 1
    postures, posture_weights = zip(*TAIL_POSTURES, strict=True)
    kinds: dict[str, int] = {}
    names = []
    for i in range(domains):
        domain = f"d{i}.{ZONE}"
        names.append(domain)
        if i < tail:
            behaviour, kind = rng.choices(postures, posture_weights)[0]
            host = server(f"mx-d{i}", behaviour, kind)
            records.append(Record(f"{domain}.", "MX", f"10 {host}.{ZONE}."))
            category = "self_hosted"
        else:
            category = _provider_domain(rng, domain, providers, weights, records)
        kinds[category] = kinds.get(category, 0) + 1
    rng.shuffle(names)  # input order unrelated to zone order, as in a ranked list
    domains_file = workdir / "domains.txt"
    domains_file.write_text("\n".join(names) + "\n", encoding="utf-8")
    zone_file = write_zone_file(workdir / "zones" / f"{ZONE}.zone", ZONE, records)
    return BenchWorld(domains_file, zone_file, specs, certs["_ca"].cert_file, f"127.{second_octet}.255.53",
                      domains, len(specs), kinds)


def _provider_domain(
    rng: random.Random, domain: str, providers: list[list[str]], weights: list[float], records: list[Record]
) -> str:
    """Records for a domain outside the self-hosted tail; returns its category."""
    roll = rng.random()
    if roll < 0.02:
        return "nxdomain"  # listed in the input, absent from the zone
    if roll < 0.03:
        records.append(Record(f"{domain}.", "MX", "0 ."))
        return "null_mx"
    if roll < 0.04:
        records.append(Record(f"{domain}.", "MX", f"10 ghost.{ZONE}."))
        return "mx_no_address"
    hosts = rng.choices(providers, weights)[0]
    if roll < 0.08:
        records.append(Record(f"{domain}.", "CNAME", f"{hosts[0]}.{ZONE}."))  # implicit MX via the alias
        return "implicit"
    records.append(Record(f"{domain}.", "MX", f"10 {hosts[0]}.{ZONE}."))
    records.append(Record(f"{domain}.", "MX", f"20 {hosts[1]}.{ZONE}."))
    return "provider"


WILDCARD_SUBTREES = 100


def add_wildcard_domains(world: BenchWorld, count: int) -> None:
    """Grow the input by ``count`` domains without growing nsd's zone: names under 100 wildcard subtrees.

    ``x<i>.w<j>.bench.test`` matches ``*.w<j>.bench.test`` (RFC 4592), whose MX records point at a
    provider's hosts. The input grows tenfold or more at the cost of a hundred zone records, so a
    10,000,000-line scan can show that the scanner's memory stays flat as the input grows.
    The extra names are spread evenly between the world's own domains.
    """
    providers = max(1, world.address_count // 20)
    with world.zone_file.path.open("a", encoding="utf-8") as zone:
        for j in range(WILDCARD_SUBTREES):
            p = j % providers
            zone.write(f"*.w{j}.{ZONE}. 3600 IN MX 10 mx1-p{p}.{ZONE}.\n")
            zone.write(f"*.w{j}.{ZONE}. 3600 IN MX 20 mx2-p{p}.{ZONE}.\n")
    names = world.domains_file.read_text(encoding="utf-8").split()
    per_name, extra = divmod(count, max(1, len(names)))
    written = 0
    with world.domains_file.open("w", encoding="utf-8", buffering=1 << 20) as out:
        for index, name in enumerate(names):
            out.write(name + "\n")
            for _ in range(per_name + (1 if index < extra else 0)):
                out.write(f"x{written}.w{written % WILDCARD_SUBTREES}.{ZONE}\n")
                written += 1
    world.domain_count += written
    world.kinds["wildcard"] = written


SNI_SUBTREE = "s{k}." + ZONE


def add_sni_hosting(world: BenchWorld, workdir: Path, share: float, names: int, seed: int = 11) -> int:
    """Make ``share`` of the TLS addresses shared hosts serving ``names`` MX names each, a certificate per
    name chosen by SNI (what Postfix tls_server_sni_maps or a hosting panel does).

    Name k of address i is ``mail-a<i>.s<k>.bench.test``, MX of the new domain ``sni<i>-<k>.bench.test``;
    its certificate is ``*.s<k>.bench.test`` (one of ``names`` certificates shared by all such hosts, so the
    world stays cheap to build). The address's default certificate, ``*.bench.test``, does not cover these
    names (a wildcard spans one label): judged on it, every such link would read as a name mismatch.
    Returns the number of shared-hosting addresses.
    """
    ca = TestCA(workdir / "sni-ca")
    certs = [ca.issue([f"*.{SNI_SUBTREE.format(k=k)}"]) for k in range(names)]
    # The world's own CA signs the default certificates: trust both.
    bundle = workdir / "ca-bundle.pem"
    bundle.write_bytes(world.ca_file.read_bytes() + ca.ca_file.read_bytes())
    world.ca_file = bundle
    entries = tuple((f".{SNI_SUBTREE.format(k=k)}", str(c.cert_file), str(c.key_file)) for k, c in enumerate(certs))
    tls = [i for i, s in enumerate(world.specs) if s.behaviour is Behaviour.NORMAL and s.cert_file is not None]
    chosen = random.Random(seed).sample(tls, int(len(world.specs) * share) if len(tls) >= len(world.specs) * share
                                        else len(tls))
    records: list[str] = []
    domains: list[str] = []
    for i in chosen:
        spec = world.specs[i]
        world.specs[i] = dataclasses.replace(spec, sni_certs=entries)
        for k in range(names):
            host = f"mail-a{i}.{SNI_SUBTREE.format(k=k)}"
            records.append(f"{host}. 3600 IN A {spec.address}\n")
            records.append(f"sni{i}-{k}.{ZONE}. 3600 IN MX 10 {host}.\n")
            domains.append(f"sni{i}-{k}.{ZONE}")
    with world.zone_file.path.open("a", encoding="utf-8") as zone:
        zone.writelines(records)
    existing = world.domains_file.read_text(encoding="utf-8").split()
    mixed = existing + domains
    random.Random(seed).shuffle(mixed)
    world.domains_file.write_text("\n".join(mixed) + "\n", encoding="utf-8")
    world.domain_count += len(domains)
    world.kinds["sni_hosted"] = len(domains)
    return len(chosen)
