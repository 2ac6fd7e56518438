"""Transfer carried out by us (RFC 3515 REFER, 3891 Replaces, 3892 Referred-By, 3420 sipfrag):
a REFER from a user's phone, blind or attended; the target routed like a new call from that user,
the remaining party bridged to the new leg, NOTIFYs reporting progress to the transferor.

A mixin of CallMachine (machine.py): it uses the machine's state and the other jobs' methods."""

from __future__ import annotations

import logging

from ..media.base import MediaError
from ..sip.dialog import Dialog
from ..sip.errors import SipError
from ..sip.message import Response, create_response
from ..sip.sdp import SdpError
from ..sip.transaction import ServerTransaction
from ..sip.uri import NameAddr, unescape
from .io import (
    CancelTimer,
    Emit,
    IndexDialog,
    MediaExpect,
    Respond,
    SendRequest,
    SetTimer,
    TransferIn,
)
from .legs import Failure, Leg, Target
from .names import (
    ONE,
    RESEND_2XX,
    SE_EXPIRE,
    SE_REFRESH,
    TRANSFER_NO_ANSWER,
    TRANSFER_TIMEOUT,
    TRANSFERRED,
    ZERO,
    Step,
)
from .session_timer import allows, as_uac
from .states import (
    TRANSFER_TRANSITIONS,
    ByeState,
    CallState,
    CancelState,
    Channel,
    ForkState,
    IllegalMove,
    InviteState,
    TransferState,
)

log = logging.getLogger("callflow.calls")


class Transfer:
    """A transfer under way (RFC 3515 REFER from a user's phone on `channel`, carried out by us)."""

    __slots__ = ("channel", "leg", "transferor", "target", "kind", "state", "attempt", "ringing", "transferor_gone",
                 "notify")

    def __init__(self, leg: Leg, transferor: str, target: str, kind: str, attempt: int, notify: bool) -> None:
        self.channel = leg.channel        # the transferor's channel: its leg is the one replaced
        self.leg = leg                    # the transferor's leg (NOTIFYs go there, then its BYE)
        self.transferor = transferor
        self.target = target
        self.kind = kind                  # "blind" | "attended"
        self.state = TransferState.DIALING
        self.attempt = attempt            # the transfer_forks of this transfer carry it
        self.ringing = False
        self.transferor_gone = False      # it sent BYE before the outcome (a blind transfer may)
        self.notify = notify              # Refer-Sub: false (RFC 4488) asks for no NOTIFY


