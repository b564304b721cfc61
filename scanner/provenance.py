"""What produced a dataset: versions, digests, command line and vantage, recorded once per attempt.

A survey dataset is evidence; a reader must be able to tell which code, libraries, trust store, public
suffix list and input produced it, from where, and how it was invoked (README: "Provenance"). Collected
when an attempt starts and stored in its run row (``provenance_json``) and in run.json.
"""

from __future__ import annotations

import gzip
import hashlib
import platform
import socket
import ssl
import subprocess
import sys
import zlib
from importlib import metadata
from pathlib import Path
from typing import Any

import certifi
import cryptography
import dns.version
import publicsuffixlist
import pyarrow
from cryptography.hazmat.backends.openssl.backend import backend as openssl_backend

from scanner.config import ScanConfig
from scanner.input import GZIP_MAGIC, is_stream_source
from scanner.providers import psl_version
from scanner.version import __version__

__all__ = ["collect", "file_digest", "trust_store_path"]

_CHUNK = 1 << 20
_CHECKOUT = Path(__file__).resolve().parents[1]  # the repository root, when run from a checkout


def file_digest(path: Path) -> tuple[str, int | None]:
    """SHA-256 (hex) of the file's bytes as stored, and its number of physical lines (decompressed for gzip;
    None when the gzip stream is damaged: the scan itself then says where, as ``input_error``)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        head = fh.read(2)
        fh.seek(0)
        lines = 0
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
            lines += chunk.count(b"\n")
    if head != GZIP_MAGIC:
        return digest.hexdigest(), lines
    try:
        with gzip.open(path, "rb") as gz:
            return digest.hexdigest(), sum(chunk.count(b"\n") for chunk in iter(lambda: gz.read(_CHUNK), b""))
    except (OSError, EOFError, zlib.error):  # gzip.BadGzipFile is an OSError
        return digest.hexdigest(), None


def trust_store_path(config: ScanConfig) -> Path:
    """The PEM file the scan actually trusts (``--ca-file`` or certifi's bundle)."""
    return config.ca_file if config.ca_file else Path(certifi.where())


def _git_describe() -> str | None:
    """``git describe`` of the checkout the code runs from; None for an installed package."""
    if not (_CHECKOUT / ".git").exists():
        return None
    try:
        done = subprocess.run(["git", "-C", str(_CHECKOUT), "describe", "--always", "--dirty", "--tags"],
                              capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def _psl() -> dict[str, Any]:
    """The Public Suffix List shipped in ``publicsuffixlist``: package version, the list's own VERSION and
    COMMIT lines (``list``, also the run table's ``psl_version``) and the file's SHA-256."""
    data = Path(publicsuffixlist.__file__).with_name("public_suffix_list.dat")
    return {"package": "publicsuffixlist", "version": metadata.version("publicsuffixlist"),
            "list": psl_version(), "sha256": file_digest(data)[0] if data.exists() else None}


def libraries() -> dict[str, Any]:
    """Versions of the interpreter and of every library whose behaviour can change a measurement."""
    return {
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "openssl": ssl.OPENSSL_VERSION,  # the ssl module's: SMTP STARTTLS handshakes
        "cryptography": cryptography.__version__,
        "cryptography_openssl": openssl_backend.openssl_version_text(),  # certificate parsing and checks
        "pyarrow": pyarrow.__version__,
        # DNS: our own stub resolver (scanner.dns.transport and wire) asks every query, TLSA included;
        # dnspython only asks again with CD=1 after a SERVFAIL, to tell a bogus answer (scanner.dns.dnssec).
        # c-ares is no longer used by the scan (its adaptive timeouts ignored --dns-timeout).
        "dns_client": f"smtp-tls-survey {__version__} stub resolver",
        "dnspython": dns.version.version,
        "certifi": certifi.__version__,
        "public_suffix_list": _psl(),
    }


def collect(config: ScanConfig, source: str | Path, vantage: str | None) -> dict[str, Any]:
    """The provenance of one attempt (see the module docstring); JSON-safe."""
    trust = trust_store_path(config)
    if is_stream_source(source):  # stdin, a FIFO, <(...): readable once, and that read is the scan's
        input_info: dict[str, Any] = {"path": str(source), "sha256": None, "lines": None}
    else:
        digest, lines = file_digest(Path(source))
        input_info = {"path": str(Path(source).resolve()), "sha256": digest, "lines": lines}
    return {
        "tool": {"name": "smtp-tls-survey", "version": __version__, "git_describe": _git_describe()},
        "libraries": libraries(),
        "trust_store": {"path": str(trust), "sha256": file_digest(trust)[0],
                        "source": "--ca-file" if config.ca_file else "certifi"},
        "input": input_info,
        "command_line": list(sys.orig_argv),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "vantage": vantage,
        "ehlo_name": config.probe.ehlo_name,
    }
