"""The dialplan's `gather` (a menu): answer channel ZERO, play a prompt, collect the caller's DTMF digits
(RFC 4733, seen by the media backend), and hand the entry back to the dialplan, which picks a branch.

A mixin of CallMachine (machine.py), sans-IO like the rest: digits arrive as DigitIn with `now`, the
timeouts are the machine's timers (SetTimer/TimerFired), the prompt is played by play.py. While a
gather runs the call stays ANSWERED (our own 200 to ZERO); the gather's own progress is GatherState:

    PROMPTING --prompt played (or failed), or a digit (barge-in: the prompt stops)--> COLLECTING
    COLLECTING --terminator / max digits / digit timeout / overall timeout--> DONE (the dialplan's branch)
    COLLECTING --nothing or a wrong entry, retries left--> PROMPTING (the prompt again)

A caller who hangs up while gathering ends the call as in any ANSWERED call (ending.py); the gather's
timers and digits are then ignored and the dialplan is never called back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum

from ..media.base import MediaError
from ..sip.sdp import SdpError
from .io import CancelTimer, GatherIn, GatherPromptDone, Notify, SetTimer
from .names import ZERO, Step
from .states import CallState, Channel, IllegalMove

log = logging.getLogger("callflow.calls")


class GatherState(Enum):
    PROMPTING = "prompting"    # answering ZERO and playing the prompt; a digit stops it (barge-in)
    COLLECTING = "collecting"  # digits come in; the overall and inter-digit timers run
    DONE = "done"              # the entry went to the dialplan


G = GatherState
GATHER_TRANSITIONS: dict[GatherState, frozenset[GatherState]] = {
    G.PROMPTING: frozenset({G.COLLECTING, G.DONE}),
    G.COLLECTING: frozenset({G.PROMPTING, G.DONE}),  # PROMPTING: a retry plays the prompt again
    G.DONE: frozenset(),
}
del G

# timer names (the machine's timers are by name, one of each at a time)
GATHER_TIMEOUT = "gather_timeout"   # the whole entry: `timeout` after the prompt ended
GATHER_DIGIT = "gather_digit"       # `digit timeout` after the last digit
GATHER_TIMERS = frozenset({GATHER_TIMEOUT, GATHER_DIGIT})


@dataclass(slots=True)
class Gathering:
    """One gather under way: the dialplan's request, its state, the round and the digits so far."""

    request: GatherIn
    state: GatherState = GatherState.PROMPTING
    attempt: int = 1
    digits: str = ""


