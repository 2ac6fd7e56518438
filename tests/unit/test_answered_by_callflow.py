"""Fake-clock specs (issue 12, trial bugs 3 and 5): a call Callflow answers itself (a voicemail's beep,
`play ... answered`, a menu) is answered at our 200 OK, and the program's hang-up of an answered
call is a `hangup` like a phone's. The harness is calls_kit (ZERO a caller at ZERO_ADDR)."""

from __future__ import annotations

from runtime.calls import CallState, io
from runtime.calls.names import HUNG_UP_BY_PROGRAM
from runtime.events import EngineEvent
from runtime.records.cdr import CallRecord, CallRecorder
from tests.unit.calls_kit import ZERO, ZERO_ADDR, Call


def answered_by_us() -> Call:
    """The rule plays a file after answering (a voicemail's beep): our 200 OK, the caller's ACK."""
    call = Call()
    call.route = lambda c: c.feed(io.PlayIn(c.now, "beep.wav", True, lambda: None))
    call.start()
    call.ack_from(ZERO)
    return call


def hangups(call: Call) -> list[dict[str, object]]:
    return [fields for name, fields in call.events if name == "hangup"]


def test_our_own_200_to_the_caller_is_an_answered_event() -> None:
    call = answered_by_us()
    assert call.responses(200) and call.machine.state is CallState.ANSWERED
    assert call.event("answered") == {"call": "c1"}
    assert call.event("connected") is None  # no far end answered


def test_the_rules_hangup_of_a_call_we_answered_is_a_hangup_event_before_our_bye() -> None:
    call = answered_by_us()
    call.advance(3)
    call.feed(io.HangupIn(call.now))
    assert call.sent("BYE", to=ZERO_ADDR)
    assert hangups(call) == [{"call": "c1", "channel": None, "reason": HUNG_UP_BY_PROGRAM}]


def test_the_programs_hangup_of_a_connected_call_is_a_hangup_event() -> None:
    call = Call()
    call.connect()
    call.feed(io.HangupIn(call.now))
    assert len(call.sent("BYE")) == 2
    assert hangups(call) == [{"call": "c1", "channel": None, "reason": HUNG_UP_BY_PROGRAM}]


def test_a_reject_after_we_answered_is_a_hangup_saying_the_code() -> None:
    call = answered_by_us()
    call.feed(io.RejectIn(call.now, 486, "Busy Here"))
    assert call.sent("BYE", to=ZERO_ADDR)
    assert hangups(call) == [{"call": "c1", "channel": None, "reason": "486 Busy Here"}]


def test_the_callers_bye_after_we_answered_is_a_hangup_of_channel_zero() -> None:
    call = answered_by_us()
    call.bye_from(ZERO)
    assert hangups(call) == [{"call": "c1", "channel": "ZERO"}]  # reason: the default, BYE


# ---- the call record ---------------------------------------------------------------------------------
Timed = list[tuple[float, str, dict[str, object]]]


def record_of(events: Timed) -> CallRecord:
    """Feed a call's events to a CallRecorder, each at its wall-clock time (seconds)."""
    written: list[CallRecord] = []
    clock = [0.0]
    recorder = CallRecorder(written.append, lambda: clock[0])
    for at, name, fields in events:
        clock[0] = at
        recorder(EngineEvent(name, dict(fields)))
    assert len(written) == 1
    return written[0]


def test_a_voicemail_is_recorded_as_answered_from_our_200_with_its_duration() -> None:
    call = answered_by_us()
    call.feed(io.HangupIn(call.now))
    times = {"created": 1_000.0, "answered": 1_001.0, "hangup": 1_021.5}
    events: Timed = [(times.get(name, 1_000.0), name, fields) for name, fields in call.events]
    assert [name for _, name, _ in events if name in times] == ["created", "answered", "hangup"]
    events.append((1_021.6, "closed", {"call": "c1", "reason": "hangup", "rtp_in": 120, "rtp_out": 40}))
    record = record_of(events)
    assert record.outcome == "answered" and record.code == 200
    assert record.answered_at == 1_001.0 and record.duration == 20.5
    assert record.hangup_reason == HUNG_UP_BY_PROGRAM and (record.rtp_in, record.rtp_out) == (120, 40)


def test_a_call_whose_zero_answered_an_originate_is_answered_from_then() -> None:
    record = record_of([
        (1_000.0, "created", {"call": "o1", "peer_type": "USER", "peer": "alice", "caller": "alice", "to": "+1555",
                              "origin": "originated"}),
        (1_002.0, "originated", {"call": "o1", "peer_type": "USER", "peer": "alice"}),
        (1_007.0, "hangup", {"call": "o1", "channel": None, "reason": HUNG_UP_BY_PROGRAM}),
        (1_007.1, "closed", {"call": "o1", "reason": "hangup", "rtp_in": 0, "rtp_out": 100}),
    ])
    assert record.outcome == "answered" and record.answered_at == 1_002.0 and record.duration == 5.0


def test_a_blind_transfer_does_not_end_the_record_of_the_call_that_goes_on() -> None:
    record = record_of([
        (1_000.0, "created", {"call": "t1", "peer_type": "USER", "peer": "alice", "caller": "alice", "to": "+1555"}),
        (1_000.0, "connected", {"call": "t1", "peer_type": "LINE", "peer": "itsp1"}),
        (1_010.0, "hangup", {"call": "t1", "channel": "ZERO", "reason": "transferred"}),
        (1_060.0, "hangup", {"call": "t1", "channel": "ONE"}),
        (1_060.1, "closed", {"call": "t1", "reason": "hangup"}),
    ])
    assert record.outcome == "answered" and record.duration == 60.0
    assert (record.hangup_channel, record.hangup_reason) == ("ONE", None)
