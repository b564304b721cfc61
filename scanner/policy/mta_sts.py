"""MTA-STS (RFC 8461 §3): the TXT record and policy file grammar, and what a fetched policy document says.

Pure and total: nothing here touches the network or raises on any input. The ``_mta-sts`` TXT answer
(:class:`~scanner.policy.txt.TxtAnswer`) and the HTTPS fetch outcome (:class:`PolicyDocument`, made by
``scanner.policy.sts_fetch``) are facts; :func:`read_sts_txt` and :func:`read_document` read them.
Judging the domain's MX hosts against the policy (RFC 8461 §4-§5) is ``scanner.policy.judge``'s.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from scanner.names import LABEL_RE, normalize_host
from scanner.policy.txt import (
    EXT_NAME_RE,
    WSP,
    TxtAnswer,
    TxtRecord,
    extension,
    select_records,
    split_fields,
)
from scanner.status import DnsOutcome, StsError, StsMode

__all__ = [
    "MAX_AGE_LIMIT",
    "MAX_POLICY_BYTES",
    "POLICY_PATH",
    "FetchResult",
    "PolicyDocument",
    "PolicyResponse",
    "StsError",
    "StsFailure",
    "StsMode",
    "StsPolicy",
    "StsTxtResult",
    "parse_policy",
    "parse_sts_txt",
    "policy_host",
    "read_document",
    "read_sts_txt",
]

# RFC 8461 §3.2: max_age is at most 31557600 seconds (about one year).
MAX_AGE_LIMIT: Final = 31_557_600
# RFC 8461 §3.3 suggests senders limit the policy body to 64 KiB.
MAX_POLICY_BYTES: Final = 64 * 1024
POLICY_PATH: Final = "/.well-known/mta-sts.txt"

_STS_VERSION: Final = "v=STSv1"
# RFC 8461 §3.1 ABNF: sts-id = 1*32(ALPHA / DIGIT) (extension fields: scanner.policy.txt).
_ID_RE: Final = re.compile(r"[A-Za-z0-9]{1,32}")
# RFC 8461 §3.2: sts-policy-ext-value = sts-policy-vchar *(*(SP / TAB) sts-policy-vchar), where the
# vchars are visible ASCII or any UTF-8 character beyond it.
_POLICY_VALUE_RE: Final = re.compile(r"[^\x00-\x20\x7f]+(?:[ \t]+[^\x00-\x20\x7f]+)*")


@dataclass(frozen=True, slots=True)
class StsFailure:
    """One typed failure: the class (for GROUP BY) and a human-readable detail."""

    error: StsError
    detail: str


@dataclass(frozen=True, slots=True)
class StsTxtResult:
    """What the ``_mta-sts`` TXT records say.

    ``candidates`` counts records beginning with ``v=STSv1`` (the only ones RFC 8461 §3.1 keeps);
    ``ignored`` counts the other TXT records at the name. ``id`` is set only when ``error`` is None.
    """

    id: str | None
    error: StsError | None
    detail: str
    candidates: int
    ignored: int
    extensions: tuple[tuple[str, str], ...] = ()

    @property
    def present(self) -> bool:
        """The domain publishes at least one v=STSv1 record (valid or not)."""
        return self.candidates > 0

    @property
    def valid(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class StsPolicy:
    """A syntactically valid policy file (RFC 8461 §3.2).

    ``mx`` patterns are lower-case A-labels, in file order, without duplicates. ``notes`` lists
    tolerated deviations (blank lines, a byte-order mark, repeated fields) for the record.
    """

    mode: StsMode
    max_age: int
    mx: tuple[str, ...]
    version: str = "STSv1"
    extensions: tuple[tuple[str, str], ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FetchResult:
    """Outcome of one HTTPS policy fetch. Exactly one of ``policy`` / ``error`` is set."""

    url: str
    policy: StsPolicy | None
    error: StsError | None
    detail: str
    addresses: tuple[str, ...] = ()  # addresses of the policy host we were allowed to contact
    http_status: int | None = None
    content_type: str | None = None
    body_bytes: int | None = None  # bytes read (at most max_bytes + 1)
    elapsed_ms: float = 0.0

    @property
    def fetched(self) -> bool:
        """An HTTP 200 text/plain body within the size cap was received (it may still not parse)."""
        return self.body_bytes is not None and self.error in (None, StsError.POLICY_SYNTAX)


@dataclass(frozen=True, slots=True)
class PolicyResponse:
    """What the policy host answered: status, headers we read, and the body (only for a 200)."""

    status: int
    content_type: str | None
    location: str | None
    body: bytes | None  # at most max_bytes + 1 bytes; None when the status already decided the outcome


@dataclass(frozen=True, slots=True)
class PolicyDocument:
    """Fact: the outcome of one HTTPS fetch of a domain's policy (RFC 8461 §3.3), nothing read into it.

    Exactly one of ``response`` / ``failure`` is set: a failure is what kept the fetch from getting an
    HTTP answer (the policy host's DNS, refused addresses, connect, timeout, TLS, a broken response).
    """

    url: str
    max_bytes: int
    response: PolicyResponse | None
    failure: StsFailure | None
    addresses: tuple[str, ...] = ()  # addresses of the policy host we contacted, in order
    elapsed_ms: float = 0.0


# --------------------------------------------------------------------------
# TXT record (RFC 8461 §3.1)
# --------------------------------------------------------------------------


def _parse_sts_fields(fields: list[str]) -> tuple[str, tuple[tuple[str, str], ...]] | str:
    record_id: str | None = None
    extensions: list[tuple[str, str]] = []
    for field in fields:
        name, sep, value = field.partition("=")
        if name == "id" and sep:
            if not _ID_RE.fullmatch(value):
                return f"id {value!r} is not 1-32 letters or digits"
            record_id = record_id or value  # a repeated id: the first one counts
        elif (ext := extension(field)) is None:
            return f"malformed field {field!r}"
        else:
            extensions.append(ext)
    if record_id is None:
        return "no id= field"
    return record_id, tuple(extensions)


def parse_sts_txt(texts: Iterable[TxtRecord]) -> StsTxtResult:
    """Interpret the TXT records found at ``_mta-sts.<domain>`` (RFC 8461 §3.1).

    Records not beginning with ``v=STSv1`` are ignored. If not exactly one remains, or the one that
    remains is invalid (including not being US-ASCII), the domain has no policy. The version tag is
    case-sensitive (``%s`` in the ABNF), so ``v=stsv1`` is not an MTA-STS record at all.
    """
    candidates, ignored = select_records(texts, _STS_VERSION)
    if not candidates:
        return StsTxtResult(None, StsError.TXT_MISSING, "no TXT record begins with v=STSv1", 0, ignored)
    if len(candidates) > 1:
        return StsTxtResult(
            None, StsError.TXT_MULTIPLE, f"{len(candidates)} records begin with v=STSv1", len(candidates), ignored
        )
    text = candidates[0]
    if text is None:
        return StsTxtResult(None, StsError.TXT_INVALID, "record is not US-ASCII", 1, ignored)
    fields = split_fields(text, _STS_VERSION)
    parsed = fields if isinstance(fields, str) else _parse_sts_fields(fields)
    if isinstance(parsed, str):
        return StsTxtResult(None, StsError.TXT_INVALID, parsed, 1, ignored)
    record_id, extensions = parsed
    return StsTxtResult(record_id, None, "", 1, ignored, extensions)


def read_sts_txt(answer: TxtAnswer) -> StsTxtResult:
    """The ``_mta-sts`` TXT answer read: its records parsed, or why there are none (a failed lookup is
    DNS_ERROR, not "no policy": it says nothing about the domain)."""
    if answer.outcome is DnsOutcome.ANSWER:
        return parse_sts_txt(answer.texts)
    if answer.absent:
        return StsTxtResult(None, StsError.TXT_MISSING, answer.why_absent, 0, 0)
    return StsTxtResult(None, StsError.DNS_ERROR, answer.why_failed, 0, 0)


# --------------------------------------------------------------------------
# Policy file (RFC 8461 §3.2)
# --------------------------------------------------------------------------


def _valid_mx_pattern(value: str) -> str | None:
    """Lower-cased pattern if ``value`` is ``["*."] Domain`` with A-labels (§3.2), else None."""
    if not value.isascii():
        return None  # IDN patterns must be A-labels (§3.2)
    pattern = value.lower()
    domain = pattern[2:] if pattern.startswith("*.") else pattern
    labels = domain.split(".")
    if len(domain) > 253 or not all(LABEL_RE.fullmatch(label) for label in labels):
        return None
    return pattern


@dataclass(slots=True)
class _PolicyFields:
    values: dict[str, str]
    mx: list[str]
    extensions: list[tuple[str, str]]
    notes: list[str]


def _policy_lines(text: str) -> tuple[list[str], list[str]]:
    notes: list[str] = []
    if text.startswith("\ufeff"):
        text = text[1:]
        notes.append("byte-order mark at the start ignored")
    # sts-policy-term = LF / CRLF: split on LF, then drop the CR of a CRLF.
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()  # the optional terminator after the last field
    return lines, notes


def _collect_fields(text: str) -> _PolicyFields | StsFailure:
    lines, notes = _policy_lines(text)
    fields = _PolicyFields({}, [], [], notes)
    for number, line in enumerate(lines, start=1):
        if not line.strip(WSP):
            fields.notes.append(f"line {number}: blank line ignored")
            continue
        name, sep, rest = line.partition(":")
        value = rest.strip(WSP)  # field-delim = ":" *WSP, and *WSP may end a line
        if not sep or not EXT_NAME_RE.fullmatch(name) or not _POLICY_VALUE_RE.fullmatch(value):
            return StsFailure(StsError.POLICY_SYNTAX, f"line {number}: not a 'key: value' field: {line[:80]!r}")
        if name == "mx":
            fields.mx.append(value)
        elif name in ("version", "mode", "max_age"):
            if name in fields.values:
                fields.notes.append(f"line {number}: repeated {name!r} ignored (the first one counts)")
            else:
                fields.values[name] = value
        else:
            fields.extensions.append((name, value))  # unknown keys are ignored (§3.2)
    return fields


def _check_fields(fields: _PolicyFields) -> StsPolicy | StsFailure:
    for required in ("version", "mode", "max_age"):
        if required not in fields.values:
            return StsFailure(StsError.POLICY_SYNTAX, f"required field {required!r} missing")
    if fields.values["version"] != "STSv1":
        return StsFailure(StsError.POLICY_SYNTAX, f"version {fields.values['version']!r} is not 'STSv1'")
    try:
        mode = StsMode(fields.values["mode"])  # case-sensitive, like the ABNF
    except ValueError:
        return StsFailure(StsError.POLICY_SYNTAX, f"mode {fields.values['mode']!r} is not enforce, testing or none")
    max_age_text = fields.values["max_age"]
    if not (max_age_text.isascii() and max_age_text.isdigit() and len(max_age_text) <= 10):
        return StsFailure(StsError.POLICY_SYNTAX, f"max_age {max_age_text!r} is not 1-10 digits")
    max_age = int(max_age_text)
    if max_age > MAX_AGE_LIMIT:
        return StsFailure(StsError.POLICY_SYNTAX, f"max_age {max_age} exceeds {MAX_AGE_LIMIT}")
    patterns: list[str] = []
    for raw in fields.mx:
        pattern = _valid_mx_pattern(raw)
        if pattern is None:
            return StsFailure(StsError.POLICY_SYNTAX, f"mx pattern {raw!r} is not a host name or *.host name")
        patterns.append(pattern)
    # §3.2: at least one mx is required, except in mode none (used to retire a policy, §8.3).
    if not patterns and mode is not StsMode.NONE:
        return StsFailure(StsError.POLICY_SYNTAX, f"no mx field in {mode.value} mode")
    return StsPolicy(
        mode=mode,
        max_age=max_age,
        mx=tuple(dict.fromkeys(patterns)),
        extensions=tuple(fields.extensions),
        notes=tuple(fields.notes),
    )


def parse_policy(body: str | bytes) -> StsPolicy | StsFailure:
    """Parse a policy file (RFC 8461 §3.2). Never raises; failures are POLICY_SYNTAX.

    Field names and the version/mode values are case-sensitive. Blank lines and a leading
    byte-order mark are tolerated (and noted), as deployed senders do; any other line that is not
    ``key: value`` makes the policy invalid.
    """
    if isinstance(body, bytes):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            return StsFailure(StsError.POLICY_SYNTAX, f"body is not UTF-8 ({exc.reason} at byte {exc.start})")
    else:
        text = body
    fields = _collect_fields(text)
    return fields if isinstance(fields, StsFailure) else _check_fields(fields)


# --------------------------------------------------------------------------
# The fetched document (RFC 8461 §3.3)
# --------------------------------------------------------------------------


def policy_host(domain: str) -> str:
    """The policy host of a domain: ``mta-sts.<domain>`` (RFC 8461 §3.3)."""
    return f"mta-sts.{normalize_host(domain) or domain}"


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _read_response(url: str, response: PolicyResponse, max_bytes: int) -> StsPolicy | StsFailure:
    if 300 <= response.status < 400:
        return StsFailure(StsError.HTTP_REDIRECT, f"HTTP {response.status} to {response.location!r}")
    if response.status != 200 or response.body is None:
        return StsFailure(StsError.HTTP_STATUS, f"HTTP {response.status} for {url}")
    if _media_type(response.content_type) != "text/plain":
        return StsFailure(StsError.MEDIA_TYPE, f"Content-Type {response.content_type!r} is not text/plain")
    if len(response.body) > max_bytes:
        return StsFailure(StsError.TOO_LARGE, f"body exceeds {max_bytes} bytes")
    return parse_policy(response.body)


def read_document(document: PolicyDocument) -> FetchResult:
    """What a fetched policy document says (RFC 8461 §3.3): redirects are not followed, only HTTP 200
    with ``text/plain`` counts, a body over the cap is refused, and the rest must parse (§3.2)."""
    response = document.response
    if response is None:
        failure = document.failure or StsFailure(StsError.HTTP_ERROR, "no response recorded")
        return FetchResult(url=document.url, policy=None, error=failure.error, detail=failure.detail,
                           addresses=document.addresses, elapsed_ms=document.elapsed_ms)
    read = _read_response(document.url, response, document.max_bytes)
    problem = read if isinstance(read, StsFailure) else None
    return FetchResult(
        url=document.url,
        policy=None if isinstance(read, StsFailure) else read,
        error=problem.error if problem else None,
        detail=problem.detail if problem else "",
        addresses=document.addresses,
        http_status=response.status,
        content_type=response.content_type,
        body_bytes=len(response.body) if response.body is not None and response.status == 200 else None,
        elapsed_ms=document.elapsed_ms,
    )
