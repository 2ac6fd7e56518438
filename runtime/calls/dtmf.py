"""DTMF on a call: digits detected on either leg, delivered to the other leg in the form its phone
negotiated, and digits the program sends into a leg (the SDK's send_dtmf).

Each leg has a DTMF mode, from its own offer/answer (runtime.media.dtmf.Negotiation, asked of the
media backend as `dtmf_mode`): `rfc4733` when both SDPs name telephone-event, else `info`.

    digit arrives as            the other leg's mode   what the other leg gets
    RFC 4733 on a rfc4733 leg   rfc4733                the packets, relayed as they are (media layer)
    RFC 4733 on a rfc4733 leg   info                   SIP INFO application/dtmf-relay, if its Allow
                                                       does not leave INFO out (else `dtmf_dropped`)
    RFC 4733 on an info leg     (any)                  nothing more: `dtmf_unexpected`, once per leg
    SIP INFO (dtmf-relay/dtmf)  rfc4733                we answer 200; telephone-events generated
    SIP INFO                    info                   the INFO relayed; its answer relayed back
    SIP INFO, malformed body    -                      400 with the reason; nothing is relayed

Every digit detected is a `dtmf` event (channel, digit, duration, source `rfc4733`|`info`); RFC 4733
digits come from the media backend (DigitIn), INFO from the leg's dialog (in_dialog.py).

A mixin of CallMachine (machine.py), sans-IO like it.
"""

from __future__ import annotations

import logging

from ..events import logfmt_value
from ..media.base import MediaError
from ..media.dtmf_info import DtmfInfoError, info_body, parse_info_body
from ..media.dtmf_sender import MAX_DURATION, MIN_DURATION
from ..sip.message import Response, create_response
from ..sip.transaction import ServerTransaction
from .io import DigitIn, Respond, SendDtmfIn, SendRequest
from .legs import Leg
from .names import ONE, ZERO, Step
from .states import CallState, Channel

log = logging.getLogger("callflow.calls")

NO_INFO = "the phone negotiated no telephone-event and its Allow has no INFO"


