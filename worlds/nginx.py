"""A real nginx serving MTA-STS policy hosts over HTTPS on a loopback address, for test worlds.

Debian's ``nginx-light`` (or ``nginx``) package is enough; the packaged service is never used. Each
:class:`Site` is one ``server`` block selected by SNI (``mta-sts.<domain>``) with its own
certificate and one behaviour for ``/.well-known/mta-sts.txt``: a policy body with any status and
media type, a redirect, a missing file (404), or a throttled body (``limit_rate``) for timeouts.

nginx runs in the foreground (``daemon off``) in its own process group, with every file it writes
(pid, logs, temp directories) under ``workdir``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from worlds.procs import ServerLifecycle

_NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
_POLICY_PATH = "/.well-known/mta-sts.txt"
_LOG_TAIL_LINES = 40


class NginxStartError(RuntimeError):
    """nginx could not be started or did not listen as configured."""


def find_nginx() -> str:
    """Path of the ``nginx`` binary, or a clear error saying how to get it."""
    for candidate in (*_NGINX_CANDIDATES, shutil.which("nginx")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise NginxStartError("nginx is not installed: run 'DEBIAN_FRONTEND=noninteractive apt-get install -y nginx-light'")


@dataclass(frozen=True)
class Site:
    """One HTTPS virtual host and how it answers the policy URL.

    * ``policy_text`` None: no file, so nginx answers 404 (unless ``status``/``redirect_to`` say more).
    * ``redirect_to``: answer ``status`` (default 301 when left at 200) with that Location.
    * ``status`` other than 200 without a redirect: ``return <status>`` with nginx's own body.
    * ``delay`` > 0: the body is throttled with ``limit_rate`` at len/(delay+1) bytes/s (at least
      1). nginx sends the first second's allowance at once, so the whole body takes about ``delay``
      seconds; a body shorter than ``delay + 1`` bytes goes at 1 byte/s and ends after len-1 s.
    """

    server_name: str
    cert_file: Path
    key_file: Path
    policy_text: str | bytes | None
    status: int = 200
    content_type: str = "text/plain"
    redirect_to: str | None = None
    delay: float = 0.0

    def body(self) -> bytes | None:
        if self.policy_text is None:
            return None
        return self.policy_text.encode("utf-8") if isinstance(self.policy_text, str) else self.policy_text

    def rate(self) -> int | None:
        """nginx ``limit_rate`` in bytes/s for ``delay``; nginx lets the first second's worth go at once."""
        body = self.body()
        if self.delay <= 0 or body is None:
            return None
        return max(1, int(len(body) / (self.delay + 1)))


@dataclass(frozen=True)
class Request:
    """One logged request: the SNI name the client sent, the status, the request line."""

    server_name: str
    status: int
    request: str


