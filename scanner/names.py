"""Host names in one canonical form: lower case, A-labels, no trailing dot.

Every name the scan compares or looks up (an input domain, an MX exchange, a policy's ``mx`` pattern
target, a certificate reference identifier, an exclude-list entry) goes through here, so that two
spellings of one name (``MX.Example.COM.``, ``mx.example.com``, ``mx.bücher.example``) are one key.
DNS names compare case-insensitively (RFC 4343 §3), the trailing dot only marks the root (RFC 1034
§3.1), and U-labels are compared as their A-labels (RFC 5890 §2.3.2.1; RFC 6125 §6.4.2).
"""

from __future__ import annotations

import re
from typing import Final

import idna

__all__ = ["LABEL_RE", "a_label_form", "host_key", "normalize_host"]

# RFC 5321 §4.1.2 sub-domain: Let-dig [Ldh-str]; a DNS label is at most 63 octets (RFC 1035 §2.3.4).
LABEL_RE: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def a_label_form(name: str) -> str:
    """``name`` lower-cased with its U-labels converted to A-labels (IDNA 2008 with the UTS #46
    mapping, as browsers and MTAs do). Raises ``idna.IDNAError`` for a name IDNA refuses."""
    if name.isascii():
        return name.lower()
    return idna.encode(name, uts46=True, transitional=False).decode("ascii").lower()


def normalize_host(name: str) -> str | None:
    """Lower-case A-label form without the trailing dot, or None if it cannot be one."""
    host = name.strip().removesuffix(".")
    try:
        host = a_label_form(host)
    except idna.IDNAError:
        return None
    return host if host and all(host.split(".")) else None


def host_key(name: str) -> str:
    """``normalize_host``, or for text that cannot be a host name (the root, an empty label, a name
    IDNA refuses) the text trimmed and lower-cased: a key for any name, valid or not."""
    return normalize_host(name) or name.strip().removesuffix(".").lower()
