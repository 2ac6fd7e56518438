"""A call to a phone whose registered contact is unreachable fails at once with the right status and
the rule goes on to its `otherwise`, instead of ringing into silence for the whole timeout (issue 11).

Real loopback sockets: the phone's registered UDP port is closed, so the kernel answers our INVITE
with ICMP port-unreachable, which the transport reads from the socket's error queue."""

from __future__ import annotations

import asyncio
import socket

from runtime.calls import Failure, Target
from runtime.engine import Engine
from runtime.lines import LineConfig
from runtime.registrar import Binding
from runtime.sip.message import parse_message
from runtime.transport import ListenSpec
from tests.rig.ports import ports

SDP = (b"v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 4000 RTP/AVP 0\r\n")


def closed_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket goes


async def call_to_unreachable_alice() -> tuple[list[Failure | None], int]:
    engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], advertise="127.0.0.1", rtp_ports=ports.rtp_range(10))
    await engine.start()
    engine.add_user("alice", "alice-pw-long-1")
    port = closed_udp_port()
    engine.registrar.store.put(Binding("alice", f"sip:alice@127.0.0.1:{port}", ("127.0.0.1", port), "udp",
                                       engine.now() + 3600, "reg-1", 1))
    engine.add_line(LineConfig("itsp1", "127.0.0.6", 5080, register_every=None))
    engine.register_line("itsp1")
    await asyncio.sleep(0.05)
    results: list[Failure | None] = []

    def router(call) -> None:  # type: ignore[no-untyped-def]
        def after(failure: Failure | None) -> None:
            results.append(failure)
            call.reject(486, "Busy Here (the rule's otherwise)")
        call.accept([Target("USER", "alice")], 60.0, after)  # a minute's ring: far longer than the test

    engine.router = router
    provider = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    provider.bind(("127.0.0.6", 5080))
    provider.setblocking(False)
    ours = engine.ports["udp"]
    invite = (f"INVITE sip:+15551230000@127.0.0.1:{ours} SIP/2.0\r\n"
              f"Via: SIP/2.0/UDP 127.0.0.6:5080;branch=z9hG4bKunreach1\r\nMax-Forwards: 70\r\n"
              f"From: <sip:+15557654321@127.0.0.6>;tag=p1\r\nTo: <sip:+15551230000@127.0.0.1>\r\n"
              f"Call-ID: unreach-1\r\nCSeq: 1 INVITE\r\nContact: <sip:gw@127.0.0.6:5080>\r\n"
              f"Content-Type: application/sdp\r\nContent-Length: {len(SDP)}\r\n\r\n").encode() + SDP
    loop = asyncio.get_running_loop()
    await loop.sock_sendto(provider, invite, ("127.0.0.1", ours))
    final = 0
    try:
        for _ in range(50):  # bounded: until the provider's final response (the no-answer timer is 60 s)
            resp = parse_message(await asyncio.wait_for(loop.sock_recv(provider, 65535), 10))
            if resp.status >= 200:
                final = resp.status
                break
    finally:
        provider.close()
        await engine.stop()
    return results, final


def test_a_call_to_a_phone_whose_contact_is_unreachable_fails_at_once_and_goes_to_otherwise() -> None:
    results, final = asyncio.run(call_to_unreachable_alice())
    (failure,) = results
    # RFC 3261 8.1.3.1: a transport error is a 503, not "no answer" (480) nor a timeout (408)
    assert failure is not None and failure.code == 503 and "unreachable" in failure.reason
    assert final == 486  # the rule's otherwise answered the caller
