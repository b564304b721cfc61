"""The DNS wire codec (scanner.dns.wire) against dnspython's encoder and hand-made malformations."""

from __future__ import annotations

import dns.edns
import dns.flags
import dns.message
import dns.rrset
import pytest

from scanner.dns.wire import TYPES, WireError, build_query, parse_reply


def reply_to(name: str, rtype: str, *answers: tuple[str, str, str]) -> bytes:
    reply = dns.message.make_response(dns.message.from_wire(build_query(77, name, TYPES[rtype])))
    for owner, kind, data in answers:
        reply.answer.append(dns.rrset.from_text(owner, 60, "IN", kind, data))
    return reply.to_wire()  # type: ignore[no-any-return]


def test_query_is_a_recursive_edns_question() -> None:
    message = dns.message.from_wire(build_query(513, "Mx.Example.com", TYPES["AAAA"]))
    assert message.id == 513 and message.flags & dns.flags.RD and message.payload == 1232
    assert str(message.question[0].name) == "Mx.Example.com." and message.question[0].rdtype == 28


def test_reply_records_with_compression() -> None:
    data = reply_to("example.com", "MX", ("example.com.", "CNAME", "alias.example.net."),
                    ("alias.example.net.", "MX", "10 MX1.example.net."), ("alias.example.net.", "MX", "0 ."),
                    ("alias.example.net.", "TXT", '"a" "b"'))
    reply = parse_reply(data)
    assert (reply.qid, reply.rcode, reply.qname, reply.qtype, reply.truncated) == (77, 0, "example.com", 15, False)
    assert [(r.owner, r.rtype, r.data) for r in reply.answers] == [
        ("example.com", 5, "alias.example.net"), ("alias.example.net", 15, "10 mx1.example.net"),
        ("alias.example.net", 15, "0 "), ("alias.example.net", 16, "ab")]


@pytest.mark.parametrize("cut", [1, 11, 12, 20, 30, 40, 44])  # within the header, question or answer
def test_truncated_messages_raise_wire_error(cut: int) -> None:
    data = reply_to("example.com", "A", ("example.com.", "A", "192.0.2.1"))
    with pytest.raises(WireError):
        parse_reply(data[:cut])


def test_a_compression_loop_is_a_wire_error() -> None:
    header = (1).to_bytes(2, "big") + b"\x81\x80" + b"\x00\x01\x00\x00\x00\x00\x00\x00"
    with pytest.raises(WireError):
        parse_reply(header + b"\xc0\x0c" + b"\x00\x01\x00\x01")


def test_a_query_is_not_a_reply() -> None:
    with pytest.raises(WireError):
        parse_reply(build_query(1, "example.com", 1))


def test_names_that_cannot_be_sent_are_wire_errors() -> None:
    with pytest.raises(WireError):
        build_query(1, "_25._tcp." + ".".join(["a" * 60] * 5), TYPES["A"])  # longer than 255 octets
    with pytest.raises(WireError):
        build_query(1, "a..example", 1)
    with pytest.raises(WireError):
        build_query(1, "bücher.example", 1)


def test_the_extended_rcode_of_the_opt_record_counts() -> None:
    """RFC 6891 §6.1.3: BADVERS (16) lives in the OPT record's TTL; a cut tail after the answers is ignored."""
    import dns.rcode

    query = dns.message.from_wire(build_query(7, "x.example", TYPES["MX"]))
    reply = dns.message.make_response(query)
    reply.set_rcode(dns.rcode.BADVERS)
    assert parse_reply(reply.to_wire()).rcode == 16
    plain = dns.message.make_response(query)
    plain.set_rcode(dns.rcode.NXDOMAIN)
    assert parse_reply(plain.to_wire()).rcode == 3
    assert parse_reply(dns.message.make_response(query).to_wire()[:-3]).rcode == 0


def test_addresses_are_written_as_ipaddress_writes_them() -> None:
    """The codec formats addresses with inet_ntop; mapped and compatible IPv6 keep ipaddress' hex form."""
    import ipaddress

    addresses = ["2001:db8::1", "::", "1:0:0:1:0:0:0:1", "::ffff:192.0.2.1", "::192.0.2.1", "fe80::1:2"]
    data = reply_to("mx.example", "AAAA", *(("mx.example.", "AAAA", a) for a in addresses))
    assert [r.data for r in parse_reply(data).answers] == [str(ipaddress.IPv6Address(a)) for a in addresses]
    data = reply_to("mx.example", "A", ("mx.example.", "A", "192.0.2.10"), ("mx.example.", "A", "0.0.0.0"))
    assert [r.data for r in parse_reply(data).answers] == ["192.0.2.10", "0.0.0.0"]


def test_names_through_pointers_to_names_read_before_keep_their_escapes() -> None:
    r"""Names reached through a compression pointer to one read before (the question's) read as in full:
    lower case, and a dot or a byte outside printable ASCII inside a label as \DDD (RFC 1035 §5.1)."""
    import dns.name
    import dns.rdtypes.ANY.CNAME

    owner = dns.name.Name([b"Odd.Label", b"X\x01", b"example", b""])
    reply = dns.message.make_response(dns.message.make_query(owner, "CNAME"))
    target = dns.name.Name([b"MX", b"odd.label", b"x\x01", b"example", b""])
    reply.answer.append(dns.rrset.from_rdata(owner, 60, dns.rdtypes.ANY.CNAME.CNAME(1, 5, target)))
    parsed = parse_reply(reply.to_wire())
    assert parsed.qname == "odd\\046label.x\\001.example"
    assert [(r.owner, r.data) for r in parsed.answers] == [("odd\\046label.x\\001.example",
                                                            "mx.odd\\046label.x\\001.example")]


