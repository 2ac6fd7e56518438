"""SIP messages: parsing, typed header views, framing, serialising back, and message-level checks."""

from __future__ import annotations

import pytest

from runtime.sip.errors import SipSyntaxError
from runtime.sip.message import (
    MAX_MESSAGE_SIZE,
    Headers,
    Request,
    Response,
    StreamFramer,
    check_request,
    create_response,
    parse_message,
)

SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"


def invite(*extra: str, body: bytes = SDP, first: str = "INVITE sip:bob@example.com SIP/2.0") -> bytes:
    lines = [
        first,
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds;rport",
        "Max-Forwards: 70",
        'From: "Alice" <sip:alice@example.com>;tag=1928301774',
        "To: <sip:bob@example.com>",
        "Call-ID: a84b4c76e66710@pc33.example.com",
        "CSeq: 314159 INVITE",
        "Contact: <sip:alice@192.0.2.1:5060>",
        *extra,
        "Content-Type: application/sdp",
        f"Content-Length: {len(body)}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def request(data: bytes) -> Request:
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


# ---- reading ---------------------------------------------------------------------------------

def test_a_typical_invite_gives_its_typed_views() -> None:
    req = request(invite())
    req.validate()
    assert (req.method, req.uri) == ("INVITE", "sip:bob@example.com")
    assert req.call_id == "a84b4c76e66710@pc33.example.com"
    assert req.cseq == (314159, "INVITE")
    assert (req.top_via.transport, req.top_via.host, req.top_via.port) == ("UDP", "192.0.2.1", 5060)
    assert req.top_via.branch == "z9hG4bK776asdhds"
    assert req.top_via.params["rport"] is None
    assert req.from_.display == "Alice" and req.from_.tag == "1928301774"
    assert req.to.tag is None
    assert req.contacts[0].uri.port == 5060
    assert req.content_type == "application/sdp"
    assert req.body == SDP


def test_folded_header_reads_as_one_line_joined_by_a_space() -> None:
    req = request(invite("Subject: lunch\r\n  at noon", "X-Tab: a\r\n\tb"))
    assert req.headers.get("subject") == "lunch at noon"
    assert req.headers.get("x-tab") == "a b"


def test_compact_header_names_find_their_long_forms() -> None:
    data = (b"OPTIONS sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\nf: <sip:x@y>;tag=1\r\n"
            b"t: sip:a@b\r\ni: id1\r\nCSeq: 1 OPTIONS\r\nm: <sip:x@h>\r\nk: replaces\r\nl: 0\r\n\r\n")
    req = request(data)
    req.validate()
    assert req.call_id == "id1"
    assert req.headers.get("Supported") == "replaces"
    assert req.contacts[0].uri.host == "h"
    assert req.headers.get("Content-Length") == "0"


def test_list_values_split_within_and_across_header_lines() -> None:
    req = request(invite('Route: <sip:p1;lr>, "a, b" <sip:p2;lr>', "Route: <sip:p3;lr>"))
    assert req.headers.values("route") == ['<sip:p1;lr>', '"a, b" <sip:p2;lr>', "<sip:p3;lr>"]
    assert [r.uri.host for r in req.routes] == ["p1", "p2", "p3"]


def test_several_vias_in_one_line_and_across_lines_keep_their_order() -> None:
    data = invite().replace(
        b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds;rport",
        b"Via: SIP/2.0/TCP a.example.com;branch=z9hG4bK1, SIP/2.0/UDP b.example.com;branch=z9hG4bK2\r\n"
        b"Via: SIP/2.0/TLS c.example.com:5061;branch=z9hG4bK3",
    )
    req = request(data)
    assert [v.host for v in req.vias] == ["a.example.com", "b.example.com", "c.example.com"]
    assert req.top_via is req.vias[0]


def test_top_via_read_first_is_the_same_object_as_the_first_of_all_vias() -> None:
    req = request(invite())
    top = req.top_via
    assert req.vias[0] is top


def test_quoted_display_name_with_escapes_and_delimiters_is_unquoted() -> None:
    req = request(invite().replace(b'"Alice"', b'"A \\"big\\" <boss>, Inc"'))
    assert req.from_.display == 'A "big" <boss>, Inc'
    assert req.from_.tag == "1928301774"


def test_addr_spec_parameters_belong_to_the_header_and_name_addr_ones_to_the_uri() -> None:
    req = request(invite().replace(b"To: <sip:bob@example.com>", b"To: sip:bob@example.com;tag=xyz"))
    assert req.to.tag == "xyz" and req.to.uri.params == {}
    req = request(invite().replace(b"To: <sip:bob@example.com>", b"To: <sip:bob@example.com;tag=xyz>"))
    assert req.to.tag is None and req.to.uri.params == {"tag": "xyz"}


def test_contact_star_is_not_a_contact() -> None:
    req = request(invite().replace(b"Contact: <sip:alice@192.0.2.1:5060>", b"Contact: *"))
    assert req.contact_star and req.contacts == []


def test_leading_crlfs_before_the_start_line_are_ignored() -> None:
    assert request(b"\r\n\r\n" + invite()).method == "INVITE"


def test_lf_only_line_ends_are_tolerated() -> None:
    req = request(invite(body=b"").replace(b"\r\n", b"\n"))
    req.validate()
    assert req.cseq == (314159, "INVITE")


def test_a_bare_cr_inside_the_header_is_refused() -> None:
    with pytest.raises(SipSyntaxError, match="bare CR"):
        parse_message(invite("X-A: a\rb"))


@pytest.mark.parametrize("line", ["Bad Name: x", ": x", "X-No-Colon"])
def test_a_header_line_that_is_not_name_colon_value_is_refused(line: str) -> None:
    with pytest.raises(SipSyntaxError):
        parse_message(invite(line))


def test_a_message_without_the_empty_line_after_its_headers_is_refused() -> None:
    with pytest.raises(SipSyntaxError, match="empty line"):
        parse_message(invite().partition(b"\r\n\r\n")[0])


def test_an_unknown_sip_version_gets_505() -> None:
    with pytest.raises(SipSyntaxError) as caught:
        parse_message(invite(first="INVITE sip:bob@example.com SIP/3.0"))
    assert caught.value.status == 505
    assert caught.value.reason.startswith("Version Not Supported (")


def test_a_response_status_line_error_is_marked_as_a_response() -> None:
    with pytest.raises(SipSyntaxError) as caught:
        parse_message(b"SIP/2.0 2000 OK\r\nContent-Length: 0\r\n\r\n")
    assert caught.value.is_response


def test_a_response_parses_with_its_reason_phrase() -> None:
    msg = parse_message(b"SIP/2.0 180 Ringing softly\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
                        b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\n"
                        b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(msg, Response)
    msg.validate()
    assert (msg.status, msg.reason) == (180, "Ringing softly")


# ---- framing and limits -----------------------------------------------------------------------

def test_a_body_shorter_than_content_length_is_refused() -> None:
    with pytest.raises(SipSyntaxError, match="exceeds"):
        parse_message(invite()[:-5])


def test_octets_past_content_length_in_a_datagram_are_ignored() -> None:
    assert request(invite() + b"garbage").body == SDP


def test_without_content_length_a_datagram_body_runs_to_the_end() -> None:
    data = invite(body=b"").replace(b"Content-Length: 0\r\n", b"") + b"abc"
    assert request(data).body == b"abc"


def test_without_content_length_a_stream_message_is_refused() -> None:
    data = invite(body=b"").replace(b"Content-Length: 0\r\n", b"")
    with pytest.raises(SipSyntaxError, match="Content-Length"):
        parse_message(data, stream=True)


@pytest.mark.parametrize("value", ["-1", "1e3", "12345678901", "١٢"])
def test_a_content_length_that_is_not_a_small_decimal_is_refused(value: str) -> None:
    data = invite(body=b"").replace(b"Content-Length: 0", f"Content-Length: {value}".encode())
    with pytest.raises(SipSyntaxError, match="Content-Length"):
        parse_message(data)


def test_a_message_over_the_size_limit_gets_513() -> None:
    data = invite("X-Pad: " + "a" * MAX_MESSAGE_SIZE)
    with pytest.raises(SipSyntaxError) as caught:
        parse_message(data)
    assert caught.value.status == 513


def test_too_many_header_fields_are_refused() -> None:
    with pytest.raises(SipSyntaxError, match="header fields"):
        parse_message(invite(*["X-A: 1"] * 300))


# ---- validate ---------------------------------------------------------------------------------

@pytest.mark.parametrize("mutation, message", [
    ((b"Call-ID: a84b4c76e66710@pc33.example.com\r\n", b""), "Call-ID"),
    ((b"CSeq: 314159 INVITE", b"CSeq: 314159 BYE"), "does not match"),
    ((b"CSeq: 314159 INVITE", b"CSeq: 4294967296 INVITE"), "CSeq"),
    ((b"Max-Forwards: 70", b"Max-Forwards: 256"), "Max-Forwards"),
    ((b"Max-Forwards: 70", b"Max-Forwards: 70\r\nMax-Forwards: 69"), "Max-Forwards"),
    ((b"To: <sip:bob@example.com>", b"To: <sip:bob@example.com>\r\nTo: <sip:eve@example.com>"), "To"),
    ((b"Via: SIP/2.0/UDP 192.0.2.1:5060", b"Via: SIP/2.0/UDP 192.0.2.1:99999"), "port"),
    ((b"Contact: <sip:alice@192.0.2.1:5060>", b"Contact: <sip:alice@192.0.2.1:5060>;;"), "empty"),
])
def test_validate_refuses_what_a_transaction_cannot_work_with(
        mutation: tuple[bytes, bytes], message: str) -> None:
    req = request(invite().replace(*mutation))
    with pytest.raises(SipSyntaxError, match=message):
        req.validate()


def test_validate_accepts_a_request_without_max_forwards() -> None:
    request(invite().replace(b"Max-Forwards: 70\r\n", b"")).validate()


# ---- serialising back -------------------------------------------------------------------------

def test_an_untouched_message_serialises_to_the_octets_received() -> None:
    data = invite("X-Odd:   spaced\t value", "subject:lower-case-name")
    assert bytes(parse_message(data)) == data


def test_a_changed_header_changes_only_its_own_line() -> None:
    data = invite("Subject: lunch\r\n  at noon")
    req = request(data)
    req.headers.set("Max-Forwards", "69")
    out = bytes(req)
    assert out == data.replace(b"Max-Forwards: 70", b"Max-Forwards: 69")


def test_a_removed_top_via_value_leaves_the_rest_as_received() -> None:
    data = invite().replace(b"Via: SIP/2.0/UDP", b"Via: SIP/2.0/TCP p.example.com;branch=z9hG4bKp,\r\n SIP/2.0/UDP")
    req = request(data)
    assert req.headers.pop_first_value("via") == "SIP/2.0/TCP p.example.com;branch=z9hG4bKp"
    out = bytes(req)
    assert b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds;rport\r\n" in out
    assert b"p.example.com" not in out
    assert bytes(parse_message(out)) == out


def test_set_uri_changes_the_request_line_and_the_parsed_view() -> None:
    req = request(invite())
    assert req.request_uri.user == "bob"
    req.set_uri("sip:carol@example.net")
    assert req.request_uri.user == "carol"
    assert bytes(req).startswith(b"INVITE sip:carol@example.net SIP/2.0\r\n")


def test_set_body_updates_content_type_and_length() -> None:
    req = request(invite())
    req.set_body(b"hello", "text/plain")
    out = parse_message(bytes(req))
    assert out.body == b"hello" and out.content_type == "text/plain"


def test_a_built_request_serialises_in_canonical_form() -> None:
    req = Request("OPTIONS", "sip:a@b", Headers([("Call-ID", "x"), ("Content-Length", "0")]))
    assert bytes(req) == b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n"


def test_create_response_copies_the_dialog_headers_and_tags_to() -> None:
    req = request(invite("Record-Route: <sip:p1;lr>"))
    resp = create_response(req, 200, "OK", to_tag="abc", headers=[("Contact", "<sip:bob@h>")])
    again = parse_message(bytes(resp))
    assert isinstance(again, Response)
    again.validate()
    assert again.to.tag == "abc"
    assert again.top_via.branch == "z9hG4bK776asdhds"
    assert again.headers.get("record-route") == "<sip:p1;lr>"
    assert again.cseq == (314159, "INVITE")


def test_create_response_keeps_an_existing_to_tag() -> None:
    req = request(invite().replace(b"To: <sip:bob@example.com>", b"To: <sip:bob@example.com>;tag=old"))
    assert create_response(req, 200, "OK", to_tag="new").headers.get("to") == "<sip:bob@example.com>;tag=old"


# ---- check_request ----------------------------------------------------------------------------

def test_a_plain_invite_passes_the_message_level_checks() -> None:
    assert check_request(request(invite())) is None


def test_a_supported_required_option_passes() -> None:
    assert check_request(request(invite("Require: replaces"))) is None


def test_require_is_checked_against_the_supported_parameter() -> None:
    verdict = check_request(request(invite("Require: 100rel, timer")), supported={"timer"})
    assert verdict is not None and verdict.status == 420
    assert verdict.headers == (("Unsupported", "100rel"),)


def test_proxy_require_is_a_proxy_matter_not_ours() -> None:
    assert check_request(request(invite("Proxy-Require: foo"))) is None


def test_max_forwards_zero_on_register_is_answered_by_the_registrar() -> None:
    data = (b"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
            b"Max-Forwards: 0\r\nFrom: <sip:a@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\n"
            b"Call-ID: r1\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n")
    assert check_request(request(data)) is None


def test_options_at_zero_hops_can_be_answered_locally() -> None:
    data = invite(body=b"", first="OPTIONS sip:bob@example.com SIP/2.0").replace(
        b"Max-Forwards: 70", b"Max-Forwards: 0").replace(b"314159 INVITE", b"314159 OPTIONS")
    assert check_request(request(data)).status == 483  # type: ignore[union-attr]
    assert check_request(request(data), final_methods={"REGISTER", "OPTIONS"}) is None


def test_an_ack_is_never_refused_at_the_message_level() -> None:
    data = invite(body=b"", first="ACK sip:bob@example.com SIP/2.0").replace(
        b"314159 INVITE", b"314159 ACK") .replace(b"Max-Forwards: 70", b"Max-Forwards: 0")
    assert check_request(request(data)) is None


def test_accept_with_a_wildcard_covers_sdp() -> None:
    assert check_request(request(invite("Accept: application/*"))) is None
    assert check_request(request(invite("Accept: text/html, */*"))) is None


def test_a_syntax_error_becomes_a_400_refusal_instead_of_an_exception() -> None:
    verdict = check_request(request(invite().replace(b"CSeq: 314159 INVITE", b"CSeq: x INVITE")))
    assert verdict is not None and verdict.status == 400
    assert verdict.reason.startswith("Bad Request (")


# ---- stream framing ---------------------------------------------------------------------------

def test_the_framer_returns_each_whole_message_once() -> None:
    framer = StreamFramer()
    a, b = invite(), invite("X-Second: 1")
    assert framer.feed(a + b) == [a, b]
    assert framer.buffered == 0


def test_the_framer_waits_for_a_message_split_across_reads() -> None:
    framer = StreamFramer()
    data = invite()
    got: list[bytes] = []
    for i in range(len(data)):
        got += framer.feed(data[i : i + 1])
    assert got == [data]


def test_a_double_crlf_ping_is_counted_not_returned() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == []
    assert framer.feed(b"\r\n") == []
    assert framer.feed(b"\r\n" + invite()) == [invite()]
    assert framer.take_pings() == 2
    assert framer.take_pings() == 0


def test_a_lone_crlf_between_messages_is_skipped() -> None:
    framer = StreamFramer()
    assert framer.feed(invite() + b"\r\n" + invite()) == [invite(), invite()]
    assert framer.pings == 0


def test_the_framer_refuses_a_message_without_content_length_and_stays_failed() -> None:
    framer = StreamFramer()
    bad = invite(body=b"").replace(b"Content-Length: 0\r\n", b"")
    with pytest.raises(SipSyntaxError, match="missing Content-Length"):
        framer.feed(bad)
    with pytest.raises(SipSyntaxError):
        framer.feed(invite())


def test_the_framer_hands_over_good_messages_before_reporting_a_fault() -> None:
    framer = StreamFramer()
    bad = invite(body=b"").replace(b"Content-Length: 0", b"Content-Length: x")
    assert framer.feed(invite() + bad) == [invite()]
    with pytest.raises(SipSyntaxError, match="unreadable Content-Length"):
        framer.feed(b"")


def test_the_framer_refuses_an_oversized_header_section() -> None:
    framer = StreamFramer(max_size=1000)
    with pytest.raises(SipSyntaxError) as caught:
        framer.feed(b"INVITE sip:a@b SIP/2.0\r\nX: " + b"a" * 2000)
    assert caught.value.status == 513


def test_the_framer_refuses_a_content_length_over_the_limit() -> None:
    framer = StreamFramer(max_size=1000)
    with pytest.raises(SipSyntaxError):
        framer.feed(invite(body=b"").replace(b"Content-Length: 0", b"Content-Length: 5000"))


def test_a_framed_message_parses_as_a_stream_message() -> None:
    framer = StreamFramer()
    (data,) = framer.feed(invite())
    assert parse_message(data, stream=True).body == SDP


def test_broken_quoting_in_a_list_header_is_a_400_refusal_not_an_exception() -> None:
    verdict = check_request(request(invite('Require: a, b"c')))
    assert verdict is not None and verdict.status == 400
