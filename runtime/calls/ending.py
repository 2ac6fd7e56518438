"""Ending a call and its legs, each way idempotent: CANCEL (ours, one per fork after a provisional
response; theirs, answered with our To tag), BYE (one per dialog, waiting for the ACK of our 2xx,
answered with the line's credentials once per nonce), our 2xx retransmitted until its ACK (RFC 3261
13.3.1.4), the ACKs we send, RTP inactivity, a failed step, and close/release.

A mixin of CallMachine (machine.py): it uses the machine's state and the other jobs' methods."""

from __future__ import annotations

import logging

from ..events import logfmt_value as _logfmt
from ..sip.dialog import Dialog
from ..sip.digest import DigestError, select_challenge
from ..sip.message import Headers, Request, Response, create_response
from ..sip.transaction import ServerTransaction, State
from .io import (
    AckIn,
    ActionFailed,
    CancelIn,
    CancelTimer,
    Closed,
    Released,
    Respond,
    SendRequest,
    SendStateless,
    SetTimer,
)
from .legs import Failure, Leg
from .names import (
    LINGER,
    NO_ANSWER,
    RESEND_2XX,
    RTP_CHECK,
    ZERO,
    Step,
)
from .states import (
    ByeState,
    CallState,
    CancelState,
    ForkState,
    InviteState,
    TransferState,
)

log = logging.getLogger("callflow.calls")


