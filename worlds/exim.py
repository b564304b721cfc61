"""Exim 4 (GnuTLS) instances on loopback, for TLS postures OpenSSL 3 cannot serve.

Debian's MTA packages conflict with each other, and the test worlds already
use the installed postfix, so exim is never installed: ``apt-get download``
fetches ``exim4-daemon-light`` (the only package holding ``/usr/sbin/exim4``)
plus any shared library it needs that this machine lacks (``libidn12`` on
Debian 12), and ``dpkg -x`` unpacks them into a cache directory.  The binary
runs from there with ``LD_LIBRARY_PATH`` pointing at the unpacked libraries
and with a configuration file of our own (``-C``).  See :func:`ensure_exim`.

Why exim: it links GnuTLS, whose priority strings (``tls_require_ciphers``)
still enable 3DES, RC4 (ARCFOUR-128) and HMAC-MD5 suites, TLS 1.0/1.1 without
any security-level override, and server-side cipher precedence
(``%SERVER_PRECEDENCE``).  Debian 12's GnuTLS 3.7.9 is built without SSL 3.0;
use :mod:`worlds.tlslite_smtp` for SSLv3.

Postures (:data:`POSTURES`) as verified on Debian 12 (exim 4.96, GnuTLS
3.7.9) with an RSA-2048 certificate, by raw ClientHellos, gnutls-cli and
openssl s_client (tests/integration/test_world_tls_servers.py).  IANA code
points; an EC certificate would swap the RSA-authenticated suites for
ECDHE-ECDSA ones.  GnuTLS's NORMAL has no HMAC-SHA256/384 CBC suites.

* ``legacy``: TLS 1.0, 1.1, 1.2, server order.  TLS 1.0 and 1.1 accept
  0xC014 0xC013 0xC012 0xC011 0x0035 0x002F 0x000A 0x0005 0x0004 0x0039
  0x0033 0x0016 (3DES: 0xC012 0x000A 0x0016; RC4: 0xC011 0x0005 0x0004);
  TLS 1.2 the same plus 0xC030 0xC02F 0xCCA8 0x009F 0x009E 0xCCAA 0xC09F
  0xC09E 0x009D 0x009C 0xC09D 0xC09C.
* ``tls12``: TLS 1.2 only, client order; 0xC014 0xC013 0x0039 0x0033 0x0035
  0x002F and the twelve AEAD suites above.
* ``tls13``: TLS 1.3 only, client order; 0x1301 0x1302 0x1303 0x1304.
* ``restricted``: TLS 1.2 only, server order 0xC030 > 0xC02F > 0xC014.

Exim needs the user compiled into Debian's binary (``Debian-exim``) to exist
before it even reads its configuration; :func:`ensure_exim_user` creates it
as a system user when missing (what exim4-base's postinst would do).  Start
it as root: with ``-C`` naming a file outside exim's compiled-in trusted list,
exim gives up root and the daemon and its per-connection processes run as
``Debian-exim`` (checked with ps), after binding its port (25 works).  So
``workdir`` must be traversable by that user, and the TLS key is copied into
``workdir/tls`` readable by its group.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from worlds.procs import ServerLifecycle, alive, children

__all__ = [
    "POSTURES",
    "EximBinary",
    "EximError",
    "EximInstance",
    "ensure_exim",
    "ensure_exim_user",
    "exim_cache_dir",
]

EXIM_USER = "Debian-exim"  # EXIM_USER compiled into Debian's exim4 binaries
# exim4-daemon-light holds the binary; libidn12 is its one dependency that a
# Debian 12 machine without exim usually lacks.  Libraries already present on
# the system are used from there.
EXIM_PACKAGES: tuple[str, ...] = ("exim4-daemon-light", "libidn12")
CACHE_ENV = "SMTP_TLS_SURVEY_CACHE"
DEFAULT_START_TIMEOUT = 15.0
DEFAULT_STOP_TIMEOUT = 10.0
_LIB_SUBDIR = "usr/lib/x86_64-linux-gnu"
_READY_MARKER = ".unpacked"

# GnuTLS priority strings (gnutls_priority_init(3), "Priority strings" in the
# GnuTLS manual).  NORMAL in GnuTLS 3.7 already has TLS 1.0-1.3; "+" adds,
# "-" removes, %SERVER_PRECEDENCE makes the server's order win.
POSTURES: Mapping[str, str] = MappingProxyType(
    {
        "legacy": "NORMAL:-VERS-TLS1.3:+VERS-TLS1.0:+VERS-TLS1.1:+3DES-CBC:+ARCFOUR-128:+MD5:%SERVER_PRECEDENCE",
        "tls12": "NORMAL:-VERS-ALL:+VERS-TLS1.2",
        "tls13": "NORMAL:-VERS-ALL:+VERS-TLS1.3",
        "restricted": (
            "NORMAL:-VERS-ALL:+VERS-TLS1.2:-CIPHER-ALL:+AES-256-GCM:+AES-128-GCM:+AES-256-CBC"
            ":-MAC-ALL:+AEAD:+SHA1:-KX-ALL:+ECDHE-RSA:%SERVER_PRECEDENCE"
        ),
    }
)


class EximError(RuntimeError):
    """Exim could not be fetched, started or stopped; carries the log tail."""


@dataclass(frozen=True)
class EximBinary:
    """An unpacked exim: the binary, its extra library dir and version string."""

    exim: Path
    lib_dir: Path
    version: str

    def env(self) -> dict[str, str]:
        """Environment for running it (the unpacked libraries first)."""
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LANG": "C"}
        env["LD_LIBRARY_PATH"] = str(self.lib_dir)
        return env


def exim_cache_dir() -> Path:
    """Where unpacked packages live: $SMTP_TLS_SURVEY_CACHE, /var/cache/..., or the temp dir."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured) / "exim"
    system = Path("/var/cache/smtp-tls-survey")
    with contextlib.suppress(OSError):
        system.mkdir(parents=True, exist_ok=True)
    if os.access(system, os.W_OK):
        return system / "exim"
    return Path(tempfile.gettempdir()) / "smtp-tls-survey-cache" / "exim"


