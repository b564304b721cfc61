"""Run peer tools (testssl.sh, sslyze) against one STARTTLS server, normalised.

Both tools are driven as black boxes and their machine-readable output is
turned into a :class:`PeerResult`: accepted protocol versions, accepted cipher
suites per version (IANA code points), server cipher order when the tool
reports it, the number of TCP connections it opened, and its wall time.

Network containment.  This machine's resolver is off loopback, and these
tools can do DNS (testssl.sh: rDNS, MX; sslyze: getaddrinfo) and online
checks (testssl.sh's OCSP/CRL fetches with ``--phone-out``).  Three layers
keep every packet on this host:

1. they only ever get an IP literal (``127.x.y.z:port``), never a name;
2. flags: testssl.sh ``--nodns none`` (no lookups at all, not even rDNS),
   no ``--phone-out`` (so no CRL/OCSP), only ``-p -E [-P]`` (no certificate
   or vulnerability checks); sslyze ``--mozilla_config disable`` and only the
   cipher-suite scan commands (no certificate_info, hence no trust-store or
   revocation logic; sslyze never fetches CT logs);
3. the tool always runs inside a fresh network namespace whose only
   interface is ``lo`` (and whose resolv.conf names 127.0.0.1), so any
   non-loopback send fails with ENETUNREACH.  This is not optional: traced
   with strace, testssl.sh 3.0.8 resolves the name "invalid." about 30 times
   per run even with ``--nodns none`` (its probes of the local openssl's
   capabilities), which outside the namespace would go to the system
   resolver; inside they go to 127.0.0.1:53, where nothing listens.  The server
   under test lives in the root namespace, so a relay carries the tool's
   connections out: inside the namespace a small process listens on the
   *same* address:port and forwards each TCP connection over a Unix socket
   (file-system Unix sockets cross namespaces) to a forwarder in this process,
   which connects to the real server.  The forwarder counts connections,
   which gives :attr:`PeerResult.sessions` exactly.

Requires root (``ip netns``).  testssl.sh comes from Debian
(``apt-get install testssl.sh``); sslyze lives in its own virtualenv
(:func:`ensure_sslyze`), never in the project's, whose pins it would fight.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import ipaddress
import json
import os
import re
import secrets
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import IO, Any

from scanner.tls.ciphers import suite_by_name

__all__ = [
    "VERSIONS",
    "LoopbackNamespace",
    "PeerError",
    "PeerResult",
    "ensure_sslyze",
    "parse_sslyze_json",
    "parse_testssl_json",
    "run_sslyze",
    "run_testssl",
    "sslyze_venv_dir",
]

VERSIONS: tuple[str, ...] = ("SSLv3", "TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3")
SSLYZE_REQUIREMENT = "sslyze>=6.0,<7"
DEFAULT_TIMEOUT = 600.0
CACHE_ENV = "SMTP_TLS_SURVEY_CACHE"
_PROJECT_ROOT = Path(__file__).resolve().parents[1]
_RELAY_READY = b"RELAY-READY\n"
_RELAY_START_TIMEOUT = 15.0
_RELAY_STDERR = "relay.stderr"
_PIPE_CHUNK = 65536


class PeerError(RuntimeError):
    """A peer tool failed, timed out, or wrote output we cannot interpret."""


@dataclass(frozen=True)
class PeerResult:
    """What one peer tool found about one server.

    ``suites`` maps each version in ``versions`` that has accepted suites to
    their IANA code points.  ``server_order`` is None when the tool did not
    test it or could not tell; ``sessions`` is None when connections could not be counted.
    ``exit_status`` is non-zero when testssl.sh reported trouble in some
    check (its exit status sums them) but still wrote results; callers that
    need a clean run should require 0.
    """

    tool: str
    versions: frozenset[str]
    suites: Mapping[str, frozenset[int]]
    server_order: bool | None
    sessions: int | None
    wall_s: float
    tool_version: str = ""
    exit_status: int = 0
    raw_output: Path | None = field(default=None, compare=False)


# --- network namespace and relay ----------------------------------------------


def _check_loopback(address: str) -> None:
    if not ipaddress.ip_address(address).is_loopback:
        raise ValueError(f"peer tools may only be pointed at loopback addresses, not {address}")


def _run(cmd: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, check=False, **kwargs)
    if proc.returncode != 0:
        raise PeerError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stdout}{proc.stderr}")
    return proc


class LoopbackNamespace:
    """A network namespace with only ``lo`` up, deleted on exit.

    ``ip netns exec`` bind-mounts ``/etc/netns/NAME/resolv.conf`` over
    /etc/resolv.conf; ours names 127.0.0.1, where nothing answers, so even a
    stray lookup stays inside and fails fast.
    """

    def __init__(self, name: str | None = None) -> None:
        self.name = name or f"sts-peer-{os.getpid()}-{secrets.token_hex(3)}"
        self._etc = Path("/etc/netns") / self.name
        self._created = False

    def __enter__(self) -> LoopbackNamespace:
        if os.geteuid() != 0:
            raise PeerError("peer tools run in a network namespace, which needs root")
        _run(["ip", "netns", "add", self.name])
        self._created = True
        try:
            _run(["ip", "-n", self.name, "link", "set", "lo", "up"])
            self._etc.mkdir(parents=True, exist_ok=True)
            (self._etc / "resolv.conf").write_text("nameserver 127.0.0.1\n", encoding="ascii")
        except BaseException:
            self._delete()
            raise
        return self

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def _delete(self) -> None:
        if self._created:
            _run(["ip", "netns", "delete", self.name])
            self._created = False
        shutil.rmtree(self._etc, ignore_errors=True)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._delete()


def _abort(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), so a reset on one leg is a reset on the other."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _pipe(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until both directions hit EOF, or pass on a reset."""
    sel = selectors.DefaultSelector()
    peers = {a: b, b: a}
    for sock in peers:
        sock.setblocking(True)
        sel.register(sock, selectors.EVENT_READ)
    open_dirs = 2
    try:
        while open_dirs:
            for key, _ in sel.select():
                src: socket.socket = key.fileobj  # type: ignore[assignment]
                dst = peers[src]
                try:
                    data = src.recv(_PIPE_CHUNK)
                    if data:
                        dst.sendall(data)
                        continue
                except OSError:
                    # A reset (or a failed write) on one leg: reset the other
                    # so the tool sees what it would have seen directly.
                    _abort(a)
                    _abort(b)
                    return
                # EOF one way: half-close the other (a TLS client may still
                # be reading the server's alert after sending its close).
                sel.unregister(src)
                open_dirs -= 1
                with contextlib.suppress(OSError):  # ENOTCONN if the other side is gone too
                    dst.shutdown(socket.SHUT_WR)
    finally:
        sel.close()
        a.close()
        b.close()