def test_a_dnssec_query_sets_do_and_ad_and_a_plain_one_neither() -> None:
    asked = dns.message.from_wire(build_query(9, "_25._tcp.mx.example", TYPES["TLSA"], dnssec=True))
    assert asked.flags & dns.flags.AD and asked.ednsflags & dns.flags.DO and asked.question[0].rdtype == 52
    plain = dns.message.from_wire(build_query(9, "mx.example", TYPES["MX"]))
    assert not plain.flags & dns.flags.AD and not plain.ednsflags & dns.flags.DO and plain.payload == 1232


def test_tlsa_records_header_bits_do_echo_and_extended_errors_are_read() -> None:
    query = dns.message.from_wire(build_query(5, "_25._tcp.mx.example", TYPES["TLSA"], dnssec=True))
    reply = dns.message.make_response(query)
    reply.flags |= dns.flags.AD | dns.flags.RA
    reply.answer.append(dns.rrset.from_text("_25._tcp.mx.example.", 60, "IN", "TLSA", "3 1 1 00ff" + "ab" * 30))
    reply.use_edns(0, dns.flags.DO, 1232, options=[dns.edns.EDEOption(dns.edns.EDECode.DNSSEC_BOGUS, "sig expired"),
                                                   dns.edns.EDEOption(dns.edns.EDECode.STALE_ANSWER)])
    parsed = parse_reply(reply.to_wire())
    assert [(r.rtype, r.data) for r in parsed.answers] == [(52, "3 1 1 00ff" + "ab" * 30)]
    assert (parsed.authenticated, parsed.recursion_available, parsed.dnssec_ok) == (True, True, True)
    assert parsed.extended_errors == ((6, "sig expired"), (3, ""))
    # An authoritative-only answer without DO in its OPT record: nothing to read as validated.
    reply.flags &= ~(dns.flags.AD | dns.flags.RA)
    reply.use_edns(0, 0, 1232)
    bare = parse_reply(reply.to_wire())
    assert (bare.authenticated, bare.recursion_available, bare.dnssec_ok, bare.extended_errors) == (
        False, False, False, ())


def test_a_tlsa_record_too_short_and_a_cut_option_are_told_apart() -> None:
    query = dns.message.from_wire(build_query(5, "_25._tcp.mx.example", TYPES["TLSA"], dnssec=True))
    reply = dns.message.make_response(query)
    reply.answer.append(dns.rrset.from_text("_25._tcp.mx.example.", 60, "IN", "TLSA", "3 1 0 00"))
    wire = bytearray(reply.to_wire())
    short = wire.index(bytes([0, 4, 3, 1, 0, 0])) + 2  # RDLENGTH 4, then the RDATA
    wire[short - 1] = 2  # RDLENGTH 2: less than usage, selector and matching type
    with pytest.raises(WireError, match="TLSA record too short"):
        parse_reply(bytes(wire[:short + 2]) + bytes(wire[short + 4:]))
    # An EDE option whose length runs past the OPT record ends the list; the reply stays good.
    reply.use_edns(0, dns.flags.DO, 1232, options=[dns.edns.EDEOption(dns.edns.EDECode.OTHER, "x")])
    data = bytearray(reply.to_wire())
    data[-5:-3] = (200).to_bytes(2, "big")  # the option's length field
    parsed = parse_reply(bytes(data))
    assert parsed.extended_errors == () and parsed.dnssec_ok and len(parsed.answers) == 1


def test_the_opt_record_is_found_behind_the_authority_section_of_an_nxdomain() -> None:
    """An NXDOMAIN carries the zone's SOA before the OPT record (RFC 2308 §3): its names are stepped over,
    compressed or not, and the OPT record's DO bit and EDEs are read; a malformed name there, or a tail
    cut inside it, leaves the reply good with no OPT facts."""
    import dns.rcode

    query = dns.message.from_wire(build_query(9, "_mta-sts.d1.example", TYPES["TXT"], dnssec=True))
    reply = dns.message.make_response(query)
    reply.set_rcode(dns.rcode.NXDOMAIN)
    reply.authority.append(dns.rrset.from_text("example.", 60, "IN", "SOA",
                                               "ns.example. hostmaster.example. 1 7200 900 1209600 300"))
    reply.use_edns(0, dns.flags.DO, 1232, options=[dns.edns.EDEOption(dns.edns.EDECode.OTHER, "why")])
    wire = reply.to_wire()
    parsed = parse_reply(wire)
    assert (parsed.rcode, parsed.dnssec_ok, parsed.extended_errors) == (3, True, ((0, "why"),))
    # The same SOA with its owner written out in full (labels, not a pointer; later pointers all point
    # back into the question, before it).
    owner = wire.index(b"\x00\x06\x00\x01") - 2
    assert wire[owner] & 0xC0 == 0xC0
    full = wire[:owner] + b"\x07example\x00" + wire[owner + 2:]
    assert parse_reply(full).dnssec_ok
    soa = wire.index(b"\x00\x06\x00\x01")  # the SOA's TYPE and CLASS follow its owner name (a pointer)
    bad = bytearray(wire)
    bad[soa - 2] = 0x40  # an extended label type (RFC 6891 §5: obsolete) where the owner's pointer was
    assert (parse_reply(bytes(bad)).rcode, parse_reply(bytes(bad)).dnssec_ok) == (3, False)
    assert (parse_reply(wire[:soa - 1]).rcode, parse_reply(wire[:soa - 1]).dnssec_ok) == (3, False)
