"""DTMF both ways (issue 12): the RFC 4733 sender on a fake clock, SIP INFO bodies parsed with strict
bounds, each leg's DTMF mode from its offer/answer, the call machine converting between the two forms
(fake-clock call specs), and the relay sending digits a phone receives (loopback sockets)."""

from __future__ import annotations

import asyncio
import struct

import pytest
from calls_kit import FAR_ADDR, ONE, ZERO, ZERO_ADDR, Call

from runtime.calls import io
from runtime.media.dtmf import EventDetector, Negotiation
from runtime.media.dtmf_info import DEFAULT_DURATION, DtmfInfoError, info_body, parse_info_body
from runtime.media.dtmf_sender import END_PACKETS, GAP, DtmfSender
from runtime.media.relay import MediaRelay
from tests.rig.ports import ports
from tests.unit.test_dtmf import SDP_WITH_EVENTS, SDP_WITHOUT
from tests.unit.test_media_relay import HOST, phone


def fields(packet: bytes) -> dict[str, int]:
    """The RTP header and telephone-event payload of one packet, by name."""
    first, second, seq, stamp, ssrc = struct.unpack("!BBHII", packet[:12])
    event, flags, duration = struct.unpack("!BBH", packet[12:16])
    return {"version": first >> 6, "marker": second >> 7, "pt": second & 0x7F, "seq": seq, "stamp": stamp,
            "ssrc": ssrc, "event": event, "end": flags >> 7, "volume": flags & 0x3F, "duration": duration}


def run_clock(sender: DtmfSender, start: float = 0.0) -> list[tuple[float, bytes]]:
    """Every packet with the time it was handed out, pumping exactly at each `next_at`."""
    out: list[tuple[float, bytes]] = []
    now = start
    for _ in range(10_000):
        out += [(now, p) for p in sender.due(now)]
        at = sender.next_at
        if at is None:
            return out
        now = at
    raise AssertionError("the sender never finished")


# ---- the RFC 4733 sender, sans-IO --------------------------------------------------------------------
def test_a_100_ms_key_is_five_updates_every_20_ms_then_its_end_three_more_times() -> None:
    sent = run_clock(DtmfSender("5", 101, 0.0, duration=0.1, ssrc=7, seq=100, timestamp=8000))
    got = [(round(at, 3), fields(p)) for at, p in sent]
    assert [at for at, _ in got] == [0.0, 0.02, 0.04, 0.06, 0.08, 0.1, 0.12, 0.14]
    assert [f["duration"] for _, f in got] == [160, 320, 480, 640, 800, 800, 800, 800]
    assert [f["end"] for _, f in got] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert len([f for _, f in got if f["end"]]) == 1 + END_PACKETS


def test_every_packet_of_an_event_has_its_start_timestamp_and_only_the_first_the_marker() -> None:
    got = [fields(p) for _, p in run_clock(DtmfSender("#", 101, 0.0, ssrc=7, seq=100, timestamp=8000))]
    assert {f["stamp"] for f in got} == {8000}
    assert [f["marker"] for f in got] == [1] + [0] * (len(got) - 1)
    assert {(f["event"], f["pt"], f["ssrc"], f["version"]) for f in got} == {(11, 101, 7, 2)}


def test_sequence_numbers_go_up_by_one_across_retransmitted_ends_and_wrap() -> None:
    got = [fields(p)["seq"] for _, p in run_clock(DtmfSender("12", 96, 0.0, seq=0xFFFE))]
    assert got == [(0xFFFE + i) & 0xFFFF for i in range(len(got))]


def test_the_next_digit_starts_after_the_gap_on_a_timestamp_that_followed_the_clock() -> None:
    sent = run_clock(DtmfSender("12", 101, 0.0, duration=0.1, timestamp=1000))
    starts = [(at, fields(p)) for at, p in sent if fields(p)["marker"]]
    assert [f["event"] for _, f in starts] == [1, 2]
    (t1, f1), (t2, f2) = starts
    last_of_first = max(at for at, p in sent if fields(p)["event"] == 1)
    assert t2 - last_of_first == pytest.approx(GAP)
    assert f2["stamp"] - f1["stamp"] == round((t2 - t1) * 8000)