class Transfers:
    """Blind and attended transfer, and handing a leg over to another call's attended transfer."""

    def _on_refer(self, leg: Leg, txn: ServerTransaction) -> Step | None:
        """A user's phone asks to transfer the other party to the Refer-To target: 202, then the
        target is routed by the program as a new call from that user, rung, and on its answer the
        remaining party is bridged to it and the transferor's leg ended; NOTIFYs report each step."""
        req = txn.request
        if self.transfer is not None and self.transfer.state in (TransferState.DIALING, TransferState.BRIDGING):
            self._out.append(Respond(txn, create_response(req, 491, "Request Pending (a transfer is under way)")))
            return None
        refer_to = req.headers.get("refer-to")
        try:
            uri = NameAddr.parse(refer_to or "").uri
        except (SipError, ValueError):
            uri = None
        target = unescape(uri.user or "") if uri is not None else ""
        if uri is None or not target:
            self._out.append(Respond(txn, create_response(req, 400, "Bad Request (Refer-To names no one to call)")))
            return None
        replaces = _replaces(uri.headers)
        kind = "attended" if replaces is not None else "blind"
        notify = (req.headers.get("refer-sub") or "true").strip().lower() != "false"
        self._out.append(Respond(txn, create_response(req, 202, "Accepted", headers=[
            ("Contact", self.env.contact(leg.transport))] + ([("Refer-Sub", "false")] if not notify else []))))
        self.attempt += 1
        transfer = Transfer(leg, leg.peer or "", target, kind, self.attempt, notify)
        self.transfer = transfer
        self._transfer_step(transfer, "trying")
        self._notify(transfer, 100, "Trying")
        if replaces is not None:
            return self._attended(transfer, *replaces)
        targets, failure = self.env.route_transfer(self, transfer.transferor, target)
        if failure is not None or not targets:
            self._transfer_failed(transfer, failure or Failure(404, "Not Found (no route)"))
            return None
        return self._dial_transfer(transfer, targets)

    def _on_transfer(self, inp: TransferIn) -> Step | None:
        """The program transfers the party on `inp.channel` away (blind): the other party is bridged to
        the first of `inp.targets` to answer; on failure the call goes on as it was."""
        leg = self.zero if inp.channel is ZERO else self.one
        if self.state is not CallState.CONNECTED or leg is None or leg.dialog is None \
                or (self.transfer is not None
                    and self.transfer.state in (TransferState.DIALING, TransferState.BRIDGING)):
            log.warning("call=%s transfer refused: the call is %s%s", self.id, self.state.value,
                        ", a transfer is under way" if self.transfer is not None else "")
            self._out.append(Emit("transfer", {"call": self.id, "transferor": leg.peer if leg else "", "kind": "blind",
                                               "target": inp.label, "channel": inp.channel.name, "outcome": "failed",
                                               "reason": f"481 the call is not connected ({self.state.value})"
                                               if self.state is not CallState.CONNECTED
                                               else "491 a transfer is under way"}))
            return None
        self.attempt += 1
        transfer = Transfer(leg, leg.peer or "", inp.label, "blind", self.attempt, notify=False)
        self.transfer = transfer
        self._transfer_step(transfer, "trying")
        return self._dial_transfer(transfer, inp.targets)

    def _dial_transfer(self, transfer: Transfer, targets: list[Target]) -> Step:
        offer = b""
        if self.has_media:
            try:
                offer = yield ("offer", transfer.channel.value)  # our relay's side the new leg joins
            except MediaError as exc:
                self._transfer_failed(transfer, Failure(500, f"Server Internal Error (media: {exc})"))
                return
        if transfer.state is not TransferState.DIALING or self.state is not CallState.CONNECTED:
            return
        failures: list[Failure] = []
        started = 0
        for target in targets:
            legs, failure = self.env.build_forks(self, target, offer, self.now)
            if failure is not None:
                failures.append(failure)
            for fork in legs:
                fork.channel = transfer.channel
                fork.attempt = transfer.attempt
                fork.index = -1 if transfer.channel is ZERO else len(self.forks)
                fork.local_sdp = offer
                number = len(self.transfer_forks)
                self.transfer_forks.append(fork)
                started += 1
                invite = fork.invite
                assert invite is not None
                self._out.append(IndexDialog(invite.call_id, invite.from_tag or "", transfer.channel))
                self._out.append(SendRequest(invite, fork.address, fork.transport, ("transfer", number)))
        if not started:
            self._transfer_failed(transfer, failures[-1] if failures else Failure(480, "Temporarily Unavailable"))
            return
        self._out.append(SetTimer(TRANSFER_NO_ANSWER, self.now + TRANSFER_TIMEOUT))

    def _transfer_response(self, number: int, resp: Response | None) -> Step | None:
        if not 0 <= number < len(self.transfer_forks):
            return None
        fork = self.transfer_forks[number]
        transfer = self.transfer
        live = transfer is not None and transfer.attempt == fork.attempt and transfer.state is TransferState.DIALING \
            and self.state is CallState.CONNECTED and fork.cancel is CancelState.NONE
        if resp is None:
            if not fork.settled:
                fork.state = ForkState.FAILED
                if live and transfer is not None:
                    self._transfer_fork_failed(transfer, Failure(408, "Request Timeout"))
            self._maybe_released()
            return None
        status = resp.status
        if fork.settled:
            if 200 <= status < 300:
                self._ack_and_bye(fork, resp)
            return None
        if status < 200:
            if status == 100:
                return None
            fork.state = ForkState.EARLY
            if fork.cancel is CancelState.WANTED:
                self._send_cancel(fork)
            elif live and transfer is not None and not transfer.ringing:
                transfer.ringing = True
                self._transfer_step(transfer, "ringing")
                self._notify(transfer, 180, "Ringing")
            return None
        if status < 300:
            fork.state = ForkState.ANSWERED
            fork.dialog = Dialog.as_uac(fork.invite, resp)  # type: ignore[arg-type]
            self._send_ack(fork, resp.cseq[0])
            if not live or transfer is None:
                self._bye(fork)
                self._maybe_released()
                return None
            fork.timer = as_uac(resp)
            fork.allow_update = allows(resp, "UPDATE") is True
            fork.answer_sdp = resp.body
            for other in self.transfer_forks:
                if other is not fork and other.attempt == fork.attempt:
                    self._cancel_fork(other)
            self._transfer_move(transfer, TransferState.BRIDGING)
            self._out.append(CancelTimer(TRANSFER_NO_ANSWER))
            return self._bridge(transfer, fork, resp.body)
        if status in (401, 407) and fork.auth is not None and fork.cancel is CancelState.NONE \
                and self._retry_with_auth(fork, resp, ("transfer", number)):
            return None
        fork.state = ForkState.FAILED
        if live and transfer is not None:
            self._transfer_fork_failed(transfer, Failure(status, resp.reason or "Failed"))
        self._maybe_released()
        return None

    def _transfer_fork_failed(self, transfer: Transfer, failure: Failure) -> None:
        if any(not f.settled and f.attempt == transfer.attempt and f.cancel is CancelState.NONE
               for f in self.transfer_forks):
            return  # another of the target's phones may still answer
        self._transfer_failed(transfer, failure)

    def _bridge(self, transfer: Transfer, fork: Leg, answer: bytes) -> Step:
        """The new leg answered: it replaces the transferor's leg, the remaining party is re-INVITEd
        with the new media, the transferor hears 200 in a NOTIFY and its leg is ended."""
        channel = transfer.channel
        towards_remaining = b""
        if answer and self.has_media:
            try:
                towards_remaining = yield ("anchor", channel.value, answer)
            except SdpError:
                towards_remaining = b""
        if self.state is not CallState.CONNECTED or transfer.state is not TransferState.BRIDGING:
            self._bye(fork)
            return
        self._replace_leg(transfer, fork)
        self._transfer_done(transfer, fork, towards_remaining)

    def _replace_leg(self, transfer: Transfer, new: Leg) -> None:
        """`new` takes the transferor's place on its channel; the transferor's leg is retired."""
        channel = transfer.channel
        old = transfer.leg
        if channel is ZERO:
            self.zero = new
        else:
            self.one = new
        self.retired.append(old)
        if old.final is not None:
            old.final = None
            self._out.append(CancelTimer(RESEND_2XX[channel]))
        if old.timer_armed:  # the transferor's session timer goes with its leg
            old.timer_armed = False
            self._out.append(CancelTimer(SE_REFRESH[channel]))
            self._out.append(CancelTimer(SE_EXPIRE[channel]))
        if new.peer_type == "USER" and self.has_media:
            self._out.append(MediaExpect(channel.value, new.address[0]))

    def _transfer_done(self, transfer: Transfer, new: Leg, towards_remaining: bytes) -> None:
        """The transferor hears 200 and its leg is ended; the remaining party is re-INVITEd with the
        media of the new leg (its SDP answer anchored on the transferor's channel)."""
        old = transfer.leg
        self._notify(transfer, 200, "OK")
        if not transfer.transferor_gone and old.bye is ByeState.NONE and old.dialog is not None:
            self._send_bye(old, None)
            # the transferor's leg ends (the call goes on with the new party): a hang-up of that channel
            self._emit("hangup", call=self.id, channel=transfer.channel.name, reason=TRANSFERRED)
        self._transfer_move(transfer, TransferState.DONE)
        self._transfer_step(transfer, "connected")
        self._arm_session(new)
        remaining = self._other(new)
        if remaining is None or remaining.dialog is None or not towards_remaining:
            return
        if remaining.invite_state is not InviteState.IDLE:
            log.warning("call=%s transfer: the remaining party's re-INVITE is busy; media left as it was", self.id)
            return
        dest, transport = self._next_hop(remaining)
        reinvite = remaining.dialog.create_request("INVITE", self.env.via(transport),
                                                   contact=self.env.contact(transport), body=towards_remaining,
                                                   content_type="application/sdp")
        remaining.invite_state = InviteState.INVITE_SENT
        remaining.local_sdp = towards_remaining
        self._out.append(SendRequest(reinvite, dest, transport, ("bridge", remaining.channel)))

    def _attended(self, transfer: Transfer, call_id: str, to_tag: str, from_tag: str) -> Step:
        """REFER with Replaces (RFC 3891): the transferor's consultation call names its dialog with
        us; the other party of that call is taken over (that call ends the transferor's leg and
        closes), re-INVITEd onto this call's media, and bridged to the remaining party."""
        taken, failure = self.env.take_over(self, transfer.transferor, call_id, to_tag, from_tag)
        if taken is None or taken.dialog is None:
            self._transfer_failed(transfer, failure or Failure(481, "Call/Transaction Does Not Exist"))
            return
        self._transfer_move(transfer, TransferState.BRIDGING)
        channel = transfer.channel
        taken.channel = channel
        taken.index = -1
        taken.bye = ByeState.NONE
        taken.attempt = transfer.attempt
        self.transfer_forks.append(taken)  # so its BYE's answer finds it
        self._out.append(IndexDialog(taken.dialog.call_id, taken.dialog.local_tag, channel))
        self._replace_leg(transfer, taken)
        offer = b""
        if self.has_media:
            try:
                offer = yield ("offer", channel.value)
            except MediaError as exc:
                self._transfer_failed(transfer, Failure(500, f"Server Internal Error (media: {exc})"))
                return
        if self.state is not CallState.CONNECTED or transfer.state is not TransferState.BRIDGING:
            return
        dest, transport = self._next_hop(taken)
        reinvite = taken.dialog.create_request("INVITE", self.env.via(transport), contact=self.env.contact(transport),
                                               body=offer, content_type="application/sdp" if offer else None)
        taken.invite_state = InviteState.INVITE_SENT
        taken.local_sdp = offer
        self._out.append(SendRequest(reinvite, dest, transport, ("adopt", channel)))

    def _adopt_response(self, channel: Channel, resp: Response | None) -> Step | None:
        """The taken-over party answered our re-INVITE: its media is ours now; finish the transfer."""
        leg = self.zero if channel is ZERO else self.one
        transfer = self.transfer
        if leg is None or leg.dialog is None or (resp is not None and resp.status < 200):
            return None
        if leg.invite_state is InviteState.INVITE_SENT:
            leg.invite_state = InviteState.IDLE
        if resp is not None and resp.status < 300:
            leg.dialog.update_target(resp)
            self._send_ack(leg, resp.cseq[0])
        if transfer is None or transfer.state is not TransferState.BRIDGING or self.state is not CallState.CONNECTED:
            return None
        if resp is None or resp.status >= 300:
            code = resp.status if resp is not None else 408
            self._transfer_failed(transfer, Failure(code, "re-INVITE to the transfer's target failed"))
            self.hangup_channel = channel
            self._emit("hangup", call=self.id, channel=channel.name, reason=f"transfer failed: {code}")
            self._end(bye_zero=True, bye_one=True)
            self._bye(transfer.leg)
            return None
        return self._adopted(transfer, leg, resp.body)

    def _adopted(self, transfer: Transfer, leg: Leg, answer: bytes) -> Step:
        towards_remaining = b""
        if answer and self.has_media:
            try:
                towards_remaining = yield ("anchor", transfer.channel.value, answer)
            except SdpError:
                towards_remaining = b""
        if self.state is not CallState.CONNECTED or transfer.state is not TransferState.BRIDGING:
            return
        self._transfer_done(transfer, leg, towards_remaining)

    def hand_over(self, now: float, channel: Channel, user: str, remote_tag: str) -> tuple[Leg | None, Failure | None]:
        """An attended transfer elsewhere takes this call's other party: `channel`'s leg must be user
        `user`'s dialog with that remote tag (the Replaces of its REFER). That leg is ended (BYE,
        `hangup` reason `transferred`), the call closes, and the other leg is returned, its dialog
        untouched, for the transferring call to re-INVITE. Failure (403, 481, 491) when it cannot be."""
        self.now = now
        mine = self.zero if channel is ZERO else self.one
        if self.state is not CallState.CONNECTED or self._waiting is not None or mine is None or mine.dialog is None:
            return None, Failure(481, "Call/Transaction Does Not Exist (the consultation call is not connected)")
        if mine.peer_type != "USER" or mine.peer != user or mine.dialog.remote_tag != remote_tag:
            return None, Failure(403, "Forbidden (Replaces names a dialog of someone else)")
        other = self._other(mine)
        if other is None or other.dialog is None or other.invite_state is not InviteState.IDLE \
                or other.final is not None or other.ack_waiting is not None:
            return None, Failure(491, "Request Pending (the consultation call is busy)")
        other.bye = ByeState.DONE  # handed over: this call owes it no BYE
        self.hangup_channel = channel
        self._emit("hangup", call=self.id, channel=channel.name, reason=TRANSFERRED)
        self._end(bye_zero=channel is ZERO, bye_one=channel is ONE)
        return other, None

    def _bridge_response(self, channel: Channel, resp: Response | None) -> Step | None:
        leg = self.zero if channel is ZERO else self.one
        if leg is None or leg.dialog is None or (resp is not None and resp.status < 200):
            return None
        if leg.invite_state is InviteState.INVITE_SENT:
            leg.invite_state = InviteState.IDLE
        if resp is None or resp.status >= 300:
            log.warning("call=%s transfer: re-INVITE to channel %s failed (%s); media left as it was", self.id,
                        channel.name, resp.status if resp is not None else 408)
            return None
        leg.dialog.update_target(resp)
        self._send_ack(leg, resp.cseq[0])
        if resp.body and self.has_media and self.state is CallState.CONNECTED:
            return self._anchor_quietly(channel, resp.body)
        return None

    def _transfer_failed(self, transfer: Transfer, failure: Failure) -> None:
        """The target was refused or did not answer: the transferor hears the failure in a NOTIFY and
        keeps its call; one that has left already leaves the remaining party alone, so it ends."""
        if transfer.state in (TransferState.DONE, TransferState.FAILED):
            return
        self._transfer_move(transfer, TransferState.FAILED)
        self._out.append(CancelTimer(TRANSFER_NO_ANSWER))
        for fork in self.transfer_forks:
            if fork.attempt == transfer.attempt:
                self._cancel_fork(fork)
        self._transfer_step(transfer, "failed", reason=f"{failure.code} {failure.reason}")
        if transfer.transferor_gone:
            if self.state is CallState.CONNECTED:
                self.hangup_channel = transfer.channel
                self._emit("hangup", call=self.id, channel=transfer.channel.name,
                           reason=f"transfer failed: {failure.code} {failure.reason}")
                self._end(bye_zero=True, bye_one=True)
            return
        self._notify(transfer, failure.code, failure.reason)

    def _transfer_move(self, transfer: Transfer, to: TransferState) -> None:
        if to not in TRANSFER_TRANSITIONS[transfer.state]:
            log.error("event=illegal_move call=%s transfer from=%s to=%s", self.id, transfer.state.value, to.value)
            raise IllegalMove(f"call {self.id}: transfer {transfer.state.value} -> {to.value} is not a legal move")
        transfer.state = to

    def _transfer_step(self, transfer: Transfer, outcome: str, reason: str | None = None) -> None:
        fields: dict[str, object] = {"call": self.id, "transferor": transfer.transferor, "target": transfer.target,
                                     "kind": transfer.kind, "channel": transfer.channel.name, "outcome": outcome}
        if reason:
            fields["reason"] = reason
        self._out.append(Emit("transfer", fields))

    def _notify(self, transfer: Transfer, code: int, reason: str) -> None:
        """A NOTIFY of the refer subscription to the transferor: the new leg's progress as a sipfrag
        status line (RFC 3515 2.4.5); a final status ends the subscription."""
        if not transfer.notify or transfer.transferor_gone:
            return
        leg = transfer.leg
        if leg.dialog is None or leg.bye is not ByeState.NONE:
            return
        final = code >= 200
        state = "terminated;reason=noresource" if final else "active;expires=60"
        dest, transport = self._next_hop(leg)
        notify = leg.dialog.create_request("NOTIFY", self.env.via(transport), contact=self.env.contact(transport),
                                           body=f"SIP/2.0 {code} {reason}\r\n".encode(),
                                           content_type="message/sipfrag;version=2.0",
                                           extra=[("Event", "refer"), ("Subscription-State", state)])
        self._out.append(SendRequest(notify, dest, transport, ("notify",)))


def _replaces(uri_headers: str | None) -> tuple[str, str, str] | None:
    """(call-id, to-tag, from-tag) of a Replaces in a Refer-To URI's headers (RFC 3891 6.1), else None."""
    if not uri_headers:
        return None
    for part in uri_headers.split("&"):
        name, _, value = part.partition("=")
        if name.strip().lower() != "replaces":
            continue
        call_id, *params = unescape(value).split(";")
        tags = {}
        for p in params:
            k, _, v = p.partition("=")
            tags[k.strip().lower()] = v.strip()
        if call_id.strip() and "to-tag" in tags and "from-tag" in tags:
            return call_id.strip(), tags["to-tag"], tags["from-tag"]
    return None