class Gathers:
    """The dialplan's `gather` on channel ZERO."""

    def _on_gather(self, inp: GatherIn) -> Step | None:
        current = self.gather
        if self.state not in (CallState.ROUTING, CallState.ANSWERED) or (
                current is not None and current.state is not GatherState.DONE):
            log.error("event=call_error call=%s step=gather state=%s reason=%s", self.id, self.state.value,
                      '"a gather can start only while the call is routed, one at a time"')
            return None
        g = self.gather = Gathering(inp)
        offer = self.invite.body
        if offer and b"telephone-event" not in offer.lower():
            log.warning("event=gather_deaf call=%s reason=%s", self.id,
                        '"the caller offered no telephone-event (RFC 4733): its keys cannot be heard, so the '
                        'menu ends as if nothing was entered"')
        elif not offer and inp.prompt is None:
            log.warning("event=gather_deaf call=%s reason=%s", self.id,
                        '"a caller without an SDP offer needs a prompt (its ACK brings the answer that lets '
                        'its keys be heard); the menu may end as if nothing was entered"')
        return self._gather_round(g)

    def _gather_round(self, g: Gathering) -> Step:
        """One round: the prompt (answering first), then collecting."""
        g.digits = ""
        prompt = g.request.prompt
        if prompt is not None:
            # playing: GatherPromptDone comes when it ends; waiting for a late offer's ACK: likewise
            # once it has played; failed (a file that cannot be decoded...): play.py logs play_failed
            # and notifies prompt_done at once, so the caller can still enter digits
            yield from self._play(prompt, True, g.request.prompt_done)
            return
        yield from self._gather_listen(g)

    def _on_gather_prompt_done(self, inp: GatherPromptDone) -> Step | None:
        g = self.gather
        if g is None or g.state is not GatherState.PROMPTING:
            return None
        return self._gather_listen(g)

    def _gather_listen(self, g: Gathering) -> Step:
        """Answer ZERO if the prompt did not (no prompt, or one that failed), then collect."""
        if not self.answered_by_us and self.state is CallState.ROUTING:
            yield from self._gather_answer()
        if self.gather is not g or g.state is not GatherState.PROMPTING:
            return
        if self.state is CallState.ANSWERED:
            self._gather_collect(g)
        elif self.state is CallState.ROUTING:
            # ZERO could not be answered (logged): nothing can be entered; the plan goes on at once
            self._gather_end(g, "timeout", last=True)

    def _gather_answer(self) -> Step:
        """Our 200 to ZERO without a prompt: the caller's offer answered (or, for a late offer, ours
        in the 200: its ACK's answer is not taken, so digits need an offer in the INVITE)."""
        offer = self.invite.body
        try:
            if not self.has_media:
                raise MediaError("the call has no media")
            if offer:
                sdp, _payload_type, _codec = yield ("answer", ZERO.value, offer)
            else:
                sdp = yield ("offer", ZERO.value)
        except (MediaError, SdpError) as exc:
            self._emit("play_failed", call=self.id, reason=f"gather could not answer the call: {exc}")
            return
        if self.state is not CallState.ROUTING:
            return
        self.answered_by_us = True
        self._answer_zero(sdp)
        self._move(CallState.ANSWERED)

    def _gather_collect(self, g: Gathering) -> None:
        self._gather_move(g, GatherState.COLLECTING)
        self._out.append(SetTimer(GATHER_TIMEOUT, self.now + g.request.timeout))

    def _gather_digit(self, channel: Channel, digit: str) -> Step | None:
        """A digit from `channel`'s phone (RFC 4733 or SIP INFO; calls/dtmf.py hands it over after the
        `dtmf` event): a menu under way takes it."""
        g = self.gather
        if g is None or channel is not ZERO or self.state is not CallState.ANSWERED:
            return None  # no menu, or the caller is bridged already: the `dtmf` event is all there is
        if g.state is GatherState.DONE:
            return None
        request = g.request
        if g.state is GatherState.PROMPTING:
            if self.playing is None:
                return None  # the prompt is still being loaded or answered: nothing plays yet to stop
            self._stop_playing()  # barge-in: the caller knows the menu
            self._gather_collect(g)
        if request.terminator is not None and digit == request.terminator:
            return self._gather_end(g, "terminator")
        g.digits += digit
        if len(g.digits) >= request.max_digits:
            return self._gather_end(g, "max")
        self._out.append(SetTimer(GATHER_DIGIT, self.now + request.digit_timeout))
        return None

    def _gather_timer(self, name: str) -> Step | None:
        g = self.gather
        if g is None or g.state is not GatherState.COLLECTING or self.state is not CallState.ANSWERED:
            return None  # the call ended while gathering, or a stale timer
        return self._gather_end(g, "digits" if g.digits else "timeout")

    def _gather_end(self, g: Gathering, outcome: str, last: bool = False) -> Step | None:
        """A round is over: the entry goes to the dialplan, or (nothing or a wrong entry, retries left)
        the prompt plays again. The `gather` event says which."""
        self._out.append(CancelTimer(GATHER_TIMEOUT))
        self._out.append(CancelTimer(GATHER_DIGIT))
        request = g.request
        digits = g.digits
        taken = bool(digits) and (request.keys is None or digits in request.keys)
        final = last or taken or g.attempt > request.retries
        self._emit("gather", call=self.id, digits=digits, outcome=outcome, attempt=g.attempt,
                   final="yes" if final else "no")
        if final:
            self._gather_move(g, GatherState.DONE)
            self.gather = None
            self._out.append(Notify(request.on_done, (digits, outcome)))
            return None
        g.attempt += 1
        self._gather_move(g, GatherState.PROMPTING)
        return self._gather_round(g)

    def _gather_move(self, g: Gathering, to: GatherState) -> None:
        if to not in GATHER_TRANSITIONS[g.state]:
            log.error("event=illegal_move call=%s gather_from=%s gather_to=%s", self.id, g.state.value, to.value)
            raise IllegalMove(f"call {self.id}: gather {g.state.value} -> {to.value} is not a legal move")
        g.state = to