def test_a_pump_that_wakes_late_gets_every_overdue_packet_at_once_with_the_scheduled_durations() -> None:
    sender = DtmfSender("7", 101, 10.0, duration=0.1)
    late = sender.due(10.5)
    assert [fields(p)["duration"] for p in late] == [160, 320, 480, 640, 800, 800, 800, 800]
    assert sender.done and sender.next_at is None


def test_the_sender_round_trips_through_the_detector_with_the_duration_in_ms() -> None:
    detector = EventDetector({101: 8000})
    found = [detector.feed(p) for _, p in run_clock(DtmfSender("1*9D", 101, 0.0, duration=0.12))]
    assert [f for f in found if f] == [("1", 120), ("*", 120), ("9", 120), ("D", 120)]


def test_a_16_khz_telephone_event_counts_its_duration_in_16_khz_samples() -> None:
    got = [fields(p) for _, p in run_clock(DtmfSender("0", 101, 0.0, duration=0.1, rate=16000))]
    assert got[-1]["duration"] == 1600 and got[0]["duration"] == 320


def test_digits_queued_while_sending_follow_the_earlier_ones() -> None:
    sender = DtmfSender("1", 101, 0.0)
    sender.due(0.0)
    sender.extend("2")
    events = [fields(p)["event"] for _, p in run_clock(sender, 0.02) if fields(p)["marker"]]
    assert events == [2]  # "1" began at 0.0 (handed out above), "2" follows it
    assert sender.done


@pytest.mark.parametrize("digits,message", [("", "no digits"), ("12x", "'X' is not a DTMF digit"),
                                            ("1" * 65, "at most 64")])
