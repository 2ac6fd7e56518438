"""The rtpengine media backend against a scripted ng peer on loopback: what it asks rtpengine for
each SDP of a call, and what a call sees when rtpengine refuses, says nothing, or talks garbage.

The peer is a UDP socket that decodes each request (``COOKIE bencode``) and answers with whatever the
test's script returns for it: a dictionary (bencoded behind the same cookie), raw bytes, or nothing.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

import bencodepy
import pytest

from runtime.cli import _media_backend
from runtime.media.base import MediaError
from runtime.media.rtpengine import RtpengineBackend, leg_packets, parse_address
from runtime.sip.sdp import SdpError

FAST = (0.05, 0.05, 0.05)  # retransmission waits for the tests (a real deployment: 0.5, 1, 2 s)


def sdp(port: int, version: int = 1, host: str = "192.0.2.10") -> bytes:
    return (f"v=0\r\no=- 42 {version} IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n").encode()


def relayed(port: int) -> bytes:
    return sdp(port, host="203.0.113.5")


def spec(test: Callable[[], Awaitable[None]]) -> Callable[[], None]:
    """Runs an async specification on a fresh event loop (bounded: 20 s)."""
    @functools.wraps(test)
    def run() -> None:
        asyncio.run(asyncio.wait_for(test(), 20))
    return run


Script = Callable[[dict[str, Any]], "dict[str, Any] | bytes | None"]


class NgPeer(asyncio.DatagramProtocol):
    """A scripted rtpengine: records (cookie, request) and answers as ``script`` says."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[tuple[bytes, dict[str, Any]]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        cookie, _, body = data.partition(b" ")
        raw = bencodepy.decode(body)
        request = {k.decode(): (v.decode() if isinstance(v, bytes) and k not in (b"sdp", b"blob") else v)
                   for k, v in raw.items()}
        self.requests.append((cookie, request))
        reply = self.script(request)
        if reply is None or self.transport is None:
            return
        if isinstance(reply, dict):
            reply = cookie + b" " + bencodepy.encode(reply)
        self.transport.sendto(reply, addr)

    def commands(self) -> list[str]:
        return [r["command"] for _, r in self.requests]

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[:2]


def rtpengine_like(request: dict[str, Any]) -> dict[str, Any]:
    """Answers every offer/answer with the SDP moved to 203.0.113.5, as rtpengine rewrites it."""
    if request["command"] in ("offer", "answer"):
        return {"result": "ok", "sdp": relayed(40000 if request["command"] == "offer" else 40002)}
    return {"result": "ok"}


async def peer_and_backend(script: Script = rtpengine_like, *,
                           inject_dtmf: bool = False) -> tuple[NgPeer, RtpengineBackend]:
    loop = asyncio.get_running_loop()
    _, peer = await loop.create_datagram_endpoint(lambda: NgPeer(script), local_addr=("127.0.0.1", 0))
    backend = RtpengineBackend(peer.address, retransmit=FAST, inject_dtmf=inject_dtmf)
    await backend.client.open()
    return peer, backend


def close(peer: NgPeer) -> None:
    if peer.transport is not None:
        peer.transport.close()


# ---- the offer/answer mapping ---------------------------------------------------------------------------
@spec
async def test_the_callers_sdp_is_an_offer_from_tag_zero_with_ice_removed_and_rtpengines_sdp_comes_back() -> None:
    peer, backend = await peer_and_backend()
    session = await backend.allocate("c1")
    out = await session.anchor(0, sdp(30000))
    assert out == relayed(40000)
    cookie, offer = peer.requests[0]
    assert offer["command"] == "offer" and offer["from-tag"] == "zero" and "to-tag" not in offer
    assert offer["call-id"].endswith("-c1") and offer["sdp"] == sdp(30000)
    assert offer["ICE"] == "remove"
    assert cookie
    close(peer)
    await backend.close()


@spec
async def test_the_callees_sdp_after_the_offer_is_the_answer_with_both_tags() -> None:
    peer, backend = await peer_and_backend()
    session = await backend.allocate("c1")
    await session.anchor(0, sdp(30000))
    out = await session.anchor(1, sdp(31000))
    assert out == relayed(40002)
    answer = peer.requests[1][1]
    assert (answer["command"], answer["from-tag"], answer["to-tag"]) == ("answer", "zero", "one")
    assert answer["call-id"] == peer.requests[0][1]["call-id"]
    close(peer)
    await backend.close()


