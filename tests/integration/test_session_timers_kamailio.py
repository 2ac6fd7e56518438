"""Session timers (RFC 4028) through a real provider: a carrier's caller that asks for a session timer
calls the line's number at Kamailio, Callflow rings alice's baresip phone (baresip 1.0 does neither
session timers nor UPDATE), and the caller's refreshes keep the call up: an UPDATE refresh is
answered by Callflow itself with the negotiated Session-Expires (it is not relayed to a phone that
would answer 501), and a re-INVITE refresh is relayed to the phone and answered.

The caller is a scripted raw-SIP peer (no free UA here does RFC 4028 refreshes on demand): it sends
its INVITE to Kamailio and its in-dialog requests along the route set Kamailio recorded.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runtime.sip.dialog import Dialog
from runtime.sip.message import Request, Response, parse_message
from tests.integration.callflow_server import CallflowServer
from tests.rig import CALL_CLOSED, CALL_ESTABLISHED, CALL_INCOMING, Kamailio, PhoneFactory, account_line, ports
from tests.rig.sipping import ensure_loopback

DID = "+15551230000"
FLOW = """
user alice password "alice-pw"

line itsp1 {{
    server   "{provider}"
    username "trunk1"
    password "s3cret"
    register every 60s
}}

on incoming from line itsp1 accept to user alice
"""


@pytest.fixture
def callflow(tmp_path: Path) -> Iterator[Callable[[str], CallflowServer]]:
    servers: list[CallflowServer] = []

    def start(flow_text: str) -> CallflowServer:
        server = CallflowServer(flow_text, tmp_path / f"callflow{len(servers)}", ports.sip_port(), ports.rtp_range(20))
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


class TimerCaller:
    """A carrier-side caller on a UDP socket of its own that asks for a 90 s session timer and
    refreshes it (refresher=uac)."""

    def __init__(self, provider: Kamailio) -> None:
        ensure_loopback(provider.host)
        self.provider = (provider.host, provider.port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]
        self.sdp = (f"v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                    f"m=audio {self.port + 2} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n").encode()
        self.via = f"SIP/2.0/UDP 127.0.0.1:{self.port};rport"
        self.dialog: Dialog | None = None
        self.invite: Request | None = None

    def close(self) -> None:
        self.sock.close()

    def call(self, hostport: str) -> None:
        """Send the INVITE for the line's number to the provider."""
        head = (f"INVITE sip:{DID}@{hostport} SIP/2.0\r\n"
                f"Via: {self.via};branch=z9hG4bK{secrets.token_hex(6)}\r\nMax-Forwards: 70\r\n"
                f"From: <sip:caller@127.0.0.1>;tag={secrets.token_hex(4)}\r\nTo: <sip:{DID}@{hostport}>\r\n"
                f"Call-ID: {secrets.token_hex(8)}@127.0.0.1\r\nCSeq: 1 INVITE\r\n"
                f"Contact: <sip:caller@127.0.0.1:{self.port}>\r\nSession-Expires: 90;refresher=uac\r\n"
                f"Supported: timer\r\nAllow: INVITE, ACK, CANCEL, BYE, UPDATE\r\n"
                f"Content-Type: application/sdp\r\nContent-Length: {len(self.sdp)}\r\n\r\n").encode()
        invite = parse_message(head + self.sdp)
        assert isinstance(invite, Request)
        self.invite = invite
        self.sock.sendto(bytes(invite), self.provider)

    def final(self, method: str, cseq: int) -> Response:
        """The final response to our request `method` with `cseq` (provisionals, retransmissions and
        anything else skipped; bounded)."""
        for _ in range(50):
            msg = parse_message(self.sock.recv(65535))
            if isinstance(msg, Request):
                continue  # e.g. an OPTIONS keepalive: not what this caller waits for
            if msg.cseq == (cseq, method) and msg.status >= 200:
                return msg
        raise AssertionError(f"no final response to {method} {cseq}")

    def answered(self) -> Response:
        """Wait for the 2xx to the INVITE and ACK it along the recorded route."""
        assert self.invite is not None
        ok = self.final("INVITE", 1)
        assert ok.status == 200, ok.status
        self.dialog = Dialog.as_uac(self.invite, ok)
        self.send(self.dialog.create_request("ACK", self.via, cseq=1))
        return ok

    def send(self, request: Request) -> None:
        hop = self.dialog.next_hop() if self.dialog is not None else None
        assert hop is not None and hop.port is not None
        ensure_loopback(hop.bare_host)
        self.sock.sendto(bytes(request), (hop.bare_host, hop.port))

    def request(self, method: str, *, body: bytes = b"") -> Response:
        """An in-dialog request (a refresh asking again for 90 s), and its final response."""
        assert self.dialog is not None
        extra = [("Session-Expires", "90;refresher=uac"), ("Supported", "timer")] if method != "BYE" else []
        req = self.dialog.create_request(method, self.via, contact=f"<sip:caller@127.0.0.1:{self.port}>",
                                         body=body, extra=extra)
        self.send(req)
        resp = self.final(method, req.cseq[0])
        if method == "INVITE" and resp.status == 200:
            self.send(self.dialog.create_request("ACK", self.via, cseq=req.cseq[0]))
        return resp


def test_a_callers_session_refreshes_keep_the_call_up_through_the_provider(
        kamailio: Kamailio, phone_factory: PhoneFactory, callflow: Callable[[str], CallflowServer]) -> None:
    server = callflow(FLOW.format(provider=kamailio.hostport))
    server.wait_event("line_registered", line="itsp1")
    alice = phone_factory(account_line("alice", server.hostport, auth_pass="alice-pw"), name="alice")
    alice.wait_registered()
    caller = TimerCaller(kamailio)
    try:
        caller.call(kamailio.hostport)
        alice.wait_event(CALL_INCOMING, 10)
        alice.accept()
        ok = caller.answered()
        alice.wait_event(CALL_ESTABLISHED, 10)
        assert ok.headers.get("session-expires") == "90;refresher=uac" and ok.headers.get("require") == "timer"

        update = caller.request("UPDATE")       # alice's phone does not list UPDATE: Callflow answers
        assert (update.status, update.headers.get("session-expires")) == (200, "90;refresher=uac")
        reinvite = caller.request("INVITE", body=caller.sdp)   # relayed to alice's phone
        assert (reinvite.status, reinvite.headers.get("session-expires")) == (200, "90;refresher=uac")
        assert reinvite.body                    # the phone's answer, anchored on the relay

        mark = alice.mark()
        assert caller.request("BYE").status == 200
        alice.wait_event(CALL_CLOSED, 10, since=mark)
    finally:
        caller.close()
    closed = server.wait_event("closed")
    assert server.call_events(closed["call"])[-2:] == [("hangup", "ZERO"), ("closed", None)]
    server.assert_alive()
