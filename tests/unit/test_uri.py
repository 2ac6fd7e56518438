"""SIP URIs and name-addr values (RFC 3261 19.1 and 20.10, RFC 5118)."""

from __future__ import annotations

import pytest

from runtime.sip.errors import SipSyntaxError
from runtime.sip.uri import NameAddr, SipUri, split_params, split_quoted, unescape


def test_a_full_sip_uri_is_split_into_its_parts() -> None:
    uri = SipUri.parse("sip:alice:secret@atlanta.com:5070;transport=TCP;lr?subject=project&priority=urgent")
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == (
        "sip", "alice", "secret", "atlanta.com", 5070)
    assert uri.params == {"transport": "TCP", "lr": None}
    assert uri.headers == "subject=project&priority=urgent"
    assert uri.transport == "tcp"


def test_the_scheme_is_case_insensitive() -> None:
    assert SipUri.parse("SIPS:bob@biloxi.com").scheme == "sips"


def test_sips_defaults_to_tls() -> None:
    assert SipUri.parse("sips:bob@biloxi.com").transport == "tls"


def test_a_user_part_may_hold_semicolons_and_question_marks() -> None:
    uri = SipUri.parse("sip:user;par=u%40example.net@example.com")
    assert uri.user == "user;par=u%40example.net" and uri.host == "example.com" and uri.params == {}


def test_an_ipv6_reference_keeps_its_brackets_and_reads_its_port() -> None:
    uri = SipUri.parse("sip:[2001:db8::10]:5070;transport=udp")
    assert (uri.host, uri.port, uri.bare_host) == ("[2001:db8::10]", 5070, "2001:db8::10")


@pytest.mark.parametrize("text", [
    "sip:[2001:db8:::192.0.2.1]",   # three colons: RFC 5118 4.10
    "sip:2001:db8::10",              # no brackets: RFC 5118 4.2
    "sip:[2001:db8::10",             # unclosed
    "sip:[2001:db8::10]x",           # junk after the reference
])
def test_a_bad_ipv6_reference_is_refused(text: str) -> None:
    with pytest.raises(SipSyntaxError):
        SipUri.parse(text)


@pytest.mark.parametrize("text", [
    "sip:host:65536", "sip:host:", "sip:host:5x", "sip:ho st", "sip:<a@b>", "sip:", "nocolon",
    "1sip:a@b", "sip:a@b_c!d",
])
def test_an_unreadable_sip_uri_is_refused(text: str) -> None:
    with pytest.raises(SipSyntaxError):
        SipUri.parse(text)


def test_other_schemes_are_kept_opaque() -> None:
    assert SipUri.parse("urn:service:sos").host == "service:sos"
    tel = SipUri.parse("tel:+1-201-555-0123;phone-context=example.com")
    assert tel.host == "+1-201-555-0123" and tel.params == {"phone-context": "example.com"}


def test_a_uri_prints_back_in_canonical_form() -> None:
    assert str(SipUri.parse("sip:a@b:5060;LR;transport=tcp")) == "sip:a@b:5060;lr;transport=tcp"


def test_unescape_undoes_percent_escapes() -> None:
    assert unescape("%75se%72") == "user"
    assert unescape("plain") == "plain"


def test_split_params_keeps_quoted_semicolons_in_values() -> None:
    assert split_params('v ; a="x;y" ; B') == ("v", {"a": '"x;y"', "b": None})


def test_split_params_strict_refuses_empty_parameters() -> None:
    assert split_params("v;;a")[1] == {"a": None}
    with pytest.raises(SipSyntaxError):
        split_params("v;;a", strict=True)


def test_split_quoted_ignores_separators_in_quotes_and_angle_brackets() -> None:
    assert split_quoted('"a,b" <sip:x;y,z>, <sip:w>', ",") == ['"a,b" <sip:x;y,z>', " <sip:w>"]


def test_split_quoted_refuses_an_unterminated_quote() -> None:
    with pytest.raises(SipSyntaxError):
        split_quoted('"abc, d', ",")


def test_name_addr_with_a_token_display_name() -> None:
    na = NameAddr.parse("A. Bell <sip:a.g.bell@example.com>;tag=qweoiqpe")
    assert (na.display, na.uri.user, na.tag) == ("A. Bell", "a.g.bell", "qweoiqpe")


def test_name_addr_without_space_before_the_angle_bracket() -> None:
    assert NameAddr.parse("caller<sip:caller@example.com>;tag=323").display == "caller"


def test_name_addr_quoted_display_may_contain_angle_brackets() -> None:
    na = NameAddr.parse('"<x>" <sip:a@b>')
    assert na.display == "<x>" and na.uri.host == "b"


@pytest.mark.parametrize("text", [
    '"unterminated <sip:a@b>',
    "Bell, Alexander <sip:a@b>",
    "< sip:a@b >",
    "<sip:a@b",
    "<sip:a@b> junk",
    "sip:a@b?x=y",
    '"x" sip:a@b',
    "",
])
def test_a_malformed_address_is_refused(text: str) -> None:
    with pytest.raises(SipSyntaxError):
        NameAddr.parse(text)


def test_contact_expires_parameter_is_read_and_clamped() -> None:
    assert NameAddr.parse("<sip:a@b>;expires=3600").expires == 3600
    assert NameAddr.parse("<sip:a@b>;expires=99999999999999999").expires == 2**32 - 1
    assert NameAddr.parse("<sip:a@b>").expires is None
    with pytest.raises(SipSyntaxError):
        NameAddr.parse("<sip:a@b>;expires=soon").expires  # noqa: B018
