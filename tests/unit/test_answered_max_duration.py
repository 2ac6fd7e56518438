"""The maximum call duration also bounds calls Callflow answered itself (fake clock, one call machine):
a caller who listens to a prompt, sits in a menu or leaves a voicemail and never hangs up is hung up
with BYE once `max call duration` has passed since our answer; a call bridged after our answer keeps
that first deadline."""

from __future__ import annotations

from calls_kit import ZERO, ZERO_ADDR, Call

from runtime.calls import Target, io
from runtime.calls.states import CallState


def answered_by_us(max_duration: float | None = 3600.0) -> tuple[Call, list[str]]:
    """A provider's call the plan answers with a prompt (`play ... answered`) that has not ended."""
    done: list[str] = []
    call = Call(max_duration=max_duration)
    call.route = lambda c: c.feed(io.PlayIn(c.now, "welcome.wav", True, lambda: done.append("next step")))
    call.start()
    call.ack_from(ZERO)
    assert call.machine.state is CallState.ANSWERED
    return call, done


def test_a_caller_we_answered_who_never_hangs_up_is_hung_up_at_the_maximum_duration() -> None:
    call, _ = answered_by_us(3600)
    call.advance(3599)
    assert call.event("hangup") is None
    call.advance(1)
    assert "maximum call duration (3600 s)" in str(call.event("hangup")["reason"])  # type: ignore[index]
    assert call.sent("BYE", to=ZERO_ADDR)


def test_without_a_maximum_duration_a_call_we_answered_has_no_such_timer() -> None:
    call, _ = answered_by_us(None)
    assert "max_duration" not in call.timers


def test_a_call_bridged_after_our_answer_keeps_the_deadline_of_our_answer() -> None:
    call, _ = answered_by_us(3600)
    deadline = call.timers["max_duration"]
    call.advance(600)
    call.feed(io.AcceptIn(call.now, [Target("LINE", "far")], 60, call.results.append))
    call.one_responds(200, body=b"v=0\r\n")
    assert call.machine.state is CallState.CONNECTED
    assert call.timers["max_duration"] == deadline
    call.advance(3000)
    assert "maximum call duration" in str(call.event("hangup")["reason"])  # type: ignore[index]


def test_a_call_we_answered_still_ringing_channel_one_at_the_deadline_is_ended() -> None:
    call, _ = answered_by_us(60)
    call.feed(io.AcceptIn(call.now, [Target("LINE", "far")], 600, call.results.append))
    call.one_responds(180)  # ringing: a CANCEL may go (RFC 3261 9.1)
    assert call.machine.state is CallState.DIALING
    call.advance(60)
    assert "maximum call duration" in str(call.event("hangup")["reason"])  # type: ignore[index]
    assert call.sent("BYE", to=ZERO_ADDR) and call.sent("CANCEL")


# ---- the status page: what a call we answered is doing ----------------------------------------------------
def status_of(call: Call, recordings: list[object] | None = None) -> str:
    from runtime.calls import CallSession

    session = CallSession.__new__(CallSession)
    session.machine, session.created_wall, session.recordings = call.machine, 1_700_000_000.0, recordings or []
    session.runner = type("R", (), {"now": lambda self: call.now})()
    return str(session.snapshot()["state"])


def test_status_shows_a_call_in_a_menu_as_menu_and_after_it_as_answered() -> None:
    from test_gather_machine import answered_and_prompted

    call = answered_and_prompted(max_digits=1)
    assert status_of(call) == "menu"
    call.prompt_ends()
    call.press("1")
    assert call.entries == [("1", "max")] and status_of(call) == "answered"


def test_status_shows_a_call_leaving_a_voicemail_as_recording() -> None:
    call, _ = answered_by_us()
    voicemail = type("Rec", (), {"kind": "voicemail"})()
    assert status_of(call) == "answered" and status_of(call, [voicemail]) == "recording"
