"""Fake-clock spec: a blind transfer ends the transferor's leg, and the log says so (README: `hangup`
says why when Callflow ended the call itself, e.g. `transferred`). The harness is tests/unit's
calls_kit: alice on channel ZERO transfers the far party (line `far`, ONE) to a target on line `xfer`."""

from __future__ import annotations

from runtime.calls import CallState, Channel, io
from runtime.sip.message import create_response, parse_message
from tests.unit.calls_kit import XFER_ADDR, ZERO, Call

SDP_XFER = b"v=0\r\no=x 1 1 IN IP4 203.0.113.9\r\ns=-\r\nc=IN IP4 203.0.113.9\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\n"
REFER_TO = [("Refer-To", "<sip:+15550001111@192.0.2.1>"), ("Referred-By", "<sip:alice@192.0.2.1>")]


def _xfer_responds(call: Call, status: int, body: bytes = b"") -> None:
    out = [o for o in call.sent("INVITE", to=XFER_ADDR) if o.tag[0] == "transfer"][-1]
    resp = create_response(out.message, status, "OK" if status == 200 else "Ringing", to_tag="x1",
                           headers=[("Contact", f"<sip:bob@{XFER_ADDR[0]}:{XFER_ADDR[1]}>")], body=body,
                           content_type="application/sdp" if body else None)
    call.feed(io.ResponseIn(call.now, out.tag, parse_message(bytes(resp))))


def test_a_blind_transfer_logs_the_transferors_hangup_with_reason_transferred() -> None:
    call = Call(peer_type="USER")
    call.connect()
    assert call.machine.state is CallState.CONNECTED
    call.request_from(ZERO, "REFER", headers=REFER_TO)
    _xfer_responds(call, 180)
    _xfer_responds(call, 200, body=SDP_XFER)
    assert call.sent("BYE")                                  # alice's leg is ended by Callflow
    hangups = [f for name, f in call.events if name == "hangup"]
    assert hangups and hangups[-1]["channel"] == Channel.ZERO.name and hangups[-1]["reason"] == "transferred"
