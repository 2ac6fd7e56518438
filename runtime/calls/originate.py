"""Originate (the SDK's DialCallSession): a call Callflow starts itself. Channel ZERO is the first
leg we dial (a user's phones, all at once, or a number through a line); once it answers, the call
is where a call we answered ourselves is (ANSWERED, `answered_by_us`), so the rest is the ordinary
machinery: accept dials channel ONE and bridges, `play` plays to ZERO, the dialplan may route it.

Media, chosen for what real phones and providers accept: ZERO is offered the relay's own SDP (PCMU,
PCMA, telephone-event); its answer settles the codec (`take_answer`, as a late-offer caller's ACK
does); channel ONE is then INVITEd with an offer of that codec alone (`offer`, see setup_routing's
late-answer path), so ZERO is never re-INVITEd and ONE needs no late-offer support.

    NEW --dial--> ORIGINATING --2xx from ZERO--> ANSWERED (then as any answered call)
                      +--all of ZERO's INVITEs failed, no answer in time, hung up--> CLOSED (`failed`)

A mixin of CallMachine (machine.py): it uses the machine's state and the other jobs' methods."""

from __future__ import annotations

import logging

from ..media.base import MediaError
from ..sip.dialog import Dialog
from ..sip.message import Response
from ..sip.sdp import SdpError
from .io import CancelTimer, DialIn, IndexDialog, MediaExpect, Notify, SendRequest, SetTimer
from .legs import Failure, Leg
from .names import ORIGINATE_NO_ANSWER, ZERO, Step
from .session_timer import allows, as_uac
from .states import CallState, CancelState, ForkState

log = logging.getLogger("callflow.calls")