@contextlib.contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    """Exclusive flock, so parallel test processes unpack only once."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run(cmd: list[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None) -> str:
    proc = subprocess.run(
        cmd, cwd=cwd, env=None if env is None else dict(env), capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise EximError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return proc.stdout + proc.stderr


def _download(packages: tuple[str, ...], into: Path) -> list[Path]:
    """``apt-get download`` the packages; one ``apt-get update`` retry if apt has no lists yet."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        _run(["apt-get", "download", *packages], cwd=into, env=env)
    except EximError:
        _run(["apt-get", "update", "-qq"], env=env)
        _run(["apt-get", "download", *packages], cwd=into, env=env)
    debs = sorted(into.glob("*.deb"))
    if len(debs) != len(packages):
        raise EximError(f"apt-get download gave {[d.name for d in debs]} for {packages}")
    return debs


def _exim_version(exim: Path, env: Mapping[str, str]) -> str:
    # -bV with an empty configuration prints the build information and exits.
    out = _run([str(exim), "-C", "/dev/null", "-bV"], env=env)
    match = re.search(r"Exim version (\S+)", out)
    if match is None:
        raise EximError(f"unexpected exim -bV output:\n{out}")
    return match.group(1)


def ensure_exim(cache_dir: Path | None = None) -> EximBinary:
    """Fetch and unpack exim once; later calls return the cached copy at once.

    Requires root (dpkg -x keeps the binary setuid root; exim's daemon wants
    root anyway) and reachable Debian package mirrors on the first call.
    """
    base = cache_dir if cache_dir is not None else exim_cache_dir()
    root = base / "root"
    binary = root / "usr" / "sbin" / "exim4"
    lib_dir = root / _LIB_SUBDIR
    ensure_exim_user()
    with _locked(base / ".lock"):
        if not (root / _READY_MARKER).exists():
            _unpack(base, root)
    found = EximBinary(exim=binary, lib_dir=lib_dir, version="")
    return EximBinary(exim=binary, lib_dir=lib_dir, version=_exim_version(binary, found.env()))