class DtmfJobs:
    """Digits both ways between the legs, and the program's own."""

    def _leg_of(self, channel: Channel) -> Leg | None:
        return self.zero if channel is ZERO else self.one

    def _on_digit(self, inp: DigitIn) -> Step | None:
        """An RFC 4733 digit arrived on `inp.channel` (the media backend saw its end)."""
        if self.state is CallState.CLOSED or not self.has_media:
            return None
        channel = inp.channel
        mode = yield ("dtmf_mode", channel.value)
        if mode == "info":  # that leg's offer/answer has no telephone-event: not a digit we agreed on
            if channel not in self.dtmf_unexpected:
                self.dtmf_unexpected.add(channel)
                self._emit("dtmf_unexpected", call=self.id, channel=channel.name, digit=inp.digit)
            return None
        self._emit("dtmf", call=self.id, channel=channel.name, digit=inp.digit, duration=inp.duration,
                   source="rfc4733")
        if self.gather is not None:
            step = self._gather_digit(channel, inp.digit)
            if step is not None:
                yield from step
        to = self._leg_of(ONE if channel is ZERO else ZERO)
        if self.state is not CallState.CONNECTED or to is None or to.dialog is None:
            return None
        if (yield ("dtmf_mode", to.channel.value)) != "rfc4733":
            self._send_dtmf_info(to, inp.digit, inp.duration)
        # else the relay passed the packets on already

    def _on_send_dtmf(self, inp: SendDtmfIn) -> Step | None:
        """The program sends digits into a leg: RFC 4733 when that leg negotiated it, else INFO."""
        leg = self._leg_of(inp.channel)
        if leg is None or leg.dialog is None or self.state in (CallState.ENDING, CallState.CLOSED):
            self._emit("dtmf_dropped", call=self.id, channel=inp.channel.name, digit=inp.digits,
                       reason=f"the call has no answered leg on channel {inp.channel.name} ({self.state.value})")
            return None
        mode = (yield ("dtmf_mode", inp.channel.value)) if self.has_media else "info"
        if mode == "rfc4733":
            yield from self._send_rfc4733(leg, inp.digits, inp.duration)
            return None
        for digit in inp.digits:
            self._send_dtmf_info(leg, digit, round(inp.duration * 1000))
        return None

    def _send_rfc4733(self, leg: Leg, digits: str, seconds: float) -> Step:
        """RFC 4733 through the media backend; one that cannot (rtpengine without DTMF injection)
        leaves SIP INFO, which a phone may take even with telephone-event negotiated."""
        seconds = min(max(seconds, MIN_DURATION), MAX_DURATION)
        try:
            yield ("send_dtmf", leg.channel.value, digits, seconds)
        except ValueError as exc:
            self._emit("dtmf_dropped", call=self.id, channel=leg.channel.name, digit=digits, reason=str(exc))
        except MediaError as exc:
            log.info("event=dtmf_as_info call=%s channel=%s reason=%s", self.id, leg.channel.name,
                     logfmt_value(str(exc)))
            for digit in digits:
                self._send_dtmf_info(leg, digit, round(seconds * 1000))

    def _send_dtmf_info(self, leg: Leg, digit: str, duration_ms: int) -> None:
        """One digit to `leg`'s phone as SIP INFO (application/dtmf-relay), unless its Allow says no."""
        if leg.allow_info is False or leg.dialog is None:
            self._emit("dtmf_dropped", call=self.id, channel=leg.channel.name, digit=digit, reason=NO_INFO)
            return
        content_type, body = info_body(digit, duration_ms)
        dest, transport = self._next_hop(leg)
        out = leg.dialog.create_request("INFO", self.env.via(transport), contact=self.env.contact(transport),
                                        body=body, content_type=content_type)
        self._out.append(SendRequest(out, dest, transport, ("dtmf", leg.channel, digit)))

    def _dtmf_info_response(self, channel: Channel, digit: str, resp: Response | None) -> None:
        """The answer to an INFO of ours: a failure means the phone did not get the digit."""
        if resp is None:
            reason = "INFO not answered"
        elif resp.status >= 300:
            reason = f"INFO answered {resp.status} {resp.reason}"
        else:
            return
        self._emit("dtmf_dropped", call=self.id, channel=channel.name, digit=digit, reason=reason)

    def _on_dtmf_info(self, leg: Leg, txn: ServerTransaction) -> Step | None:
        """An INFO with a DTMF body on `leg`: 400 if unreadable; else the `dtmf` event, and the digit
        goes on to the other leg as RFC 4733 (we answer 200) or as this INFO (its answer relayed)."""
        req = txn.request
        try:
            digit, duration = parse_info_body(req.headers.get("content-type"), req.body)
        except DtmfInfoError as exc:
            self._out.append(Respond(txn, create_response(req, 400, f"Bad Request ({exc})")))
            return None
        self._emit("dtmf", call=self.id, channel=leg.channel.name, digit=digit, duration=duration, source="info")
        if self.gather is not None and leg.channel is ZERO and self.state is CallState.ANSWERED:
            self._out.append(Respond(txn, create_response(req, 200, "OK")))  # a menu under way takes it
            step = self._gather_digit(leg.channel, digit)
            if step is not None:
                yield from step
            return None
        to = self._other(leg)
        if self.state is not CallState.CONNECTED or to is None or to.dialog is None:
            self._out.append(Respond(txn, create_response(req, 200, "OK")))
            return None
        mode = (yield ("dtmf_mode", to.channel.value)) if self.has_media else "info"
        if mode == "rfc4733":
            self._out.append(Respond(txn, create_response(req, 200, "OK")))
            yield from self._send_rfc4733(to, digit, duration / 1000)
            return None
        yield from self._relay_request(leg, txn)
        return None