@spec
async def test_a_reinvite_from_the_callee_is_an_offer_from_tag_one_and_the_callers_reply_its_answer() -> None:
    peer, backend = await peer_and_backend()
    session = await backend.allocate("c1")
    await session.anchor(0, sdp(30000))
    await session.anchor(1, sdp(31000))
    await session.anchor(1, sdp(31000, version=2))  # hold, say: a new o= version, a new offer
    await session.anchor(0, sdp(30000, version=2))
    tags = [(r["command"], r["from-tag"], r.get("to-tag")) for _, r in peer.requests]
    assert tags[2:] == [("offer", "one", "zero"), ("answer", "one", "zero")]
    close(peer)
    await backend.close()


@spec
async def test_the_same_answer_again_183_then_200_is_an_answer_again_not_a_new_offer() -> None:
    peer, backend = await peer_and_backend()
    session = await backend.allocate("c1")
    await session.anchor(0, sdp(30000))
    await session.anchor(1, sdp(31000))  # 183 with SDP
    await session.anchor(1, sdp(31000))  # 200 with the same SDP
    assert peer.commands() == ["offer", "answer", "answer"]
    close(peer)
    await backend.close()


@spec
async def test_a_late_offer_in_the_callees_200_is_answered_by_the_callers_ack() -> None:
    peer, backend = await peer_and_backend()
    session = await backend.allocate("c1")
    await session.anchor(1, sdp(31000))
    await session.anchor(0, sdp(30000))
    tags = [(r["command"], r["from-tag"], r.get("to-tag")) for _, r in peer.requests]
    assert tags == [("offer", "one", None), ("answer", "one", "zero")]
    close(peer)
    await backend.close()


@spec
async def test_a_malformed_sdp_is_an_sdp_error_and_rtpengine_is_not_asked() -> None:
    peer, backend = await peer_and_backend()
    session = await backend.allocate("c1")
    with pytest.raises(SdpError):
        await session.anchor(0, b"v=0\r\nm=audio nonsense\r\n")
    assert peer.requests == []
    close(peer)
    await backend.close()


# ---- failures --------------------------------------------------------------------------------------------
@spec
async def test_an_error_reply_is_a_media_error_with_what_rtpengine_said() -> None:
    peer, backend = await peer_and_backend(lambda r: {"result": "error", "error-reason": "Ran out of ports"})
    session = await backend.allocate("c1")
    with pytest.raises(MediaError, match="rtpengine refused offer: Ran out of ports"):
        await session.anchor(0, sdp(30000))
    close(peer)
    await backend.close()


@spec
async def test_a_request_never_answered_is_retransmitted_with_its_cookie_then_fails() -> None:
    peer, backend = await peer_and_backend(lambda r: None)
    session = await backend.allocate("c1")
    with pytest.raises(MediaError, match=r"did not answer offer in .* \(3 tries\)"):
        await session.anchor(0, sdp(30000))
    cookies = [cookie for cookie, _ in peer.requests]
    assert len(cookies) == 3 and len(set(cookies)) == 1
    close(peer)
    await backend.close()


@spec
async def test_a_lost_reply_is_recovered_by_the_retransmission() -> None:
    seen: list[str] = []

    def lose_first(request: dict[str, Any]) -> dict[str, Any] | None:
        seen.append(request["command"])
        return None if len(seen) == 1 else rtpengine_like(request)

    peer, backend = await peer_and_backend(lose_first)
    session = await backend.allocate("c1")
    assert await session.anchor(0, sdp(30000)) == relayed(40000)
    assert len(peer.requests) == 2 and peer.requests[0][0] == peer.requests[1][0]
    close(peer)
    await backend.close()


@spec
async def test_garbage_and_replies_to_unknown_cookies_are_dropped_and_the_real_reply_still_counts() -> None:
    peer, backend = await peer_and_backend()

    def noisy(request: dict[str, Any]) -> dict[str, Any]:
        assert peer.transport is not None
        client = backend.client.transport.get_extra_info("sockname")  # type: ignore[union-attr]
        peer.transport.sendto(b"\x00\xffgarbage", client)
        peer.transport.sendto(b"nocookie_1 d6:result2:oke", client)
        return rtpengine_like(request)

    peer.script = noisy
    session = await backend.allocate("c1")
    assert await session.anchor(0, sdp(30000)) == relayed(40000)
    await asyncio.sleep(0)
    assert backend.client.stray == 2
    close(peer)
    await backend.close()


@spec
async def test_a_reply_with_our_cookie_that_is_not_bencode_fails_the_request_saying_so() -> None:
    peer, backend = await peer_and_backend()

    def broken(request: dict[str, Any]) -> bytes:
        return peer.requests[-1][0] + b" d6:result"

    peer.script = broken
    session = await backend.allocate("c1")
    with pytest.raises(MediaError, match="not bencode"):
        await session.anchor(0, sdp(30000))
    close(peer)
    await backend.close()