class Ending:
    """CANCEL, BYE, 2xx until ACK, ACKs, closing and releasing the call."""

    def _send_2xx(self, leg: Leg, txn: ServerTransaction, resp: Response) -> None:
        """A 2xx to an INVITE (initial or re-INVITE) on `leg`: resent from T1, doubling to T2,
        until its ACK, for 64*T1 (RFC 3261 13.3.1.4)."""
        self._out.append(Respond(txn, resp))
        leg.final = resp
        leg.final_cseq = txn.request.cseq[0]
        leg.final_to = (txn.peer, txn.transport)
        leg.final_interval = self.t1
        leg.final_deadline = self.now + 64 * self.t1
        leg.invite_state = InviteState.WAITING_ACK
        self._out.append(SetTimer(RESEND_2XX[leg.channel], self.now + self.t1))

    def _resend_2xx(self, leg: Leg) -> None:
        resp = leg.final
        if resp is None or leg.final_to is None or self.state is CallState.CLOSED:
            return
        if self.now >= leg.final_deadline:
            log.warning("call=%s no ACK for our 200 OK on channel %s", self.id, leg.channel.name)
            leg.final = None
            leg.invite_state = InviteState.IDLE
            if leg.bye is ByeState.WAITING_ACK:  # RFC 3261 15: the BYE goes now, ACK or not
                leg.bye = ByeState.NONE
                self._bye(leg)
                return
            if self.state in (CallState.ENDING,):
                return
            self.hangup_channel = leg.channel
            self._emit("hangup", call=self.id, channel=leg.channel.name, reason="no ACK")
            self._end(bye_zero=True, bye_one=True)
            return
        dest, transport = leg.final_to
        self._out.append(SendStateless(resp, dest, transport))
        leg.final_interval = min(leg.final_interval * 2, self.t2)
        self._out.append(SetTimer(RESEND_2XX[leg.channel], self.now + leg.final_interval))

    def _on_ack(self, inp: AckIn) -> Step | None:
        """An ACK for our 2xx: stop resending it; a BYE that waited for it goes now; with a late
        offer, its answer goes on to the other leg in our ACK there."""
        req = inp.request
        leg = self._leg(inp.channel, req.call_id)
        if leg is None:
            return None
        if leg.final is not None and req.cseq[0] == leg.final_cseq:
            leg.final = None
            leg.invite_state = InviteState.IDLE
            self._out.append(CancelTimer(RESEND_2XX[leg.channel]))
            if leg.bye is ByeState.WAITING_ACK:
                leg.bye = ByeState.NONE
                self._bye(leg)
        if inp.channel is ZERO and self.pending_play is not None:
            return self._play_after_ack(req)
        other = self.one if inp.channel is ZERO else self.zero
        if other is not None and other.ack_waiting is not None:
            return self._ack_with_answer(inp.channel, other, req.body)
        return None

    def _on_cancel(self, inp: CancelIn) -> None:
        # our 200 to the CANCEL carries the To tag we gave the INVITE's responses (RFC 3261 9.2)
        self._out.append(Respond(inp.txn, create_response(inp.txn.request, 200, "OK", to_tag=self.local_tag)))
        if self.state in (CallState.CONNECTED, CallState.ENDING, CallState.CLOSED, CallState.ANSWERED) \
                or self.answered_by_us:
            return
        if self.txn is not None and self.txn.state is State.PROCEEDING:
            self._out.append(Respond(self.txn, create_response(self.invite, 487, "Request Terminated",
                                                               to_tag=self.local_tag)))
        self._out.append(CancelTimer(NO_ANSWER))
        for leg in self.forks:
            self._cancel_fork(leg)
        self.hangup_channel = ZERO
        self._emit("hangup", call=self.id, channel=ZERO.name, reason="cancelled")
        self._close("cancelled")

    def _rtp_check(self) -> Step:
        if self.state is not CallState.CONNECTED or not self.rtp_timeout:
            return
        packets = yield ("packets",)
        if self.state is not CallState.CONNECTED:
            return
        if packets == self.rtp_seen:
            self._emit("hangup", call=self.id, channel=None,
                       reason=f"no RTP either way for {self.rtp_timeout:g} s")
            self._end(bye_zero=True, bye_one=True)
            return
        self.rtp_seen = packets
        self._out.append(SetTimer(RTP_CHECK, self.now + self.rtp_timeout))

    def _end(self, *, bye_zero: bool, bye_one: bool) -> None:
        if self.state is CallState.ENDING or self.state is CallState.CLOSED:
            return
        self._move(CallState.ENDING)
        self._out.append(CancelTimer(NO_ANSWER))
        for fork in self.forks:
            if fork is not self.one:
                self._cancel_fork(fork)  # ZERO answered by us hung up while ONE was still ringing
        for fork in self.transfer_forks:
            if fork is not self.one and fork is not self.zero:
                if fork.dialog is not None:
                    self._bye(fork)      # answered a transfer, not bridged yet
                else:
                    self._cancel_fork(fork)
        if self.transfer is not None and self.transfer.state in (TransferState.DIALING, TransferState.BRIDGING):
            self._transfer_move(self.transfer, TransferState.FAILED)
        self._stop_playing()
        one = self.one
        if one is not None and one.ack_waiting is not None and one.dialog is not None:
            cseq, one.ack_waiting = one.ack_waiting, None
            self._send_ack(one, cseq)  # a 2xx is ACKed before its dialog is ended
        zero = self.zero
        if zero.ack_waiting is not None and zero.dialog is not None:
            cseq, zero.ack_waiting = zero.ack_waiting, None
            self._send_ack(zero, cseq)
        if bye_zero:
            self._bye(zero)
        if bye_one and one is not None:
            self._bye(one)
        self._maybe_closed()

    def _bye(self, leg: Leg) -> None:
        """End `leg`'s dialog: one BYE per dialog whatever paths reach here; while our 2xx on it
        waits for its ACK, the BYE waits too (RFC 3261 15: until the ACK or the 2xx's timeout)."""
        if leg.bye is not ByeState.NONE or leg.dialog is None:
            return
        if leg.final is not None:
            leg.bye = ByeState.WAITING_ACK
            return
        self._send_bye(leg, None)

    def _send_bye(self, leg: Leg, credentials: tuple[str, str] | None) -> None:
        assert leg.dialog is not None
        leg.bye = ByeState.SENT
        dest, transport = self._next_hop(leg)
        bye = leg.dialog.create_request("BYE", self.env.via(transport), extra=[credentials] if credentials else None)
        self._out.append(SendRequest(bye, dest, transport, ("bye", self._leg_ref(leg))))

    def _leg_ref(self, leg: Leg) -> tuple[str, int]:
        """A name for `leg` that a request's tag can carry (no object: the tag outlives nothing)."""
        if leg is self.zero:
            return ("zero", 0)
        for pool, legs in (("fork", self.forks), ("transfer", self.transfer_forks), ("retired", self.retired),
                           ("originate", self.zero_forks)):
            for i, other in enumerate(legs):
                if other is leg:
                    return (pool, i)
        return ("none", 0)

    def _leg_at(self, ref: tuple[str, int]) -> Leg | None:
        pool, i = ref
        if pool == "zero":
            return self.zero
        legs = {"fork": self.forks, "transfer": self.transfer_forks, "retired": self.retired,
                "originate": self.zero_forks}.get(pool)
        return legs[i] if legs is not None and 0 <= i < len(legs) else None

    def _bye_response(self, ref: tuple[str, int], resp: Response | None) -> None:
        leg = self._leg_at(ref)
        if leg is None or leg.bye is not ByeState.SENT:
            return
        if resp is not None:
            if resp.status < 200:
                return
            if resp.status in (401, 407) and self._bye_with_credentials(leg, resp):
                return
        leg.bye = ByeState.DONE
        self._maybe_closed()
        self._maybe_released()

    def _bye_with_credentials(self, leg: Leg, resp: Response) -> bool:
        """A line's provider challenged our BYE: answer once per nonce with the line's credentials."""
        if leg.auth is None or leg.dialog is None:
            return False
        header = "www-authenticate" if resp.status == 401 else "proxy-authenticate"
        challenge = select_challenge(resp.headers.get_all(header))
        if challenge is None or challenge.nonce == leg.bye_auth_nonce:
            return False
        leg.bye_auth_nonce = challenge.nonce
        name = "Authorization" if resp.status == 401 else "Proxy-Authorization"
        try:
            value = leg.auth.authorize(challenge, "BYE", leg.dialog.remote_target)
        except DigestError:
            return False
        self._send_bye(leg, (name, value))
        return True

    def _maybe_closed(self) -> None:
        if self.state is not CallState.ENDING:
            return
        for leg in (self.zero, self.one):
            if leg is not None and leg.bye in (ByeState.SENT, ByeState.WAITING_ACK):
                return
        self._close("hangup")

    def _ack_and_bye(self, leg: Leg, resp: Response) -> None:
        """A fork that answered after we gave up on it: ACK its 2xx in its dialog, then end it."""
        invite = leg.invite
        assert invite is not None
        if leg.dialog is None:
            leg.dialog = Dialog.as_uac(invite, resp)
            self._send_ack(leg, invite.cseq[0])
            self._bye(leg)

    def _send_ack(self, leg: Leg, cseq: int, body: bytes = b"") -> None:
        """ACK a 2xx on `leg` for the INVITE with `cseq`; kept so a retransmitted 2xx gets it again."""
        assert leg.dialog is not None
        dest, transport = self._next_hop(leg)
        ack = leg.dialog.create_request("ACK", self.env.via(transport), cseq=cseq, body=body)
        if leg.acks is None:
            leg.acks = {}
        leg.acks[cseq] = ack
        self._out.append(SendStateless(ack, dest, transport))

    def _cancel_fork(self, leg: Leg) -> None:
        """Give up a fork: one CANCEL per fork, and only after a provisional response (RFC 3261 9.1)."""
        if leg.cancel is not CancelState.NONE or leg.settled:
            return
        if leg.state is ForkState.EARLY:
            self._send_cancel(leg)
        else:
            leg.cancel = CancelState.WANTED

    def _send_cancel(self, leg: Leg) -> None:
        leg.cancel = CancelState.SENT
        inv = leg.invite
        assert inv is not None
        h = Headers()
        h.add("Via", inv.headers.values("via")[0])
        for route in inv.headers.get_all("route"):
            h.add("Route", route)
        h.add("Max-Forwards", "70")
        h.add("From", inv.headers.get("from") or "")
        h.add("To", inv.headers.get("to") or "")
        h.add("Call-ID", inv.call_id)
        h.add("CSeq", f"{inv.cseq[0]} CANCEL")
        h.add("Content-Length", "0")
        self._out.append(SendRequest(Request("CANCEL", inv.uri, h), leg.address, leg.transport, ("cancel",)))

    def _internal_failure(self) -> None:
        state = self.state
        if state is CallState.ORIGINATING:
            self._dial_failed(Failure(500, "Server Internal Error"))
            return
        if state in (CallState.NEW, CallState.ROUTING, CallState.DIALING):
            self._fail_zero(500, "Server Internal Error")
        elif state in (CallState.CONNECTED, CallState.ANSWERED):
            self._emit("hangup", call=self.id, channel=None, reason="500 Server Internal Error")
            self._end(bye_zero=True, bye_one=True)
        elif state is CallState.ENDING:
            self._close("internal error")

    def _on_action_failed(self, inp: ActionFailed) -> None:
        log.error("event=call_error call=%s step=action error=%s", self.id, _logfmt(repr(inp.error)))
        self._internal_failure()

    def _close(self, reason: str) -> None:
        if self.state is CallState.CLOSED:
            return
        self._move(CallState.CLOSED)
        self._stop_playing()
        self.on_result = None
        self.pending_play = None
        self.relays.clear()
        self._out.append(Closed(reason))  # also cancels every timer the call has armed
        if self._outstanding():
            # a cancelled fork may still answer: its 2xx is ACKed and BYEd, for 64*T1 at most
            self._out.append(SetTimer(LINGER, self.now + 64 * self.t1))
        else:
            self._out.append(Released())

    def _outstanding(self) -> bool:
        return any(not f.settled and f.cancel is not CancelState.NONE
                   for f in (*self.forks, *self.transfer_forks, *self.zero_forks))

    def _maybe_released(self) -> None:
        if self.state is CallState.CLOSED and not self._outstanding():
            self._out.append(CancelTimer(LINGER))
            self._out.append(Released())
