"""Real DNS servers on loopback for test worlds, demos and benchmarks.

Two servers with the same start/stop/context-manager/``resolver`` API:

* :class:`NsdServer` runs NLnet Labs' NSD (Debian package ``nsd``) as an
  authoritative server for generated zones, including huge ones (zone files
  are written by streaming).  Zones listed in ``broken_zones`` get an
  invalid zone file; NSD 4.6 then keeps the zone configured but unloaded and
  answers SERVFAIL for every name in it (checked at every start).
* :class:`FaultyDnsServer` is a tiny dnslib-based server for failure
  modes NSD will not produce: SERVFAIL, REFUSED, never answering, or
  canned records per name.

Neither forwards or recurses: every address used is loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Self, cast

from dnslib import EDNS0, QTYPE, RCODE, RR, DNSError, DNSRecord

from worlds.procs import ServerLifecycle

DEFAULT_TTL = 300
_NSD_CANDIDATES = ("/usr/sbin/nsd", "/usr/local/sbin/nsd")
_LOG_TAIL_LINES = 40
_PROBE_TIMEOUT = 0.25
# RFC 1035 section 4.2.1: UDP messages without EDNS are limited to 512 bytes.
_CLASSIC_UDP_LIMIT = 512


# --------------------------------------------------------------------------
# Records, zones and zone files
# --------------------------------------------------------------------------


def absolute(name: str) -> str:
    """Return ``name`` with exactly one trailing dot ("." stays the root)."""
    return name.rstrip(".") + "." if name not in (".", "") else "."


@dataclass(frozen=True)
class Record:
    """One resource record in zone-file presentation format (RFC 1035 5.1).

    ``name`` is absolute (trailing dot), ``"@"`` for the zone origin, or
    relative to the origin.  ``rdata`` is the presentation form, so domain
    names inside it follow zone-file rules too: ``"10 mx1"`` means
    ``mx1.<origin>``, ``"10 mx1.example.net."`` is absolute.
    """

    name: str
    rtype: str
    rdata: str
    ttl: int = DEFAULT_TTL

    def zone_line(self) -> str:
        return f"{self.name} {self.ttl} IN {self.rtype} {self.rdata}\n"


def txt_rdata(text: str) -> str:
    """Quote ``text`` as TXT RDATA, split into <=255-octet character-strings.

    RFC 1035 section 3.3.14 / 3.3: a TXT RR holds character-strings of at
    most 255 octets; long values (DKIM keys, some MTA-STS/TLS-RPT policies)
    are split and a reader concatenates them (RFC 7208 section 3.3 style).
    Octets that are not printable ASCII are written as ``\\DDD``.
    """
    data = text.encode("utf-8")
    chunks = [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]
    return " ".join(f'"{_escape_octets(chunk)}"' for chunk in chunks)


def _escape_octets(chunk: bytes) -> str:
    out = []
    for octet in chunk:
        if octet in (0x22, 0x5C):  # '"' and '\\' must be escaped
            out.append("\\" + chr(octet))
        elif 0x20 <= octet < 0x7F:
            out.append(chr(octet))
        else:
            out.append(f"\\{octet:03d}")
    return "".join(out)


@dataclass
class Zone:
    """An authoritative zone: its origin and its records.

    The convenience methods append a record and return the zone, so calls
    can be chained.  A default SOA and NS are added when the zone file is
    written unless the records already contain them at the apex.
    """

    origin: str
    records: list[Record] = field(default_factory=list)

    def add(self, name: str, rtype: str, rdata: str, ttl: int = DEFAULT_TTL) -> Self:
        self.records.append(Record(name, rtype.upper(), rdata, ttl))
        return self

    def mx(self, name: str, pref: int, host: str, *, ttl: int = DEFAULT_TTL) -> Self:
        """MX record; ``mx(name, 0, ".")`` is a null MX (RFC 7505)."""
        if not 0 <= pref <= 0xFFFF:
            raise ValueError(f"MX preference out of range: {pref}")
        return self.add(name, "MX", f"{pref} {host}", ttl)

    def a(self, name: str, ip: str, *, ttl: int = DEFAULT_TTL) -> Self:
        return self.add(name, "A", str(ipaddress.IPv4Address(ip)), ttl)

    def aaaa(self, name: str, ip: str, *, ttl: int = DEFAULT_TTL) -> Self:
        return self.add(name, "AAAA", str(ipaddress.IPv6Address(ip)), ttl)

    def cname(self, name: str, target: str, *, ttl: int = DEFAULT_TTL) -> Self:
        return self.add(name, "CNAME", target, ttl)

    def ns(self, name: str, host: str, *, ttl: int = DEFAULT_TTL) -> Self:
        return self.add(name, "NS", host, ttl)

    def txt(self, name: str, text: str, *, ttl: int = DEFAULT_TTL) -> Self:
        return self.add(name, "TXT", txt_rdata(text), ttl)

    def tlsa(
        self,
        name: str,
        usage: int,
        selector: int,
        mtype: int,
        data: bytes,
        *,
        ttl: int = DEFAULT_TTL,
    ) -> Self:
        """TLSA record (RFC 6698 section 2), e.g. name ``_25._tcp.mx1``."""
        return self.add(name, "TLSA", f"{usage} {selector} {mtype} {data.hex()}", ttl)

    def srv(self, name: str, priority: int, weight: int, port: int, target: str, *, ttl: int = DEFAULT_TTL) -> Self:
        return self.add(name, "SRV", f"{priority} {weight} {port} {target}", ttl)

    def _has_apex(self, rtype: str) -> bool:
        apex = {"@", absolute(self.origin).lower()}
        return any(r.rtype == rtype and r.name.lower() in apex for r in self.records)

    def write(self, path: Path) -> ZoneFile:
        return write_zone_file(
            path,
            self.origin,
            self.records,
            add_soa=not self._has_apex("SOA"),
            add_ns=not self._has_apex("NS"),
        )


@dataclass(frozen=True)
class ZoneFile:
    """A zone file already on disk, e.g. a huge generated one."""

    origin: str
    path: Path


def write_zone_file(
    path: Path,
    zone_origin: str,
    records_iterable: Iterable[Record],
    *,
    add_soa: bool = True,
    add_ns: bool = True,
) -> ZoneFile:
    """Stream ``records_iterable`` into a zone file at ``path``.

    Records are consumed lazily and written through a large buffer, so a
    generator of millions of records never sits in memory.  A default SOA
    (RFC 1035 3.3.13; its MINIMUM field is the negative-caching TTL of
    RFC 2308 section 4) and an apex NS are written first unless disabled.
    """
    origin = absolute(zone_origin)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", buffering=1 << 20) as out:
        out.write(f"$ORIGIN {origin}\n$TTL {DEFAULT_TTL}\n")
        if add_soa:
            out.write(f"@ {DEFAULT_TTL} IN SOA ns.{origin} hostmaster.{origin} 1 3600 600 86400 60\n")
        if add_ns:
            out.write(f"@ {DEFAULT_TTL} IN NS ns.{origin}\n")
        out.writelines(record.zone_line() for record in records_iterable)
    return ZoneFile(origin=origin, path=path)


def _zone_file_name(origin: str) -> str:
    stem = absolute(origin).rstrip(".") or "root"
    return f"{stem}.zone"


# --------------------------------------------------------------------------
# Probing (synchronous, used to wait for readiness)
# --------------------------------------------------------------------------


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _resolver_string(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def udp_query(
    address: str,
    port: int,
    name: str,
    qtype: str,
    *,
    qclass: str = "IN",
    timeout: float = 1.0,
) -> DNSRecord | None:
    """Send one UDP query; return the parsed reply, or None on timeout."""
    query = DNSRecord.question(name, qtype, qclass)
    with socket.socket(_family(address), socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(query.pack(), (address, port))
        deadline = time.monotonic() + timeout
        while True:
            try:
                data = sock.recv(65535)
            except TimeoutError:
                return None
            reply = DNSRecord.parse(data)
            if reply.header.id == query.header.id:
                return reply
            # A late reply to an earlier probe: keep waiting for ours.
            sock.settimeout(max(0.001, deadline - time.monotonic()))


def tcp_query(address: str, port: int, name: str, qtype: str, *, qclass: str = "IN", timeout: float = 2.0) -> DNSRecord:
    """Send one query over TCP (RFC 7766 framing) and return the reply."""
    payload = DNSRecord.question(name, qtype, qclass).pack()
    with socket.create_connection((address, port), timeout=timeout) as sock:
        sock.sendall(struct.pack("!H", len(payload)) + payload)
        (length,) = struct.unpack("!H", _recv_exactly(sock, 2))
        return DNSRecord.parse(_recv_exactly(sock, length))


def _recv_exactly(sock: socket.socket, count: int) -> bytes:
    buf = bytearray()
    while len(buf) < count:
        chunk = sock.recv(count - len(buf))
        if not chunk:
            raise ConnectionError("DNS server closed the TCP connection mid-message")
        buf += chunk
    return bytes(buf)


# --------------------------------------------------------------------------
# NSD
# --------------------------------------------------------------------------


class NsdStartError(RuntimeError):
    """NSD could not be started or did not serve its zones as configured."""


def find_nsd() -> str:
    """Path of the ``nsd`` binary, or a clear error saying how to get it."""
    for candidate in (*_NSD_CANDIDATES, shutil.which("nsd")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise NsdStartError("nsd is not installed: run 'DEBIAN_FRONTEND=noninteractive apt-get install -y nsd'")


_BROKEN_ZONE_TEXT = (
    "; Deliberately invalid zone file (smtp-tls-survey test world): NSD fails\n"
    "; to load it, keeps the zone configured, and answers SERVFAIL for it.\n"
    "this line is not a resource record\n"
)


class NsdServer(ServerLifecycle):
    """NSD serving ``zones`` on ``address:port``, owned by this object.

    NSD runs in the foreground (``-d``) in its own process group, with every
    file it writes (pid, xfrd state, zone list, transfer dir) under
    ``workdir`` and no privilege drop, so it needs no system setup beyond
    the package.  ``startup_seconds`` is the time from spawning NSD until all
    zones answered.
    """

    def __init__(
        self,
        workdir: Path,
        zones: Sequence[Zone | ZoneFile],
        address: str = "127.0.0.53",
        port: int = 53,
        broken_zones: Sequence[str] = (),
        *,
        start_timeout: float = 120.0,
        server_count: int = 1,
    ) -> None:
        good = [absolute(z.origin).lower() for z in zones]
        broken = [absolute(b).lower() for b in broken_zones]
        clash = sorted(set(good) & set(broken))
        if clash:
            raise ValueError(f"zones both served and broken: {clash}")
        if len(set(good)) != len(good):
            raise ValueError("duplicate zone origins")
        self.workdir = workdir
        self.address = address
        self.port = port
        self._zones = list(zones)
        self._broken = broken
        self._start_timeout = start_timeout
        self._server_count = server_count
        self._proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None

    @property
    def resolver(self) -> str:
        """``"address:port"`` as aiodns/c-ares accept it in ``nameservers``."""
        return _resolver_string(self.address, self.port)

    @property
    def conf_file(self) -> Path:
        return self.workdir / "nsd.conf"

    @property
    def log_file(self) -> Path:
        return self.workdir / "nsd.log"

    @property
    def pid(self) -> int | None:
        """Pid of the main NSD process (also its process-group id)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def write_config(self) -> list[tuple[str, Path]]:
        """Write nsd.conf and zone files; return (origin, file) per zone."""
        zonedir = self.workdir / "zones"
        zonedir.mkdir(parents=True, exist_ok=True)
        entries: list[tuple[str, Path]] = []
        for zone in self._zones:
            if isinstance(zone, ZoneFile):
                entries.append((absolute(zone.origin).lower(), zone.path.resolve()))
            else:
                written = zone.write(zonedir / _zone_file_name(zone.origin))
                entries.append((written.origin.lower(), written.path))
        for origin in self._broken:
            path = zonedir / _zone_file_name(origin)
            path.write_text(_BROKEN_ZONE_TEXT, encoding="ascii")
            entries.append((origin, path))
        self.conf_file.write_text(self._config_text(entries), encoding="utf-8")
        return entries

    def _config_text(self, entries: Sequence[tuple[str, Path]]) -> str:
        wd = self.workdir.resolve()
        xfrdir = wd / "xfr"
        xfrdir.mkdir(exist_ok=True)
        is_v6 = ":" in self.address
        lines = [
            "server:",
            f"    ip-address: {self.address}",
            f"    port: {self.port}",
            f"    do-ip4: {'no' if is_v6 else 'yes'}",
            f"    do-ip6: {'yes' if is_v6 else 'no'}",
            f"    server-count: {self._server_count}",
            # Stay the invoking user: the 'nsd' user may not exist and could
            # not read the work directory anyway.
            '    username: ""',
            '    chroot: ""',
            f'    zonesdir: "{wd}"',
            # No compiled database: zones are read from text at each start.
            '    database: ""',
            f'    zonelistfile: "{wd / "zone.list"}"',
            f'    pidfile: "{wd / "nsd.pid"}"',
            f'    xfrdfile: "{wd / "xfrd.state"}"',
            f'    xfrdir: "{xfrdir}"',
            f'    cookie-secret-file: "{wd / "cookiesecrets.txt"}"',
            # Never write zone files back over the generated ones.
            "    zonefiles-write: 0",
            '    identity: "smtp-tls-survey-world"',
            "    verbosity: 1",
            # Debian builds nsd with response rate limiting on (200 answers/s per client and answer class,
            # then drop or truncate). Our only client is the scanner under test, which is meant to go far
            # faster: limiting it would measure nsd's RRL (dropped answers, 3 s c-ares retries, TCP
            # fallbacks), not the scanner.
            "    rrl-ratelimit: 0",
            "    rrl-whitelist-ratelimit: 0",
            "remote-control:",
            "    control-enable: no",
        ]
        for origin, path in entries:
            lines += ["zone:", f'    name: "{origin}"', f'    zonefile: "{path}"']
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        if self._proc is not None:
            raise RuntimeError("NsdServer already started")
        nsd = find_nsd()
        self.workdir.mkdir(parents=True, exist_ok=True)
        entries = self.write_config()
        began = time.monotonic()
        with self.log_file.open("wb") as log:
            # Own session => own process group, so stop() can make sure the
            # xfrd and server children NSD forks are gone too.
            self._proc = subprocess.Popen(
                [nsd, "-d", "-c", str(self.conf_file)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready([origin for origin, _ in entries], began + self._start_timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began

    def _log_tail(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no nsd log)"
        return "\n".join(lines[-_LOG_TAIL_LINES:])

    def _fail(self, why: str) -> NsdStartError:
        return NsdStartError(f"{why}\n--- nsd output ({self.log_file}) ---\n{self._log_tail()}")

    def _probe(self, name: str, qtype: str, qclass: str, deadline: float) -> DNSRecord:
        """Query until any reply arrives; fail if NSD exits or time runs out."""
        assert self._proc is not None
        while True:
            code = self._proc.poll()
            if code is not None:
                raise self._fail(f"nsd exited with status {code} during start-up")
            if time.monotonic() > deadline:
                raise self._fail(f"nsd did not answer on {self.resolver} within {self._start_timeout}s")
            with contextlib.suppress(ConnectionRefusedError):
                # ECONNREFUSED (ICMP port unreachable) just means "not bound yet".
                reply = udp_query(self.address, self.port, name, qtype, qclass=qclass, timeout=_PROBE_TIMEOUT)
                if reply is not None:
                    return reply
            time.sleep(0.02)

    def _wait_ready(self, origins: Sequence[str], deadline: float) -> None:
        # NSD binds its sockets before reading zone files and forks the
        # serving processes after, so the first answer means all zones are
        # loaded; each zone is then checked to be in the state asked for.
        self._probe("id.server.", "TXT", "CH", deadline)
        broken = set(self._broken)
        for origin in origins:
            reply = self._probe(origin, "SOA", "IN", deadline)
            rcode = RCODE[reply.header.rcode]
            if origin in broken:
                if rcode != "SERVFAIL":
                    raise self._fail(f"broken zone {origin} answered {rcode}, not SERVFAIL")
            elif rcode != "NOERROR" or not reply.header.aa:
                raise self._fail(f"zone {origin} did not load (SOA query answered {rcode})")
        try:
            tcp_query(self.address, self.port, "id.server.", "TXT", qclass="CH", timeout=5.0)
        except (OSError, DNSError) as exc:
            raise self._fail(f"nsd does not answer over TCP on {self.resolver}: {exc}") from exc

    def replace_zones(self, zones: Sequence[Zone | ZoneFile]) -> None:
        """Serve other zone contents (same origins): a world that changes between two scans. NSD is
        restarted on the same address, which answers again before this returns."""
        if sorted(absolute(z.origin).lower() for z in zones) != sorted(absolute(z.origin).lower() for z in self._zones):
            raise ValueError("replace_zones keeps the same zone origins")
        self.stop()
        self._zones = list(zones)
        self.start()

    def stop(self) -> None:
        """Stop NSD and every process it forked; safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        _stop_process_group(proc, grace=10.0)


def _live_group_members(pgid: int) -> list[int]:
    """Pids in process group ``pgid`` that have not exited yet (Linux /proc).

    Zombies are left out: they have already closed their sockets, and once
    NSD's leader is gone its zombie children wait for PID 1 to reap them,
    which in some containers takes over a second.
    """
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited while we were looking
        # /proc/PID/stat: "pid (comm) state ppid pgrp ..."; comm may hold
        # spaces or parentheses, so split after its last ")".
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            members.append(int(entry.name))
    return members


def _wait_group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _live_group_members(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _stop_process_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the leader, then make sure its whole group is gone.

    NSD's main process exits before its xfrd and server children have
    finished shutting down, and those children hold the listening sockets,
    so returning when the leader exits would let an immediate restart on
    the same address fail with EADDRINUSE.  The group id cannot be reused
    while any member remains (Linux keeps the pid allocated), so signalling
    the group only ever reaches processes this server started.
    """
    pgid = proc.pid  # start_new_session made the child its group leader
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            proc.wait()
    if not _wait_group_gone(pgid, grace):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        if not _wait_group_gone(pgid, 5.0):
            raise RuntimeError(f"processes of nsd group {pgid} survived SIGKILL")


# --------------------------------------------------------------------------
# Faulty server (dnslib)
# --------------------------------------------------------------------------


class Behaviour(StrEnum):
    """How :class:`FaultyDnsServer` treats queries for a name."""

    SERVFAIL = "servfail"
    TIMEOUT = "timeout"  # read the query, never answer (UDP and TCP)
    REFUSED = "refused"
    NXDOMAIN = "nxdomain"
    NODATA = "nodata"  # NOERROR, empty answer (RFC 2308 section 2.2)
    # Rcodes a query should never get (RFC 2136, RFC 8490, RFC 6891), sent by broken servers and
    # middleboxes; each comes with an empty answer, which a careless client reads as NODATA.
    YXDOMAIN = "yxdomain"  # 6
    YXRRSET = "yxrrset"  # 7
    NXRRSET = "nxrrset"  # 8
    NOTAUTH = "notauth"  # 9
    NOTZONE = "notzone"  # 10
    DSOTYPENI = "dsotypeni"  # 11
    BADVERS = "badvers"  # 16: an extended rcode, its upper bits in the OPT record (RFC 6891 section 6.1.3)


_RCODES: Mapping[Behaviour, int] = {
    Behaviour.SERVFAIL: RCODE.SERVFAIL,
    Behaviour.REFUSED: RCODE.REFUSED,
    Behaviour.NXDOMAIN: RCODE.NXDOMAIN,
    Behaviour.NODATA: RCODE.NOERROR,
    Behaviour.YXDOMAIN: 6,
    Behaviour.YXRRSET: 7,
    Behaviour.NXRRSET: 8,
    Behaviour.NOTAUTH: 9,
    Behaviour.NOTZONE: 10,
    Behaviour.DSOTYPENI: 11,
    Behaviour.BADVERS: 16,
}


@dataclass(frozen=True)
class QueryLogEntry:
    name: str  # absolute, lower-case
    rtype: str
    transport: str  # "udp" or "tcp"


BehaviourSpec = Behaviour | str | Sequence[Record]


class _Answerer:
    """Turns a query into reply bytes (or None for 'never answer')."""

    def __init__(self, behaviours: Mapping[str, BehaviourSpec], default: Behaviour) -> None:
        self.default = default
        self.table: dict[str, Behaviour | list[RR]] = {}
        for name, spec in behaviours.items():
            key = absolute(name).lower()
            if isinstance(spec, str):
                if key in self.table:
                    raise ValueError(f"{key} has both records and behaviour {spec!r}")
                self.table[key] = Behaviour(spec)
                continue
            # Parse now so bad rdata fails at construction, not mid-test.
            # "@" and relative owner names are relative to the map key, and
            # each record answers for its own owner name.
            parsed = RR.fromZone("".join(r.zone_line() for r in spec), origin=key)
            self._records_for(key)  # the key exists even if all records sit below it
            for rr in parsed:
                self._records_for(absolute(str(rr.rname)).lower()).append(rr)
        self._log: list[QueryLogEntry] = []
        self._lock = threading.Lock()

    def _records_for(self, owner: str) -> list[RR]:
        existing = self.table.setdefault(owner, [])
        if isinstance(existing, Behaviour):
            raise ValueError(f"{owner} has both records and behaviour {existing.value!r}")
        return existing

    @property
    def log(self) -> tuple[QueryLogEntry, ...]:
        with self._lock:
            return tuple(self._log)

    def answer(self, data: bytes, transport: str) -> bytes | None:
        try:
            request = DNSRecord.parse(data)
        except DNSError:
            return None  # not DNS: a real server drops it as well
        qname = absolute(str(request.q.qname)).lower()
        qtype = QTYPE.get(request.q.qtype, str(request.q.qtype))
        with self._lock:
            self._log.append(QueryLogEntry(qname, qtype, transport))
        spec = self.table.get(qname, self.default)
        if spec is Behaviour.TIMEOUT:
            return None
        reply = request.reply(ra=0, aa=1)
        if isinstance(spec, Behaviour):
            rcode = _RCODES[spec]
            reply.header.rcode = rcode & 0xF
            if rcode > 0xF:  # the upper 8 bits travel in the OPT record's TTL field
                reply.add_ar(EDNS0(ext_rcode=rcode >> 4, udp_len=_CLASSIC_UDP_LIMIT))
        else:
            matching = [rr for rr in spec if qtype in ("ANY", QTYPE[rr.rtype]) or rr.rtype == QTYPE.CNAME]
            reply.add_answer(*matching)
        packed: bytes = reply.pack()
        if transport == "udp" and len(packed) > _udp_limit(request):
            # RFC 1035 4.2.1 / RFC 6891 6.2.3: too big for this client's
            # UDP size, so send TC=1 and let it retry over TCP.  The
            # question stays in (dnslib's truncate() drops it, and c-ares
            # rejects such a reply as malformed).
            truncated = request.reply(ra=0, aa=1)
            truncated.header.tc = 1
            truncated_bytes: bytes = truncated.pack()
            return truncated_bytes
        return packed


def _udp_limit(request: DNSRecord) -> int:
    for rr in request.ar:
        if rr.rtype == QTYPE.OPT:
            return max(_CLASSIC_UDP_LIMIT, int(rr.rclass))
    return _CLASSIC_UDP_LIMIT


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, answerer: _Answerer, delays: Mapping[str, float], junk_for: frozenset[str]) -> None:
        self._answerer = answerer
        self._delays = delays
        self._junk_for = junk_for
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The loop hands a datagram transport to a datagram protocol; the
        # concrete class does not subclass asyncio.DatagramTransport.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        reply = self._answerer.answer(data, "udp")
        if reply is None or self._transport is None:
            return
        if self._junk_for and _qname_of(reply) in self._junk_for:
            # Malformed datagrams before the answer: random bytes, and random bytes under the query's ID.
            self._transport.sendto(os.urandom(48), addr)
            self._transport.sendto(reply[:2] + bytes([0x81, 0x80]) + os.urandom(40), addr)
        delay = self._delays.get(_qname_of(reply), 0.0) if self._delays else 0.0
        if delay > 0:  # a slow upstream (a recursive resolver with a cold cache): answer late
            asyncio.get_running_loop().call_later(delay, self._send, reply, addr)
        else:
            self._transport.sendto(reply, addr)

    def _send(self, reply: bytes, addr: tuple[str | object, ...]) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(reply, addr)


def _qname_of(reply: bytes) -> str:
    return absolute(str(DNSRecord.parse(reply).q.qname)).lower()


class FaultyDnsServer(ServerLifecycle):
    """A dnslib server on UDP+TCP ``address:port`` with scripted behaviours.

    ``behaviours`` maps a name to a :class:`Behaviour` (or its string value)
    or to a list of :class:`Record` to answer with.  Record names are
    relative to the map key (``"@"`` is the key itself) and each record
    answers queries for its own owner name; records whose type does not
    match the query are left out, except CNAME; none left = NODATA.
    Names not in the map get ``default``; ``delays`` maps a name to seconds
    its UDP answers are held back; ``junk_for`` names get two malformed
    datagrams before their answer.  It runs its own asyncio loop in a
    thread, so synchronous and asynchronous tests can use it alike.
    """

    def __init__(
        self,
        behaviours: Mapping[str, BehaviourSpec],
        address: str = "127.0.0.53",
        port: int = 53,
        *,
        default: Behaviour | str = Behaviour.NXDOMAIN,
        delays: Mapping[str, float] | None = None,
        junk_for: Sequence[str] = (),
    ) -> None:
        self.address = address
        # Seconds to wait before answering a name over UDP (each copy of a re-sent query is answered).
        self._delays = {absolute(name).lower(): seconds for name, seconds in (delays or {}).items()}
        # Names whose UDP answer is preceded by two malformed datagrams to the asking socket.
        self._junk_for = frozenset(absolute(name).lower() for name in junk_for)
        self.port = port
        self._answerer = _Answerer(behaviours, Behaviour(default))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tcp_writers: set[asyncio.StreamWriter] = set()

    @property
    def resolver(self) -> str:
        return _resolver_string(self.address, self.port)

    @property
    def queries(self) -> tuple[QueryLogEntry, ...]:
        """Every query received so far, in arrival order."""
        return self._answerer.log

    def start(self) -> None:
        if self._loop is not None:
            raise RuntimeError("FaultyDnsServer already started")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=f"faulty-dns-{self.resolver}", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            asyncio.run_coroutine_threadsafe(self._bind(), loop).result(timeout=10)
        except BaseException:
            self.stop()
            raise

    async def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        family = _family(self.address)
        self._tcp = await asyncio.start_server(
            self._serve_tcp, self.address, self.port, family=family, reuse_address=True
        )
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self._answerer, self._delays, self._junk_for),
            local_addr=(self.address, self.port),
            family=family,
        )
        self._udp = transport

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # RFC 7766 section 6.2.1: several queries may arrive on one
        # connection; answer each (or, for TIMEOUT, none) and keep reading.
        self._tcp_writers.add(writer)
        try:
            while True:
                try:
                    (length,) = struct.unpack("!H", await reader.readexactly(2))
                    data = await reader.readexactly(length)
                except asyncio.IncompleteReadError:
                    return  # client closed the connection
                reply = self._answerer.answer(data, "tcp")
                if reply is not None:
                    writer.write(struct.pack("!H", len(reply)) + reply)
                    await writer.drain()
        except ConnectionError:
            return  # client reset the connection: nothing left to answer
        finally:
            self._tcp_writers.discard(writer)
            writer.close()

    async def _close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        for writer in list(self._tcp_writers):
            writer.close()
        if self._tcp is not None:
            await self._tcp.wait_closed()
        # Let connection handlers observe the close and finish.
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        try:
            if loop.is_running():
                asyncio.run_coroutine_threadsafe(self._close(), loop).result(timeout=10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()
            self._udp = None
            self._tcp = None


__all__ = [
    "Behaviour",
    "FaultyDnsServer",
    "NsdServer",
    "NsdStartError",
    "QueryLogEntry",
    "Record",
    "Zone",
    "ZoneFile",
    "find_nsd",
    "tcp_query",
    "txt_rdata",
    "udp_query",
    "write_zone_file",
]
