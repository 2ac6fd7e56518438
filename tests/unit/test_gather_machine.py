"""The call machine's `gather` on a fake clock: the caller is answered, hears the prompt, enters digits
(RFC 4733, as DigitIn), and the dialplan gets the entry once; timers are the machine's own."""

from __future__ import annotations

from typing import Any

from calls_kit import FAR_ADDR, ONE, SDP_ONE, ZERO, Call

from runtime.calls import Target, io
from runtime.media.base import MediaError
from runtime.media.prompts import PromptError


class GatherCall(Call):
    """A call whose plan is one gather; `entries` collects what the dialplan is handed back."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.entries: list[tuple[str, str]] = []
        self.playing: list[io.StartPlaying | io.StopPlaying] = []
        self.options: dict[str, Any] = {}
        self.route = lambda call: call.gather()

    def gather(self, prompt: str | None = "menu.wav", max_digits: int = 4, terminator: str | None = "#",
               timeout: float = 5.0, digit_timeout: float = 3.0, retries: int = 0,
               keys: frozenset[str] | None = None) -> None:
        o = dict(prompt=prompt, max_digits=max_digits, terminator=terminator, timeout=timeout,
                 digit_timeout=digit_timeout, retries=retries, keys=keys)
        o.update(self.options)
        self.feed(io.GatherIn(self.now, o["prompt"], o["max_digits"], o["terminator"], o["timeout"],
                              o["digit_timeout"], o["retries"], o["keys"],
                              lambda: self.feed(io.GatherPromptDone(self.now)),
                              lambda digits, outcome: self.entries.append((digits, outcome))))

    def _execute(self, a: Any) -> None:
        if isinstance(a, io.StartPlaying | io.StopPlaying):
            self.playing.append(a)
        super()._execute(a)

    def prompt_ends(self) -> None:
        self.feed(io.PlayDone(self.now))

    def press(self, keys: str, channel=ZERO) -> None:  # type: ignore[no-untyped-def]
        for key in keys:
            self.feed(io.DigitIn(self.now, channel, key, 100))

    def rounds(self) -> list[dict[str, object]]:
        return [fields for name, fields in self.events if name == "gather"]

    def prompts_started(self) -> int:
        return sum(1 for a in self.playing if isinstance(a, io.StartPlaying))


def answered_and_prompted(**options: Any) -> GatherCall:
    call = GatherCall()
    call.options = options
    call.start()
    call.ack_from(ZERO)  # the caller acknowledges our 200
    return call


def test_the_caller_is_answered_and_hears_the_prompt_before_any_digit() -> None:
    call = answered_and_prompted()
    assert len(call.responses(200)) == 1
    assert call.machine.state.value == "answered"
    assert call.prompts_started() == 1
    assert call.entries == []


def test_digits_then_the_terminator_hand_the_digits_without_the_terminator() -> None:
    call = answered_and_prompted()
    call.prompt_ends()
    call.press("42#")
    assert call.entries == [("42", "terminator")]
    assert call.rounds() == [{"call": "c1", "digits": "42", "outcome": "terminator", "attempt": 1, "final": "yes"}]
    assert "gather_timeout" not in call.timers and "gather_digit" not in call.timers


def test_reaching_max_digits_ends_the_entry_without_a_terminator() -> None:
    call = answered_and_prompted(max_digits=3)
    call.prompt_ends()
    call.press("123")
    assert call.entries == [("123", "max")]


def test_a_pause_longer_than_the_digit_timeout_ends_the_entry() -> None:
    call = answered_and_prompted(digit_timeout=2.0, timeout=30.0)
    call.prompt_ends()
    call.press("7")
    call.advance(1.5)
    call.press("8")
    call.advance(1.9)
    assert call.entries == []
    call.advance(0.2)
    assert call.entries == [("78", "digits")]


def test_nothing_entered_within_the_timeout_after_the_prompt_is_a_timeout() -> None:
    call = answered_and_prompted(timeout=5.0)
    call.advance(60)  # the prompt still plays: the timeout has not started
    assert call.entries == []
    call.prompt_ends()
    call.advance(4.9)
    assert call.entries == []
    call.advance(0.2)
    assert call.entries == [("", "timeout")]


def test_nothing_entered_replays_the_prompt_until_the_retries_are_spent_then_hands_back_nothing() -> None:
    call = answered_and_prompted(retries=2, timeout=5.0)
    for _ in range(3):
        call.prompt_ends()
        call.advance(5.1)
    assert call.prompts_started() == 3
    assert call.entries == [("", "timeout")]
    assert [(r["attempt"], r["final"]) for r in call.rounds()] == [(1, "no"), (2, "no"), (3, "yes")]
    assert len(call.responses(200)) == 1  # answered once, whatever the rounds


def test_a_wrong_entry_replays_the_prompt_and_a_right_one_is_handed_back() -> None:
    call = answered_and_prompted(max_digits=1, retries=1, keys=frozenset({"1", "2"}))
    call.prompt_ends()
    call.press("9")
    assert call.entries == [] and call.prompts_started() == 2
    call.prompt_ends()
    call.press("2")
    assert call.entries == [("2", "max")]
    assert [(r["digits"], r["final"]) for r in call.rounds()] == [("9", "no"), ("2", "yes")]


def test_a_wrong_entry_when_the_retries_are_spent_is_handed_back_for_the_else_branch() -> None:
    call = answered_and_prompted(max_digits=1, retries=0, keys=frozenset({"1"}))
    call.prompt_ends()
    call.press("5")
    assert call.entries == [("5", "max")]


def test_a_digit_during_the_prompt_stops_it_and_counts() -> None:
    call = answered_and_prompted(max_digits=2)
    call.press("3")
    assert isinstance(call.playing[-1], io.StopPlaying)
    assert "gather_timeout" in call.timers
    call.press("4")
    assert call.entries == [("34", "max")]
    call.prompt_ends()  # a late end of the stopped prompt changes nothing
    assert call.entries == [("34", "max")]


def test_without_a_prompt_collecting_starts_at_the_answer() -> None:
    call = answered_and_prompted(prompt=None, timeout=2.0)
    assert len(call.responses(200)) == 1 and call.prompts_started() == 0
    call.advance(2.1)
    assert call.entries == [("", "timeout")]


def test_the_caller_hanging_up_while_gathering_ends_the_call_and_nothing_is_handed_back() -> None:
    call = answered_and_prompted()
    call.prompt_ends()
    call.press("1")
    call.bye_from(ZERO)
    assert call.responses(200, "BYE")
    assert call.closed is not None
    call.advance(60)
    call.press("2#")
    assert call.entries == []
    assert call.event("hangup") is not None


def test_digits_from_the_dialled_leg_are_not_the_callers_entry() -> None:
    call = answered_and_prompted(max_digits=1)
    call.prompt_ends()
    call.press("5", channel=ONE)
    assert call.entries == []


def test_after_the_gather_an_accept_bridges_the_answered_caller_without_a_second_answer() -> None:
    call = answered_and_prompted(max_digits=1)
    call.prompt_ends()
    call.press("1")
    assert call.entries == [("1", "max")]
    call.feed(io.AcceptIn(call.now, [Target("LINE", "far")], None, call.results.append))
    invite = call.invite_to_one()
    assert invite.destination == FAR_ADDR
    call.one_responds(200, body=SDP_ONE)
    assert call.results == [None]
    assert call.machine.state.value == "connected"
    assert len(call.responses(200)) == 1  # the caller's only 200 is the one the gather sent


def test_a_prompt_that_cannot_be_decoded_is_logged_and_the_caller_can_still_enter_digits() -> None:
    call = GatherCall(hold_media=True)
    call.options = {"max_digits": 1}
    call.start()
    for _ in range(10):
        if not call.media_pending:
            break
        op = call.media_pending[0].op
        call.answer_media(PromptError("menu.wav: not an audio file") if op == "prompt" else None)
    failed = [fields for name, fields in call.events if name == "play_failed"]  # an event (the bus logs it)
    assert failed and "not an audio file" in str(failed[0]["reason"])
    assert len(call.responses(200)) == 1  # answered all the same
    call.ack_from(ZERO)
    call.hold_media = False  # the backend answers again (the digit's DTMF mode is asked of it)
    call.press("0")
    assert call.entries == [("0", "max")]


def test_a_caller_whose_offer_has_no_telephone_event_is_logged_as_unable_to_enter_keys(caplog) -> None:  # type: ignore[no-untyped-def]
    call = answered_and_prompted()  # the bench's offer is PCMU alone
    assert "event=gather_deaf call=c1" in caplog.text and "no telephone-event" in caplog.text
    call.prompt_ends()
    call.advance(5.1)
    assert call.entries == [("", "timeout")]  # the menu goes on as if nothing was entered


def test_a_caller_that_cannot_be_answered_is_handed_back_as_nothing_entered_at_once() -> None:
    call = GatherCall(hold_media=True)
    call.options = {"prompt": None}
    call.start()
    for _ in range(10):
        if not call.media_pending:
            break
        op = call.media_pending[0].op
        call.answer_media(MediaError("the offer has no codec we can play") if op == "answer" else None)
    failed = [fields for name, fields in call.events if name == "play_failed"]  # an event (the bus logs it)
    assert failed and "gather could not answer the call" in str(failed[0]["reason"])
    assert call.responses(200) == []
    assert call.entries == [("", "timeout")]  # the `nothing` branch decides (it may still accept elsewhere)
    assert call.machine.state.value == "routing"