def _unpack(base: Path, root: Path) -> None:
    staging = Path(tempfile.mkdtemp(prefix="unpack-", dir=base))
    try:
        debs_dir = staging / "debs"
        debs_dir.mkdir()
        # apt drops privileges to _apt for downloads and warns if it cannot
        # write the target directory.
        debs_dir.chmod(0o777)
        staged_root = staging / "root"
        for deb in _download(EXIM_PACKAGES, debs_dir):
            _run(["dpkg", "-x", str(deb), str(staged_root)])
        exim = staged_root / "usr" / "sbin" / "exim4"
        env = EximBinary(exim, staged_root / _LIB_SUBDIR, "").env()
        missing = [line.strip() for line in _run(["ldd", str(exim)], env=env).splitlines() if "not found" in line]
        if missing:
            raise EximError(f"exim4 still lacks shared libraries: {missing}; add their packages to EXIM_PACKAGES")
        (staged_root / _READY_MARKER).touch()
        if root.exists():
            shutil.rmtree(root)  # a half-unpacked leftover without the marker
        staged_root.rename(root)
        # The extracted tree must be traversable by exim's user for re-execs.
        for directory in (base, root):
            directory.chmod(0o755)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def ensure_exim_user() -> None:
    """Create the ``Debian-exim`` system user if it does not exist.

    Debian's exim4 looks this user up by name before it reads any
    configuration and refuses to run without it (``failed to find uid for
    user name "Debian-exim"``).
    """
    try:
        pwd.getpwnam(EXIM_USER)
    except KeyError:
        _run(
            [
                "useradd", "--system", "--user-group", "--no-create-home",
                "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", EXIM_USER,
            ]
        )  # fmt: skip


