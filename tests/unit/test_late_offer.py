"""Late offer (an INVITE without SDP): the dialled leg's 2xx carries the offer, the caller's ACK the
answer, and our ACK to the dialled leg waits for it and carries it, anchored on the relay.

Two UDP sockets play the two providers (lines `a` and `b`); the engine runs on loopback."""

from __future__ import annotations

import asyncio
import socket

from runtime.calls import Target
from runtime.engine import Engine
from runtime.lines import LineConfig
from runtime.sip.message import create_response, parse_message
from runtime.sip.sdp import parse_sdp
from runtime.transport import ListenSpec

OFFER = (b"v=0\r\no=b 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
         b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
ANSWER = (b"v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
          b"m=audio 41000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def sock() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(3)
    return s


def recv(s: socket.socket, start: bytes):  # type: ignore[no-untyped-def]
    for _ in range(20):
        data = s.recv(65535)
        if data.startswith(start):
            return parse_message(data)
    raise AssertionError(f"nothing starting {start!r}")


def scenario_in_thread(port: int, a: socket.socket, b: socket.socket) -> dict[str, object]:
    me = a.getsockname()[1]
    invite = (f"INVITE sip:+15551234567@127.0.0.1:{port} SIP/2.0\r\n"
              f"Via: SIP/2.0/UDP 127.0.0.1:{me};rport;branch=z9hG4bKlate1\r\nMax-Forwards: 70\r\n"
              f"From: <sip:a@127.0.0.1>;tag=a1\r\nTo: <sip:+15551234567@127.0.0.1>\r\nCall-ID: late-1\r\n"
              f"CSeq: 1 INVITE\r\nContact: <sip:a@127.0.0.1:{me}>\r\nContent-Length: 0\r\n\r\n").encode()
    a.sendto(invite, ("127.0.0.1", port))
    b_invite = recv(b, b"INVITE")
    assert not b_invite.body
    ok = create_response(b_invite, 200, "OK", to_tag="b1",
                         headers=[("Contact", f"<sip:b@127.0.0.1:{b.getsockname()[1]}>")],
                         body=OFFER, content_type="application/sdp")
    b.sendto(bytes(ok), ("127.0.0.1", port))
    a_ok = recv(a, b"SIP/2.0 200")
    out: dict[str, object] = {"offer_to_a": parse_sdp(a_ok.body).endpoint()}
    b.settimeout(0.3)
    try:
        early = recv(b, b"ACK")
        out["early_ack"] = early
    except (TimeoutError, AssertionError):
        out["early_ack"] = None
    b.settimeout(3)
    ack = (f"ACK sip:x@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};rport;branch=z9hG4bKlate2\r\n"
           f"Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=a1\r\nTo: {a_ok.headers.get('to')}\r\n"
           f"Call-ID: late-1\r\nCSeq: 1 ACK\r\nContent-Type: application/sdp\r\n"
           f"Content-Length: {len(ANSWER)}\r\n\r\n").encode() + ANSWER
    a.sendto(ack, ("127.0.0.1", port))
    b_ack = recv(b, b"ACK")
    out["answer_to_b"] = parse_sdp(b_ack.body).endpoint() if b_ack.body else None
    return out


async def run() -> dict[str, object]:
    a, b = sock(), sock()
    engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], advertise="127.0.0.1", rtp_ports=(37200, 37299))
    await engine.start()
    for name, s in (("a", a), ("b", b)):
        engine.add_line(LineConfig(name, "127.0.0.1", s.getsockname()[1], register_every=None))
        engine.register_line(name)
    await asyncio.sleep(0.05)
    engine.router = lambda call: call.accept([Target("LINE", "b")], None, lambda failure: None)
    try:
        return await asyncio.get_running_loop().run_in_executor(None, scenario_in_thread, engine.ports["udp"], a, b)
    finally:
        await engine.stop()
        a.close()
        b.close()


def test_late_offer_answer_travels_in_our_ack_to_the_dialled_leg() -> None:
    out = asyncio.run(run())
    host, port = out["offer_to_a"]  # type: ignore[misc]
    assert host == "127.0.0.1" and port != 40000  # the caller sees the relay, not the far end
    assert out["early_ack"] is None  # no ACK before the caller's answer exists
    answer = out["answer_to_b"]
    assert answer is not None and answer[0] == "127.0.0.1" and answer[1] != 41000  # anchored too