def test_bad_digits_are_refused_naming_the_problem(digits: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DtmfSender(digits, 101, 0.0)


@pytest.mark.parametrize("duration", [0.01, 9.0])
def test_a_key_held_too_short_or_too_long_for_the_16_bit_field_is_refused(duration: float) -> None:
    with pytest.raises(ValueError, match="duration"):
        DtmfSender("1", 101, 0.0, duration=duration)


def test_lowercase_a_to_d_are_the_digits_a_to_d() -> None:
    got = [fields(p)["event"] for _, p in run_clock(DtmfSender("abcd", 101, 0.0)) if fields(p)["marker"]]
    assert got == [12, 13, 14, 15]


# ---- SIP INFO bodies ------------------------------------------------------------------------------------
@pytest.mark.parametrize("content_type,body,expected", [
    ("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n", ("5", 160)),
    ("application/dtmf-relay", b"Signal= #\r\nDuration= 250", ("#", 250)),
    ("Application/DTMF-Relay; charset=ascii", b"signal=*\n", ("*", DEFAULT_DURATION)),
    ("application/dtmf-relay", b"Signal=11\r\nDuration=100\r\n", ("#", 100)),
    ("application/dtmf-relay", b"Signal=a\r\n", ("A", DEFAULT_DURATION)),
    ("application/dtmf", b"7", ("7", DEFAULT_DURATION)),
    ("application/dtmf", b"10\r\n", ("*", DEFAULT_DURATION)),
])
def test_the_dtmf_info_bodies_phones_send_are_read(content_type: str, body: bytes,
                                                   expected: tuple[str, int]) -> None:
    assert parse_info_body(content_type, body) == expected


@pytest.mark.parametrize("content_type,body,reason", [
    ("application/dtmf-relay", b"Duration=160\r\n", "no Signal"),
    ("application/dtmf-relay", b"Signal=5\r\nSignal=6\r\n", "twice"),
    ("application/dtmf-relay", b"Signal=X\r\n", "not a DTMF key"),
    ("application/dtmf-relay", b"Signal=16\r\n", "event 16"),
    ("application/dtmf-relay", b"Signal=5\r\nDuration=-1\r\n", "Duration"),
    ("application/dtmf-relay", b"Signal=5\r\nDuration=99999999999\r\n", "Duration"),
    ("application/dtmf-relay", b"Signal=5\r\nDuration=0\r\n", "Duration"),
    ("application/dtmf-relay", b"Signal=5\r\n" + b"x" * 300, "at most 256"),
    ("application/dtmf-relay", b"Signal=5\r\n" + b"a=b\r\n" * 9, "lines"),
    ("application/dtmf-relay", "Signal=\u0665\r\n".encode(), "not ASCII"),
    ("application/dtmf-relay", b"Signal\r\n", "name=value"),
    ("application/dtmf", b"5\r\n6\r\n", "one key"),
    ("application/dtmf", b"", "one key"),
    ("text/plain", b"Signal=5", "not a DTMF body"),
])
def test_a_malformed_dtmf_body_is_refused_with_a_reason(content_type: str, body: bytes, reason: str) -> None:
    with pytest.raises(DtmfInfoError, match=reason):
        parse_info_body(content_type, body)


def test_the_info_we_send_is_dtmf_relay_and_reads_back_the_same() -> None:
    content_type, body = info_body("9", 160)
    assert content_type == "application/dtmf-relay" and body == b"Signal=9\r\nDuration=160\r\n"
    assert parse_info_body(content_type, body) == ("9", 160)


# ---- each leg's DTMF mode ---------------------------------------------------------------------------------
def test_a_leg_speaks_rfc_4733_only_when_both_sdps_of_its_offer_answer_name_telephone_event() -> None:
    n = Negotiation()
    assert n.mode(0) == "unknown"
    n.sent_by(0, {101: 8000})
    assert n.mode(0) == "unknown"  # our answer is still to come
    n.sent_to(0, {})
    assert n.mode(0) == "info" and n.send_type(0) is None
    n.sent_to(0, {96: 8000})
    assert n.mode(0) == "rfc4733"


def test_digits_are_sent_in_the_payload_type_the_receiving_phone_gave_8000_hz_first() -> None:
    n = Negotiation()
    n.sent_by(1, {97: 16000, 110: 8000, 101: 8000})
    n.sent_to(1, {96: 8000})
    assert n.send_type(1) == (101, 8000)


# ---- the call machine: both forms, both ways (fake clock) ---------------------------------------------
def dtmf_info(call: Call, channel: io.Channel, body: bytes, content_type: str = "application/dtmf-relay"):  # type: ignore[no-untyped-def]
    return call.request_from(channel, "INFO", body=body, headers=[("Content-Type", content_type)])


def connected(zero: str = "rfc4733", one: str = "rfc4733", one_allow: str | None = None) -> Call:
    call = Call()
    call.dtmf_modes = {ZERO: zero, ONE: one}
    call.start()
    headers = [("Allow", one_allow)] if one_allow is not None else None
    call.one_responds(200, body=b"v=0\r\n", headers=headers)
    call.ack_from(ZERO)
    return call


def test_an_info_digit_is_answered_200_reported_and_sent_as_rfc_4733_to_a_leg_that_speaks_it() -> None:
    call = connected()
    dtmf_info(call, ZERO, b"Signal=4\r\nDuration=160\r\n")
    assert call.responses(200, "INFO")
    assert call.event("dtmf") == {"call": "c1", "channel": "ZERO", "digit": "4", "duration": 160, "source": "info"}
    assert call.dtmf_sent == [(ONE, "4", 0.16)]
    assert call.sent("INFO", to=FAR_ADDR) == []


def test_an_info_digit_is_relayed_as_info_to_a_leg_without_telephone_event_and_its_answer_comes_back() -> None:
    call = connected(one="info")
    dtmf_info(call, ZERO, b"Signal=#\r\n")
    assert call.event("dtmf") == {"call": "c1", "channel": "ZERO", "digit": "#", "duration": DEFAULT_DURATION,
                                  "source": "info"}
    relayed = call.sent("INFO", to=FAR_ADDR)
    assert len(relayed) == 1 and relayed[0].message.body == b"Signal=#\r\n"
    assert call.dtmf_sent == [] and not call.responses(200, "INFO")
    call.respond_to(relayed[0], 200)
    assert call.responses(200, "INFO")


def test_a_malformed_info_body_gets_400_with_the_reason_and_goes_nowhere() -> None:
    call = connected()
    dtmf_info(call, ONE, b"Signal=Z\r\n")
    refused = call.responses(400, "INFO")
    assert refused and "not a DTMF key" in refused[0].reason
    assert call.event("dtmf") is None and call.sent("INFO", to=ZERO_ADDR) == [] and call.dtmf_sent == []
    assert call.machine.state.value == "connected"


def test_an_info_of_another_kind_is_relayed_untouched() -> None:
    call = connected()
    dtmf_info(call, ZERO, b"<xml/>", content_type="application/media_control+xml")
    assert call.sent("INFO", to=FAR_ADDR) and call.event("dtmf") is None


def test_an_rfc_4733_digit_is_reported_and_left_to_the_relay_when_the_other_leg_speaks_it_too() -> None:
    call = connected()
    call.feed(io.DigitIn(call.now, ZERO, "8", 100))
    assert call.event("dtmf") == {"call": "c1", "channel": "ZERO", "digit": "8", "duration": 100,
                                  "source": "rfc4733"}
    assert call.sent("INFO") == [] and call.dtmf_sent == []


def test_an_rfc_4733_digit_becomes_info_to_a_leg_without_telephone_event() -> None:
    call = connected(one="info", one_allow="INVITE, ACK, BYE, CANCEL, INFO")
    call.feed(io.DigitIn(call.now, ZERO, "3", 120))
    info = call.sent("INFO", to=FAR_ADDR)
    assert len(info) == 1
    assert info[0].message.body == b"Signal=3\r\nDuration=120\r\n"
    assert info[0].message.headers.get("content-type") == "application/dtmf-relay"
    call.respond_to(info[0], 200)
    assert call.event("dtmf_dropped") is None


def test_a_digit_for_a_phone_whose_allow_has_no_info_is_dropped_with_an_event() -> None:
    call = connected(one="info", one_allow="INVITE, ACK, BYE, CANCEL")
    call.feed(io.DigitIn(call.now, ZERO, "3", 120))
    assert call.sent("INFO") == []
    dropped = call.event("dtmf_dropped")
    assert dropped is not None and dropped["channel"] == "ONE" and dropped["digit"] == "3"
    assert "INFO" in str(dropped["reason"])
    assert call.machine.state.value == "connected"


def test_an_info_the_phone_refuses_is_a_dropped_digit() -> None:
    call = connected(one="info")
    call.feed(io.DigitIn(call.now, ZERO, "3", 120))
    call.respond_to(call.sent("INFO", to=FAR_ADDR)[0], 415)
    dropped = call.event("dtmf_dropped")
    assert dropped is not None and str(dropped["reason"]).startswith("INFO answered 415")


def test_telephone_events_on_a_leg_that_negotiated_none_are_one_dtmf_unexpected_and_no_digit() -> None:
    call = connected(zero="info", one="info")
    for digit in "123":
        call.feed(io.DigitIn(call.now, ZERO, digit, 100))
    assert [(n, f) for n, f in call.events if n.startswith("dtmf")] == [
        ("dtmf_unexpected", {"call": "c1", "channel": "ZERO", "digit": "1"})]
    assert call.sent("INFO") == [] and call.machine.state.value == "connected"


def test_send_dtmf_into_a_leg_that_speaks_rfc_4733_asks_the_media_backend() -> None:
    call = connected()
    call.feed(io.SendDtmfIn(call.now, ONE, "123#", 0.1))
    assert call.dtmf_sent == [(ONE, "123#", 0.1)] and call.sent("INFO") == []


def test_send_dtmf_into_a_leg_without_telephone_event_is_one_info_per_key() -> None:
    call = connected(zero="info")
    call.feed(io.SendDtmfIn(call.now, ZERO, "12", 0.2))
    bodies = [o.message.body for o in call.sent("INFO", to=ZERO_ADDR)]
    assert bodies == [b"Signal=1\r\nDuration=200\r\n", b"Signal=2\r\nDuration=200\r\n"]


def test_send_dtmf_before_the_leg_answered_is_a_dropped_event() -> None:
    call = Call()
    call.start()
    call.feed(io.SendDtmfIn(call.now, ONE, "1", 0.1))
    dropped = call.event("dtmf_dropped")
    assert dropped is not None and "no answered leg" in str(dropped["reason"])


# ---- the relay sends digits a phone receives (loopback sockets) ----------------------------------------
async def digits_a_phone_hears(sdp: bytes, digits: str) -> tuple[list[tuple[str, int]], str]:
    """A relayed call with `sdp` on both legs; `send_dtmf(0, digits)`: the digits the caller's phone
    detects in what arrives (bounded wait), and leg 0's DTMF mode."""
    relay = MediaRelay(HOST, ports.rtp_range(10))
    session = await relay.allocate("call-1")
    phones = [await phone(), await phone()]
    for leg, p in enumerate(phones):
        await session.anchor(leg, sdp.replace(b"127.0.0.1", p.addr[0].encode())
                             .replace(b"4000", str(p.addr[1]).encode()))
    mode = session.dtmf_mode(0)
    heard: list[tuple[str, int]] = []
    if mode == "rfc4733":
        session.send_dtmf(0, digits, 0.06)
        detector = EventDetector({101: 8000})

        def all_heard() -> bool:
            while not phones[0].inbox.empty():
                found = detector.feed(phones[0].inbox.get_nowait()[0])
                if found:
                    heard.append(found)
            return len(heard) >= len(digits)

        for _ in range(1000):  # bounded: 10 s at most on a loaded machine
            if all_heard():
                break
            await asyncio.sleep(0.01)
    session.close()
    for p in phones:
        p.close()
    await relay.close()
    return heard, mode


def test_the_relay_sends_digits_to_a_phone_that_negotiated_telephone_event() -> None:
    heard, mode = asyncio.run(digits_a_phone_hears(SDP_WITH_EVENTS, "42#"))
    assert mode == "rfc4733"
    assert heard == [("4", 60), ("2", 60), ("#", 60)]


def test_the_relay_will_not_send_telephone_events_to_a_phone_that_did_not_negotiate_them() -> None:
    async def scenario() -> str:
        relay = MediaRelay(HOST, ports.rtp_range(10))
        session = await relay.allocate("call-1")
        await session.anchor(0, SDP_WITHOUT)
        await session.anchor(1, SDP_WITHOUT)
        try:
            session.send_dtmf(0, "1")
        except Exception as exc:  # noqa: BLE001 - the message is the spec
            return f"{type(exc).__name__}: {exc}"
        finally:
            session.close()
            await relay.close()
        return "sent"

    assert asyncio.run(scenario()).startswith("MediaError: telephone-event was not negotiated on leg 0")




def test_the_events_take_the_place_of_the_other_phones_stream_with_its_ssrc_and_sequence() -> None:
    async def scenario() -> tuple[list[dict[str, int]], int]:
        relay = MediaRelay(HOST, ports.rtp_range(10))
        session = await relay.allocate("call-1")
        phones = [await phone(), await phone()]
        for leg, p in enumerate(phones):
            await session.anchor(leg, SDP_WITH_EVENTS.replace(b"127.0.0.1", p.addr[0].encode())
                                 .replace(b"4000", str(p.addr[1]).encode()))
        audio_seq = 1000
        got: list[bytes] = []
        session_started = False
        for _ in range(200):  # the callee's phone talks every 10 ms; bounded to 2 s of it
            phones[1].send(struct.pack("!BBHII", 0x80, 0, audio_seq, audio_seq * 160, 0xAB) + b"\xff" * 160,
                           session.legs[1].local_port)
            audio_seq += 1
            await asyncio.sleep(0.01)
            while not phones[0].inbox.empty():
                got.append(phones[0].inbox.get_nowait()[0])
            if not session_started and len(got) >= 3:
                session.send_dtmf(0, "1", 0.06)
                session_started = True
            if session_started and not session._pumps:
                break
        session.close()
        for p in phones:
            p.close()
        await relay.close()
        events = [fields(p) for p in got if p[1] & 0x7F == 101]
        audio_during = sum(1 for p in got[got.index(next(p for p in got if p[1] & 0x7F == 101)):]
                           if p[1] & 0x7F == 0 and struct.unpack("!H", p[2:4])[0] <= events[-1]["seq"])
        return events, audio_during

    events, audio_during = asyncio.run(scenario())
    assert {f["ssrc"] for f in events} == {0xAB}
    assert [f["seq"] - events[0]["seq"] for f in events] == list(range(len(events)))
    assert events[-1]["end"] == 1 and events[0]["marker"] == 1
    assert audio_during == 0  # no packet of the stream was relayed with a number our events took


def test_digits_the_media_backend_cannot_send_as_rfc_4733_go_as_info() -> None:
    from runtime.media.base import MediaError

    call = connected()
    call.hold_media = True
    call.feed(io.SendDtmfIn(call.now, ZERO, "9", 0.1))
    call.answer_media()                                   # dtmf_mode: rfc4733
    call.answer_media(MediaError("rtpengine was not asked to make DTMF injection possible"))
    assert [o.message.body for o in call.sent("INFO", to=ZERO_ADDR)] == [b"Signal=9\r\nDuration=100\r\n"]
    assert call.event("dtmf_dropped") is None