def _quote(value: str) -> str:
    """An nginx string argument in double quotes (backslash and quote escaped)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class NginxServer(ServerLifecycle):
    """nginx with one ``server`` block per :class:`Site` on ``address:port`` (TLS, SNI-selected).

    The first site is the default server (it answers clients whose SNI names no site).
    """

    def __init__(
        self,
        workdir: Path,
        address: str,
        sites: Sequence[Site],
        *,
        port: int = 443,
        start_timeout: float = 30.0,
    ) -> None:
        if not sites:
            raise ValueError("NginxServer needs at least one site")
        names = [s.server_name.lower() for s in sites]
        if len(set(names)) != len(names):
            raise ValueError("duplicate server names")
        self.workdir = workdir
        self.address = address
        self.port = port
        self.sites = tuple(sites)
        self._start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def conf_file(self) -> Path:
        return self.workdir / "nginx.conf"

    @property
    def error_log(self) -> Path:
        return self.workdir / "error.log"

    @property
    def access_log(self) -> Path:
        return self.workdir.resolve() / "access.log"

    def requests(self) -> list[Request]:
        """Every request nginx has logged so far, oldest first (nginx writes each line at once)."""
        try:
            lines = self.access_log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            server_name, status, request = line.split(" ", 2)
            out.append(Request(server_name, int(status), request.strip('"')))
        return out

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def url(self, site: Site) -> str:
        return f"https://{site.server_name}{_POLICY_PATH}"

    def _site_root(self, site: Site) -> Path:
        return self.workdir / "sites" / site.server_name.lower()

    def _location(self, site: Site) -> list[str]:
        lines = [
            f"        location = {_POLICY_PATH} {{",
            "            types { }",
            f"            default_type {_quote(site.content_type)};",
        ]
        if site.redirect_to is not None:
            status = site.status if 300 <= site.status < 400 else 301
            lines.append(f"            return {status} {_quote(site.redirect_to)};")
        elif site.status != 200:
            lines.append(f"            return {site.status};")
        rate = site.rate()
        if rate is not None:
            lines += ["            limit_rate_after 0;", f"            limit_rate {rate};"]
        lines.append("        }")
        return lines

    def _server_block(self, site: Site, *, default: bool) -> list[str]:
        listen = f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"
        return [
            "    server {",
            f"        listen {listen} ssl{' default_server' if default else ''};",
            f"        server_name {site.server_name};",
            f"        ssl_certificate {_quote(str(site.cert_file.resolve()))};",
            f"        ssl_certificate_key {_quote(str(site.key_file.resolve()))};",
            f"        root {_quote(str(self._site_root(site).resolve()))};",
            *self._location(site),
            "        location / { return 404; }",
            "    }",
        ]

    def config_text(self) -> str:
        wd = self.workdir.resolve()
        temp = wd / "tmp"
        lines = [
            # Workers must read the policy files under workdir, which may sit in a 0700 tmp
            # directory: as root, keep the workers root (nginx ignores 'user' when not root).
            *(["user root;"] if os.geteuid() == 0 else []),
            "worker_processes 1;",
            "daemon off;",
            "master_process on;",
            f"pid {_quote(str(wd / 'nginx.pid'))};",
            f"error_log {_quote(str(self.error_log.resolve()))} info;",
            "events { worker_connections 128; }",
            "http {",
            # One line per request: SNI name, status, request line (see requests()).
            "    log_format survey '$ssl_server_name $status \"$request\"';",
            f"    access_log {_quote(str(self.access_log))} survey;",
            *(
                f"    {kind}_temp_path {_quote(str(temp / kind))};"
                for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
            ),
            "    server_tokens off;",
            "    sendfile off;",
            "    keepalive_timeout 5s;",
            "    ssl_protocols TLSv1.2 TLSv1.3;",
        ]
        for index, site in enumerate(self.sites):
            lines += self._server_block(site, default=index == 0)
        lines.append("}")
        return "\n".join(lines) + "\n"

    def write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "tmp").mkdir(exist_ok=True)
        for site in self.sites:
            root = self._site_root(site)
            well_known = root / ".well-known"
            well_known.mkdir(parents=True, exist_ok=True)
            body = site.body()
            target = root / _POLICY_PATH.lstrip("/")
            if body is None:
                target.unlink(missing_ok=True)
            else:
                target.write_bytes(body)
        self.conf_file.write_text(self.config_text(), encoding="utf-8")

    def start(self) -> None:
        if self._proc is not None:
            raise RuntimeError("NginxServer already started")
        nginx = find_nginx()
        self.write_config()
        prefix = str(self.workdir.resolve()) + "/"
        check = subprocess.run(
            [nginx, "-t", "-q", "-p", prefix, "-e", str(self.error_log), "-c", str(self.conf_file)],
            capture_output=True,
            text=True,
            check=False,
        )
        if check.returncode != 0:
            raise NginxStartError(f"nginx -t rejected {self.conf_file}:\n{check.stderr}{check.stdout}")
        with (self.workdir / "nginx.out").open("wb") as out:
            self._proc = subprocess.Popen(
                [nginx, "-p", prefix, "-e", str(self.error_log), "-c", str(self.conf_file)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() reaches the workers too
            )
        try:
            self._wait_ready(time.monotonic() + self._start_timeout)
        except BaseException:
            self.stop()
            raise

    def _log_tail(self) -> str:
        try:
            lines = self.error_log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no nginx error log)"
        return "\n".join(lines[-_LOG_TAIL_LINES:])

    def _wait_ready(self, deadline: float) -> None:
        assert self._proc is not None
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        while True:
            code = self._proc.poll()
            if code is not None:
                raise NginxStartError(f"nginx exited with status {code}\n{self._log_tail()}")
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.settimeout(0.5)
                try:
                    sock.connect((self.address, self.port))
                except OSError:
                    pass
                else:
                    return
            if time.monotonic() > deadline:
                raise NginxStartError(f"nginx did not listen on {self.address}:{self.port}\n{self._log_tail()}")
            time.sleep(0.02)

    def replace_sites(self, sites: Sequence[Site]) -> None:
        """Serve other sites (e.g. a policy that moved to enforce): restart on the same address."""
        if not sites:
            raise ValueError("NginxServer needs at least one site")
        self.stop()
        self.sites = tuple(sites)
        self.start()

    def stop(self) -> None:
        """Fast shutdown (SIGTERM closes open, even throttled, connections); safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        pgid = proc.pid  # start_new_session made nginx's master the group leader
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)  # the master and its orphaned workers
                proc.wait()
        # On SIGTERM nginx's master waits for its workers before exiting, so the group is empty
        # now unless the master had to be killed (handled above).


__all__ = ["NginxServer", "NginxStartError", "Request", "Site", "find_nginx"]
