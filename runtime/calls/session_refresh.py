"""Session timers (RFC 4028) and refresh UPDATEs (RFC 3311), one per leg: refreshed by us (UPDATE,
else a re-INVITE repeating our SDP) or by the peer (the call ends when its refreshes stop).
Parsing and who refreshes: session_timer.py.

A mixin of CallMachine (machine.py): it uses the machine's state and the other jobs' methods."""

from __future__ import annotations

import logging

from ..sip.message import Request, Response, create_response
from ..sip.sdp import SdpError
from ..sip.transaction import ServerTransaction
from .io import (
    CancelTimer,
    Respond,
    SendRequest,
    SetTimer,
)
from .legs import Leg
from .names import (
    CONNECTED_METHODS,
    SE_EXPIRE,
    SE_REFRESH,
    ZERO,
    Step,
)
from .session_timer import MIN_SE, SessionTimer, allows, as_uac, as_uas, min_se, request_headers, session_expires
from .states import (
    ByeState,
    CallState,
    Channel,
    InviteState,
)

log = logging.getLogger("callflow.calls")


class SessionRefresh:
    """Session timers per leg: arming, our refreshes, refreshes we answer ourselves, expiry."""

    def _answers_refresh_itself(self, leg: Leg) -> bool:
        """Whether a refresh UPDATE (no SDP) from `leg` is answered by us rather than relayed: the
        other leg does not list UPDATE in its Allow (a 501 from it must not end the call), or there
        is no other leg yet (ZERO answered by us for a prompt)."""
        if self.state is CallState.ANSWERED or (self.answered_by_us and self.state is CallState.DIALING):
            return True
        other = self._other(leg)
        return self.state is CallState.CONNECTED and (other is None or not other.allow_update)

    def _answer_refresh(self, leg: Leg, txn: ServerTransaction) -> None:
        """Answer a session refresh UPDATE without SDP ourselves: 200 with the negotiated
        Session-Expires (and Require: timer when the peer supports it), RFC 4028 9 and 3311 5.2."""
        req = txn.request
        timer, headers = as_uas(req)
        if leg.dialog is not None:
            leg.dialog.update_target(req)
        allow = allows(req, "UPDATE")
        if allow is not None:
            leg.allow_update = allow
        headers = [("Contact", self.env.contact(leg.transport)), ("Allow", CONNECTED_METHODS)] + headers
        self._out.append(Respond(txn, create_response(req, 200, "OK", headers=headers)))
        leg.timer = timer
        self._arm_session(leg)

    def _timer_request_headers(self, to_leg: Leg, req: Request) -> list[tuple[str, str]]:
        """Session timer headers of a re-INVITE/UPDATE we relay to `to_leg`: that leg's own timer
        with us (who refreshes it stays as it was), else the interval the originator asked for."""
        timer = to_leg.timer
        if timer is not None:
            return request_headers(timer.interval, "uac" if timer.we_refresh else "uas")
        se = session_expires(req)
        return request_headers(max(se.interval, MIN_SE)) if se is not None else []

    def _refreshed_by_response(self, leg: Leg, resp: Response) -> None:
        """A 2xx from `leg` to a re-INVITE/UPDATE of ours: its session is refreshed, on the terms
        its Session-Expires states (none: no expiration, RFC 4028 7.2, unless we refresh it)."""
        allow = allows(resp, "UPDATE")
        if allow is not None:
            leg.allow_update = allow
        timer = as_uac(resp)
        if timer is not None or leg.timer is None or not leg.timer.we_refresh:
            leg.timer = timer
        self._arm_session(leg)

    def _arm_session(self, leg: Leg) -> None:
        """(Re)start `leg`'s session timer from now: our refresh at half the interval, or the end of
        the call when the peer's refresh has not come by the interval minus min(32 s, a third)."""
        channel = leg.channel
        timer = leg.timer
        if timer is None and not leg.timer_armed:
            return  # the common case: no session timer on this leg, nothing to cancel
        self._out.append(CancelTimer(SE_REFRESH[channel]))
        self._out.append(CancelTimer(SE_EXPIRE[channel]))
        leg.timer_armed = timer is not None
        if timer is None:
            return
        if timer.we_refresh:
            self._out.append(SetTimer(SE_REFRESH[channel], self.now + timer.interval / 2))
        else:
            self._out.append(SetTimer(SE_EXPIRE[channel], self.now + timer.expiry_margin))

    def _session_leg(self, channel: Channel) -> Leg | None:
        """`channel`'s leg while its session can be refreshed (answered, not ending)."""
        state = self.state
        if not (state is CallState.CONNECTED or (channel is ZERO and self.answered_by_us
                                                 and state in (CallState.ANSWERED, CallState.DIALING))):
            return None
        leg = self.zero if channel is ZERO else self.one
        if leg is None or leg.dialog is None or leg.bye is not ByeState.NONE:
            return None
        return leg

    def _send_refresh(self, channel: Channel) -> None:
        """We are `channel`'s refresher: UPDATE without SDP when the peer allows it, else a
        re-INVITE repeating the SDP we last sent there (no change of session, RFC 4028 7.4)."""
        leg = self._session_leg(channel)
        if leg is None or leg.timer is None or leg.dialog is None:
            return
        if leg.refreshing or leg.invite_state is not InviteState.IDLE or leg.ack_waiting is not None:
            # an INVITE is in progress on this dialog (its success refreshes too): try again shortly
            self._out.append(SetTimer(SE_REFRESH[channel], self.now + self.t2))
            return
        method = "UPDATE" if leg.allow_update or not leg.local_sdp else "INVITE"
        body = leg.local_sdp if method == "INVITE" else b""
        dest, transport = self._next_hop(leg)
        req = leg.dialog.create_request(method, self.env.via(transport), contact=self.env.contact(transport),
                                        body=body, content_type="application/sdp" if body else None,
                                        extra=request_headers(leg.timer.interval, "uac"))
        leg.refreshing = True
        if method == "INVITE":
            leg.invite_state = InviteState.INVITE_SENT
        self._out.append(SendRequest(req, dest, transport, ("refresh", channel, method)))

    def _refresh_response(self, channel: Channel, method: str, resp: Response | None) -> Step | None:
        leg = self.zero if channel is ZERO else self.one
        if leg is None or leg.dialog is None or (resp is not None and resp.status < 200):
            return None
        leg.refreshing = False
        if method == "INVITE" and leg.invite_state is InviteState.INVITE_SENT:
            leg.invite_state = InviteState.IDLE
        code = resp.status if resp is not None else 408
        if resp is not None and 200 <= code < 300:
            leg.dialog.update_target(resp)
            if method == "INVITE":
                self._send_ack(leg, resp.cseq[0])
            if self._session_leg(channel) is None:
                return None
            self._refreshed_by_response(leg, resp)
            if method == "INVITE" and resp.body and self.has_media:
                return self._anchor_quietly(channel, resp.body)
            return None
        if self._session_leg(channel) is None or leg.timer is None:
            return None
        if code in (408, 481):  # the dialog is gone (RFC 4028 10)
            self._emit("hangup", call=self.id, channel=None,
                       reason=f"session refresh failed: {code} from channel {channel.name}")
            self._end(bye_zero=True, bye_one=True)
            return None
        if code in (405, 501) and method == "UPDATE":
            leg.allow_update = False  # it does not do UPDATE after all: a re-INVITE now
            self._send_refresh(channel)
            return None
        if code == 422 and resp is not None and min_se(resp) > leg.timer.interval:
            leg.timer = SessionTimer(min_se(resp), True)
            self._send_refresh(channel)
            return None
        # the session lives on until it expires: one more try, then it ends (RFC 4028 10)
        remaining = leg.timer.interval / 2
        if code == 491:
            self._out.append(SetTimer(SE_REFRESH[channel], self.now + min(self.t2, remaining / 2)))
        self._out.append(SetTimer(SE_EXPIRE[channel], self.now + remaining))
        return None

    def _anchor_quietly(self, channel: Channel, body: bytes) -> Step:
        try:
            yield ("anchor", channel.value, body)
        except SdpError:
            log.warning("call=%s unreadable SDP in a session refresh's answer on channel %s", self.id, channel.name)

    def _session_expired(self, channel: Channel) -> None:
        leg = self._session_leg(channel)
        if leg is None or leg.timer is None:
            return
        self._emit("hangup", call=self.id, channel=None,
                   reason=f"session expired: no refresh on channel {channel.name} within {leg.timer.interval} s")
        self._end(bye_zero=True, bye_one=True)