@spec
async def test_an_ok_reply_without_sdp_is_a_media_error() -> None:
    peer, backend = await peer_and_backend(lambda r: {"result": "ok"})
    session = await backend.allocate("c1")
    with pytest.raises(MediaError, match="no SDP"):
        await session.anchor(0, sdp(30000))
    close(peer)
    await backend.close()


@spec
async def test_a_closed_session_refuses_to_anchor() -> None:
    peer, backend = await peer_and_backend()
    session = await backend.allocate("c1")
    session.close()
    with pytest.raises(MediaError, match="closed"):
        await session.anchor(0, sdp(30000))
    close(peer)
    await backend.close()


@spec
async def test_start_reports_an_rtpengine_that_does_not_answer_without_failing() -> None:
    peer, backend = await peer_and_backend(lambda r: None)
    assert await backend.start() is False
    close(peer)
    await backend.close()


@spec
async def test_start_pings_rtpengine() -> None:
    peer, backend = await peer_and_backend(lambda r: {"result": "pong"})
    assert await backend.start() is True
    assert peer.commands() == ["ping"]
    close(peer)
    await backend.close()


# ---- counters and the end of a call ----------------------------------------------------------------------
def stats_reply(zero: int, one: int) -> dict[str, Any]:
    def party(n: int) -> dict[str, Any]:
        return {"medias": [{"streams": [{"flags": ["RTP"], "stats": {"packets": n}},
                                        {"flags": ["RTCP"], "stats": {"packets": 7}}]}]}
    return {"result": "ok", "tags": {"zero": party(zero), "one": party(one)}}


def test_the_counters_are_the_rtp_streams_packets_of_each_tag_rtcp_left_out() -> None:
    reply = bencodepy.decode(bencodepy.encode(stats_reply(120, 95)))
    assert (leg_packets(reply, "zero"), leg_packets(reply, "one")) == (120, 95)
    assert leg_packets({b"result": b"ok"}, "zero") is None


@spec
async def test_reading_packets_queries_rtpengine_and_the_reply_becomes_the_counters() -> None:
    def script(request: dict[str, Any]) -> dict[str, Any]:
        return stats_reply(120, 95) if request["command"] == "query" else rtpengine_like(request)

    peer, backend = await peer_and_backend(script)
    session = await backend.allocate("c1")
    await session.anchor(0, sdp(30000))
    assert session.packets == (0, 0)  # the first read asks; the reply comes later
    for _ in range(100):
        if session.packets != (0, 0):
            break
        await asyncio.sleep(0.01)
    assert session.packets == (120, 95)
    assert "query" in peer.commands()
    close(peer)
    await backend.close()


@spec
async def test_close_deletes_the_call_once_and_its_final_counters_stay() -> None:
    def script(request: dict[str, Any]) -> dict[str, Any]:
        return stats_reply(300, 280) if request["command"] == "delete" else rtpengine_like(request)

    peer, backend = await peer_and_backend(script)
    session = await backend.allocate("c1")
    await session.anchor(0, sdp(30000))
    session.close()
    session.close()
    for _ in range(100):
        if session.packets != (0, 0):
            break
        await asyncio.sleep(0.01)
    assert peer.commands() == ["offer", "delete"]
    assert session.packets == (300, 280)
    close(peer)
    await backend.close()


@spec
async def test_a_call_rtpengine_never_heard_of_is_not_deleted() -> None:
    peer, backend = await peer_and_backend()
    session = await backend.allocate("c1")
    session.close()
    await backend.close()
    assert peer.requests == []
    close(peer)


@spec
async def test_closing_the_backend_deletes_the_calls_still_up() -> None:
    peer, backend = await peer_and_backend()
    for call in ("c1", "c2"):
        await (await backend.allocate(call)).anchor(0, sdp(30000))
    await backend.close()
    assert sorted(peer.commands()) == ["delete", "delete", "offer", "offer"]
    close(peer)


# ---- the command line ------------------------------------------------------------------------------------
def test_the_rtpengine_address_is_host_colon_port() -> None:
    assert parse_address("127.0.0.1:2223") == ("127.0.0.1", 2223)
    assert parse_address("[::1]:2223") == ("::1", 2223)
    with pytest.raises(ValueError, match="rtpengine:HOST:PORT"):
        parse_address("127.0.0.1")


@spec
async def test_media_relay_is_the_default_and_an_unknown_backend_is_refused() -> None:
    assert await _media_backend("relay") is None
    with pytest.raises(ValueError, match="relay or rtpengine:HOST:PORT"):
        await _media_backend("freeswitch:1.2.3.4:5")
