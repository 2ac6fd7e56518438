"""Every RFC 4475 and RFC 5118 torture message, handled at the parser level as the RFCs say.

The outcome names what the server does with the message:

- ACCEPT: parses, `validate()` passes, `check_request` has nothing to refuse.
- REFUSE: well-formed, but `check_request` gives the named status (416, 420, 483, 415, 406...).
- REJECT: `parse_message` or `validate()` raises SipSyntaxError carrying the status to answer with.
- RESPONSE: a well-formed response (the transaction layer drops it when nothing matches).
- DROP: a malformed response: SipSyntaxError marked `is_response`, so nobody answers it.

Leniency choices (RFC 4475 lets an implementation pick): trws (spaces after SIP/2.0) and escruri
(headers in the Request-URI) are REFUSED with 400, like lwsstart: a request line is exactly
METHOD SP URI SP VERSION, and a Request-URI may not carry headers (RFC 3261 19.1.1). Being strict
keeps the received bytes forwardable unchanged, which a lenient reading could not.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.sip.errors import SipSyntaxError
from runtime.sip.message import Request, Response, check_request, parse_message

CORPUS = Path(__file__).resolve().parent.parent / "conformance"

ACCEPT, REFUSE, REJECT, RESPONSE, DROP = "accept", "refuse", "reject", "response", "drop"

EXPECTED: dict[str, tuple[str, int | None]] = {
    # RFC 4475 3.1.1: valid messages
    "rfc4475/wsinv": (ACCEPT, None),
    "rfc4475/intmeth": (ACCEPT, None),
    "rfc4475/esc01": (ACCEPT, None),
    "rfc4475/escnull": (ACCEPT, None),
    "rfc4475/esc02": (ACCEPT, None),
    "rfc4475/lwsdisp": (ACCEPT, None),
    "rfc4475/longreq": (ACCEPT, None),
    "rfc4475/dblreq": (ACCEPT, None),
    "rfc4475/semiuri": (ACCEPT, None),
    "rfc4475/transports": (ACCEPT, None),
    "rfc4475/mpart01": (ACCEPT, None),
    "rfc4475/unreason": (RESPONSE, None),
    "rfc4475/noreason": (RESPONSE, None),
    # RFC 4475 3.1.2: invalid messages
    "rfc4475/badinv01": (REJECT, 400),
    "rfc4475/clerr": (REJECT, 400),
    "rfc4475/ncl": (REJECT, 400),
    "rfc4475/scalar02": (REJECT, 400),
    "rfc4475/scalarlg": (DROP, None),
    "rfc4475/quotbal": (REJECT, 400),
    "rfc4475/ltgtruri": (REJECT, 400),
    "rfc4475/lwsruri": (REJECT, 400),
    "rfc4475/lwsstart": (REJECT, 400),
    "rfc4475/trws": (REJECT, 400),
    "rfc4475/escruri": (REJECT, 400),
    "rfc4475/baddate": (REJECT, 400),
    "rfc4475/regbadct": (REJECT, 400),
    "rfc4475/badaspec": (REJECT, 400),
    "rfc4475/baddn": (REJECT, 400),
    "rfc4475/badvers": (REJECT, 505),
    "rfc4475/mismatch01": (REJECT, 400),
    "rfc4475/mismatch02": (REJECT, 400),
    "rfc4475/bigcode": (DROP, None),
    # RFC 4475 3.2: transaction layer (an RFC 2543 branch still parses; matching is the layer's job)
    "rfc4475/badbranch": (ACCEPT, None),
    # RFC 4475 3.3: application layer
    "rfc4475/insuf": (REJECT, 400),
    "rfc4475/unkscm": (REFUSE, 416),
    "rfc4475/novelsc": (REFUSE, 416),
    "rfc4475/unksm2": (ACCEPT, None),
    "rfc4475/bext01": (REFUSE, 420),
    "rfc4475/invut": (REFUSE, 415),
    "rfc4475/regaut01": (ACCEPT, None),  # the unknown auth scheme is the registrar's to challenge
    "rfc4475/multi01": (REJECT, 400),
    "rfc4475/mcl01": (REJECT, 400),
    "rfc4475/bcast": (RESPONSE, None),
    "rfc4475/zeromf": (REFUSE, 483),
    "rfc4475/cparam01": (ACCEPT, None),
    "rfc4475/cparam02": (ACCEPT, None),
    "rfc4475/regescrt": (ACCEPT, None),
    "rfc4475/sdp01": (REFUSE, 406),
    # RFC 4475 3.4: backward compatibility
    "rfc4475/inv2543": (ACCEPT, None),
    # RFC 5118 section 4
    "rfc5118/ipv6-good": (ACCEPT, None),
    "rfc5118/ipv6-bad": (REJECT, 400),
    "rfc5118/port-ambiguous": (ACCEPT, None),
    "rfc5118/port-unambiguous": (ACCEPT, None),
    "rfc5118/via-received-param-with-delim": (ACCEPT, None),
    "rfc5118/via-received-param-no-delim": (ACCEPT, None),
    "rfc5118/ipv6-in-sdp": (ACCEPT, None),
    "rfc5118/mult-ip-in-header": (ACCEPT, None),
    "rfc5118/mult-ip-in-sdp": (ACCEPT, None),
    "rfc5118/ipv4-mapped-ipv6": (ACCEPT, None),
    "rfc5118/ipv6-bug-abnf-3-colons": (REJECT, 400),
    "rfc5118/ipv6-correct-abnf-2-colons": (ACCEPT, None),
}


def load(name: str) -> bytes:
    return (CORPUS / f"{name}.dat").read_bytes()


def parsed(name: str) -> Request | Response:
    msg = parse_message(load(name))
    msg.validate()
    return msg


def test_every_corpus_message_has_an_expectation() -> None:
    on_disk = {str(p.relative_to(CORPUS).with_suffix("")) for p in CORPUS.glob("*/*.dat")}
    assert on_disk == set(EXPECTED)
    assert len([n for n in on_disk if n.startswith("rfc4475/")]) == 49


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_message_is_handled_as_the_rfc_says(name: str) -> None:
    outcome, status = EXPECTED[name]
    data = load(name)
    if outcome in (REJECT, DROP):
        with pytest.raises(SipSyntaxError) as caught:
            parse_message(data).validate()
        if outcome == REJECT:
            assert caught.value.status == status
            assert not caught.value.is_response
        else:
            assert caught.value.is_response or data.startswith(b"SIP/")
        return
    msg = parse_message(data)
    msg.validate()
    if outcome == RESPONSE:
        assert isinstance(msg, Response)
        return
    assert isinstance(msg, Request)
    verdict = check_request(msg)
    if outcome == ACCEPT:
        assert verdict is None
    else:
        assert verdict is not None and verdict.status == status


@pytest.mark.parametrize("name", sorted(n for n, (o, _) in EXPECTED.items() if o in (REJECT, REFUSE)))
def test_check_request_gives_the_same_status_as_the_parser(name: str) -> None:
    """The server's one call: what check_request says matches what parse + validate said."""
    outcome, status = EXPECTED[name]
    try:
        msg = parse_message(load(name))
    except SipSyntaxError as exc:
        assert exc.status == status
        return
    assert isinstance(msg, Request)
    verdict = check_request(msg)
    assert verdict is not None and verdict.status == status


