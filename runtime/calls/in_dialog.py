"""Requests inside an established call: BYE, re-INVITE and UPDATE both ways (late offer, glare
491, 500 + Retry-After), INFO, MESSAGE, NOTIFY... relayed to the other leg with the headers their
method needs, their responses relayed back, challenges meant for us answered with the line's
credentials, and where an in-dialog request goes (remote target, route set, RFC 3261 12.2).

A mixin of CallMachine (machine.py): it uses the machine's state and the other jobs' methods."""

from __future__ import annotations

import logging

from ..media.dtmf_info import is_dtmf_info
from ..sip.dialog import Dialog
from ..sip.digest import DigestError, select_challenge
from ..sip.errors import SipError
from ..sip.message import Request, Response, create_response
from ..sip.sdp import SdpError
from ..sip.transaction import Address, ServerTransaction, new_branch
from ..sip.uri import SipUri
from .io import (
    CancelTimer,
    RequestIn,
    Respond,
    SendRequest,
)
from .legs import Leg
from .names import (
    NO_HEADERS,
    ONE,
    RELAYED_HEADERS,
    RESEND_2XX,
    SE_EXPIRE,
    SE_REFRESH,
    TOO_SMALL,
    TRANSFERRED,
    ZERO,
    Step,
)
from .session_timer import MIN_SE, SessionTimer, allows, as_uas, session_expires
from .states import (
    ByeState,
    CallState,
    Channel,
    InviteState,
    TransferState,
)

log = logging.getLogger("callflow.calls")


