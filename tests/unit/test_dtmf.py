"""DTMF detected by the engine (RFC 4733 telephone-events): the sans-IO detector, then the relay on
loopback sockets (two UDP sockets as the phones) reporting each digit once while still passing every
packet on, then the engine's `dtmf` event."""

from __future__ import annotations

import asyncio
import struct

import pytest

from runtime.calls import Channel
from runtime.media.dtmf import EventDetector, telephone_event_types
from runtime.media.relay import MediaRelay
from runtime.sip.sdp import parse_sdp
from tests.rig.ports import ports
from tests.unit.test_media_relay import HOST, phone, settle


def event_packet(event: int, duration: int, end: bool, *, pt: int = 101, seq: int = 1, stamp: int = 8000,
                 ssrc: int = 0x5151, csrcs: int = 0, extension: bytes = b"") -> bytes:
    """One RFC 4733 packet: the event, the E bit, volume 10, the duration so far (timestamp units)."""
    first = 0x80 | (0x10 if extension else 0) | csrcs
    header = struct.pack("!BBHII", first, pt, seq, stamp, ssrc) + b"\0\0\0\1" * csrcs
    if extension:
        header += struct.pack("!HH", 0xBEDE, len(extension) // 4) + extension
    return header + struct.pack("!BBH", event, (0x80 if end else 0) | 10, duration)


def key_press(event: int, *, pt: int = 101, stamp: int = 8000, ssrc: int = 0x5151) -> list[bytes]:
    """A key held 100 ms, as phones send it: updates every 20 ms, then the end packet three times."""
    packets = [event_packet(event, 160 * i, False, pt=pt, seq=i, stamp=stamp, ssrc=ssrc) for i in range(1, 5)]
    return packets + [event_packet(event, 800, True, pt=pt, seq=5 + i, stamp=stamp, ssrc=ssrc) for i in range(3)]


SDP_WITH_EVENTS = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                   b"m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
                   b"a=fmtp:101 0-15\r\n")
SDP_WITHOUT = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
               b"m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


# ---- the detector -------------------------------------------------------------------------------------

def test_a_key_press_is_reported_once_at_its_end_with_its_duration_in_ms() -> None:
    detector = EventDetector({101: 8000})
    found = [detector.feed(p) for p in key_press(5)]
    assert [f for f in found if f is not None] == [("5", 100)]


@pytest.mark.parametrize("event,digit", [(0, "0"), (9, "9"), (10, "*"), (11, "#"), (12, "A"), (15, "D")])
def test_events_0_to_15_are_the_digits_of_rfc_4733(event: int, digit: str) -> None:
    assert EventDetector({101: 8000}).feed(event_packet(event, 400, True)) == (digit, 50)


def test_the_same_key_pressed_twice_is_two_digits() -> None:
    detector = EventDetector({101: 8000})
    found = [detector.feed(p) for p in key_press(1, stamp=8000) + key_press(1, stamp=16000)]
    assert [f for f in found if f is not None] == [("1", 100), ("1", 100)]


def test_tones_other_than_digits_are_not_reported() -> None:
    assert EventDetector({101: 8000}).feed(event_packet(32, 800, True)) is None  # a fax tone (event 32)


def test_the_headers_csrcs_and_extension_are_skipped() -> None:
    detector = EventDetector({101: 8000})
    assert detector.feed(event_packet(7, 800, True, csrcs=2, extension=b"\x10\xff\0\0")) == ("7", 100)


def test_a_packet_too_short_or_of_another_payload_type_is_ignored() -> None:
    detector = EventDetector({101: 8000})
    assert detector.feed(event_packet(5, 800, True)[:14]) is None
    assert detector.feed(event_packet(5, 800, True, pt=96)) is None


def test_the_sdps_telephone_event_types_and_clock_rates_are_found() -> None:
    assert telephone_event_types(parse_sdp(SDP_WITH_EVENTS)) == {101: 8000}
    assert telephone_event_types(parse_sdp(SDP_WITHOUT)) == {}
    wideband = SDP_WITH_EVENTS.replace(b"101 telephone-event/8000", b"101 telephone-event/16000")
    assert telephone_event_types(parse_sdp(wideband)) == {101: 16000}


# ---- on the relay -----------------------------------------------------------------------------------------

async def relayed_key_press(sdp: bytes, sender_leg: int) -> tuple[list[tuple[int, str, int]], int]:
    """A session whose legs' SDPs are `sdp`; the phone on `sender_leg` presses 5: what on_dtmf got,
    and how many of the key press's packets the other phone received."""
    low, high = ports.rtp_range(10)
    relay = MediaRelay(HOST, (low, high))
    session = await relay.allocate("call-1")
    got: list[tuple[int, str, int]] = []
    session.on_dtmf(lambda leg, digit, duration: got.append((leg, digit, duration)))
    phones = [await phone(), await phone()]
    for leg, p in enumerate(phones):
        await session.anchor(leg, sdp.replace(b"127.0.0.1", p.addr[0].encode())
                             .replace(b"4000", str(p.addr[1]).encode()))
    sender, receiver = phones[sender_leg], phones[1 - sender_leg]
    packets = key_press(5)
    for data in packets:
        sender.send(data, session.legs[sender_leg].local_port)
    await settle(lambda: receiver.inbox.qsize() >= len(packets))
    arrived = receiver.inbox.qsize()
    session.close()
    for p in phones:
        p.close()
    await relay.close()
    return got, arrived


@pytest.mark.parametrize("leg", [0, 1])
def test_the_relay_reports_a_digit_once_per_key_press_and_passes_every_packet_on(leg: int) -> None:
    got, arrived = asyncio.run(relayed_key_press(SDP_WITH_EVENTS, leg))
    assert got == [(leg, "5", 100)]
    assert arrived == len(key_press(5))


def test_digits_on_a_call_that_negotiated_no_telephone_event_are_relayed_but_not_reported() -> None:
    got, arrived = asyncio.run(relayed_key_press(SDP_WITHOUT, 0))
    assert got == []
    assert arrived == len(key_press(5))


# ---- the engine's event -------------------------------------------------------------------------------------

def test_a_digit_on_a_live_call_goes_to_that_call_with_its_channel() -> None:
    from runtime.engine import Engine
    from runtime.transport import ListenSpec

    class LiveCall:  # the engine's table holds call sessions; this one records what it is handed
        def __init__(self) -> None:
            self.digits: list[tuple[Channel, str, int]] = []

        def digit(self, channel: Channel, digit: str, duration: int) -> None:
            self.digits.append((channel, digit, duration))

    async def scenario() -> LiveCall:
        engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], advertise="127.0.0.1",
                        rtp_ports=ports.rtp_range(10))
        call = LiveCall()
        engine.calls["c1"] = call  # type: ignore[assignment]
        assert engine.media.dtmf_listener is not None
        engine.media.dtmf_listener("c1", 1, "#", 120)
        engine.media.dtmf_listener("gone", 0, "1", 100)  # a call that has closed meanwhile
        return call

    # the call machine reports it as the `dtmf` event and delivers it (test_dtmf_both_ways.py)
    assert asyncio.run(scenario()).digits == [(Channel.ONE, "#", 120)]