class _Forwarder:
    """Accepts on a Unix socket, connects each client to ``address:port`` over TCP."""

    def __init__(self, unix_path: Path, address: str, port: int) -> None:
        self.unix_path = unix_path
        self.address = address
        self.port = port
        self.connections = 0
        self.upstream_errors: list[str] = []
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(unix_path))
        self._sock.listen(256)
        self._threads: list[threading.Thread] = []
        self._accept_thread = threading.Thread(target=self._accept_loop, name="peer-forwarder", daemon=True)
        self._closing = False

    def start(self) -> None:
        self._accept_thread.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._sock.accept()
            except OSError:
                if self._closing:
                    return
                raise
            with self._lock:
                self.connections += 1
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection((self.address, self.port), timeout=10)
        except OSError as exc:
            # The tool sees a closed connection; the run is void (see _run_tool).
            with self._lock:
                self.upstream_errors.append(repr(exc))
            _abort(client)
            return
        upstream.settimeout(None)
        _pipe(client, upstream)

    def close(self) -> None:
        self._closing = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._accept_thread.join(5)
        for thread in self._threads:
            thread.join(5)


@contextlib.contextmanager
def _relayed(namespace: LoopbackNamespace, address: str, port: int, workdir: Path) -> Iterator[_Forwarder]:
    """Make ``address:port`` inside ``namespace`` reach the same endpoint outside.

    The forwarder counts one connection per TCP connection the tool opened.
    """
    unix_path = workdir / "relay.sock"
    forwarder = _Forwarder(unix_path, address, port)
    forwarder.start()
    env = dict(os.environ, PYTHONPATH=str(_PROJECT_ROOT))
    cmd = [
        *namespace.exec_prefix(), sys.executable, "-m", "worlds.peers", "relay",
        "--listen", address, str(port), "--unix", str(unix_path),
    ]  # fmt: skip
    stderr_path = workdir / _RELAY_STDERR
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, env=env)
    try:
        assert proc.stdout is not None
        ready = _readline(proc.stdout, _RELAY_START_TIMEOUT)
        if ready != _RELAY_READY:
            raise PeerError(
                f"relay in {namespace.name} did not start: {ready!r} {stderr_path.read_text(errors='replace')[-2000:]}"
            )
        yield forwarder
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate(timeout=10)
        forwarder.close()