class EximInstance(ServerLifecycle):
    """One exim daemon listening on ``address:port`` with STARTTLS.

    ``priority`` is a GnuTLS priority string for ``tls_require_ciphers``
    (see :data:`POSTURES`); None keeps exim's default ("NORMAL").
    ``tls=False`` stops advertising STARTTLS.  The daemon runs in the
    foreground (``-bdf``) as our child process; its log is
    ``workdir/log/mainlog`` (and ``paniclog``).  Every RCPT is refused (no
    ``acl_smtp_rcpt``) and there are no routers: nothing is ever delivered.
    """

    def __init__(
        self,
        workdir: Path,
        address: str,
        port: int,
        hostname: str,
        cert_file: Path,
        key_file: Path,
        *,
        priority: str | None = None,
        tls: bool = True,
        binary: EximBinary | None = None,
        extra_config: Mapping[str, str] | None = None,
    ) -> None:
        self.workdir = workdir.resolve()
        self.address = address
        self.port = port
        self.hostname = hostname
        self.cert_file = cert_file
        self.key_file = key_file
        self.priority = priority
        self.tls = tls
        self._binary = binary
        self.extra_config = MappingProxyType(dict(extra_config or {}))
        self.config_file = self.workdir / "exim.conf"
        self.spool_dir = self.workdir / "spool"
        self.log_dir = self.workdir / "log"
        self.mainlog = self.log_dir / "mainlog"
        self._proc: subprocess.Popen[bytes] | None = None

    # --- configuration --------------------------------------------------

    def config(self) -> dict[str, str]:
        """Main-section options of the configuration file."""
        tls_dir = self.workdir / "tls"
        cf: dict[str, str] = {
            "primary_hostname": self.hostname,
            "qualify_domain": self.hostname,
            "keep_environment": "",
            # Any re-exec must run this unpacked binary, not /usr/sbin/exim4.
            "exim_path": str(self.binary.exim),
            "spool_directory": str(self.spool_dir),
            "log_file_path": f"{self.log_dir}/%slog",
            # One line per TCP connection lets tests count sessions.
            "log_selector": "+smtp_connection +incoming_port +tls_cipher",
            "local_interfaces": f"<; {self.address}",
            "daemon_smtp_ports": str(self.port),
            # Fail at once if the port is taken instead of retrying for 5 min.
            "daemon_startup_retries": "0",
            # No DNS and no ident (RFC 1413) callbacks: nothing leaves the box
            # and nothing delays the banner.
            "host_lookup": "",
            "rfc1413_hosts": "",
            "smtp_banner": f"{self.hostname} ESMTP Exim test server",
            # Scanners open several connections at once (sslyze: 5 per server).
            "smtp_accept_max": "0",
            "tls_advertise_hosts": "*" if self.tls else "",
        }
        if self.tls:
            cf["tls_certificate"] = str(tls_dir / "cert.pem")
            cf["tls_privatekey"] = str(tls_dir / "key.pem")
            # A named RFC 7919 group: no DH parameter generation at start-up.
            cf["tls_dhparam"] = "ffdhe2048"
            if self.priority is not None:
                cf["tls_require_ciphers"] = self.priority
        cf.update(self.extra_config)
        return cf

    def _write_config(self) -> None:
        self._check_traversable()
        owner = pwd.getpwnam(EXIM_USER)
        for directory in (self.workdir, self.spool_dir, self.log_dir, self.workdir / "tls"):
            directory.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o755)
        for directory in (self.spool_dir, self.log_dir):
            os.chown(directory, owner.pw_uid, owner.pw_gid)
            directory.chmod(0o750)
        if self.tls:
            # Copies readable by exim's user: the caller's key file is 0600.
            tls_dir = self.workdir / "tls"
            for src, name in ((self.cert_file, "cert.pem"), (self.key_file, "key.pem")):
                dst = tls_dir / name
                shutil.copyfile(src, dst)
                os.chown(dst, 0, owner.pw_gid)
                dst.chmod(0o640)
        lines = [f"{name} = {value}" for name, value in self.config().items()]
        # exim refuses a configuration writable by anyone but its owner.
        self.config_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.config_file.chmod(0o644)

    def _check_traversable(self) -> None:
        """exim's per-connection processes run as Debian-exim: workdir must be reachable."""
        for ancestor in self.workdir.parents:
            mode = ancestor.stat().st_mode
            if not mode & stat.S_IXOTH:
                raise EximError(
                    f"{ancestor} (mode {stat.filemode(mode)}) cannot be traversed by {EXIM_USER}; "
                    "use a workdir whose parents are all o+x (pytest's tmp_path is not; "
                    "tempfile.mkdtemp() + chmod 0755 is)"
                )

    # --- lifecycle ------------------------------------------------------

    @property
    def binary(self) -> EximBinary:
        if self._binary is None:
            self._binary = ensure_exim()
        return self._binary

    def start(self, timeout: float = DEFAULT_START_TIMEOUT) -> None:
        """Write the config, start ``exim4 -bdf``, return once a 220 banner is readable."""
        if self._proc is not None:
            raise RuntimeError("already started")
        binary = self.binary
        self._write_config()
        stderr_path = self.log_dir / "exim.stderr"
        with stderr_path.open("wb") as err:
            self._proc = subprocess.Popen(
                # -oX without -oP: no PID file, which a dying daemon would
                # re-exec itself (without our LD_LIBRARY_PATH) to remove.
                [str(binary.exim), "-C", str(self.config_file), "-bdf", "-oX", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                env=binary.env(),
                cwd=self.workdir,
            )
        try:
            self._wait_for_banner(time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_for_banner(self, deadline: float) -> None:
        assert self._proc is not None
        last_error = "no attempt made"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                last_error = f"exim exited with status {self._proc.returncode}"
                break
            try:
                banner = self.read_banner(timeout=1.0)
            except OSError as exc:
                last_error = repr(exc)
            else:
                if banner.startswith(b"220"):
                    return
                last_error = f"unexpected banner {banner!r}"
            time.sleep(0.05)
        raise EximError(f"exim on {self.address}:{self.port} gave no 220 banner ({last_error})\n{self.log_tail()}")

    def read_banner(self, timeout: float = 5.0) -> bytes:
        """Connect, read the first reply line, send QUIT; raises OSError if down."""
        with socket.create_connection((self.address, self.port), timeout=timeout) as sock:
            with sock.makefile("rb") as reader:
                line = reader.readline(8192)
            sock.sendall(b"QUIT\r\n")
        return line

    @property
    def pid(self) -> int | None:
        """The daemon's PID while it runs."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """SIGTERM the daemon, SIGKILL its per-connection children, reap everything.

        exim's daemon exits on SIGTERM but leaves running SMTP sessions to
        finish; those are our children too, so they are killed by PID.
        """
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        sessions = children(proc.pid)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
        for pid in sessions:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(alive(p) for p in sessions):
            time.sleep(0.01)
        survivors = [p for p in sessions if alive(p)]
        if survivors:
            raise EximError(f"exim session processes {survivors} survived SIGKILL")

    @property
    def running(self) -> bool:
        return self.pid is not None

    def connection_count(self) -> int:
        """TCP connections exim accepted so far (``SMTP connection from`` log lines)."""
        try:
            text = self.mainlog.read_text(errors="replace")
        except FileNotFoundError:
            return 0
        # The opening line carries the connection count; the closing one not.
        return sum(1 for line in text.splitlines() if "TCP/IP connection count" in line)

    def log_tail(self, max_chars: int = 6000) -> str:
        parts = []
        for name in ("mainlog", "paniclog", "exim.stderr"):
            path = self.log_dir / name
            with contextlib.suppress(FileNotFoundError):
                parts.append(f"--- {name} ---\n{path.read_text(errors='replace')[-max_chars:]}")
        return "\n".join(parts) if parts else f"(no logs in {self.log_dir})"


def main() -> None:
    """``python -m worlds.exim``: fetch/unpack exim now (for set-up scripts)."""
    binary = ensure_exim()
    print(f"exim {binary.version} at {binary.exim}")


if __name__ == "__main__":
    main()
