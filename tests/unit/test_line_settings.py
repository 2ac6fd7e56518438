"""A line's `codecs` and `numbers` take effect: what goes out through the line offers only the line's
codecs, in its order; a call on the line's one number is that number; calls out show it."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from runtime.calls import Failure, Target
from runtime.engine import Engine
from runtime.lines import LineConfig
from runtime.sip.message import Request, parse_message
from runtime.sip.sdp import prefer_codecs
from runtime.transport import ListenSpec

OFFER = (b"v=0\r\no=a 1 1 IN IP4 192.0.2.7\r\ns=-\r\nc=IN IP4 192.0.2.7\r\nt=0 0\r\n"
         b"m=audio 4000 RTP/AVP 9 0 8 101\r\na=rtpmap:9 G722/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
         b"a=fmtp:101 0-16\r\nm=video 4002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n")


def test_an_offer_is_cut_down_to_the_codecs_named_in_their_order_with_telephone_event_kept() -> None:
    out = prefer_codecs(OFFER, ["PCMA", "pcmu"]).decode()  # type: ignore[union-attr]
    assert "m=audio 4000 RTP/AVP 8 0 101\r\n" in out
    assert "G722" not in out and "a=rtpmap:101 telephone-event/8000" in out and "a=fmtp:101 0-16" in out
    assert "m=video 4002 RTP/AVP 96" in out  # only audio is narrowed


def test_an_offer_with_none_of_the_codecs_cannot_go() -> None:
    assert prefer_codecs(OFFER, ["opus"]) is None


def fork(config: LineConfig, offer: bytes, caller_id: str | None = None) -> tuple[list, Failure | None]:  # type: ignore[type-arg]
    async def go() -> tuple[list, Failure | None]:  # type: ignore[type-arg]
        engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], advertise="127.0.0.1", rtp_ports=(36700, 36799))
        await engine.start()
        engine.add_line(config)
        engine.register_line(config.name)
        await asyncio.sleep(0.05)
        invite = parse_message(b"INVITE sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.7;branch=z9hG4bKa\r\n"
                               b"From: <sip:bob@192.0.2.7>;tag=1\r\nTo: <sip:x@127.0.0.1>\r\nCall-ID: c\r\n"
                               b"CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
        call = SimpleNamespace(id="c1", invite=invite, dialled="+15557654321", caller_id_override=caller_id,
                               peer_type="LINE", peer_name="other", caller_name=None, extra_headers=[])
        try:
            return engine.forks._fork_to_line(call, Target("LINE", config.name), offer)  # type: ignore[arg-type]
        finally:
            await engine.stop()
    return asyncio.run(go())


def line(**settings: object) -> LineConfig:
    return LineConfig("itsp1", "127.0.0.1", 9, username="trunk1", register_every=None, **settings)  # type: ignore[arg-type]


def test_a_call_out_through_a_line_offers_only_the_lines_codecs() -> None:
    legs, failure = fork(line(codecs=("PCMA",)), OFFER)
    assert failure is None
    invite: Request = legs[0].invite
    assert b"m=audio 4000 RTP/AVP 8 101\r\n" in invite.body


def test_a_caller_with_none_of_the_lines_codecs_gets_488_and_the_rule_may_go_on() -> None:
    legs, failure = fork(line(codecs=("opus",)), OFFER)
    assert legs == [] and failure is not None and failure.code == 488 and "opus" in failure.reason


def test_a_call_out_shows_the_lines_first_number_when_nothing_else_sets_a_caller_id() -> None:
    legs, _ = fork(line(numbers=("+15551230000", "+15551230001")), OFFER)
    assert legs[0].invite.headers.get("p-asserted-identity") == "<sip:+15551230000@127.0.0.1>"
    legs, _ = fork(line(numbers=("+15551230000",)), OFFER, caller_id="+15559999999")
    assert legs[0].invite.headers.get("p-asserted-identity") == "<sip:+15559999999@127.0.0.1>"


def test_a_provider_call_to_the_account_itself_is_a_call_to_the_lines_one_number() -> None:
    async def dialled() -> str:
        engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], advertise="127.0.0.1",
                        rtp_ports=(36700, 36799))
        engine.lines["itsp1"] = SimpleNamespace(config=line(numbers=("+15551230000",)))  # type: ignore[assignment]
        invite = parse_message(b"INVITE sip:trunk1@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKb\r\n"
                               b"From: <sip:+15557654321@127.0.0.1>;tag=1\r\nTo: <sip:trunk1@127.0.0.1>\r\n"
                               b"Call-ID: d\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
        return engine.dialled_number(invite, "LINE", "itsp1")  # type: ignore[arg-type]

    assert asyncio.run(dialled()) == "+15551230000"


def test_a_call_out_through_an_outbound_proxy_names_it_as_a_loose_route() -> None:
    legs, _ = fork(line(outbound_proxy="127.0.0.1:9"), OFFER)
    invite: Request = legs[0].invite
    assert invite.headers.get("route") == "<sip:127.0.0.1:9;lr>"
    assert invite.uri.startswith("sip:+15557654321@127.0.0.1:9")
