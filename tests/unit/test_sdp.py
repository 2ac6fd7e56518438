"""SDP: what we read from a peer's body, and what the anchoring rewrite may and may not change."""

from __future__ import annotations

import pytest

from runtime.sip import sdp as sdp_module
from runtime.sip.sdp import SdpError, address_type, parse_sdp, rewrite_sdp


def sdp(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode()


BARESIP_OFFER = sdp(
    "v=0",
    "o=- 1796337497 2838651702 IN IP4 192.168.1.10",
    "s=-",
    "c=IN IP4 192.168.1.10",
    "t=0 0",
    "m=audio 12462 RTP/AVP 0 8 101",
    "b=AS:83",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-15",
    "a=rtcp-rsize",
    "a=ptime:20",
    "a=sendrecv",
    "a=ssrc:1829391380 cname:sip:alice@192.168.1.10",
)

# A provider's offer as it arrives through Kamailio with rtpengine: media-level c=, a=rtcp: port.
KAMAILIO_OFFER = sdp(
    "v=0",
    "o=FreeSWITCH 1700000000 1700000001 IN IP4 203.0.113.10",
    "s=FreeSWITCH",
    "c=IN IP4 203.0.113.10",
    "t=0 0",
    "m=audio 30000 RTP/AVP 8 0 101",
    "c=IN IP4 203.0.113.50",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-16",
    "a=ptime:20",
    "a=sendrecv",
    "a=rtcp:30001",
    "a=nortpproxy:yes",
)

IPV6_OFFER = sdp(
    "v=0",
    "o=bob 2890844526 2890844527 IN IP6 2001:db8::2",
    "s=call",
    "c=IN IP6 2001:db8::2",
    "t=0 0",
    "m=audio 49170 RTP/AVP 0",
    "a=rtcp:49175 IN IP6 2001:db8::2",
)

AUDIO_VIDEO_WITH_REJECTED = sdp(
    "v=0",
    "o=carol 1 1 IN IP4 10.0.0.3",
    "s=-",
    "c=IN IP4 10.0.0.3",
    "t=0 0",
    "m=audio 4000 RTP/AVP 0",
    "a=rtcp:4001",
    "m=video 0 RTP/AVP 96",
    "a=rtcp:5001",
    "m=audio 6000 RTP/AVP 8",
    "c=IN IP4 10.0.0.9",
)


class TestParse:
    def test_baresip_offer_session_level_connection(self) -> None:
        d = parse_sdp(BARESIP_OFFER)
        assert d.origin.username == "-"
        assert d.origin.session_version == 2838651702
        assert d.connection == "192.168.1.10"
        [audio] = d.media
        assert (audio.kind, audio.port, audio.proto) == ("audio", 12462, "RTP/AVP")
        assert audio.formats == ["0", "8", "101"]
        assert audio.connection is None
        assert "rtpmap:101 telephone-event/8000" in audio.attributes
        assert audio.direction == "sendrecv"
        assert d.endpoint() == ("192.168.1.10", 12462)

    def test_media_level_connection_wins_over_session_level(self) -> None:
        d = parse_sdp(KAMAILIO_OFFER)
        assert d.connection == "203.0.113.10"
        assert d.media[0].connection == "203.0.113.50"
        assert d.endpoint(0) == ("203.0.113.50", 30000)
        assert d.media[0].rtcp_port == 30001

    def test_ipv6(self) -> None:
        d = parse_sdp(IPV6_OFFER)
        assert d.origin.addrtype == "IP6"
        assert d.connection_type == "IP6"
        assert d.endpoint() == ("2001:db8::2", 49170)

    def test_several_streams_and_a_rejected_one(self) -> None:
        d = parse_sdp(AUDIO_VIDEO_WITH_REJECTED)
        assert [m.kind for m in d.media] == ["audio", "video", "audio"]
        assert d.endpoint(0) == ("10.0.0.3", 4000)
        assert d.endpoint(1) is None  # port 0: rejected stream
        assert d.endpoint(2) == ("10.0.0.9", 6000)
        assert d.endpoint(3) is None  # no such stream

    def test_no_address_anywhere_has_no_endpoint(self) -> None:
        d = parse_sdp(sdp("v=0", "o=- 1 1 IN IP4 10.0.0.1", "s=-", "t=0 0", "m=audio 4000 RTP/AVP 0"))
        assert d.endpoint() is None

    def test_hold_by_unspecified_address_has_no_endpoint(self) -> None:
        d = parse_sdp(sdp("v=0", "o=- 1 2 IN IP4 10.0.0.1", "s=-", "c=IN IP4 0.0.0.0", "t=0 0",
                          "m=audio 4000 RTP/AVP 0", "a=sendonly"))  # fmt: skip
        assert d.endpoint() is None
        assert d.media[0].direction == "sendonly"

    def test_bare_lf_line_ends_are_accepted(self) -> None:
        d = parse_sdp(BARESIP_OFFER.replace(b"\r\n", b"\n"))
        assert d.endpoint() == ("192.168.1.10", 12462)

    def test_multicast_ttl_suffix_is_not_part_of_the_address(self) -> None:
        d = parse_sdp(sdp("v=0", "o=- 1 1 IN IP4 10.0.0.1", "s=-", "c=IN IP4 224.2.1.1/127", "t=0 0",
                          "m=audio 4000 RTP/AVP 0"))  # fmt: skip
        assert d.endpoint() == ("224.2.1.1", 4000)

    @pytest.mark.parametrize(
        ("body", "complaint"),
        [
            (b"", "empty"),
            (b"o=- 1 1 IN IP4 10.0.0.1\r\n", "v="),
            (b"v=1\r\no=- 1 1 IN IP4 10.0.0.1\r\n", "version"),
            (b"v=0\r\ns=-\r\n", "o= must follow"),
            (b"v=0\r\no=- 1 1 IN IP4\r\n", "o= line"),
            (b"v=0\r\no=- 1 one IN IP4 10.0.0.1\r\n", "not a number"),
            (b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\nc=IN IP4\r\n", "c= line"),
            (b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\nc=IN IPX 10.0.0.1\r\n", "c= line"),
            (b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\nm=audio\r\n", "m= line"),
            (b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\nm=audio x RTP/AVP 0\r\n", "not a number"),
            (b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\nm=audio 70000 RTP/AVP 0\r\n", "out of range"),
            (b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\na=rtcp:abc\r\n", "rtcp"),
            (b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\nthis is not sdp\r\n", "x=value"),
            (b"<html>not sdp</html>", "x=value"),
        ],
    )
    def test_malformed_sdp_raises_sdp_error_saying_why(self, body: bytes, complaint: str) -> None:
        with pytest.raises(SdpError, match=complaint):
            parse_sdp(body)

    def test_sdp_error_is_a_value_error(self) -> None:
        assert issubclass(SdpError, ValueError)


def lines(body: bytes) -> list[str]:
    assert body.endswith(b"\r\n")
    return body.decode().split("\r\n")[:-1]


class TestRewrite:
    def test_baresip_offer_points_at_us_and_keeps_everything_else(self) -> None:
        out = rewrite_sdp(BARESIP_OFFER, "127.0.0.1", [20000])
        before, after = lines(BARESIP_OFFER), lines(out)
        assert after[1] == "o=- 1796337497 2838651702 IN IP4 127.0.0.1"
        assert after[3] == "c=IN IP4 127.0.0.1"
        assert after[5] == "m=audio 20000 RTP/AVP 0 8 101"
        changed = {1, 3, 5}
        assert [x for i, x in enumerate(after) if i not in changed] == [
            x for i, x in enumerate(before) if i not in changed
        ]
        assert parse_sdp(out).endpoint() == ("127.0.0.1", 20000)

    def test_every_connection_line_is_rewritten_and_rtcp_moves_to_our_port_plus_one(self) -> None:
        out = rewrite_sdp(KAMAILIO_OFFER, "127.0.0.1", [20002])
        after = lines(out)
        assert after.count("c=IN IP4 127.0.0.1") == 2
        assert "a=rtcp:20003" in after
        assert "a=nortpproxy:yes" in after
        d = parse_sdp(out)
        assert d.endpoint() == ("127.0.0.1", 20002)
        assert d.origin.address == "127.0.0.1"

    def test_ipv4_offer_rewritten_to_an_ipv6_address_says_ip6(self) -> None:
        out = rewrite_sdp(BARESIP_OFFER, "::1", [20000])
        assert "c=IN IP6 ::1" in lines(out)
        assert "o=- 1796337497 2838651702 IN IP6 ::1" in lines(out)
        assert parse_sdp(out).endpoint() == ("::1", 20000)

    def test_ipv6_offer_rewritten_to_ipv4_including_the_rtcp_address(self) -> None:
        out = rewrite_sdp(IPV6_OFFER, "127.0.0.1", [20000])
        after = lines(out)
        assert "c=IN IP4 127.0.0.1" in after
        assert "a=rtcp:20001 IN IP4 127.0.0.1" in after
        assert "2001:db8" not in out.decode()

    def test_each_stream_gets_its_port_and_a_rejected_stream_stays_rejected(self) -> None:
        out = rewrite_sdp(AUDIO_VIDEO_WITH_REJECTED, "127.0.0.1", [20000, 20002, 20004])
        d = parse_sdp(out)
        assert [m.port for m in d.media] == [20000, 0, 20004]
        assert d.endpoint(2) == ("127.0.0.1", 20004)
        after = lines(out)
        assert "a=rtcp:20001" in after
        assert "a=rtcp:5001" not in after and "a=rtcp:20003" not in after  # no RTCP for a rejected stream

    def test_port_zero_given_for_a_stream_rejects_it(self) -> None:
        out = rewrite_sdp(AUDIO_VIDEO_WITH_REJECTED, "127.0.0.1", [20000, 0, 0])
        assert [m.port for m in parse_sdp(out).media] == [20000, 0, 0]

    def test_hold_passes_through(self) -> None:
        held = sdp("v=0", "o=- 1 3 IN IP4 10.0.0.1", "s=-", "c=IN IP4 0.0.0.0", "t=0 0",
                   "m=audio 4000 RTP/AVP 0", "a=sendonly")  # fmt: skip
        out = rewrite_sdp(held, "127.0.0.1", [20000])
        assert "a=sendonly" in lines(out)
        assert "c=IN IP4 0.0.0.0" in lines(out)  # RFC 2543 hold stays a hold
        for direction in ("recvonly", "inactive"):
            body = BARESIP_OFFER.replace(b"a=sendrecv", b"a=" + direction.encode())
            assert parse_sdp(rewrite_sdp(body, "127.0.0.1", [20000])).media[0].direction == direction

    def test_session_version_replaces_the_origin_version_when_given(self) -> None:
        kept = rewrite_sdp(BARESIP_OFFER, "127.0.0.1", [20000])
        assert parse_sdp(kept).origin.session_version == 2838651702
        out = rewrite_sdp(BARESIP_OFFER, "127.0.0.1", [20000], session_version=7)
        assert lines(out)[1] == "o=- 1796337497 7 IN IP4 127.0.0.1"

    def test_bare_lf_input_comes_out_with_crlf(self) -> None:
        out = rewrite_sdp(BARESIP_OFFER.replace(b"\r\n", b"\n"), "127.0.0.1", [20000])
        assert out.count(b"\r\n") == len(lines(BARESIP_OFFER))
        assert b"\n" not in out.replace(b"\r\n", b"")

    def test_port_count_collapses_to_the_one_port_we_relay(self) -> None:
        body = sdp("v=0", "o=- 1 1 IN IP4 10.0.0.1", "s=-", "c=IN IP4 10.0.0.1", "t=0 0",
                   "m=video 49170/2 RTP/AVP 31")  # fmt: skip
        assert "m=video 20000 RTP/AVP 31" in lines(rewrite_sdp(body, "127.0.0.1", [20000]))

    def test_non_ascii_session_name_survives_byte_for_byte(self) -> None:
        body = BARESIP_OFFER.replace(b"s=-", "s=Gespräch".encode())
        assert "s=Gespräch".encode() in rewrite_sdp(body, "127.0.0.1", [20000])

    def test_too_few_ports_is_an_error(self) -> None:
        with pytest.raises(SdpError, match="3 m= lines"):
            rewrite_sdp(AUDIO_VIDEO_WITH_REJECTED, "127.0.0.1", [20000])

    def test_malformed_body_is_never_half_rewritten(self) -> None:
        with pytest.raises(SdpError):
            rewrite_sdp(b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\nc=garbage\r\n", "127.0.0.1", [20000])

    def test_our_address_must_be_an_ip_literal(self) -> None:
        with pytest.raises(SdpError, match="not an IP address"):
            rewrite_sdp(BARESIP_OFFER, "pbx.example.com", [20000])

    @pytest.mark.parametrize("body", [BARESIP_OFFER, KAMAILIO_OFFER, IPV6_OFFER, AUDIO_VIDEO_WITH_REJECTED])
    def test_an_already_parsed_body_is_rewritten_the_same_without_a_second_parse(
        self, body: bytes, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        parsed = parse_sdp(body)
        expected = rewrite_sdp(body, "192.0.2.1", [20000, 20002, 20004], session_version=7)

        def no_parse(lines: list[str]) -> None:
            raise AssertionError("parsed again")

        monkeypatch.setattr(sdp_module, "_parse_lines", no_parse)
        assert rewrite_sdp(body, "192.0.2.1", [20000, 20002, 20004], session_version=7, parsed=parsed) == expected

    def test_too_few_ports_is_an_error_for_a_parsed_body_too(self) -> None:
        with pytest.raises(SdpError, match="ports"):
            rewrite_sdp(AUDIO_VIDEO_WITH_REJECTED, "127.0.0.1", [20000], parsed=parse_sdp(AUDIO_VIDEO_WITH_REJECTED))

    def test_a_bad_address_is_refused_every_time(self) -> None:
        for _ in range(2):  # address_type is cached; failures must not be
            with pytest.raises(SdpError, match="not an IP address"):
                rewrite_sdp(BARESIP_OFFER, "example.com", [20000])
        assert address_type("::1") == "IP6" and address_type("192.0.2.1") == "IP4"


ICE_OFFER = (
    b"v=0\r\no=- 42 1 IN IP4 192.168.1.20\r\ns=-\r\nc=IN IP4 192.168.1.20\r\nt=0 0\r\n"
    b"a=ice-lite\r\na=ice-options:trickle\r\n"
    b"m=audio 4000 RTP/AVP 0 101\r\n"
    b"a=ice-ufrag:F7gI\r\na=ice-pwd:x9cml/YzichV2+XlhiMu8g\r\n"
    b"a=candidate:1 1 UDP 2130706431 192.168.1.20 4000 typ host\r\n"
    b"a=candidate:2 1 UDP 1694498815 203.0.113.7 61000 typ srflx raddr 192.168.1.20 rport 4000\r\n"
    b"a=remote-candidates:1 198.51.100.3 5000\r\na=end-of-candidates\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
)


class TestIceIsStrippedWhenWeAnchor:
    def test_no_candidate_or_ice_line_reaches_the_other_leg(self) -> None:
        out = rewrite_sdp(ICE_OFFER, "127.0.0.1", [20000])
        text = out.decode()
        assert "candidate" not in text and "ice-" not in text
        assert "192.168.1.20" not in text and "203.0.113.7" not in text and "198.51.100.3" not in text

    def test_the_other_attributes_are_kept_in_order(self) -> None:
        after = lines(rewrite_sdp(ICE_OFFER, "127.0.0.1", [20000]))
        assert after[-3:] == ["m=audio 20000 RTP/AVP 0 101", "a=rtpmap:101 telephone-event/8000", "a=sendrecv"]