@pytest.mark.parametrize("name", sorted(n for n, (o, _) in EXPECTED.items() if o in (ACCEPT, REFUSE, RESPONSE)))
def test_untouched_message_serialises_to_the_octets_it_was_parsed_from(name: str) -> None:
    data = load(name)
    msg = parse_message(data)
    out = bytes(msg)
    # what the message is: leading CRLFs and octets past Content-Length are not part of it
    assert data.lstrip(b"\r\n").startswith(out)
    assert out.endswith(msg.body)
    assert bytes(parse_message(out)) == out


@pytest.mark.parametrize("name", sorted(n for n, (o, _) in EXPECTED.items() if o in (ACCEPT, REFUSE)))
def test_changing_one_header_leaves_every_other_line_as_received(name: str) -> None:
    data = load(name)
    msg = parse_message(data)
    msg.headers.add("X-Touched", "yes")
    out = bytes(msg)
    original = bytes(parse_message(data))
    head, _, _ = original.partition(b"\r\n\r\n")
    assert out.startswith(head + b"\r\nX-Touched: yes\r\n\r\n")


def test_trws_trailing_spaces_on_the_request_line_are_refused_not_ignored() -> None:
    with pytest.raises(SipSyntaxError) as caught:
        parse_message(load("rfc4475/trws"))
    assert caught.value.status == 400


def test_escruri_headers_in_the_request_uri_are_refused_not_ignored() -> None:
    msg = parse_message(load("rfc4475/escruri"))
    with pytest.raises(SipSyntaxError, match="headers in the Request-URI"):
        msg.validate()


def test_wsinv_folded_and_spaced_headers_read_as_their_values() -> None:
    msg = parsed("rfc4475/wsinv")
    assert msg.to.tag == "1918181833n"
    assert msg.from_.display == 'J Rosenberg \\"'
    assert msg.from_.tag == "98asjd8"
    assert msg.cseq == (9, "INVITE")
    assert msg.max_forwards == 68
    assert [v.transport for v in msg.vias] == ["UDP", "TCP", "UDP"]
    assert msg.vias[1].branch == "z9hG4bK9ikj8"
    assert msg.vias[2].host == "192.168.255.111"
    assert msg.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert msg.headers.get("s") == ""
    contact = msg.contacts[0]
    assert contact.display == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert len(msg.body) == 150


def test_intmeth_unusual_method_uri_and_quoted_controls_are_accepted() -> None:
    msg = parsed("rfc4475/intmeth")
    assert isinstance(msg, Request)
    assert msg.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert msg.request_uri.host == "example.com"
    assert msg.to.display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert msg.from_.tag == "_token~1'+`*%!-."


def test_esc01_escapes_stay_escaped_in_the_parsed_uri() -> None:
    msg = parsed("rfc4475/esc01")
    assert isinstance(msg, Request)
    assert msg.request_uri.user == "sips%3Auser%40example.com"
    assert msg.contacts[0].uri.params == {"%6c%72": None, "n%61me": "v%61lue%25%34%31"}


