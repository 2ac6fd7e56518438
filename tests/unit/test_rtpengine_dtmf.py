"""send_dtmf on the rtpengine backend (issue 12): each digit is an ng `play DTMF` naming the other
leg's party as the one generating it (rtpengine's convention), once that leg's offer/answer settled
telephone-event; otherwise the call layer sends SIP INFO, and the backend refuses."""

from __future__ import annotations

import asyncio

import pytest

from runtime.cli import _media_backend
from runtime.media.base import MediaError
from runtime.media.rtpengine import parse_spec
from tests.unit.test_rtpengine import close, peer_and_backend, sdp, spec

SDP_PLAIN = b"v=0\r\no=- 42 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\n"


@spec
async def test_each_digit_is_a_play_dtmf_with_the_other_legs_party_as_the_source() -> None:
    peer, backend = await peer_and_backend(inject_dtmf=True)
    session = await backend.allocate("c1")
    await session.anchor(0, sdp(30000))
    await session.anchor(1, sdp(31000))
    assert session.dtmf_mode(1) == "rfc4733"
    session.send_dtmf(1, "4#", 0.12)
    for _ in range(200):  # bounded wait for the two requests to arrive
        if peer.commands().count("play DTMF") == 2:
            break
        await asyncio.sleep(0.01)
    plays = [r for _, r in peer.requests if r["command"] == "play DTMF"]
    assert [(r["from-tag"], r["code"], r["duration"]) for r in plays] == [("zero", "4", 120), ("zero", "#", 120)]
    assert all(r["call-id"].endswith("-c1") for r in plays)
    close(peer)
    await backend.close()


@spec
async def test_a_leg_that_settled_no_telephone_event_is_not_sent_rtp_events() -> None:
    peer, backend = await peer_and_backend(lambda r: {"result": "ok", "sdp": SDP_PLAIN})
    session = await backend.allocate("c1")
    await session.anchor(0, SDP_PLAIN)
    await session.anchor(1, SDP_PLAIN)
    assert session.dtmf_mode(0) == "info"
    with pytest.raises(MediaError, match="telephone-event was not negotiated on leg 0"):
        session.send_dtmf(0, "1")
    assert "play DTMF" not in peer.commands()
    close(peer)
    await backend.close()


# ---- DTMF injection is the operator's choice (--media rtpengine:HOST:PORT,inject-dtmf) ----------------------
@spec
async def test_by_default_offers_do_not_ask_for_dtmf_injection_and_digits_are_refused_for_sip_info() -> None:
    peer, backend = await peer_and_backend()
    session = await backend.allocate("c1")
    await session.anchor(0, sdp(30000))
    await session.anchor(1, sdp(31000))
    offers = [r for _, r in peer.requests if r["command"] in ("offer", "answer")]
    assert offers and all(b"inject DTMF" not in r.get("flags", []) for r in offers)  # in-kernel forwarding kept
    with pytest.raises(MediaError, match="inject-dtmf"):  # the call layer then sends SIP INFO
        session.send_dtmf(1, "4")
    assert "play DTMF" not in peer.commands()
    close(peer)
    await backend.close()


@spec
async def test_with_inject_dtmf_every_offer_and_answer_asks_for_it() -> None:
    peer, backend = await peer_and_backend(inject_dtmf=True)
    session = await backend.allocate("c1")
    await session.anchor(0, sdp(30000))
    await session.anchor(1, sdp(31000))
    offers = [r for _, r in peer.requests if r["command"] in ("offer", "answer")]
    assert offers and all(b"inject DTMF" in r["flags"] for r in offers)
    close(peer)
    await backend.close()


def test_the_media_option_is_parsed_and_an_unknown_one_is_named() -> None:
    assert parse_spec("127.0.0.1:2223") == ("127.0.0.1", 2223, frozenset())
    assert parse_spec("[::1]:2223,inject-dtmf") == ("::1", 2223, frozenset({"inject-dtmf"}))
    with pytest.raises(ValueError, match="rtpengine option 'kernel'"):
        parse_spec("127.0.0.1:2223,kernel")
    with pytest.raises(ValueError, match="rtpengine option"):
        asyncio.run(_media_backend("rtpengine:127.0.0.1:2223,nope"))
