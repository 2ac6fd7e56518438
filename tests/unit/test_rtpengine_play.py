"""`play` with media in rtpengine: the caller's offer answered for a stand-in callee, then rtpengine's
`play media` with the prompt as a G.711 WAV blob; against the scripted ng peer of test_rtpengine.py."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest

from runtime.media.base import MediaError
from runtime.media.rtpengine import MAX_BLOB, wav_blob
from runtime.sip.sdp import parse_sdp
from tests.unit.test_rtpengine import close, peer_and_backend, relayed, sdp, spec

PROMPT = [bytes([0xFF]) * 160] * 50  # one second of mu-law silence, 20 ms a payload


def plays(duration_ms: int = 40) -> Any:
    def script(request: dict[str, Any]) -> dict[str, Any]:
        if request["command"] in ("offer", "answer"):
            return {"result": "ok", "sdp": relayed(40000 if request["command"] == "offer" else 40002)}
        if request["command"] == "play media":
            return {"result": "ok", "duration": duration_ms}
        return {"result": "ok"}
    return script


@spec
async def test_answering_for_a_prompt_offers_the_callers_sdp_and_answers_for_a_stand_in_on_the_discard_port() -> None:
    peer, backend = await peer_and_backend(plays())
    session = await backend.allocate("c1")
    body, payload_type, codec = await session.answer(0, sdp(30000))
    assert body == relayed(40002) and (payload_type, codec) == (0, "PCMU")
    offer, answer = peer.requests[0][1], peer.requests[1][1]
    assert (offer["command"], offer["from-tag"]) == ("offer", "zero") and offer["sdp"] == sdp(30000)
    assert (answer["command"], answer["from-tag"], answer["to-tag"]) == ("answer", "zero", "one")
    standin = parse_sdp(answer["sdp"])
    assert standin.endpoint(0) == ("203.0.113.5", 9)  # rtpengine's own address, a port nobody serves
    close(peer)
    await backend.close()


@spec
async def test_answering_the_same_offer_again_gives_the_same_sdp_without_asking_rtpengine() -> None:
    peer, backend = await peer_and_backend(plays())
    session = await backend.allocate("c1")
    first = await session.answer(0, sdp(30000))
    assert await session.answer(0, sdp(30000)) == first and len(peer.requests) == 2
    close(peer)
    await backend.close()


@spec
async def test_playing_sends_play_media_to_the_caller_with_the_prompt_as_a_wav_blob_and_waits_its_duration() -> None:
    peer, backend = await peer_and_backend(plays(duration_ms=30))
    session = await backend.allocate("c1")
    await session.answer(0, sdp(30000))
    assert await session.play(0, PROMPT, 0) == len(PROMPT)
    request = peer.requests[-1][1]
    assert (request["command"], request["from-tag"]) == ("play media", "zero")
    blob = request["blob"]
    assert blob[:4] == b"RIFF" and blob[8:12] == b"WAVE"
    assert struct.unpack("<HHI", blob[20:28]) == (7, 1, 8000)  # mu-law, mono, 8 kHz
    assert blob.endswith(b"".join(PROMPT))
    close(peer)
    await backend.close()


@spec
async def test_a_playback_cancelled_midway_asks_rtpengine_to_stop_it() -> None:
    peer, backend = await peer_and_backend(plays(duration_ms=10_000))
    session = await backend.allocate("c1")
    await session.answer(0, sdp(30000))
    task = asyncio.ensure_future(session.play(0, PROMPT, 0))
    for _ in range(100):  # bounded: until the play media request went out
        if "play media" in peer.commands():
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):  # bounded
        if "stop media" in peer.commands():
            break
        await asyncio.sleep(0.01)
    assert peer.commands()[-1] == "stop media" and peer.requests[-1][1]["from-tag"] == "zero"
    close(peer)
    await backend.close()


@spec
async def test_an_rtpengine_that_cannot_play_fails_the_play_with_its_reason() -> None:
    def script(request: dict[str, Any]) -> dict[str, Any]:
        if request["command"] == "play media":
            return {"result": "error", "error-reason": "Media playback not supported"}
        return plays()(request)

    peer, backend = await peer_and_backend(script)
    session = await backend.allocate("c1")
    await session.answer(0, sdp(30000))
    with pytest.raises(MediaError, match="rtpengine refused play media: Media playback not supported"):
        await session.play(0, PROMPT, 0)
    close(peer)
    await backend.close()


@spec
async def test_a_caller_offering_no_g711_cannot_be_played_to_and_rtpengine_is_not_asked() -> None:
    peer, backend = await peer_and_backend(plays())
    session = await backend.allocate("c1")
    g729 = sdp(30000).replace(b"RTP/AVP 0 101", b"RTP/AVP 18 101")
    with pytest.raises(MediaError, match="PCMU or PCMA"):
        await session.answer(0, g729)
    assert peer.requests == []
    close(peer)
    await backend.close()


def test_a_prompt_longer_than_one_ng_datagram_holds_is_refused_saying_how_long_it_may_be() -> None:
    with pytest.raises(MediaError, match=r"at most 7\.\d s"):
        wav_blob([bytes(160)] * (MAX_BLOB // 160 + 1), 8)
    with pytest.raises(MediaError, match="PCMU or PCMA"):
        wav_blob([bytes(20)], 18)
