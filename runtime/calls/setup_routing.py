"""Setting a call up: the INVITE on channel ZERO routed (media allocated, the dialplan asked), the
accept dialling the forks on channel ONE, their provisional responses (early media to ZERO) and
answers (forked 2xx, 422 and 401/407 retries), and the call refused on ZERO when it cannot be made.

A mixin of CallMachine (machine.py): it uses the machine's state and the other jobs' methods."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..media.base import MediaError
from ..sip.dialog import Dialog
from ..sip.digest import DigestError, select_challenge
from ..sip.message import Request, Response, create_response
from ..sip.sdp import SdpError
from ..sip.transaction import State, new_branch
from .io import (
    AcceptIn,
    CancelTimer,
    HangupIn,
    IndexDialog,
    MediaExpect,
    Notify,
    RejectIn,
    Respond,
    Route,
    SendRequest,
    SendStateless,
    SetTimer,
    Start,
    StrayResponseIn,
)
from .legs import Failure, Leg, Target
from .names import (
    CONNECTED_METHODS,
    MAX_DURATION,
    NO_ANSWER,
    ONE,
    RTP_CHECK,
    TOO_SMALL,
    ZERO,
    Step,
)
from .session_timer import MIN_SE, allows, as_uac, as_uas, min_se, request_headers, session_expires
from .states import (
    CallState,
    CancelState,
    ForkState,
)

log = logging.getLogger("callflow.calls")


class CallSetup:
    """Setup and routing: Start, accept/reject/hangup from the dialplan, forks on ONE, answering ZERO."""

    def _on_start(self, inp: Start) -> Step:
        self._emit("created", call=self.id, peer_type=self.peer_type, peer=self.peer_name, caller=self.caller_id,
                   to=self.dialled)
        self._move(CallState.ROUTING)
        se = session_expires(self.invite)
        if se is not None and se.interval < MIN_SE:  # RFC 4028 9: too short an interval gets 422
            self._fail_zero(422, TOO_SMALL, [("Min-SE", str(MIN_SE))])
            return
        self.zero.allow_update = allows(self.invite, "UPDATE") is True
        self.zero.allow_info = allows(self.invite, "INFO")
        # media is anchored with or without an offer here: a late offer comes in the 2xx
        try:
            yield ("allocate",)
        except MediaError as exc:
            log.warning("call=%s no media: %s", self.id, exc)
            self._fail_zero(503, "Service Unavailable (no media ports)")
            return
        self.has_media = True
        if self.peer_type == "USER":
            self._out.append(MediaExpect(ZERO.value, self.zero.address[0]))
        self._emit("incoming", call=self.id, peer_type=self.peer_type, peer=self.peer_name, caller=self.caller_id,
                   to=self.dialled, user_agent=self.invite.headers.get("user-agent"), ip=self.zero.address[0],
                   port=self.zero.address[1])
        if self.state is CallState.ROUTING:
            self._out.append(Route())

    def _on_accept(self, inp: AcceptIn) -> Step | None:
        if self.state not in (CallState.ROUTING, CallState.ANSWERED):
            log.info("event=accept_ignored call=%s state=%s", self.id, self.state.value)
            return None
        return self._accept(inp.targets, inp.timeout, inp.on_result)

    def _accept(self, targets: list[Target], timeout: float | None,
                on_result: Callable[[Failure | None], None]) -> Step:
        self.on_result = on_result
        self._move(CallState.DIALING)
        self.attempt += 1
        offer = b""
        body = self.invite.body
        if self.late_answer and self.has_media:
            offer = yield ("offer", ONE.value)  # the codec the caller answered us with, on leg ONE
        elif body and self.has_media:
            try:
                offer = yield ("anchor", ZERO.value, body)
            except SdpError as exc:
                self._fail_zero(488, f"Not Acceptable Here (bad SDP: {str(exc)[:60]})")
                return
            if self.answered_by_us or self.early_media_sent:
                offer = yield ("restrict_offer", offer)  # the caller already has our codec
        if self.state is not CallState.DIALING:
            return
        failures: list[Failure] = []
        started: list[Leg] = []
        # the caller asked for a session timer: the far leg is offered one of the same interval
        zero_timer, _ = as_uas(self.invite)
        for target in targets:
            legs, failure = self.env.build_forks(self, target, offer, self.now)
            if failure is not None:
                failures.append(failure)
            for leg in legs:
                if zero_timer is not None and leg.invite is not None:
                    for name, value in request_headers(zero_timer.interval):
                        leg.invite.headers.add(name, value)
                leg.local_sdp = leg.invite.body if leg.invite is not None else b""
                leg.index = len(self.forks)
                leg.attempt = self.attempt
                self.forks.append(leg)
                started.append(leg)
        if not started:
            self._attempt_failed(failures[-1] if failures else Failure(480, "Temporarily Unavailable"))
            return
        for leg in started:
            invite = leg.invite
            assert invite is not None
            self._out.append(IndexDialog(invite.call_id, invite.from_tag or "", ONE))
            self._out.append(SendRequest(invite, leg.address, leg.transport, leg.index))
        if timeout:
            self._out.append(SetTimer(NO_ANSWER, self.now + timeout))

    def _on_reject(self, inp: RejectIn) -> None:
        self._fail_zero(inp.code, inp.reason)

    def _on_hangup(self, inp: HangupIn) -> None:
        state = self.state
        if state in (CallState.CONNECTED, CallState.ANSWERED) or (self.answered_by_us and state is CallState.DIALING):
            self._end(bye_zero=True, bye_one=True)
        elif state in (CallState.ROUTING, CallState.DIALING, CallState.NEW):
            self._fail_zero(480, "Temporarily Unavailable")
        elif state is CallState.ORIGINATING:
            self._dial_failed(Failure(487, "Request Terminated (hung up before channel ZERO answered)"))

    def _fork_response(self, leg: Leg, resp: Response) -> Step | None:
        status = resp.status
        if leg.settled:
            if 200 <= status < 300:
                self._ack_and_bye(leg, resp)  # answered after we gave up on it
            return None
        if status < 200:
            if status == 100:
                return None
            leg.state = ForkState.EARLY
            if leg.cancel is CancelState.WANTED:
                self._send_cancel(leg)
                return None
            if self.state is not CallState.DIALING or leg.cancel is not CancelState.NONE:
                return None
            if not self.connecting_sent:
                self.connecting_sent = True
                self._emit("connecting", call=self.id, channel=ONE.name)
            if not self.answered_by_us:
                return self._provisional_to_zero(status, resp)
            return None
        if status < 300:
            return self._fork_answered(leg, resp)
        # a final failure
        if status == 422 and leg.cancel is CancelState.NONE and self._retry_with_interval(leg, resp):
            return None
        if status in (401, 407) and leg.auth is not None and leg.cancel is CancelState.NONE:
            if self._retry_with_auth(leg, resp):
                return None
        leg.state = ForkState.FAILED
        self._fork_failed(leg, Failure(status, resp.reason or "Failed"))
        self._maybe_released()
        return None

    def _fork_answered(self, leg: Leg, resp: Response) -> Step:
        leg.state = ForkState.ANSWERED
        leg.answer_sdp = resp.body
        leg.timer = as_uac(resp)
        leg.allow_update = allows(resp, "UPDATE") is True
        leg.allow_info = allows(resp, "INFO")
        invite = leg.invite
        assert invite is not None
        leg.dialog = Dialog.as_uac(invite, resp)
        cseq = invite.cseq[0]
        # late offer (the caller's INVITE had no SDP): this 2xx carries the offer, and the answer
        # comes in the caller's ACK, so our ACK to this leg waits for it
        late_offer = not invite.body and bool(resp.body)
        if self.state is not CallState.DIALING or leg.cancel is not CancelState.NONE or leg.attempt != self.attempt:
            self._send_ack(leg, cseq)
            self._bye(leg)
            self._maybe_released()
            return
        if late_offer and self.answered_by_us:
            # the caller, answered by us already, can give no answer to this leg's offer
            self._send_ack(leg, cseq)
            self._bye(leg)
            self._fork_failed(leg, Failure(488, "Not Acceptable Here (no SDP to answer the offer with)"))
            return
        if late_offer:
            leg.ack_waiting = cseq
        else:
            self._send_ack(leg, cseq)
        self._won(leg)
        answer = resp.body
        if answer and self.has_media:
            try:
                answer = yield ("anchor", ONE.value, answer)
            except SdpError:
                self._bye(leg)
                self._fail_zero(502, "Bad Gateway (unreadable SDP answer)")
                return
        if self.state is not CallState.DIALING:
            return
        if not self.answered_by_us:
            self._answer_zero(answer)
        self._move(CallState.CONNECTED)
        self.answered_at = self.now
        self._emit("connected", call=self.id, peer_type=leg.peer_type, peer=leg.peer)
        self._arm_session(leg)
        if self.max_duration and not self.answered_by_us:  # else armed at our own answer (machine._move)
            self._out.append(SetTimer(MAX_DURATION, self.now + self.max_duration))
        if self.rtp_timeout:
            self._out.append(SetTimer(RTP_CHECK, self.now + self.rtp_timeout))
        if self.on_result is not None:
            cb, self.on_result = self.on_result, None
            self._out.append(Notify(cb, (None,)))

    def _fork_timeout(self, leg: Leg) -> None:
        if leg.settled:
            return
        leg.state = ForkState.FAILED
        self._fork_failed(leg, Failure(408, "Request Timeout"))
        self._maybe_released()

    def _retry_with_interval(self, leg: Leg, resp: Response) -> bool:
        """A 422 to a fork's INVITE: once, again with the Session-Expires its Min-SE asks (RFC 4028 7.4)."""
        needed = min_se(resp)
        old = leg.invite
        if leg.timer_retried or needed <= 0 or old is None:
            return False
        leg.timer_retried = True
        h = old.headers.copy()
        h.remove("via")
        h.add("Via", f"{self.env.via(leg.transport)};branch={new_branch()}", first=True)
        h.set("CSeq", f"{old.cseq[0] + 1} INVITE")
        h.set("Session-Expires", str(needed))
        h.set("Min-SE", str(needed))
        leg.invite = Request("INVITE", old.uri, h, old.body)
        leg.state = ForkState.CALLING
        self._out.append(SendRequest(leg.invite, leg.address, leg.transport, leg.index))
        return True

    def _retry_with_auth(self, leg: Leg, resp: Response, tag: Any = None) -> bool:
        header = "www-authenticate" if resp.status == 401 else "proxy-authenticate"
        challenge = select_challenge(resp.headers.get_all(header))
        if challenge is None or leg.auth is None or leg.invite is None:
            return False
        if not leg.auth.should_retry(challenge, sent_credentials=leg.sent_credentials):
            return False
        old = leg.invite
        h = old.headers.copy()
        h.remove("via")
        h.add("Via", f"{self.env.via(leg.transport)};branch={new_branch()}", first=True)
        number = old.cseq[0] + 1
        h.set("CSeq", f"{number} INVITE")
        name = "Authorization" if resp.status == 401 else "Proxy-Authorization"
        try:
            h.set(name, leg.auth.authorize(challenge, "INVITE", old.uri))
        except DigestError:
            return False
        leg.invite = Request("INVITE", old.uri, h, old.body)
        leg.sent_credentials = True
        leg.state = ForkState.CALLING
        self._out.append(SendRequest(leg.invite, leg.address, leg.transport, leg.index if tag is None else tag))
        return True

    def _fork_failed(self, leg: Leg, failure: Failure) -> None:
        if leg.attempt != self.attempt or leg.cancel is not CancelState.NONE:
            return  # a fork we gave up (another answered, or no answer in time) ending late
        self.last_failure = failure
        if self.state is not CallState.DIALING:
            return
        if any(not f.settled and f.attempt == self.attempt and f.cancel is CancelState.NONE for f in self.forks):
            return  # another fork may still answer
        self._attempt_failed(failure)

    def _attempt_failed(self, failure: Failure) -> None:
        self._out.append(CancelTimer(NO_ANSWER))
        self.last_failure = failure
        self._move(CallState.ANSWERED if self.answered_by_us else CallState.ROUTING)
        if self.on_result is not None:
            cb, self.on_result = self.on_result, None
            self._out.append(Notify(cb, (failure,)))
        else:
            self._fail_zero(failure.code, failure.reason)

    def _won(self, leg: Leg) -> None:
        self._out.append(CancelTimer(NO_ANSWER))
        self.one = leg
        if leg.peer_type == "USER" and self.has_media:
            self._out.append(MediaExpect(ONE.value, leg.address[0]))  # a phone's RTP may come from its NAT
        for other in self.forks:
            if other is not leg:
                self._cancel_fork(other)

    def _provisional_to_zero(self, status: int, resp: Response) -> Step:
        body = b""
        if resp.body and self.has_media and status == 183:
            try:
                body = yield ("anchor", ONE.value, resp.body)
            except SdpError:
                body = b""
        if status == 183 and not body:
            status = 180
        if self.txn is None or self.txn.state is not State.PROCEEDING or self.state is not CallState.DIALING:
            return
        r = create_response(self.invite, status, "Ringing" if status == 180 else resp.reason,
                            to_tag=self.local_tag, headers=[("Contact", self.env.contact(self.zero.transport))],
                            body=body, content_type="application/sdp" if body else None)
        self._out.append(Respond(self.txn, r))

    def _on_stray_response(self, inp: StrayResponseIn) -> None:
        """A 2xx outside its transaction: the same dialog's retransmission gets the same ACK again
        (for the CSeq it answers); another dialog forked from our INVITE gets its own ACK, then BYE
        (RFC 3261 13.2.2.4)."""
        resp = inp.response
        call_id = resp.call_id
        if call_id == self.invite.call_id and (resp.from_tag or "") == self.local_tag:
            # a retransmitted 2xx to a refresh re-INVITE of ours on channel ZERO: the same ACK again
            zack = self.zero.acks.get(resp.cseq[0]) if self.zero.acks else None
            if zack is not None:
                dest, transport = self._next_hop(self.zero)
                self._out.append(SendStateless(zack, dest, transport))
            return
        leg = self.one if self.one is not None and self.one.invite is not None \
            and self.one.invite.call_id == call_id else None
        if leg is None:
            leg = next((f for f in (*self.forks, *self.transfer_forks, *self.zero_forks)
                        if f.invite is not None and f.invite.call_id == call_id), None)
        if leg is None or leg.invite is None:
            return
        to_tag = resp.to_tag or ""
        if leg.dialog is not None and leg.dialog.remote_tag == to_tag:
            ack = leg.acks.get(resp.cseq[0]) if leg.acks else None
            if ack is not None:
                dest, transport = self._next_hop(leg)
                self._out.append(SendStateless(ack, dest, transport))
            return
        if resp.cseq[0] != leg.invite.cseq[0]:
            return
        extra = leg.extra_dialogs if leg.extra_dialogs is not None else {}
        leg.extra_dialogs = extra
        ack = extra.get(to_tag)
        dialog = Dialog.as_uac(leg.invite, resp)
        dest, transport = self._next_hop(leg, dialog)
        if ack is not None:
            self._out.append(SendStateless(ack, dest, transport))
            return
        ack = dialog.create_request("ACK", self.env.via(transport), cseq=leg.invite.cseq[0])
        extra[to_tag] = ack
        self._out.append(SendStateless(ack, dest, transport))
        bye = dialog.create_request("BYE", self.env.via(transport))
        self._out.append(SendRequest(bye, dest, transport, ("other_dialog",)))

    def _answer_zero(self, body: bytes) -> None:
        zero = self.zero
        headers = [("Contact", self.env.contact(zero.transport)), ("Allow", CONNECTED_METHODS)]
        zero.timer, timer_headers = as_uas(self.invite)
        headers += timer_headers
        if body:
            zero.local_sdp = body
        r = create_response(self.invite, 200, "OK", to_tag=self.local_tag, headers=headers, body=body,
                            content_type="application/sdp" if body else None)
        zero.dialog = Dialog.as_uas(self.invite, self.local_tag)
        self._out.append(IndexDialog(self.invite.call_id, self.local_tag, ZERO))
        self._send_2xx(zero, self.txn, r)
        self._arm_session(zero)

    def _fail_zero(self, code: int, reason: str, headers: list[tuple[str, str]] | None = None) -> None:
        """Refuse the call on channel ZERO with a final response, then close it (or, when we answered
        ZERO ourselves, hang it up: a final response can no longer be sent)."""
        if self.state is CallState.ORIGINATING:
            self._dial_failed(Failure(code, reason))  # originate.py: ZERO has not answered yet
            return
        if self.answered_by_us and self.state in (CallState.ANSWERED, CallState.DIALING):
            if self.originated:  # the plan failed after ZERO answered: its BYE says why (originate.py)
                self.last_failure = Failure(code, reason)
                self.hangup_channel = ONE if self.one is None and self.forks else None
                self._emit("hangup", call=self.id, channel=self.hangup_channel.name if self.hangup_channel else None,
                           reason=f"{code} {reason}")
            self._end(bye_zero=True, bye_one=False)
            return
        if self.state in (CallState.CLOSED, CallState.CONNECTED, CallState.ENDING):
            return
        self._out.append(CancelTimer(NO_ANSWER))
        for leg in self.forks:
            self._cancel_fork(leg)
        if self.one is not None:
            self._bye(self.one)  # it answered, but the call failed before ZERO could be answered
        if self.txn is not None and self.txn.state is State.PROCEEDING:
            self._out.append(Respond(self.txn, create_response(self.invite, code, reason, to_tag=self.local_tag,
                                                               headers=headers)))
        self._emit("failed", call=self.id, code=code, reason=reason)
        self._close(f"{code} {reason}")

    def _no_answer(self) -> None:
        if self.state is not CallState.DIALING:
            return
        for leg in self.forks:
            self._cancel_fork(leg)
        self._attempt_failed(Failure(480, "Temporarily Unavailable (no answer)"))
