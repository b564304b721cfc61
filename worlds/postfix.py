"""Real Postfix instances on loopback, one per config directory, for tests and demos.

Each :class:`PostfixInstance` gets its own ``config/`` (main.cf, master.cf),
``queue/``, ``data/`` and ``log/maillog`` under ``workdir``, listens with
smtpd on exactly one ``address:port`` and is started/stopped with
``postfix -c workdir/config start|stop``.  Several instances run side by side.

The instances are deliberately inert -- the scanner never sends MAIL, and a
test world must never send traffic off this machine:

* every RCPT is rejected and every transport is ``error:``; master.cf has no
  smtp/lmtp client, no local delivery, no pickup;
* ``smtpd_peername_lookup = no`` and an explicit ``myhostname`` keep smtpd
  from doing DNS (the system resolver here is not on loopback);
* there is no syslog on this machine, so logging goes through postlogd to
  ``maillog_file`` (Postfix >= 3.4).

Requires root (Postfix's master runs as root and drops to ``mail_owner``) and
the Debian ``postfix`` package; :func:`install_postfix` installs it.
"""

from __future__ import annotations

import base64
import grp
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from worlds.procs import ServerLifecycle, alive, children

__all__ = [
    "PostfixError",
    "PostfixInstance",
    "PostfixTimings",
    "install_postfix",
    "postfix_available",
]

MAIL_OWNER = "postfix"
SETGID_GROUP = "postdrop"
DEFAULT_START_TIMEOUT = 30.0
DEFAULT_STOP_TIMEOUT = 30.0
_FATAL_MARKERS = re.compile(r"(fatal|panic): |bad command startup")

# Services smtpd may call on: cleanup (MAIL), trivial-rewrite (address
# rewriting at RCPT), anvil (connection limits), tlsmgr (TLS session cache),
# proxymap, bounce/defer/trace, scache, postlogd.  Deliberately absent: smtp,
# lmtp, relay, local, virtual, pipe, pickup, showq -- nothing here delivers.
# Columns: service type private unpriv chroot wakeup maxproc command.
_SUPPORT_SERVICES = (
    "cleanup   unix  n       -       n       -       0       cleanup",
    "qmgr      unix  n       -       n       300     1       qmgr",
    "tlsmgr    unix  -       -       n       1000?   1       tlsmgr",
    "rewrite   unix  -       -       n       -       -       trivial-rewrite",
    "bounce    unix  -       -       n       -       0       bounce",
    "defer     unix  -       -       n       -       0       bounce",
    "trace     unix  -       -       n       -       0       bounce",
    "verify    unix  -       -       n       -       1       verify",
    "proxymap  unix  -       -       n       -       -       proxymap",
    "anvil     unix  -       -       n       -       1       anvil",
    "scache    unix  -       -       n       -       1       scache",
    "error     unix  -       -       n       -       -       error",
    "retry     unix  -       -       n       -       -       error",
    "discard   unix  -       -       n       -       -       discard",
    "postlog   unix-dgram n  -       n       -       1       postlogd",
)


def _queue_layout(owner: int, postdrop: int) -> list[tuple[str, int, int, int]]:
    """(subdir, mode, uid, gid) of the queue directory, from /etc/postfix/postfix-files."""
    private = [
        (name, 0o700, owner, 0)
        for name in (
            "active", "bounce", "corrupt", "defer", "deferred", "flush",
            "hold", "incoming", "private", "saved", "trace",
        )
    ]
    return [
        ("", 0o755, 0, 0),
        ("pid", 0o755, 0, 0),
        ("maildrop", 0o730, owner, postdrop),
        ("public", 0o710, owner, postdrop),
        *private,
    ]


class PostfixError(RuntimeError):
    """Postfix failed to start/stop; the message carries the relevant log tail."""


@dataclass(frozen=True)
class PostfixTimings:
    """Seconds spent in the last start()/stop() (None until it happened)."""

    start_seconds: float | None
    stop_seconds: float | None


