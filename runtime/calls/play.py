"""Playing a file to channel ZERO (the dialplan's `play`): as early media in a 183, or after our
own 200 (with a late offer, once the caller's ACK has brought its answer).

A mixin of CallMachine (machine.py): it uses the machine's state and the other jobs' methods."""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..events import logfmt_value as _logfmt
from ..media.base import MediaError
from ..media.prompts import PromptError
from ..sip.message import Request, create_response
from ..sip.sdp import SdpError
from ..sip.transaction import State
from .io import (
    Notify,
    PlayDone,
    PlayIn,
    Respond,
    StartPlaying,
    StopPlaying,
)
from .names import (
    ZERO,
    Step,
)
from .states import (
    CallState,
)

log = logging.getLogger("callflow.calls")


class Playing:
    """The dialplan's `play` to channel ZERO."""

    def _on_play(self, inp: PlayIn) -> Step | None:
        if self.state not in (CallState.ROUTING, CallState.ANSWERED):
            return None
        return self._play(inp.path, inp.answered, inp.on_done)

    def _play(self, path: str, answered: bool, on_done: Callable[[], None]) -> Step:
        offer = self.invite.body  # an originated call's stands-for INVITE has none: ZERO answered our offer
        try:
            if not self.has_media:
                raise MediaError("the call has no media")
            if not offer and answered and not self.answered_by_us:
                # late offer: our 200 carries the offer and the caller's ACK the answer; the file
                # starts once that answer has told us the caller's address and codec
                ours = yield ("offer", ZERO.value)
                if self.state is not CallState.ROUTING:
                    return
                self.answered_by_us = True
                self.pending_play = (path, on_done)
                self._answer_zero(ours)
                self._move(CallState.ANSWERED)
                return
            if not offer and not self.answered_by_us:
                raise MediaError("the caller's INVITE has no SDP offer (early media needs one; "
                                 "`play ... answered` does not)")
            if not offer:
                if self.play_codec is None:
                    raise MediaError("the caller gave no SDP answer to play to")
                sdp, (payload_type, codec) = b"", self.play_codec  # settled in the caller's ACK
            else:
                sdp, payload_type, codec = yield ("answer", ZERO.value, offer)
            payloads = yield ("prompt", path, codec)
        except (MediaError, PromptError, SdpError) as exc:
            self._play_failed(path, exc)
            self._out.append(Notify(on_done, ()))
            return
        if self.state not in (CallState.ROUTING, CallState.ANSWERED):
            return  # cancelled or hung up while the file was loading
        if answered and not self.answered_by_us:
            self.answered_by_us = True
            self._answer_zero(sdp)
            self._move(CallState.ANSWERED)
        elif not self.answered_by_us and not self.early_media_sent:
            if self.txn is None or self.txn.state is not State.PROCEEDING:
                return
            self.early_media_sent = True
            r = create_response(self.invite, 183, "Session Progress", to_tag=self.local_tag,
                                headers=[("Contact", self.env.contact(self.zero.transport))], body=sdp,
                                content_type="application/sdp")
            self._out.append(Respond(self.txn, r))
        self._start_playing(path, codec, payloads, payload_type, on_done)

    def _play_after_ack(self, ack: Request) -> Step:
        """The late-offer caller's ACK: its SDP answers our offer; now the file can play."""
        pending, self.pending_play = self.pending_play, None
        if pending is None or not self.has_media:
            return
        path, on_done = pending
        try:
            if not ack.body:
                raise MediaError("the caller's ACK carried no SDP answer to our offer")
            payload_type, codec = yield ("take_answer", ZERO.value, ack.body)
            payloads = yield ("prompt", path, codec)
        except (MediaError, PromptError, SdpError) as exc:
            self._play_failed(path, exc)
            if self.state is CallState.ANSWERED:
                self._out.append(Notify(on_done, ()))
            return
        if self.state is not CallState.ANSWERED:
            return
        self.late_answer = True
        self.play_codec = (payload_type, codec)
        self._start_playing(path, codec, payloads, payload_type, on_done)

    def _start_playing(self, path: str, codec: str, payloads: list[bytes], payload_type: int,
                       on_done: Callable[[], None]) -> None:
        log.info("event=playing call=%s file=%s codec=%s packets=%d answered=%s", self.id, _logfmt(path), codec,
                 len(payloads), "yes" if self.answered_by_us else "no")
        self.playing = on_done
        self._out.append(StartPlaying(payloads, payload_type))

    def _play_failed(self, path: str, exc: Exception) -> None:
        # an event (not only a log line): dial_call_session(play=) settles its result with it
        self._emit("play_failed", call=self.id, file=path, reason=str(exc))

    def _on_play_done(self, inp: PlayDone) -> None:
        on_done, self.playing = self.playing, None
        if inp.error is not None:
            self._emit("play_failed", call=self.id, reason=str(inp.error))
        if on_done is not None and self.state in (CallState.ROUTING, CallState.ANSWERED):
            self._out.append(Notify(on_done, ()))

    def _stop_playing(self) -> None:
        if self.playing is not None:
            self.playing = None
            self._out.append(StopPlaying())
