"""Fuzz the parsers that read what servers and DNS send us (a benchmark-style run, not part of CI).

    python -m worlds.fuzz [--target codec|smtp|policy|input|dns|all] [--inputs 1000000]
                              [--engine atheris|hypothesis]

Targets (each input is raw bytes; every property is checked on every input):

* ``codec``: ``scanner.tls.parser.ServerResponseParser`` fed the stream whole and in the chunking the
  input's first byte selects. Only ``TlsCodecError`` subclasses may escape; a dead parser stays dead;
  the buffer never exceeds its cap; every chunking yields exactly the events and error of the whole
  feed; every ServerHello gives its hygiene facts and every ServerKeyExchange parses (as DHE and as
  ECDHE) or raises ``BadHandshake``, a DH prime never longer than the message; ``parse_client_hello``
  on the same bytes raises nothing else either; a ClientHello built from the input (version, suites,
  SNI) parses back to what was asked and avoids the F5 256..511 range.
* ``smtp``: ``scanner.smtp.reply.ReplyReader`` (same chunking property; only ``ReplyError``; replies
  within the caps; nothing left unparsed beyond one line) and ``parse_ehlo`` on every 250 reply.
* ``policy``: ``parse_policy`` (bytes and str), ``parse_sts_txt`` and ``parse_tlsrpt`` on TXT records
  cut from the input in every form a resolver hands over, ``normalize_host`` and ``mx_matches``. None
  may raise; results must satisfy the RFC 8461/8460 invariants (valid patterns, max_age bound, ...).
* ``input``: the domain list reader. ``LineSplitter`` (stream inputs) in the chunking the first byte
  selects must cut exactly the lines the file reader (``_decode_stream``) cuts, each within the line
  cap; ``read_domains`` yields one record per non-blank, non-comment line, a normalized name or a
  reason, never an exception; the line counter never raises; ``parse_journal`` (the output journal, as
  a damaged file could hold it) never raises and yields only known tables and sizes.
* ``dns``: ``scanner.dns.wire.parse_reply`` on DNS replies (compression pointers, CNAME/MX/TXT/A/AAAA,
  truncation): only ``WireError`` may escape; addresses, preferences and names are well-formed.

Inputs are arbitrary bytes and mutations of valid ones (the seed corpus below: ServerHello flights,
HelloRetryRequest, SSLv2, alerts, EHLO replies, policies, TXT records). The ``atheris`` engine
(coverage-guided libFuzzer, ``pip install atheris``) runs each target in its own child process and
keeps crashing inputs under ``--out``; the ``hypothesis`` engine (derandomized, database off) needs no
extra package. Prints inputs, inputs/s and any crash per target; exit status 1 if anything crashed.
Crash inputs go to tests/unit/test_fuzz_regressions.py as bytes literals, with the fix.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import re
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SEEDS", "TARGETS", "chunked", "codec_target", "dns_target", "input_target", "main", "policy_target",
           "smtp_target"]

Target = Callable[[bytes], None]
_MAX_LEN = 4096
_ASCII_UPPER = str.maketrans(string.ascii_lowercase, string.ascii_uppercase)
_EVENT_LIMIT = 100_000  # more events than bytes fed means a parser loop that consumes nothing


def chunked(data: bytes) -> tuple[bytes, list[bytes]]:
    """Split an input into (stream, chunks): its first byte picks the chunking, so the fuzzer explores
    chunkings too. 0..15: fixed chunks of that size + 1; otherwise sizes 1..64 from a PRNG seeded with it."""
    if not data:
        return b"", []
    selector, stream = data[0], data[1:]
    sizes: Iterator[int]
    if selector < 16:
        sizes = iter(lambda: selector + 1, None)
    else:
        rng = random.Random(selector)
        sizes = iter(lambda: rng.randint(1, 64), None)
    chunks, pos = [], 0
    while pos < len(stream):
        size = next(sizes)
        chunks.append(stream[pos : pos + size])
        pos += size
    return stream, chunks


# --------------------------------------------------------------------------
# Targets. Imports happen inside the factories, so that atheris can instrument the modules first.
# --------------------------------------------------------------------------


def _hello_roundtrip() -> Target:
    from scanner.tls import builder, messages
    from scanner.tls.versions import TlsVersion
    from worlds import tls_server

    versions = (TlsVersion.SSL3, TlsVersion.TLS10, TlsVersion.TLS11, TlsVersion.TLS12,
                TlsVersion.TLS13)

    def roundtrip(data: bytes) -> None:
        """What we send: a hello built from the input parses back to what was asked, and is never in
        the 256..511-byte range that hangs F5 load balancers."""
        if len(data) < 3:
            return
        version = versions[data[0] % len(versions)]
        count = data[1] + 1
        suites = [int.from_bytes(data[i : i + 2], "big") for i in range(3, min(len(data) - 1, 3 + 2 * count), 2)]
        name = data[3 + 2 * count : 3 + 2 * count + data[2] % 64].decode("latin-1") or None
        try:
            spec = builder.make_client_hello_spec(version, suites, bytes(32), server_name=name,
                                                legacy_extensions=bool(data[2] & 0x80))
            raw = builder.build_client_hello(spec)
        except messages.InvalidClientHelloSpec:
            return
        hello = tls_server.parse_client_hello(raw)
        assert (hello.client_version, hello.cipher_suites, hello.random, hello.session_id) == (
            spec.client_version, spec.cipher_suites, spec.random, spec.session_id), (spec, hello)
        assert not 256 <= hello.message_length <= 511, hello.message_length
        sni = hello.extension(messages.ExtensionType.SERVER_NAME)
        assert (sni is None) == (spec.server_name is None)
        if sni is not None and spec.server_name is not None:
            assert sni[5:].decode("ascii") == spec.server_name

    return roundtrip


def codec_target() -> Target:
    from scanner import sansio
    from scanner.tls import messages
    from scanner.tls import parser as tls_parser
    from worlds import tls_server

    def drain(parser: tls_parser.ServerResponseParser, events: list[object]) -> None:
        for _ in range(_EVENT_LIMIT):
            event = parser.next_event()
            if isinstance(event, sansio.NeedData):
                return
            events.append(event)
            if isinstance(event, messages.ConnectionClosed):
                return
        raise AssertionError("parser produced events without consuming input")

    def run(chunks: Iterable[bytes]) -> tuple[list[object], str | None]:
        parser = tls_parser.ServerResponseParser()
        events: list[object] = []
        try:
            for chunk in chunks:
                parser.feed(chunk)
                drain(parser, events)
                assert parser.buffered <= tls_parser.DEFAULT_MAX_BUFFERED, parser.buffered
            parser.feed_eof()
            drain(parser, events)
        except messages.TlsCodecError as exc:
            try:
                parser.next_event()
            except messages.ParserStateError:
                return events, type(exc).__name__
            raise AssertionError(f"parser still alive after {exc!r}") from exc
        assert events and isinstance(events[-1], messages.ConnectionClosed), events[-1:]
        return events, None

    roundtrip = _hello_roundtrip()

    def key_exchange(events: list[object]) -> None:
        # What probe.py reads after a <= 1.2 ServerHello: hygiene facts and ServerKeyExchange parameters.
        for event in events:
            if isinstance(event, messages.ServerHello):
                tls_parser.hello_facts(event)
            key_exchange_message = messages.HandshakeType.SERVER_KEY_EXCHANGE
            if isinstance(event, messages.OtherHandshake) and event.msg_type == key_exchange_message:
                for kind in messages.KeyExchangeKind:
                    try:
                        params = tls_parser.parse_server_key_exchange(event.body, kind)
                    except messages.BadHandshake:
                        continue
                    if isinstance(params, messages.DhParams):
                        assert params.prime >= 3 and params.bits <= 8 * len(event.body)

    def target(data: bytes) -> None:
        stream, chunks = chunked(data)
        whole = run([stream] if stream else [])
        pieces = run(chunks)
        assert whole == pieces, f"chunking changed the outcome: {whole!r} != {pieces!r}"
        key_exchange(whole[0])
        roundtrip(stream)
        try:
            hello = tls_server.parse_client_hello(stream)
        except messages.TlsCodecError:
            return
        assert hello.message_length >= 4 and len(hello.random) == 32

    return target


def smtp_target() -> Target:
    from scanner import sansio
    from scanner.smtp import reply as smtp
    from scanner.status import FailureClass

    allowed = {FailureClass.SMTP_PROTOCOL_ERROR, FailureClass.OVERSIZED_REPLY}

    def check(r: smtp.Reply) -> None:
        assert 200 <= r.code <= 599 and 1 <= len(r.lines) <= smtp.MAX_REPLY_LINES, r
        assert all(len(line) <= smtp.MAX_LINE_BYTES for line in r.lines)
        assert len(r.text) <= smtp.MAX_TEXT_CHARS and len(r.full_text) <= smtp.MAX_TEXT_CHARS
        if r.code == 250:
            info = smtp.parse_ehlo(r)
            assert all(k == k.translate(_ASCII_UPPER) for k in info.keywords), info
            # STARTTLS only when a line's keyword is "starttls" in ASCII, any case (RFC 5321 §2.4).
            said = any(re.fullmatch(r"starttls", line.strip().split(" ")[0], re.IGNORECASE | re.ASCII)
                       for line in r.lines[1:])
            assert info.starttls == said, (info, r.lines)

    def run(chunks: Iterable[bytes]) -> tuple[list[smtp.Reply], FailureClass | None]:
        reader = smtp.ReplyReader()
        replies: list[smtp.Reply] = []
        try:
            for chunk in chunks:
                reader.feed(chunk)
                for _ in range(_EVENT_LIMIT):
                    got = reader.next_reply()
                    if got is sansio.NEED_DATA:
                        break
                    assert isinstance(got, smtp.Reply)
                    check(got)
                    replies.append(got)
                # Waiting for more means at most one unfinished line is held.
                assert len(reader.buffered()) <= smtp.MAX_LINE_BYTES
        except smtp.ReplyError as exc:
            assert exc.failure_class in allowed, exc.failure_class
            return replies, exc.failure_class
        return replies, None

    def target(data: bytes) -> None:
        stream, chunks = chunked(data)
        whole = run([stream])
        pieces = run(chunks)
        assert whole == pieces, f"chunking changed the outcome: {whole!r} != {pieces!r}"

    return target


def policy_target() -> Target:
    from scanner.names import normalize_host
    from scanner.policy import judge, mta_sts, tlsrpt
    from scanner.policy.txt import TxtRecord

    def records(data: bytes) -> list[TxtRecord]:
        """TXT records in every shape resolvers hand over: bytes, str, and lists of character-strings."""
        out: list[TxtRecord] = []
        for i, raw in enumerate(data.split(b"\x00")):
            shape = i % 3
            if shape == 0:
                out.append(raw)
            elif shape == 1:
                out.append(raw.decode("latin-1"))
            else:
                out.append([part.decode("latin-1") if j % 2 else part for j, part in enumerate(raw.split(b"\x01"))])
        return out

    def check_policy(result: mta_sts.StsPolicy | mta_sts.StsFailure) -> None:
        if isinstance(result, mta_sts.StsFailure):
            assert result.error is mta_sts.StsError.POLICY_SYNTAX
            return
        assert 0 <= result.max_age <= mta_sts.MAX_AGE_LIMIT
        assert result.mx or result.mode is mta_sts.StsMode.NONE
        for pattern in result.mx:
            assert pattern.isascii() and pattern == pattern.lower(), pattern
            assert mta_sts._valid_mx_pattern(pattern) == pattern

    def target(data: bytes) -> None:
        check_policy(mta_sts.parse_policy(data))
        text = data.decode("utf-8", "surrogateescape")  # lone surrogates: a str no decoder would produce
        check_policy(mta_sts.parse_policy(text))
        txt = records(data)
        sts = mta_sts.parse_sts_txt(txt)
        assert (sts.id is None) == (sts.error is not None), sts
        if sts.id is not None:
            assert re.fullmatch(r"[A-Za-z0-9]{1,32}", sts.id), sts
        rpt = tlsrpt.parse_tlsrpt(txt)
        if rpt.status is tlsrpt.TlsRptStatus.VALID:
            assert rpt.rua and all(uri.valid for uri in rpt.rua), rpt
        pattern, _, host = text.partition("\x00")
        assert isinstance(judge.mx_matches(pattern, host), bool)
        normal = normalize_host(host)
        assert normal is None or (normal.isascii() and normal == normal.lower())

    return target


def input_target() -> Target:
    import io

    from scanner import input as domain_input
    from scanner.output import parquet
    from scanner.output.rows import TABLES

    def target(data: bytes) -> None:
        stream, chunks = chunked(data)
        expected = list(domain_input._decode_stream(io.BytesIO(stream)))
        splitter, raw = domain_input.LineSplitter(), []
        for chunk in chunks:
            raw.extend(splitter.feed(chunk))
        raw.extend(splitter.finish())
        assert all(len(line) <= domain_input.MAX_LINE_LENGTH + 1 for line in raw)
        assert [domain_input._decode_line(line, i == 0) for i, line in enumerate(raw)] == expected
        tally = domain_input.InputTally()
        records = list(domain_input.read_domains(iter(expected), tally))
        assert tally.physical == len(expected) and len(records) + tally.skipped == len(expected)
        for record in records:
            assert (record.domain is None) != (record.error is None), record
            if record.domain is not None:
                assert record.domain.isascii() and record.domain == record.domain.lower()
                assert len(record.domain) <= domain_input.MAX_NAME_LENGTH
        assert domain_input._count_meaningful(iter(chunks)) >= 0
        for segment, sizes in parquet.parse_journal(stream.decode("ascii", "replace")).items():
            assert segment >= 0 and set(sizes) <= set(TABLES) and all(size >= 0 for size in sizes.values())

    return target


def dns_target() -> Target:
    """``scanner.dns.wire.parse_reply``: only ``WireError`` escapes; what it returns is well-formed."""
    import ipaddress

    from scanner.dns import wire

    def target(data: bytes) -> None:
        try:
            reply = wire.parse_reply(data)
        except wire.WireError:
            return
        # The RCODE is 12 bits with an OPT record's upper 8 (RFC 6891 §6.1.3), 4 without.
        assert 0 <= reply.qid <= 0xFFFF and 0 <= reply.rcode <= 0xFFF
        assert reply.qname == reply.qname.lower() and len(reply.qname) <= 4 * 255
        for record in reply.answers:
            if record.rtype in (wire.TYPES["A"], wire.TYPES["AAAA"]):
                ipaddress.ip_address(record.data)
            elif record.rtype == wire.TYPES["MX"]:
                preference, _, _ = record.data.partition(" ")
                assert 0 <= int(preference) <= 0xFFFF

    return target


TARGETS: dict[str, Callable[[], Target]] = {"codec": codec_target, "smtp": smtp_target, "policy": policy_target,
                                            "input": input_target, "dns": dns_target}


# --------------------------------------------------------------------------
# Seeds: valid inputs the fuzzer mutates
# --------------------------------------------------------------------------


def _codec_seeds() -> list[bytes]:
    from scanner.tls import builder, messages
    from scanner.tls.versions import TlsVersion
    from worlds import tls_server

    rnd = bytes(range(32))
    hs, v12 = messages.ContentType.HANDSHAKE, TlsVersion.TLS12

    def record(message: bytes) -> bytes:
        return messages.encode_record(hs, v12, message)

    sh12 = tls_server.encode_server_hello(version=v12, random=rnd, cipher_suite=0xC02F,
                                     extensions=[(messages.ExtensionType.RENEGOTIATION_INFO, b"\x00")])
    cert = messages.encode_handshake(messages.HandshakeType.CERTIFICATE,
                                  (7).to_bytes(3, "big") + (4).to_bytes(3, "big") + b"\x30\x02\x05\x00")
    done = messages.encode_handshake(messages.HandshakeType.SERVER_HELLO_DONE, b"")
    sh13 = tls_server.encode_server_hello(version=v12, random=rnd, cipher_suite=0x1301, session_id=rnd,
                                     extensions=[(messages.ExtensionType.SUPPORTED_VERSIONS, b"\x03\x04"),
                                                 (messages.ExtensionType.KEY_SHARE, b"\x00\x1d\x00\x20" + rnd)])
    hrr = tls_server.encode_server_hello(version=v12, random=messages.HELLO_RETRY_REQUEST_RANDOM, cipher_suite=0x1302,
                                     session_id=rnd,
                                     extensions=[(messages.ExtensionType.SUPPORTED_VERSIONS, b"\x03\x04"),
                                                 (messages.ExtensionType.KEY_SHARE, b"\x00\x17")])
    sslv2_body = b"\x04\x00\x01\x00\x02\x00\x04\x00\x03\x00\x10" + b"\x30\x02\x05\x00" + b"\x01\x00\x80" + rnd[:16]
    spec = builder.make_client_hello_spec(TlsVersion.TLS12, [0xC02F, 0x009C], rnd, server_name="mx.example")
    prime = (1 << 1023) | 1
    ske_dhe = messages.encode_handshake(messages.HandshakeType.SERVER_KEY_EXCHANGE,
                                     b"\x00\x80" + prime.to_bytes(128, "big") + b"\x00\x01\x02\x00\x01\x05"
                                     + b"\x04\x01\x00\x02ss")
    ske_ecdhe = messages.encode_handshake(messages.HandshakeType.SERVER_KEY_EXCHANGE,
                                       b"\x03\x00\x1d\x20" + rnd + b"\x04\x03\x00\x02ss")
    streams = [
        record(sh12) + record(cert + ske_dhe + done),
        record(sh12 + cert) + record(ske_ecdhe) + record(done),
        record(sh12) + record(cert + done),
        record(sh12 + cert + done) + messages.encode_record(messages.ContentType.CHANGE_CIPHER_SPEC, v12, b"\x01")
        + messages.encode_record(hs, v12, b"\x00" * 40),
        record(sh13) + messages.encode_record(messages.ContentType.CHANGE_CIPHER_SPEC, v12, b"\x01")
        + messages.encode_record(messages.ContentType.APPLICATION_DATA, v12, b"\x17" * 48),
        record(hrr),
        tls_server.encode_alert(2, 40) + tls_server.encode_alert(1, 112),
        (0x8000 | len(sslv2_body)).to_bytes(2, "big") + sslv2_body,
        b"\x80\x03\x00\x00\x01",  # SSLv2 MSG-ERROR
        builder.build_client_hello(spec),
    ]
    return [bytes([selector]) + s for s in streams for selector in (0, 7, 200)]


def _smtp_seeds() -> list[bytes]:
    ehlo = (b"250-mx.example.com Hello\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-AUTH=LOGIN PLAIN\r\n"
            b"250-AUTH LOGIN PLAIN\r\n250-STARTTLS\r\n250 8BITMIME\r\n")
    streams = [
        b"220 mx.example.com ESMTP\r\n" + ehlo + b"220 2.0.0 Ready\r\n",
        b"220-first\n220-second\n220 last\n421 4.7.0 busy\r\n",
        b"554 5.7.1 no\r\n250\r\n250 \xff\xfe\r\n",
    ]
    return [bytes([selector]) + s for s in streams for selector in (0, 3, 100)]


def _policy_seeds() -> list[bytes]:
    return [
        b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 86400\r\n",
        b"version: STSv1\nmode: testing\nmx: *.example.org\nmax_age: 604800\nextension: value\n",
        b"v=STSv1; id=20240101T000000;\x00v=TLSRPTv1; rua=mailto:tls@example.com,https://r.example/x\x00other",
        b"v=STSv1;\x01 id=abc\x00v=TLSRPTv1;rua=mailto:a@b.example\x00*.example.com\x00mx.example.com",
    ]


def _input_seeds() -> list[bytes]:
    streams = [
        b"\xef\xbb\xbfexample.com\r\n# comment\r\n\r\n1,google.com\r\nb\xc3\xbccher.example\n\xff\xfe junk\n",
        b"a.example\n" + b"x" * 5000 + b"\nb.example",
        b"0 domains=123 probes=45\n1 mx=9 run=x\n2\n3 domains=",
    ]
    return [bytes([selector]) + s for s in streams for selector in (0, 7, 200)]


def _dns_seeds() -> list[bytes]:
    """Replies as a resolver sends them: compressed names, CNAME chains, MX, TXT, A, AAAA, truncation."""
    import dns.flags
    import dns.message
    import dns.rrset

    from scanner.dns import wire

    out = []
    for rtype, answers in (
        ("MX", [("example.com.", "CNAME", "mx.example.net."), ("mx.example.net.", "MX", "10 mail.example.net.")]),
        ("TXT", [("_mta-sts.example.com.", "TXT", '"v=STSv1; " "id=2024"')]),
        ("A", [("mx.example.com.", "A", "192.0.2.1"), ("mx.example.com.", "A", "192.0.2.2")]),
        ("AAAA", [("mx.example.com.", "AAAA", "2001:db8::1")]),
        ("MX", [("example.org.", "MX", "0 .")]),
    ):
        query = dns.message.from_wire(wire.build_query(4660, answers[0][0], wire.TYPES[rtype]))
        reply = dns.message.make_response(query)
        for owner, kind, data in answers:
            reply.answer.append(dns.rrset.from_text(owner, 300, "IN", kind, data))
        out.append(reply.to_wire())
    truncated = dns.message.make_response(dns.message.from_wire(wire.build_query(1, "big.example", 1)))
    truncated.flags |= dns.flags.TC
    out.append(truncated.to_wire())
    return out


SEEDS: dict[str, Callable[[], list[bytes]]] = {"codec": _codec_seeds, "smtp": _smtp_seeds, "policy": _policy_seeds,
                                               "input": _input_seeds, "dns": _dns_seeds}


# --------------------------------------------------------------------------
# Engines
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    target: str
    engine: str
    inputs: int
    seconds: float
    crashes: tuple[Path, ...]
    note: str = ""

    @property
    def rate(self) -> float:
        return self.inputs / self.seconds if self.seconds else 0.0


def _atheris_child(target_name: str, inputs: int, seed: int, workdir: Path) -> None:
    """Runs inside the child process: instrument the parsers, then hand control to libFuzzer."""
    import atheris  # type: ignore[import-untyped]  # no stubs published

    with atheris.instrument_imports(include=["scanner", "aiosmtplib", "idna"]):
        target = TARGETS[target_name]()
    corpus = workdir / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed_input in enumerate(SEEDS[target_name]()):
        (corpus / f"seed-{i}").write_bytes(seed_input)
    crashes = workdir / "crashes"
    crashes.mkdir(exist_ok=True)
    args = [sys.argv[0], str(corpus), f"-runs={inputs}", f"-seed={seed}", f"-max_len={_MAX_LEN}",
            "-print_final_stats=1", f"-artifact_prefix={crashes}/", "-timeout=20", "-rss_limit_mb=4096"]
    atheris.Setup(args, target)
    atheris.Fuzz()


def _run_atheris(target_name: str, inputs: int, seed: int, out: Path) -> Outcome:
    workdir = out / target_name
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "libfuzzer.log"
    cmd = [sys.executable, "-m", "worlds.fuzz", "--child", target_name, "--inputs", str(inputs),
           "--seed", str(seed), "--out", str(out)]
    started = time.perf_counter()
    with log.open("wb") as fh:
        code = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False,
                              cwd=Path(__file__).resolve().parent.parent).returncode
    seconds = time.perf_counter() - started
    text = log.read_text(errors="replace")
    executed = re.search(r"stat::number_of_executed_units:\s*(\d+)", text)
    crashes = tuple(sorted((workdir / "crashes").glob("*")))
    note = "" if code == 0 else f"exit {code}; see {log}"
    return Outcome(target_name, "atheris", int(executed.group(1)) if executed else 0, seconds, crashes, note)


def _mutate(rng: random.Random, seed_input: bytes) -> bytes:
    data = bytearray(seed_input)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(4)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:
            data[min(pos, len(data) - 1)] = rng.randrange(256)
        elif op == 1:
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 2 and data:
            del data[pos : pos + rng.randint(1, 8)]
        else:
            data[pos:pos] = rng.choice([b"\x00", b"\xff", b"\r\n", b"\n", b"\x16\x03\x03", b"\x15\x03\x03\x00\x02"])
    return bytes(data[:_MAX_LEN])


def _run_hypothesis(target_name: str, inputs: int, seed: int, out: Path) -> Outcome:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    target = TARGETS[target_name]()
    seeds = SEEDS[target_name]()
    mutated = st.tuples(st.integers(0, 2**32 - 1), st.sampled_from(seeds)).map(
        lambda pair: _mutate(random.Random(pair[0] ^ seed), pair[1]))
    count = [0]
    failure: list[bytes] = []

    @settings(max_examples=inputs, derandomize=True, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(st.one_of(st.binary(max_size=_MAX_LEN), mutated))
    def run(data: bytes) -> None:
        count[0] += 1
        try:
            target(data)
        except Exception:
            failure[:] = [data]
            raise

    started = time.perf_counter()
    note = ""
    try:
        run()
    except Exception as exc:  # the crash is the benchmark's result: kept on disk and reported
        note = f"{type(exc).__name__}: {exc}"[:500]
    seconds = time.perf_counter() - started
    crashes: tuple[Path, ...] = ()
    if failure:
        path = out / target_name / "crashes" / "hypothesis-crash"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(failure[0])
        crashes = (path,)
    return Outcome(target_name, "hypothesis", count[0], seconds, crashes, note)


def _report(outcome: Outcome) -> None:
    status = f"{len(outcome.crashes)} crash(es): {', '.join(map(str, outcome.crashes))}" if outcome.crashes \
        else "no crash"
    print(f"{outcome.target:7} {outcome.engine:10} {outcome.inputs:>10,} inputs {outcome.seconds:8.1f}s "
          f"{outcome.rate:>9,.0f} inputs/s  {status} {outcome.note}", flush=True)


def replay(target_name: str, paths: Iterable[Path]) -> None:
    """Run saved inputs (crash files) through a target, raising on the first failure."""
    target = TARGETS[target_name]()
    for path in paths:
        target(path.read_bytes())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worlds.fuzz", description=__doc__.split("\n")[0])
    parser.add_argument("--target", choices=[*TARGETS, "all"], default="all")
    parser.add_argument("--inputs", type=int, default=1_000_000, help="inputs per target")
    parser.add_argument("--engine", choices=("atheris", "hypothesis"), default=None,
                        help="default: atheris when installed, else hypothesis")
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--out", type=Path, help="work directory (corpus, crashes, logs); default: a temp dir")
    parser.add_argument("--replay", type=Path, nargs="*", help="run these saved inputs through --target and exit")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    out: Path = args.out or Path(tempfile.mkdtemp(prefix="smtp-tls-fuzz-"))
    if args.child:
        _atheris_child(args.child, args.inputs, args.seed, out / args.child)
        return 0  # not reached: libFuzzer exits the process
    if args.replay is not None:
        replay(args.target, args.replay)
        return 0
    engine = args.engine or ("atheris" if _has_atheris() else "hypothesis")
    run = _run_atheris if engine == "atheris" else _run_hypothesis
    names = list(TARGETS) if args.target == "all" else [args.target]
    print(f"engine {engine}, {args.inputs:,} inputs per target, seed {args.seed}, work dir {out}", flush=True)
    outcomes = []
    for name in names:
        outcome = run(name, args.inputs, args.seed, out)
        _report(outcome)
        outcomes.append(outcome)
    return 1 if any(o.crashes or o.note for o in outcomes) else 0


def _has_atheris() -> bool:
    return importlib.util.find_spec("atheris") is not None


if __name__ == "__main__":
    sys.exit(main())