def postfix_available() -> bool:
    """Whether the postfix command and daemons are installed."""
    return shutil.which("postfix") is not None and Path("/usr/lib/postfix/sbin/master").exists()


def install_postfix() -> None:
    """Install Debian's postfix without configuring a system instance.

    debconf is preseeded with "No configuration" so no /etc/postfix/main.cf
    (and no system MTA) is set up; we only want the binaries.
    """
    if postfix_available():
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(
        ["debconf-set-selections"],
        input=b"postfix postfix/main_mailer_type select No configuration\n",
        check=True,
    )
    subprocess.run(["apt-get", "install", "-y", "postfix"], env=env, check=True, capture_output=True)
    if not postfix_available():
        raise PostfixError("apt-get installed postfix but its binaries are missing")


class PostfixInstance(ServerLifecycle):
    """One Postfix (master + smtpd) listening on ``address:port``.

    ``tls=False`` turns STARTTLS off (``smtpd_tls_security_level = none``);
    otherwise it is offered (``may``) with ``cert_file``/``key_file`` (a
    combined PEM may be given as ``cert_file`` alone).  ``tls_protocols`` and
    ``tls_ciphers`` set both the opportunistic and mandatory smtpd variants
    (e.g. ``">=TLSv1.2"``, ``"<=TLSv1.1"``; grade ``"high"``, ``"medium"``);
    ``tls_cipherlist`` replaces the OpenSSL cipher list of the chosen grade.
    (Unlike a bare OpenSSL 3 context, Postfix 3.7 negotiates TLS 1.0/1.1 when
    ``tls_protocols`` allows them, without any ``@SECLEVEL=0``.)
    ``banner`` is the text after ``220 `` (default ``"$myhostname ESMTP"``).
    ``extra_main_cf`` is applied last and may override anything.
    ``sni_certs`` maps server names to (cert_file, key_file): Postfix >= 3.4 then presents that chain to
    a client sending that SNI (``tls_server_sni_maps``) and the default chain to every other client.
    """

    def __init__(
        self,
        workdir: Path,
        address: str,
        port: int,
        hostname: str,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        *,
        tls: bool = True,
        tls_protocols: str | None = None,
        tls_ciphers: str | None = None,
        tls_cipherlist: str | None = None,
        banner: str | None = None,
        extra_main_cf: Mapping[str, str] | None = None,
        sni_certs: Mapping[str, tuple[Path, Path]] | None = None,
    ) -> None:
        if tls and cert_file is None:
            raise ValueError("tls=True needs cert_file (and key_file unless combined)")
        if key_file is not None and cert_file is None:
            raise ValueError("key_file without cert_file")
        self.workdir = workdir.resolve()
        self.address = address
        self.port = port
        self.hostname = hostname
        self.cert_file = cert_file.resolve() if cert_file is not None else None
        self.key_file = key_file.resolve() if key_file is not None else None
        self.tls = tls
        self.tls_protocols = tls_protocols
        self.tls_ciphers = tls_ciphers
        self.tls_cipherlist = tls_cipherlist
        self.banner = banner
        self.extra_main_cf = MappingProxyType(dict(extra_main_cf or {}))
        self.sni_certs = MappingProxyType({name: (cert.resolve(), key.resolve())
                                           for name, (cert, key) in (sni_certs or {}).items()})
        self.config_dir = self.workdir / "config"
        self.queue_dir = self.workdir / "queue"
        self.data_dir = self.workdir / "data"
        self.log_dir = self.workdir / "log"
        self.maillog = self.log_dir / "maillog"
        self._running = False
        self._start_seconds: float | None = None
        self._stop_seconds: float | None = None

    # --- configuration --------------------------------------------------

    def main_cf(self) -> dict[str, str]:
        """The main.cf parameters this instance is started with."""
        cf: dict[str, str] = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "mail_owner": MAIL_OWNER,
            "setgid_group": SETGID_GROUP,
            "maillog_file": str(self.maillog),
            # postlogd only writes under these prefixes.
            "maillog_file_prefixes": str(self.log_dir),
            "myhostname": self.hostname,
            "mydomain": "example.test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "mynetworks": "127.0.0.0/8",
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv6" if ":" in self.address else "ipv4",
            # No DNS, ever: the resolver of this machine is off loopback.
            "smtpd_peername_lookup": "no",
            "smtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            # Nothing is accepted or delivered.
            "smtpd_relay_restrictions": "reject",
            "smtpd_recipient_restrictions": "reject",
            "default_transport": "error:test world does not deliver",
            "relay_transport": "error:test world does not deliver",
            "local_transport": "error:test world does not deliver",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "biff": "no",
            "smtputf8_enable": "yes",
            "smtpd_banner": self.banner if self.banner is not None else "$myhostname ESMTP",
        }
        if self.tls:
            assert self.cert_file is not None
            key = self.key_file if self.key_file is not None else self.cert_file
            cf.update(
                {
                    "smtpd_tls_security_level": "may",
                    # Key first, then its chain (Postfix >= 3.4 chain_files order).
                    "smtpd_tls_chain_files": f"{key}, {self.cert_file}"
                    if key != self.cert_file
                    else str(self.cert_file),
                    "smtpd_tls_loglevel": "1",
                    "smtpd_tls_session_cache_database": "",
                }
            )
            if self.sni_certs:
                cf["tls_server_sni_maps"] = f"hash:{self.config_dir / 'sni_map'}"
            if self.tls_protocols is not None:
                cf["smtpd_tls_protocols"] = self.tls_protocols
                cf["smtpd_tls_mandatory_protocols"] = self.tls_protocols
            if self.tls_ciphers is not None:
                cf["smtpd_tls_ciphers"] = self.tls_ciphers
                cf["smtpd_tls_mandatory_ciphers"] = self.tls_ciphers
            if self.tls_cipherlist is not None:
                grade = self.tls_ciphers or "medium"
                cf[f"tls_{grade}_cipherlist"] = self.tls_cipherlist
        else:
            cf["smtpd_tls_security_level"] = "none"
        cf.update(self.extra_main_cf)
        return cf

    def master_cf(self) -> str:
        """master.cf: smtpd on address:port plus the support services."""
        listener = f"{self._listen_endpoint()}  inet  n  -  n  -  -  smtpd"
        return "\n".join((listener, *_SUPPORT_SERVICES)) + "\n"

    def _listen_endpoint(self) -> str:
        if ":" in self.address:
            return f"[{self.address}]:{self.port}"
        return f"{self.address}:{self.port}"

    def _sni_map(self) -> str:
        """``tls_server_sni_maps`` source: a name, then its key and chain files (``postmap -F`` stores
        their contents, base64-encoded, in the indexed map)."""
        return "".join(f"{name} {key} {cert}\n" for name, (cert, key) in self.sni_certs.items())

    def _write_config(self) -> None:
        self._check_traversable()
        for directory in (self.workdir, self.config_dir, self.log_dir):
            directory.mkdir(parents=True, exist_ok=True)
        # Postfix daemons chdir into queue_directory as mail_owner, and the
        # postlogd writes as root; workdir must be reachable by mail_owner.
        os.chmod(self.workdir, 0o755)
        lines = [f"{name} = {value}" for name, value in self.main_cf().items()]
        (self.config_dir / "main.cf").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (self.config_dir / "master.cf").write_text(self.master_cf(), encoding="utf-8")
        if self.sni_certs:
            (self.config_dir / "sni_map").write_text(self._sni_map(), encoding="utf-8")
            subprocess.run(["postmap", "-c", str(self.config_dir), "-F", f"hash:{self.config_dir / 'sni_map'}"],
                           stdin=subprocess.DEVNULL, capture_output=True, check=True, timeout=60)
        # Postfix re-reads a table whose mtime is within ~2 s of "now" (in
        # 300 ms steps) until it looks settled, which costs ~1.5 s on every
        # fresh start; backdating the files skips that wait.
        settled = time.time() - 60
        for name in ("main.cf", "master.cf", *(("sni_map", "sni_map.db") if self.sni_certs else ())):
            os.utime(self.config_dir / name, (settled, settled))
        self._make_queue_dirs()

    def _make_queue_dirs(self) -> None:
        """Create queue/ and data/ with the owners and modes of postfix-files.

        ``postfix set-permissions`` (post-install) does the same but takes
        ~2 s per instance on this machine; master refuses to start, or its
        daemons fail, if these are missing or wrongly owned.
        """
        owner = pwd.getpwnam(MAIL_OWNER).pw_uid
        postdrop = grp.getgrnam(SETGID_GROUP).gr_gid
        for name, mode, uid, gid in _queue_layout(owner, postdrop):
            path = self.queue_dir / name if name else self.queue_dir
            path.mkdir(exist_ok=True)
            os.chown(path, uid, gid)
            os.chmod(path, mode)
        self.data_dir.mkdir(exist_ok=True)
        os.chown(self.data_dir, owner, 0)
        os.chmod(self.data_dir, 0o700)
        # postfix-script skips its integrity checks (post-install
        # create-missing, postsuper queue scan: ~1.5 s) once when this file
        # exists; the layout above is exactly what those checks would create.
        (self.queue_dir / "quick-start").touch()

    def _check_traversable(self) -> None:
        """Fail early if mail_owner cannot reach workdir (e.g. under a 0700 dir)."""
        owner = pwd.getpwnam(MAIL_OWNER)
        for ancestor in self.workdir.parents:
            st = ancestor.stat()
            if st.st_uid == owner.pw_uid:
                continue
            searchable = stat.S_IXGRP if st.st_gid == owner.pw_gid else stat.S_IXOTH
            if not st.st_mode & searchable:
                raise PostfixError(
                    f"{ancestor} (mode {stat.filemode(st.st_mode)}) cannot be traversed by "
                    f"user {MAIL_OWNER}; use a workdir whose parents are all o+x (pytest's "
                    "tmp_path is not: /tmp/pytest-of-root is 0700; tempfile.mkdtemp() + chmod 0755 is)"
                )

    # --- lifecycle ------------------------------------------------------

    def _postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``postfix -c config_dir ARGS``; output goes through a file.

        Not a pipe: the master daemon inherits it and holds it open for about
        1.5 s after ``postfix start`` returns, which capture_output waits out.
        Note that postfix(1) prints fatal errors only on a tty; otherwise they
        go to maillog_file, which :meth:`log_tail` shows.
        """
        self.log_dir.mkdir(parents=True, exist_ok=True)
        out_path = self.log_dir / "postfix-command.out"
        with out_path.open("w+", encoding="utf-8", errors="replace") as out:
            proc = subprocess.run(
                ["postfix", "-c", str(self.config_dir), *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
            out.seek(0)
            text = out.read()
        result = subprocess.CompletedProcess(proc.args, proc.returncode, text, "")
        if check and proc.returncode != 0:
            raise PostfixError(
                f"postfix {' '.join(args)} exited {proc.returncode}: {text}"
                f"\n--- maillog ---\n{self.log_tail()}"
            )
        return result

    def start(self, timeout: float = DEFAULT_START_TIMEOUT) -> None:
        """Write config, start master, return once a 220 banner is readable."""
        if self._running:
            raise RuntimeError("already started")
        began = time.monotonic()
        self._write_config()
        self._postfix("start")
        self._running = True
        try:
            self._wait_for_banner(began + timeout)
        except BaseException:
            self._abort()
            raise
        self._start_seconds = time.monotonic() - began

    def _wait_for_banner(self, deadline: float) -> None:
        last_error = "no attempt made"
        while time.monotonic() < deadline:
            try:
                banner = self.read_banner(timeout=min(0.5, max(0.05, deadline - time.monotonic())))
            except OSError as exc:
                last_error = repr(exc)
            else:
                if banner.startswith(b"220"):
                    return
                last_error = f"unexpected banner {banner!r}"
            # A daemon that dies on start-up (bad parameter, unreadable key)
            # leaves master throttling it; no point waiting out the timeout.
            if _FATAL_MARKERS.search(self.log_tail()):
                break
            time.sleep(0.05)
        raise PostfixError(
            f"postfix on {self._listen_endpoint()} gave no 220 banner ({last_error})"
            f"\n--- maillog ---\n{self.log_tail()}"
        )

    def read_banner(self, timeout: float = 5.0) -> bytes:
        """Connect, read the first reply line, send QUIT; raises OSError if down."""
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect((self.address, self.port))
            with sock.makefile("rb") as reader:
                line = reader.readline(8192)
            sock.sendall(b"QUIT\r\n")
        return line

    def master_pid(self) -> int | None:
        """PID from queue/pid/master.pid when that process is alive, else None."""
        try:
            pid = int((self.queue_dir / "pid" / "master.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if alive(pid) else None

    def instance_pids(self) -> list[int]:
        """All live processes of this instance: master and its children."""
        master = self.master_pid()
        if master is None:
            return []
        return [master, *children(master)]

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Stop this instance only and wait until all its processes are gone.

        ``postfix abort`` (SIGTERM to this instance's master, which takes its
        children down) rather than ``postfix stop``, whose script polls with
        ``sleep 1`` and so always costs a second; we poll the PIDs ourselves.
        """
        if not self._running:
            return
        began = time.monotonic()
        pids = self.instance_pids()
        proc = self._postfix("abort", check=False)
        deadline = began + timeout
        while time.monotonic() < deadline and any(alive(p) for p in pids):
            time.sleep(0.01)
        survivors = [p for p in pids if alive(p)]
        self._running = False
        self._stop_seconds = time.monotonic() - began
        if survivors:
            for pid in survivors:
                _kill(pid)
            raise PostfixError(
                f"postfix abort left {survivors} running (now killed); postfix said "
                f"{proc.stdout}\n--- maillog ---\n{self.log_tail()}"
            )
        if proc.returncode != 0:
            raise PostfixError(f"postfix abort exited {proc.returncode}: {proc.stdout}")

    def _abort(self) -> None:
        """Teardown after a failed start: abort master, kill leftovers."""
        pids = self.instance_pids()
        self._postfix("abort", check=False)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(alive(p) for p in pids):
            time.sleep(0.02)
        for pid in pids:
            if alive(pid):
                _kill(pid)
        self._running = False

    @property
    def running(self) -> bool:
        return self._running

    @property
    def timings(self) -> PostfixTimings:
        return PostfixTimings(self._start_seconds, self._stop_seconds)

    def log_tail(self, max_chars: int = 6000) -> str:
        try:
            return self.maillog.read_text(errors="replace")[-max_chars:]
        except OSError as exc:
            return f"(no maillog at {self.maillog}: {exc})"


def _kill(pid: int) -> None:
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        return


def write_dh_params(path: Path, prime: int, generator: int = 2) -> Path:
    """A PKCS #3 DHParameter PEM (what ``smtpd_tls_dh1024_param_file`` reads) for a given prime, readable
    by the daemon's unprivileged user. Written by hand: ``cryptography`` deprecates finite-field DH."""
    def der_int(value: int) -> bytes:
        body = value.to_bytes(value.bit_length() // 8 + 1, "big")  # a leading zero byte keeps it positive
        return b"\x02" + _der_length(len(body)) + body

    content = der_int(prime) + der_int(generator)
    encoded = base64.b64encode(b"\x30" + _der_length(len(content)) + content).decode("ascii")
    lines = [encoded[i:i + 64] for i in range(0, len(encoded), 64)]
    path.write_text("-----BEGIN DH PARAMETERS-----\n" + "\n".join(lines) + "\n-----END DH PARAMETERS-----\n",
                    encoding="ascii")
    path.chmod(0o644)
    return path


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    size = (n.bit_length() + 7) // 8
    return bytes([0x80 | size]) + n.to_bytes(size, "big")