class InDialog:
    """In-dialog requests and their responses, relayed between the legs."""

    def _on_request(self, inp: RequestIn) -> Step | None:
        txn = inp.txn
        req = txn.request
        channel = inp.channel
        leg = self._leg(channel, req.call_id)
        dialog = leg.dialog if leg is not None else None
        if leg is None or dialog is None:
            old = next((r for r in self.retired if r.dialog is not None and r.dialog.call_id == req.call_id), None)
            if old is not None and req.method == "BYE":  # a transferor hanging up after its transfer
                self._out.append(Respond(txn, create_response(req, 200, "OK")))
                if old.bye is not ByeState.SENT:
                    old.bye = ByeState.DONE
                return None
            self._out.append(Respond(txn, create_response(req, 481, "Call/Transaction Does Not Exist")))
            return None
        if not dialog.accepts(req):
            self._out.append(Respond(txn, create_response(req, 500, "Server Internal Error (CSeq out of order)",
                                                          headers=[("Retry-After", "1")])))
            return None
        if req.method == "BYE":
            self._out.append(Respond(txn, create_response(req, 200, "OK")))
            # the peer ended its dialog: no BYE of ours is owed there, and its 2xx needs no ACK
            if leg.final is not None:
                leg.final = None
                self._out.append(CancelTimer(RESEND_2XX[channel]))
            if leg.bye is not ByeState.SENT:
                leg.bye = ByeState.DONE
            transfer = self.transfer
            if transfer is not None and transfer.channel is channel and self.state is CallState.CONNECTED \
                    and transfer.state in (TransferState.DIALING, TransferState.BRIDGING):
                # the transferor leaves before the outcome (RFC 5589 6): the transfer goes on
                transfer.transferor_gone = True
                # its leg has ended (a hang-up, as every BYE on an answered call) but the call goes on
                # with the transfer: reason `transferred`, so the record and recordings are not ended
                self._emit("hangup", call=self.id, channel=channel.name, reason=TRANSFERRED)
                self._out.append(CancelTimer(SE_REFRESH[channel]))
                self._out.append(CancelTimer(SE_EXPIRE[channel]))
                return None
            if self.state in (CallState.ENDING, CallState.CLOSED):
                self._maybe_closed()
                return None
            self.hangup_channel = channel
            self._emit("hangup", call=self.id, channel=channel.name)  # reason: BYE (the default)
            self._end(bye_zero=channel is ONE, bye_one=channel is ZERO)
            return None
        if req.method in ("INVITE", "UPDATE"):
            se = session_expires(req)
            if se is not None and se.interval < MIN_SE:  # RFC 4028 9 (and 11: it holds in a dialog too)
                self._out.append(Respond(txn, create_response(req, 422, TOO_SMALL,
                                                              headers=[("Min-SE", str(MIN_SE))])))
                return None
            if req.method == "UPDATE" and not req.body and self._answers_refresh_itself(leg):
                self._answer_refresh(leg, txn)
                return None
        if req.method == "INFO" and is_dtmf_info(req.headers.get("content-type")) \
                and self.state in (CallState.ANSWERED, CallState.DIALING, CallState.CONNECTED):
            return self._on_dtmf_info(leg, txn)  # a key pressed (calls/dtmf.py), also while we play to it
        if self.state is not CallState.CONNECTED:
            if req.method == "INVITE":
                self._out.append(Respond(txn, create_response(req, 491, "Request Pending")))
            else:
                self._out.append(Respond(txn, create_response(req, 481, "Call/Transaction Does Not Exist")))
            return None
        if req.method == "INVITE":
            # RFC 3261 14.2: a re-INVITE while ours on this dialog is pending gets 491; while theirs
            # is still being answered, 500 with Retry-After
            if leg.invite_state is InviteState.INVITE_SENT:
                self._out.append(Respond(txn, create_response(req, 491, "Request Pending")))
                return None
            if leg.invite_state is InviteState.INVITE_RECEIVED:
                self._out.append(Respond(txn, create_response(req, 500, "Server Internal Error (re-INVITE pending)",
                                                              headers=[("Retry-After", "1")])))
                return None
        if req.method == "REFER" and leg.peer_type == "USER":
            return self._on_refer(leg, txn)  # a user's phone transfers: we carry it out (RFC 3515)
        return self._relay_request(leg, txn)

    def _relay_request(self, from_leg: Leg, txn: ServerTransaction) -> Step:
        """re-INVITE (hold, codec change), UPDATE, INFO (DTMF), MESSAGE...: pass to the other leg."""
        req = txn.request
        to_leg = self._other(from_leg)
        if to_leg is None or to_leg.dialog is None or self.state is not CallState.CONNECTED:
            self._out.append(Respond(txn, create_response(req, 481, "Call/Transaction Does Not Exist")))
            return
        method = req.method
        if method == "INVITE":
            from_leg.invite_state = InviteState.INVITE_RECEIVED
            to_leg.invite_state = InviteState.INVITE_SENT
        body = req.body
        if body and self.has_media and req.content_type == "application/sdp":
            try:
                body = yield ("anchor", from_leg.channel.value, body)
            except SdpError:
                if method == "INVITE":
                    from_leg.invite_state = to_leg.invite_state = InviteState.IDLE
                self._out.append(Respond(txn, create_response(req, 488, "Not Acceptable Here")))
                return
        if self.state is not CallState.CONNECTED or to_leg.dialog is None or from_leg.dialog is None:
            self._out.append(Respond(txn, create_response(req, 481, "Call/Transaction Does Not Exist")))
            return
        keep = RELAYED_HEADERS.get(method, NO_HEADERS)
        extra = [(n, v) for n, v in req.headers if n.lower() in keep] if keep else None
        if method in ("INVITE", "UPDATE"):  # only target refreshes move the remote target (12.2)
            from_leg.dialog.update_target(req)
            allow = allows(req, "UPDATE")
            if allow is not None:
                from_leg.allow_update = allow
            extra = (extra or []) + self._timer_request_headers(to_leg, req)
            if body:
                to_leg.local_sdp = body
        dest, transport = self._next_hop(to_leg)
        out = to_leg.dialog.create_request(method, self.env.via(transport), contact=self.env.contact(transport),
                                           body=body, content_type=req.headers.get("content-type"), extra=extra)
        tag = self._tag()
        self.relays[tag] = (txn, to_leg.channel, out, None)
        self._out.append(SendRequest(out, dest, transport, ("relay", tag)))

    def _relayed_response(self, tag: int, resp: Response | None) -> Step | None:
        entry = self.relays.get(tag)
        if entry is None:
            return None
        server_txn, to_channel, sent, nonce = entry
        req = server_txn.request
        to_leg = self.zero if to_channel is ZERO else self.one
        from_leg = self._other(to_leg) if to_leg is not None else None
        if resp is not None and resp.status in (401, 407) and to_leg is not None:
            # a challenge meant for us (the line's credentials), never for the phone: answered
            # once per nonce; one we cannot answer is not passed on either
            retry = self._with_credentials(to_leg, sent, resp, nonce)
            if retry is not None:
                request, nonce = retry
                self.relays[tag] = (server_txn, to_channel, request, nonce)
                dest, transport = self._next_hop(to_leg)
                self._out.append(SendRequest(request, dest, transport, ("relay", tag)))
                return None
            del self.relays[tag]
            self._reset_invite_states(req, to_leg, from_leg)
            self._out.append(Respond(server_txn, create_response(
                req, 403, f"Forbidden (the other side asked for credentials: {resp.status})")))
            return None
        if resp is None:
            del self.relays[tag]
            self._reset_invite_states(req, to_leg, from_leg)
            self._out.append(Respond(server_txn, create_response(req, 408, "Request Timeout")))
            return None
        if resp.status == 100:
            return None
        if resp.status >= 200:
            del self.relays[tag]
        if resp.status in (405, 501) and req.method == "UPDATE" and not req.body and to_leg is not None \
                and from_leg is not None and from_leg.dialog is not None:
            # the far leg does not do UPDATE: a session refresh must not end the call (RFC 4028 7.4)
            to_leg.allow_update = False
            self._answer_refresh(from_leg, server_txn)
            return None
        return self._relay_response(server_txn, to_leg, from_leg, resp)

    def _reset_invite_states(self, req: Request, to_leg: Leg | None, from_leg: Leg | None) -> None:
        if req.method != "INVITE":
            return
        for leg in (to_leg, from_leg):
            if leg is not None and leg.invite_state in (InviteState.INVITE_SENT, InviteState.INVITE_RECEIVED):
                leg.invite_state = InviteState.IDLE

    def _relay_response(self, server_txn: ServerTransaction, to_leg: Leg | None, from_leg: Leg | None,
                        resp: Response) -> Step:
        req = server_txn.request
        body = resp.body
        if body and self.has_media and resp.content_type == "application/sdp" and to_leg is not None:
            try:
                body = yield ("anchor", to_leg.channel.value, body)
            except SdpError:
                body = b""
        status = resp.status
        is_invite = req.method == "INVITE"
        if is_invite and status >= 200:
            self._reset_invite_states(req, to_leg, from_leg)
        refresh = req.method in ("INVITE", "UPDATE") and 200 <= status < 300
        if refresh and to_leg is not None and to_leg.dialog is not None:
            self._refreshed_by_response(to_leg, resp)
        if is_invite and 200 <= status < 300 and to_leg is not None and to_leg.dialog is not None:
            to_leg.dialog.update_target(resp)
            cseq = resp.cseq[0]
            if not req.body and resp.body:
                to_leg.ack_waiting = cseq  # late offer: the answer comes in the originator's ACK
            else:
                self._send_ack(to_leg, cseq)
        contact = self.env.contact(from_leg.transport if from_leg is not None else self.zero.transport)
        headers = [("Contact", contact)] if is_invite or (refresh and req.method == "UPDATE") else []
        timer: SessionTimer | None = None
        if refresh and from_leg is not None:
            timer, timer_headers = as_uas(req)
            headers += timer_headers
            if body:
                from_leg.local_sdp = body
        elif status == 422 and resp.headers.get("min-se"):
            headers.append(("Min-SE", resp.headers.get("min-se") or ""))
        out = create_response(req, status, resp.reason, headers=headers or None,
                              body=body, content_type=resp.headers.get("content-type") if body else None)
        if is_invite and 200 <= status < 300 and from_leg is not None:
            self._send_2xx(from_leg, server_txn, out)
        else:
            self._out.append(Respond(server_txn, out))
        if refresh and from_leg is not None:
            from_leg.timer = timer
            self._arm_session(from_leg)

    def _ack_with_answer(self, channel: Channel, to_leg: Leg, body: bytes) -> Step:
        cseq, to_leg.ack_waiting = to_leg.ack_waiting, None
        if body and self.has_media:
            try:
                body = yield ("anchor", channel.value, body)
            except SdpError:
                body = b""
        if cseq is not None and to_leg.dialog is not None:
            if body:
                to_leg.local_sdp = body
            self._send_ack(to_leg, cseq, body)

    def _with_credentials(self, leg: Leg, sent: Request, resp: Response,
                          answered_nonce: str | None) -> tuple[Request, str] | None:
        """`sent` again (new branch, next CSeq of the dialog) with the line's credentials for the
        challenge in `resp`; None when the leg has none or that nonce was answered already."""
        if leg.auth is None or leg.dialog is None:
            return None
        header = "www-authenticate" if resp.status == 401 else "proxy-authenticate"
        challenge = select_challenge(resp.headers.get_all(header))
        if challenge is None or challenge.nonce == answered_nonce:
            return None
        try:
            value = leg.auth.authorize(challenge, sent.method, sent.uri)
        except DigestError:
            return None
        h = sent.headers.copy()
        h.remove("via")
        _, transport = self._next_hop(leg)
        h.add("Via", f"{self.env.via(transport)};branch={new_branch()}", first=True)
        leg.dialog.local_cseq += 1
        h.set("CSeq", f"{leg.dialog.local_cseq} {sent.method}")
        h.set("Authorization" if resp.status == 401 else "Proxy-Authorization", value)
        return Request(sent.method, sent.uri, h, sent.body), challenge.nonce

    def _next_hop(self, leg: Leg, dialog: Dialog | None = None) -> tuple[Address, str]:
        """Where an in-dialog request or ACK goes (RFC 3261 12.2.1.1): the first route of the route
        set, else the remote target. A registered phone (USER) is the exception: it is reached
        where its packets came from, not at the private Contact it wrote behind a NAT. Host names
        (which would need DNS) fall back to the leg's known address."""
        d = dialog if dialog is not None else leg.dialog
        if d is not None:
            try:
                if d.route_set:
                    uri = d.next_hop()
                elif leg.peer_type == "LINE":
                    uri = SipUri.parse(d.remote_target)
                else:
                    return leg.address, leg.transport
            except (SipError, ValueError):
                return leg.address, leg.transport
            host = uri.bare_host
            if _is_ip(host):
                transport = uri.params.get("transport")
                transport = transport.lower() if transport else leg.transport
                default = 5061 if transport in ("tls", "wss") else 5060
                return (host, uri.port or default), transport
        return leg.address, leg.transport


def _is_ip(host: str) -> bool:
    if not host:
        return False
    if ":" in host:
        return True
    parts = host.split(".")
    return len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts)