def _readline(stream: IO[bytes], timeout: float) -> bytes:
    """One line from a child's pipe, or b"" if none came within ``timeout``."""
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        if not sel.select(timeout):
            return b""
    return stream.readline()


def _relay_main(address: str, port: int, unix_path: str) -> None:
    """Inside the namespace: TCP ``address:port`` -> Unix socket ``unix_path``."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((address, port))
    listener.listen(256)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    sys.stdout.buffer.write(_RELAY_READY)
    sys.stdout.flush()
    while True:
        client, _ = listener.accept()
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(unix_path)
        except OSError as exc:
            # Reported through our stderr file, which voids the run.
            print(f"relay: cannot reach {unix_path}: {exc!r}", file=sys.stderr, flush=True)
            _abort(client)
            upstream.close()
            continue
        threading.Thread(target=_pipe, args=(client, upstream), daemon=True).start()


# --- running a tool -------------------------------------------------------------


@dataclass(frozen=True)
class _Run:
    wall_s: float
    sessions: int
    stdout: str
    exit_status: int


def _run_tool(
    cmd: Sequence[str], *, address: str, port: int, workdir: Path, timeout: float, max_exit_status: int = 0
) -> _Run:
    """Run ``cmd`` confined to a loopback-only namespace; time it, count its connections.

    An exit status above ``max_exit_status`` (or death by a signal) raises.
    """
    with LoopbackNamespace() as namespace, _relayed(namespace, address, port, workdir) as forwarder:
        began = time.monotonic()
        status, out = _run_killable([*namespace.exec_prefix(), *cmd], cwd=workdir, timeout=timeout)
        wall = time.monotonic() - began
        if forwarder.upstream_errors:
            raise PeerError(
                f"{len(forwarder.upstream_errors)} of the tool's connections could not reach "
                f"{address}:{port} ({forwarder.upstream_errors[0]}); its results are void"
            )
        relay_errors = (workdir / _RELAY_STDERR).read_text(errors="replace")
        if relay_errors:
            raise PeerError(f"the relay in {namespace.name} failed; the tool's results are void:\n{relay_errors}")
        sessions = forwarder.connections
    if not 0 <= status <= max_exit_status:
        raise PeerError(f"{' '.join(cmd)} exited {status}:\n{out[-4000:]}")
    return _Run(wall_s=wall, sessions=sessions, stdout=out, exit_status=status)


def _run_killable(cmd: Sequence[str], *, cwd: Path, timeout: float) -> tuple[int, str]:
    """Run in its own process group so a timeout can end the tool and its children."""
    proc = subprocess.Popen(
        list(cmd),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the group we created, by its id
        out, _ = proc.communicate()
        raise PeerError(f"{cmd[0]} timed out after {timeout:.0f}s:\n{out.decode(errors='replace')[-4000:]}") from None
    return proc.returncode, out.decode(errors="replace")


def _fresh_dir(prefix: str) -> Path:
    """A private scratch directory for one run (output files, relay socket)."""
    return Path(tempfile.mkdtemp(prefix=prefix))


# --- testssl.sh -----------------------------------------------------------------

_TESTSSL_PROTOCOL_IDS = {
    "SSLv3": "SSLv3",
    "TLS1": "TLSv1.0",
    "TLS1_1": "TLSv1.1",
    "TLS1_2": "TLSv1.2",
    "TLS1_3": "TLSv1.3",
}
# testssl.sh exits with the sum of its checks' return codes -- non-zero when
# some check hit trouble, e.g. "Handshake error!" in -P -- and with 242-255
# for its own fatal errors (ERR_* in the script).
_TESTSSL_MAX_CHECK_STATUS = 241
_TESTSSL_CIPHER_ID = re.compile(r"^cipher-(ssl3|tls1|tls1_1|tls1_2|tls1_3)_x([0-9a-fA-F]{1,4})$")
_TESTSSL_CIPHER_VERSIONS = {
    "ssl3": "SSLv3",
    "tls1": "TLSv1.0",
    "tls1_1": "TLSv1.1",
    "tls1_2": "TLSv1.2",
    "tls1_3": "TLSv1.3",
}


def testssl_path() -> str:
    for name in ("testssl", "testssl.sh"):
        found = shutil.which(name)
        if found:
            return found
    raise PeerError("testssl.sh not installed (Debian: apt-get install testssl.sh)")


def parse_testssl_json(
    findings: Sequence[Mapping[str, Any]],
) -> tuple[frozenset[str], dict[str, frozenset[int]], bool | None]:
    """(versions, suites per version, server_order) from testssl.sh's flat ``--jsonfile``.

    Protocol ids (``SSLv3``, ``TLS1`` ... ``TLS1_3``) whose finding starts
    with "offered" are accepted versions; ``cipher-<proto>_x<hex>`` ids are
    accepted suites (``-E``); ``cipher_order`` ("server", "NOT a cipher
    order configured" or "Could not determine ...", ``-P``) gives the server
    order (True, False, None).
    """
    versions: set[str] = set()
    suites: dict[str, set[int]] = {}
    server_order: bool | None = None
    for item in findings:
        ident = str(item.get("id", ""))
        finding = str(item.get("finding", ""))
        if ident in _TESTSSL_PROTOCOL_IDS:
            # "offered", "offered (deprecated)", "offered with final";
            # "not offered", "likely not offered", "TLSv1.1 is not offered,
            # and downgraded ..."; anything else ("couldn't be tested",
            # "received 4xx/5xx after STARTTLS ...") leaves the answer open.
            if finding.startswith("offered"):
                versions.add(_TESTSSL_PROTOCOL_IDS[ident])
            elif "not offered" not in finding:
                raise PeerError(f"testssl: cannot tell whether {ident} is offered from {finding!r}")
        elif match := _TESTSSL_CIPHER_ID.match(ident):
            version = _TESTSSL_CIPHER_VERSIONS[match.group(1)]
            suites.setdefault(version, set()).add(int(match.group(2), 16))
        elif ident == "cipher_order":
            if finding.lower().startswith("server"):
                server_order = True
            elif finding.lower().startswith("not"):
                server_order = False
            elif finding.startswith("Could not determine"):
                # testssl.sh tests the order with the local openssl, which
                # may share no version/suite with the server (e.g. SSLv3/TLS
                # 1.0-only): a real "unknown", left as None.
                server_order = None
            else:
                raise PeerError(f"testssl: unknown cipher_order finding {finding!r}")
        elif item.get("severity") == "FATAL":
            raise PeerError(f"testssl reported a fatal error: {ident}: {finding}")
    return frozenset(versions), {v: frozenset(s) for v, s in suites.items()}, server_order


def _testssl_command(address: str, port: int, checks: Sequence[str], json_file: Path) -> list[str]:
    return [
        testssl_path(),
        "--starttls", "smtp",
        "--nodns", "none",  # no DNS lookups of any kind (not even rDNS)
        "--warnings", "off",  # never stop to ask
        "--color", "0",
        "--quiet",
        "--openssl", shutil.which("openssl") or "/usr/bin/openssl",
        "--connect-timeout", "10",
        "--openssl-timeout", "10",
        *checks,
        "--jsonfile", str(json_file),
        f"{_url_host(address)}:{port}",
    ]  # fmt: skip


def run_testssl(
    address: str,
    port: int,
    *,
    server_order: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    keep_output: bool = False,
) -> PeerResult:
    """testssl.sh ``--starttls smtp -p -E`` (plus ``-P`` when ``server_order``).

    ``-p`` tests the protocols, ``-E`` the ciphers per protocol; ``-P``
    (server preference) costs about as much again, so it is optional.
    """
    _check_loopback(address)
    workdir = _fresh_dir("testssl-")
    json_file = workdir / "testssl.json"
    cmd = _testssl_command(address, port, ["-p", "-E", *(["-P"] if server_order else [])], json_file)
    try:
        run = _run_tool(
            cmd,
            address=address,
            port=port,
            workdir=workdir,
            timeout=timeout,
            max_exit_status=_TESTSSL_MAX_CHECK_STATUS,
        )
        try:
            findings = json.loads(json_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise PeerError(f"testssl wrote no readable JSON ({exc}); its output:\n{run.stdout[-4000:]}") from exc
        versions, suites, order = parse_testssl_json(findings)
        version_line = _first_match(r"testssl\.sh\s+(\S+)", run.stdout) or _testssl_version()
    finally:
        if not keep_output:
            shutil.rmtree(workdir, ignore_errors=True)
    return PeerResult(
        tool="testssl.sh",
        versions=versions,
        suites=MappingProxyType(suites),
        server_order=order,
        sessions=run.sessions,
        wall_s=run.wall_s,
        tool_version=version_line,
        exit_status=run.exit_status,
        raw_output=json_file if keep_output else None,
    )


# testssl.sh's curve names (OpenSSL's) where they differ from the IANA names the scanner uses.
_TESTSSL_CURVE_NAMES = {"prime256v1": "secp256r1", "X25519": "x25519", "X448": "x448",
                        "prime192v1": "secp192r1"}
# testssl.sh names for the published DH groups it recognises, with their sizes (RFC 2409, 3526, 5114, 7919).
_TESTSSL_DH_BITS = re.compile(r"(\d{3,4})(?: bits)?")


@dataclass(frozen=True)
class KxPeerResult:
    """What testssl.sh ``-f -R`` reports about key exchange: "Elliptic curves offered" (IANA names),
    "DH group offered"/"Finite field group" (its text and the size in bits when it says it) and
    "Secure Renegotiation (RFC 5746)"."""

    curves: frozenset[str]
    dh_group: str | None
    dh_bits: int | None
    secure_renegotiation: bool | None
    sessions: int
    wall_s: float
    findings: Mapping[str, str] = field(compare=False, default_factory=dict)


def parse_testssl_kx(findings: Sequence[Mapping[str, Any]]) -> tuple[frozenset[str], str | None, bool | None]:
    """(curves, DH group text, secure renegotiation) from testssl.sh's flat ``--jsonfile`` (``-f -R``)."""
    curves: frozenset[str] = frozenset()
    dh_group: str | None = None
    renego: bool | None = None
    for item in findings:
        ident, finding = str(item.get("id", "")), str(item.get("finding", ""))
        if ident.endswith("_ECDHE_curves"):  # "FS_ECDHE_curves" (3.0: "PFS_ECDHE_curves" in older ones)
            curves = frozenset(_TESTSSL_CURVE_NAMES.get(c, c) for c in finding.split())
        elif ident == "DH_groups":
            dh_group = finding
        elif ident == "secure_renego":
            # "supported (OK)" / "Not supported / VULNERABLE (NOT ok)"; anything else stays unknown.
            lowered = finding.lower()
            renego = True if lowered.startswith("supported") else False if "not supported" in lowered else None
        elif item.get("severity") == "FATAL":
            raise PeerError(f"testssl reported a fatal error: {ident}: {finding}")
    return curves, dh_group, renego


def testssl_dh_bits(dh_group: str | None) -> int | None:
    """Bits of testssl.sh's "DH group offered" text: "Unknown DH group (1024 bits)", "ffdhe2048",
    "RFC2409/Oakley Group 2" (1024), "RFC3526/Oakley Group 14" (2048), "RFC5114/1024-bit DSA group with
    160-bit prime order subgroup" ..."""
    if dh_group is None:
        return None
    oakley = {"1": 768, "2": 1024, "5": 1536, "14": 2048, "15": 3072, "16": 4096, "17": 6144, "18": 8192}
    match = re.search(r"Oakley Group (\d+)", dh_group)
    if match:
        return oakley.get(match.group(1))
    match = _TESTSSL_DH_BITS.search(dh_group)
    return int(match.group(1)) if match else None


def run_testssl_kx(address: str, port: int, *, timeout: float = DEFAULT_TIMEOUT) -> KxPeerResult:
    """testssl.sh ``--starttls smtp -f -R``: forward secrecy (curves, DH group) and renegotiation only,
    the smallest set of checks that yields those three facts."""
    _check_loopback(address)
    workdir = _fresh_dir("testssl-kx-")
    json_file = workdir / "testssl.json"
    cmd = _testssl_command(address, port, ["-f", "-R"], json_file)
    try:
        run = _run_tool(cmd, address=address, port=port, workdir=workdir, timeout=timeout,
                        max_exit_status=_TESTSSL_MAX_CHECK_STATUS)
        try:
            findings = json.loads(json_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise PeerError(f"testssl wrote no readable JSON ({exc}); its output:\n{run.stdout[-4000:]}") from exc
        curves, dh_group, renego = parse_testssl_kx(findings)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return KxPeerResult(curves, dh_group, testssl_dh_bits(dh_group), renego, run.sessions, run.wall_s,
                        {str(f.get("id")): str(f.get("finding")) for f in findings})


def _testssl_version() -> str:
    return _run(["dpkg-query", "-W", "-f=${Version}", "testssl.sh"]).stdout.strip()


def _first_match(pattern: str, text: str) -> str | None:
    match = re.search(pattern, text)
    return match.group(1) if match else None


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


# --- sslyze -----------------------------------------------------------------------

_SSLYZE_COMMANDS = {
    "ssl_3_0_cipher_suites": "SSLv3",
    "tls_1_0_cipher_suites": "TLSv1.0",
    "tls_1_1_cipher_suites": "TLSv1.1",
    "tls_1_2_cipher_suites": "TLSv1.2",
    "tls_1_3_cipher_suites": "TLSv1.3",
}


def sslyze_venv_dir() -> Path:
    """$SMTP_TLS_SURVEY_CACHE/sslyze-venv, /var/cache/smtp-tls-survey/..., or under the temp dir."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured) / "sslyze-venv"
    system = Path("/var/cache/smtp-tls-survey")
    with contextlib.suppress(OSError):
        system.mkdir(parents=True, exist_ok=True)
    if os.access(system, os.W_OK):
        return system / "sslyze-venv"
    return Path(tempfile.gettempdir()) / "smtp-tls-survey-cache" / "sslyze-venv"


def ensure_sslyze(venv: Path | None = None) -> Path:
    """Create sslyze's own virtualenv on first use; return its ``sslyze`` script."""
    venv = venv if venv is not None else sslyze_venv_dir()
    script = venv / "bin" / "sslyze"
    marker = venv / ".installed"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with (venv.parent / ".sslyze-venv.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and script.exists():
            return script
        base_python = getattr(sys, "_base_executable", sys.executable)
        _run([base_python, "-m", "venv", "--clear", str(venv)])
        _run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", SSLYZE_REQUIREMENT])
        marker.touch()
    return script


def _suite_code(name: str) -> int:
    found = suite_by_name(name)
    if found is None:
        raise PeerError(f"sslyze reported a suite our registry does not know: {name}")
    return found.code


def parse_sslyze_json(document: Mapping[str, Any]) -> tuple[frozenset[str], dict[str, frozenset[int]], str]:
    """(versions, suites per version, sslyze version) from one-server ``--json_out``."""
    results = document.get("server_scan_results") or []
    if len(results) != 1:
        invalid = document.get("invalid_server_strings")
        raise PeerError(f"expected one server in sslyze output, got {len(results)}: {invalid}")
    server = results[0]
    if server.get("connectivity_status") != "COMPLETED":
        raise PeerError(f"sslyze could not connect: {server.get('connectivity_error_trace')}")
    versions: set[str] = set()
    suites: dict[str, frozenset[int]] = {}
    scan = server.get("scan_result") or {}
    for command, version in _SSLYZE_COMMANDS.items():
        attempt = scan.get(command)
        if attempt is None or attempt.get("status") == "NOT_SCHEDULED":
            continue
        if attempt.get("status") != "COMPLETED":
            raise PeerError(f"sslyze {command}: {attempt.get('error_reason')}\n{attempt.get('error_trace')}")
        result = attempt["result"]
        accepted = frozenset(_suite_code(a["cipher_suite"]["name"]) for a in result["accepted_cipher_suites"])
        if bool(result["is_tls_version_supported"]) != bool(accepted):
            raise PeerError(
                f"sslyze {command}: is_tls_version_supported disagrees with {len(accepted)} accepted suites"
            )
        if accepted:
            versions.add(version)
            suites[version] = accepted
    return frozenset(versions), suites, str(document.get("sslyze_version", ""))


def run_sslyze(
    address: str,
    port: int,
    *,
    sni: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    keep_output: bool = False,
) -> PeerResult:
    """sslyze ``--starttls=smtp`` with the five cipher-suite scan commands.

    sslyze has no cipher-order test, so ``server_order`` is always None.
    Without ``sni`` it sends the IP literal as SNI, which RFC 6066 §3
    forbids and which tlslite-ng answers with illegal_parameter: pass the
    server's name for tlslite servers.  SNI is never looked up.
    """
    _check_loopback(address)
    script = ensure_sslyze()
    workdir = _fresh_dir("sslyze-")
    json_file = workdir / "sslyze.json"
    cmd = [
        str(script),
        "--starttls=smtp",
        "--mozilla_config", "disable",  # no compliance run, hence no certificate_info
        "--quiet",
        f"--json_out={json_file}",
        "--sslv3", "--tlsv1", "--tlsv1_1", "--tlsv1_2", "--tlsv1_3",
        *([f"--sni={sni}"] if sni else []),
        f"{_url_host(address)}:{port}",
    ]  # fmt: skip
    try:
        run = _run_tool(
            cmd,
            address=address,
            port=port,
            workdir=workdir,
            timeout=timeout,
        )
        try:
            document = json.loads(json_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise PeerError(f"sslyze wrote no readable JSON ({exc}); its output:\n{run.stdout[-4000:]}") from exc
        versions, suites, version = parse_sslyze_json(document)
    finally:
        if not keep_output:
            shutil.rmtree(workdir, ignore_errors=True)
    return PeerResult(
        tool="sslyze",
        versions=versions,
        suites=MappingProxyType(suites),
        server_order=None,
        sessions=run.sessions,
        wall_s=run.wall_s,
        tool_version=version,
        raw_output=json_file if keep_output else None,
    )


def run_sslyze_kx(address: str, port: int, *, sni: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> int:
    """sslyze ``--elliptic_curves --reneg --compression --fallback`` (the hygiene facts it has; it reports
    no DH group size): the number of connections it needed. Results are not parsed, only counted."""
    _check_loopback(address)
    script = ensure_sslyze()
    workdir = _fresh_dir("sslyze-kx-")
    cmd = [
        str(script), "--starttls=smtp", "--mozilla_config", "disable", "--quiet",
        f"--json_out={workdir / 'sslyze.json'}",
        "--elliptic_curves", "--reneg", "--compression", "--fallback",
        *([f"--sni={sni}"] if sni else []), f"{_url_host(address)}:{port}",
    ]  # fmt: skip
    try:
        run = _run_tool(cmd, address=address, port=port, workdir=workdir, timeout=timeout)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return run.sessions


# --- command line -------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m worlds.peers relay ...`` (internal) or ``... testssl|sslyze ADDR PORT``."""
    parser = argparse.ArgumentParser(prog="python -m worlds.peers")
    sub = parser.add_subparsers(dest="command", required=True)
    relay = sub.add_parser("relay", help="internal: namespace side of the relay")
    relay.add_argument("--listen", nargs=2, metavar=("ADDRESS", "PORT"), required=True)
    relay.add_argument("--unix", required=True)
    for tool in ("testssl", "sslyze"):
        p = sub.add_parser(tool, help=f"run {tool} against ADDRESS PORT and print the normalised result")
        p.add_argument("address")
        p.add_argument("port", type=int)
    sub.add_parser("install", help="create the sslyze virtualenv now")
    args = parser.parse_args(argv)
    if args.command == "relay":
        _relay_main(args.listen[0], int(args.listen[1]), args.unix)
    elif args.command == "install":
        print(ensure_sslyze())
    else:
        runner = run_testssl if args.command == "testssl" else run_sslyze
        result = runner(args.address, args.port)
        print(result)


if __name__ == "__main__":
    main()