def test_esc02_escaped_header_name_is_another_header() -> None:
    msg = parsed("rfc4475/esc02")
    assert len(msg.contacts) == 2
    assert msg.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_dblreq_octets_after_the_content_length_body_are_ignored() -> None:
    msg = parsed("rfc4475/dblreq")
    assert isinstance(msg, Request)
    assert msg.method == "REGISTER" and msg.body == b""


def test_cparam01_parameter_after_a_bare_uri_belongs_to_the_header() -> None:
    contact = parsed("rfc4475/cparam01").contacts[0]
    assert contact.params == {"unknownparam": None}
    assert contact.uri.params == {}


def test_cparam02_parameter_inside_angle_brackets_belongs_to_the_uri() -> None:
    contact = parsed("rfc4475/cparam02").contacts[0]
    assert contact.params == {}
    assert contact.uri.params == {"unknownparam": None}


def test_regescrt_escaped_uri_headers_in_contact_are_kept_verbatim() -> None:
    contact = parsed("rfc4475/regescrt").contacts[0]
    assert contact.uri.headers == "Route=%3Csip:sip.example.com%3E"


def test_bext01_420_lists_exactly_the_required_option_tags() -> None:
    msg = parsed("rfc4475/bext01")
    assert isinstance(msg, Request)
    verdict = check_request(msg)
    assert verdict is not None
    assert verdict.headers == (("Unsupported", "nothingSupportsThis, nothingSupportsThisEither"),)


def test_invut_415_says_which_body_types_we_accept() -> None:
    msg = parsed("rfc4475/invut")
    assert isinstance(msg, Request)
    verdict = check_request(msg)
    assert verdict is not None and ("Accept", "application/sdp") in verdict.headers


def test_scalar02_contact_expires_is_clamped_when_read() -> None:
    msg = parse_message(load("rfc4475/scalar02"))
    assert msg.contacts[0].expires == 2**32 - 1
    assert msg.expires == 2**32 - 1


def test_bigcode_is_recognised_as_a_response_to_drop() -> None:
    with pytest.raises(SipSyntaxError) as caught:
        parse_message(load("rfc4475/bigcode"))
    assert caught.value.is_response


def test_noreason_empty_reason_phrase_is_kept() -> None:
    msg = parsed("rfc4475/noreason")
    assert isinstance(msg, Response) and msg.status == 100 and msg.reason == ""


def test_unreason_utf8_reason_phrase_is_kept() -> None:
    msg = parsed("rfc4475/unreason")
    assert isinstance(msg, Response)
    assert msg.reason.startswith("= 2**3 * 5**2 но сто")


def test_inv2543_without_branch_or_max_forwards_is_accepted() -> None:
    msg = parsed("rfc4475/inv2543")
    assert msg.top_via.branch is None
    assert msg.max_forwards is None


def test_ipv6_port_inside_the_brackets_is_part_of_the_address() -> None:
    msg = parsed("rfc5118/port-ambiguous")
    assert isinstance(msg, Request)
    assert (msg.request_uri.host, msg.request_uri.port) == ("[2001:db8::10:5070]", None)


def test_ipv6_port_after_the_brackets_is_the_port() -> None:
    msg = parsed("rfc5118/port-unambiguous")
    assert isinstance(msg, Request)
    assert (msg.request_uri.host, msg.request_uri.port) == ("[2001:db8::10]", 5070)
    assert msg.request_uri.bare_host == "2001:db8::10"


@pytest.mark.parametrize("name, received", [
    ("rfc5118/via-received-param-with-delim", "[2001:db8::9:255]"),
    ("rfc5118/via-received-param-no-delim", "2001:db8::9:255"),
])
def test_via_received_ipv6_is_read_with_or_without_brackets(name: str, received: str) -> None:
    via = parsed(name).top_via
    assert via.host == "[2001:db8::9:1]"
    assert via.params["received"] == received


def test_ipv4_mapped_ipv6_references_are_hosts() -> None:
    msg = parsed("rfc5118/ipv4-mapped-ipv6")
    assert (msg.top_via.host, msg.top_via.port) == ("[::ffff:192.0.2.10]", 19823)
    assert msg.contacts[0].uri.host == "[::ffff:192.0.2.2]"


def test_mixed_ipv4_and_ipv6_vias_are_all_read() -> None:
    vias = parsed("rfc5118/mult-ip-in-header").vias
    assert [(v.host, v.port) for v in vias] == [
        ("[2001:db8::9:1]", 6050), ("192.0.2.1", None), ("[2001:db8::9:255]", None)]


def test_three_colons_in_an_ipv6_reference_is_no_address() -> None:
    msg = parse_message(load("rfc5118/ipv6-bug-abnf-3-colons"))
    with pytest.raises(SipSyntaxError, match="IPv6"):
        msg.validate()


def test_ipv6_request_uri_without_brackets_is_refused() -> None:
    msg = parse_message(load("rfc5118/ipv6-bad"))
    with pytest.raises(SipSyntaxError, match="without \\[\\]"):
        msg.validate()