class Originating:
    """Dialling channel ZERO ourselves: its INVITEs (tag ("originate", i)), their answers, no answer."""

    def _on_dial(self, inp: DialIn) -> Step | None:
        if self.state is not CallState.NEW:
            log.warning("call=%s: dial ignored, the call is %s already", self.id, self.state.value)
            return None
        return self._dial_zero(inp)

    def _dial_zero(self, inp: DialIn) -> Step:
        self.originated = True
        self.on_answered, self.on_dial_failed = inp.on_answered, inp.on_failed
        self._emit("created", call=self.id, peer_type=self.peer_type, peer=self.peer_name, caller=self.caller_id,
                   to=self.dialled, origin="originated")
        self._move(CallState.ORIGINATING)
        try:
            yield ("allocate",)
            self.has_media = True
            offer = yield ("offer", ZERO.value)  # the relay's own offer: ZERO's answer settles the codec
        except MediaError as exc:
            log.warning("call=%s no media: %s", self.id, exc)
            self._dial_failed(Failure(503, f"Service Unavailable (no media: {exc})"))
            return
        if self.state is not CallState.ORIGINATING:
            return
        failures: list[Failure] = []
        # ZERO's phone shows who it will be connected to (the number dialled), not its own user
        shown, self.caller_id_override = self.caller_id_override, self.zero_shows
        try:
            for target in inp.targets:
                legs, failure = self.env.build_forks(self, target, offer, self.now)
                if failure is not None:
                    failures.append(failure)
                for leg in legs:
                    leg.channel = ZERO
                    leg.index = len(self.zero_forks)
                    leg.local_sdp = offer
                    self.zero_forks.append(leg)
        finally:
            self.caller_id_override = shown
        if not self.zero_forks:
            self._dial_failed(failures[-1] if failures else Failure(480, "Temporarily Unavailable"))
            return
        # until one answers, the status page shows where ZERO is being rung (its first INVITE's address)
        self.zero.address, self.zero.transport = self.zero_forks[0].address, self.zero_forks[0].transport
        for leg in self.zero_forks:
            invite = leg.invite
            assert invite is not None
            self._out.append(IndexDialog(invite.call_id, invite.from_tag or "", ZERO))
            self._out.append(SendRequest(invite, leg.address, leg.transport, ("originate", leg.index)))
        self._out.append(SetTimer(ORIGINATE_NO_ANSWER, self.now + inp.timeout))

    def _originate_response(self, index: int, resp: Response | None) -> Step | None:
        """A response to (or the timeout of, `resp` None) our INVITE `index` on channel ZERO."""
        if not 0 <= index < len(self.zero_forks):
            return None
        leg = self.zero_forks[index]
        if resp is None:
            if not leg.settled:
                leg.state = ForkState.FAILED
                self._zero_fork_failed(Failure(408, "Request Timeout (no answer from channel ZERO)"))
                self._maybe_released()
            return None
        status = resp.status
        if leg.settled:
            if 200 <= status < 300:
                self._ack_and_bye(leg, resp)  # answered after we gave up on it (RFC 3261 13.2.2.4)
            return None
        if status < 200:
            if status == 100:
                return None
            leg.state = ForkState.EARLY
            if leg.cancel is CancelState.WANTED:
                self._send_cancel(leg)  # given up before it rang: the CANCEL may go now (RFC 3261 9.1)
            elif self.state is CallState.ORIGINATING and not self.zero_ringing:
                self.zero_ringing = True
                self._emit("connecting", call=self.id, channel=ZERO.name)
            return None
        if status < 300:
            return self._zero_answered(leg, resp)
        if status in (401, 407) and leg.auth is not None and leg.cancel is CancelState.NONE \
                and self._retry_with_auth(leg, resp, ("originate", index)):
            return None  # a line's provider challenged our INVITE: once more with its credentials
        leg.state = ForkState.FAILED
        if leg.cancel is CancelState.NONE:
            self._zero_fork_failed(Failure(status, resp.reason or "Failed"))
        self._maybe_released()
        return None

    def _zero_answered(self, leg: Leg, resp: Response) -> Step:
        invite = leg.invite
        assert invite is not None
        leg.state = ForkState.ANSWERED
        leg.dialog = Dialog.as_uac(invite, resp)
        self._send_ack(leg, invite.cseq[0])
        if self.state is not CallState.ORIGINATING or leg.cancel is not CancelState.NONE:
            self._bye(leg)  # another of ZERO's phones answered first, or we gave up
            self._maybe_released()
            return
        self._out.append(CancelTimer(ORIGINATE_NO_ANSWER))
        for other in self.zero_forks:
            if other is not leg:
                self._cancel_fork(other)
        self.zero = leg
        leg.index = -1
        leg.timer = as_uac(resp)
        leg.allow_update = allows(resp, "UPDATE") is True
        leg.answer_sdp = resp.body
        self.answered_by_us = True  # from here on, as a call we answered ourselves
        self._move(CallState.ANSWERED)
        try:
            if not resp.body:
                raise MediaError("channel ZERO's 200 OK carried no SDP answer to our offer")
            self.play_codec = yield ("take_answer", ZERO.value, resp.body)
        except (MediaError, SdpError) as exc:
            self._emit("hangup", call=self.id, channel=None, reason=f"no media with channel ZERO: {exc}")
            self._end(bye_zero=True, bye_one=False)
            return
        if self.state is not CallState.ANSWERED:
            return
        self.late_answer = True  # channel ONE is offered the codec ZERO answered with
        if leg.peer_type == "USER":
            self._out.append(MediaExpect(ZERO.value, leg.address[0]))  # a phone's RTP may come from its NAT
        self._arm_session(leg)
        self.answered_at = self.now  # ZERO answered: the call is answered from here (its record, status)
        self._emit("originated", call=self.id, peer_type=leg.peer_type, peer=leg.peer)
        if self.on_answered is not None:
            cb, self.on_answered = self.on_answered, None
            self.on_dial_failed = None
            self._out.append(Notify(cb, ()))

    def _zero_fork_failed(self, failure: Failure) -> None:
        self.last_failure = failure
        if self.state is not CallState.ORIGINATING:
            return
        if any(not f.settled and f.cancel is CancelState.NONE for f in self.zero_forks):
            return  # another of the user's phones may still answer
        self._dial_failed(failure)

    def _originate_no_answer(self) -> None:
        if self.state is CallState.ORIGINATING:
            self._dial_failed(Failure(480, "Temporarily Unavailable (channel ZERO did not answer)"))

    def _dial_failed(self, failure: Failure) -> None:
        """Channel ZERO never answered: give up every INVITE to it (one CANCEL each, once it rang),
        say why (`failed`), close."""
        if self.state is not CallState.ORIGINATING:
            return
        self._out.append(CancelTimer(ORIGINATE_NO_ANSWER))
        for leg in self.zero_forks:
            self._cancel_fork(leg)
        self.last_failure = failure
        self._emit("failed", call=self.id, code=failure.code, reason=failure.reason)
        if self.on_dial_failed is not None:
            cb, self.on_dial_failed = self.on_dial_failed, None
            self.on_answered = None
            self._out.append(Notify(cb, (failure,)))
        self._close(f"{failure.code} {failure.reason}")
