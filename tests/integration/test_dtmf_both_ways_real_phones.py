"""DTMF both ways with real phones (issue 12).

- SIP INFO digits: a scripted provider (raw SIP on a UDP socket, the line's server address) calls
  baresip through Callflow and presses a key as SIP INFO (baresip 1.0 itself only sends RFC 4733:
  its `dtmfmode` account parameter came later). Callflow reports the `dtmf` event with
  source=info and the phone gets the key: as RFC 4733 telephone-events when its answer kept
  telephone-event, or as the INFO itself when the provider offered none.
- A malformed INFO body gets 400 and the call goes on.
- rtpengine: the same INFO key becomes RFC 4733 that rtpengine injects into the provider's stream
  (the operator opted in with `--media rtpengine:HOST:PORT,inject-dtmf`: rtpengine's `inject DTMF`
  flag on every offer/answer); without the option the same key reaches the phone as SIP INFO.
- A provider that answered without telephone-event but sends it anyway: one `dtmf_unexpected`.
- send_dtmf: a Python SDK program answers a key alice presses (RFC 4733, detected by the relay)
  by sending "42" back into her leg; her baresip reports the digits it received.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.sip.message import Request, Response, parse_message
from tests.integration.callflow_server import CallflowServer
from tests.integration.test_dtmf_real_phones import call_up
from tests.rig import CALL_ESTABLISHED, CALL_INCOMING, Phone, PhoneFactory, account_line, ports
from tests.rig.proc import log_tail, wait_until
from tests.rig.sipping import options_ping

ROOT = Path(__file__).resolve().parents[2]


class Provider:
    """A provider's UA scripted from a UDP socket: one call to `number` through the line, in dialog."""

    def __init__(self) -> None:
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind(("127.0.0.1", 0))
        self.sip.settimeout(10)
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # where bob's audio goes; never read
        self.rtp.bind(("127.0.0.1", 0))
        self.port = self.sip.getsockname()[1]
        self.cseq = 1
        self.to = ""
        self.server = 0

    def _send(self, text: str, body: bytes = b"") -> None:
        self.sip.sendto(text.encode() + body, ("127.0.0.1", self.server))

    def _headers(self, method: str, branch: str) -> str:
        return (f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{branch}\r\nMax-Forwards: 70\r\n"
                f"From: <sip:+15557654321@127.0.0.1>;tag=prov1\r\nTo: {self.to}\r\nCall-ID: dtmf-info-1\r\n"
                f"CSeq: {self.cseq} {method}\r\n")

    def invite(self, server: int, telephone_event: bool) -> None:
        self.server = server
        self.to = "<sip:bob@127.0.0.1>"
        formats = "0 101" if telephone_event else "0"
        lines = ["v=0", "o=prov 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
                 f"m=audio {self.rtp.getsockname()[1]} RTP/AVP {formats}", "a=rtpmap:0 PCMU/8000"]
        if telephone_event:
            lines += ["a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-15"]
        body = ("\r\n".join(lines) + "\r\n").encode()
        self._send(f"INVITE sip:bob@127.0.0.1:{server} SIP/2.0\r\n" + self._headers("INVITE", "inv1")
                   + f"Contact: <sip:prov@127.0.0.1:{self.port}>\r\nAllow: INVITE, ACK, BYE, CANCEL, INFO\r\n"
                   f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n", body)

    def final(self, method: str) -> Response:
        """The final response to our `method` (requests from Callflow meanwhile are answered 200)."""
        for _ in range(50):
            msg = parse_message(self.sip.recv(65535))
            if isinstance(msg, Request):
                self.answer(msg)
                continue
            if msg.cseq[1] == method and msg.status >= 200:
                return msg
        raise AssertionError(f"no final response to {method}")

    def answer(self, req: Request) -> None:
        """200 to a request Callflow sent us (an INFO, a BYE), echoing its headers as RFC 3261 8.2.6 says."""
        h = req.headers
        via = "\r\n".join(f"Via: {v}" for v in h.get_all("via"))
        self._send(f"SIP/2.0 200 OK\r\n{via}\r\nFrom: {h.get('from')}\r\nTo: {h.get('to')}\r\n"
                   f"Call-ID: {h.get('call-id')}\r\nCSeq: {h.get('cseq')}\r\nContent-Length: 0\r\n\r\n")

    def ack(self, ok: Response) -> None:
        self.to = ok.headers.get("to") or ""
        self._send(f"ACK sip:x@127.0.0.1:{self.server} SIP/2.0\r\n" + self._headers("ACK", "ack1")
                   + "Content-Length: 0\r\n\r\n")

    def request(self, method: str, body: bytes = b"", content_type: str | None = None) -> Response:
        self.cseq += 1
        ct = f"Content-Type: {content_type}\r\n" if content_type else ""
        self._send(f"{method} sip:x@127.0.0.1:{self.server} SIP/2.0\r\n" + self._headers(method, f"r{self.cseq}")
                   + f"{ct}Content-Length: {len(body)}\r\n\r\n", body)
        return self.final(method)

    def talk(self, ok: Response, seconds: float = 4.0) -> None:
        """PCMU silence every 20 ms for `seconds`, in a thread, to the media address of Callflow's 200 OK
        (a provider talks; rtpengine injects digits into that stream)."""
        sdp = ok.body.decode()
        host = next(line[9:].strip() for line in sdp.splitlines() if line.startswith("c=IN IP4"))
        port = int(next(line.split()[1] for line in sdp.splitlines() if line.startswith("m=audio")))

        def run() -> None:
            for i in range(int(seconds / 0.02)):
                header = bytes([0x80, 0]) + (i + 1).to_bytes(2, "big") + (160 * i).to_bytes(4, "big") + b"\0\0\0\7"
                try:
                    self.rtp.sendto(header + b"\xff" * 160, (host, port))
                except OSError:
                    return  # the test is over
                time.sleep(0.02)

        threading.Thread(target=run, daemon=True).start()

    def invited(self) -> Request:
        """The INVITE Callflow sends us (a call bob dialled through the line)."""
        for _ in range(20):
            msg = parse_message(self.sip.recv(65535))
            if isinstance(msg, Request) and msg.method == "INVITE":
                return msg
        raise AssertionError("no INVITE")

    def answer_invite(self, invite: Request, telephone_event: bool) -> None:
        """200 OK with our SDP (PCMU, and telephone-event 101 or not); the ACK is read."""
        self.server = int(invite.headers.get("via", "").split(":")[-1].split(";")[0])
        formats = "0 101" if telephone_event else "0"
        body = (f"v=0\r\no=prov 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                f"m=audio {self.rtp.getsockname()[1]} RTP/AVP {formats}\r\na=rtpmap:0 PCMU/8000\r\n").encode()
        h = invite.headers
        via = "\r\n".join(f"Via: {v}" for v in h.get_all("via"))
        self._send(f"SIP/2.0 200 OK\r\n{via}\r\nFrom: {h.get('from')}\r\nTo: {h.get('to')};tag=prov2\r\n"
                   f"Call-ID: {h.get('call-id')}\r\nCSeq: {h.get('cseq')}\r\n"
                   f"Contact: <sip:prov@127.0.0.1:{self.port}>\r\nContent-Type: application/sdp\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n", body)
        for _ in range(20):
            msg = parse_message(self.sip.recv(65535))
            if isinstance(msg, Request) and msg.method == "ACK":
                return
            if isinstance(msg, Request):
                self.answer(msg)
        raise AssertionError("no ACK")

    def answer_bye(self) -> None:
        """Read until Callflow's BYE comes, answering it (and whatever came before it) with 200."""
        for _ in range(50):
            msg = parse_message(self.sip.recv(65535))
            if isinstance(msg, Request):
                self.answer(msg)
                if msg.method == "BYE":
                    return
        raise AssertionError("no BYE")

    def press_rfc4733(self, invite: Request, event: int, stamp: int) -> None:
        """One key press in RTP, to the media address Callflow's INVITE offered: updates, then the
        end three times (RFC 4733 2.5), with payload type 101."""
        sdp = invite.body.decode()
        host = next(line[9:].strip() for line in sdp.splitlines() if line.startswith("c=IN IP4"))
        port = int(next(line.split()[1] for line in sdp.splitlines() if line.startswith("m=audio")))
        for i in range(7):
            end = i >= 4
            duration = 800 if end else 160 * (i + 1)
            packet = (bytes([0x80, (0x80 if i == 0 else 0) | 101]) + (stamp // 160 + i).to_bytes(2, "big")
                      + stamp.to_bytes(4, "big") + (0x1234).to_bytes(4, "big")
                      + bytes([event, (0x80 if end else 0) | 10]) + duration.to_bytes(2, "big"))
            self.rtp.sendto(packet, (host, port))

    def close(self) -> None:
        self.sip.close()
        self.rtp.close()


@pytest.fixture
def provider() -> Iterator[Provider]:
    peer = Provider()
    try:
        yield peer
    finally:
        peer.close()


@pytest.fixture
def callflow(tmp_path: Path, provider: Provider) -> Iterator[CallflowServer]:
    flow = textwrap.dedent(f"""\
        user bob password "bob-pw"
        line itsp1 {{ server "127.0.0.1:{provider.port}" }}

        on incoming from line itsp1 accept to user bob
        on dtmf {{ log "key {{digit}} on {{channel}} by {{source}}" }}
        """)
    server = CallflowServer(flow, tmp_path / "callflow", ports.sip_port(), ports.rtp_range(10)).start()
    try:
        yield server
    finally:
        server.stop()


def provider_calls_bob(callflow: CallflowServer, provider: Provider, phone_factory: PhoneFactory,
                       telephone_event: bool) -> Phone:
    bob = phone_factory(account_line("bob", callflow.hostport, auth_pass="bob-pw"), name="bob")
    bob.wait_registered()
    provider.invite(callflow.port, telephone_event)
    bob.wait_event(CALL_INCOMING, 10)
    bob.accept()
    ok = provider.final("INVITE")
    assert ok.status == 200, ok.status
    provider.ack(ok)
    provider.talk(ok)
    bob.wait_event(CALL_ESTABLISHED, 10)
    return bob


@pytest.mark.parametrize("telephone_event,delivered_as", [(True, "rfc4733"), (False, "info")])
def test_a_key_pressed_as_sip_info_is_a_dtmf_event_and_reaches_the_phone(
        callflow: CallflowServer, provider: Provider, phone_factory: PhoneFactory,
        telephone_event: bool, delivered_as: str) -> None:
    bob = provider_calls_bob(callflow, provider, phone_factory, telephone_event)
    since = bob.mark()
    answer = provider.request("INFO", b"Signal=7\r\nDuration=160\r\n", "application/dtmf-relay")
    assert answer.status == 200
    event = callflow.wait_event("dtmf")
    assert (event["digit"], event["channel"], event["source"], event["duration"]) == ("7", "ZERO", "info", "160")
    assert callflow.events("log", text="key 7 on ZERO by info")
    # RFC 4733 generated by the relay (bob's answer kept telephone-event) or the INFO relayed: either
    # way baresip reports the key it received
    heard = bob.wait_event("CALL_DTMF_START", 10, since=since)
    assert heard.get("param") == "7", (delivered_as, heard)
    # baresip says which way it came: "received event" (RFC 4733) or "received DTMF" (SIP INFO)
    assert ("received event: '7'" in bob.log_text()) is (delivered_as == "rfc4733")
    assert ("call: received DTMF: '7'" in bob.log_text()) is (delivered_as == "info")
    assert provider.request("BYE").status == 200
    callflow.assert_alive()


def test_a_malformed_info_body_is_refused_with_400_and_the_call_goes_on(
        callflow: CallflowServer, provider: Provider, phone_factory: PhoneFactory) -> None:
    bob = provider_calls_bob(callflow, provider, phone_factory, True)
    refused = provider.request("INFO", b"Signal=banana\r\n", "application/dtmf-relay")
    assert refused.status == 400 and "not a DTMF key" in refused.reason
    assert provider.request("INFO", b"5", "application/dtmf").status == 200  # the call is still up
    assert callflow.wait_event("dtmf")["digit"] == "5"
    assert "CALL_CLOSED" not in bob.event_types()
    assert provider.request("BYE").status == 200
    callflow.assert_alive()


# ---- telephone-events on a leg that negotiated none ------------------------------------------------------
def test_telephone_events_from_a_provider_that_answered_without_them_are_one_clear_event(
        tmp_path: Path, provider: Provider, phone_factory: PhoneFactory) -> None:
    """bob calls out through the line; the provider answers without telephone-event but sends
    RFC 4733 packets anyway (payload type 101, bob's number): `dtmf_unexpected` once, no `dtmf`."""
    flow = textwrap.dedent(f"""\
        user bob password "bob-pw"
        line itsp1 {{ server "127.0.0.1:{provider.port}" }}
        on incoming from user bob accept to line itsp1
        """)
    callflow = CallflowServer(flow, tmp_path / "callflow", ports.sip_port(), ports.rtp_range(10)).start()
    try:
        bob = phone_factory(account_line("bob", callflow.hostport, auth_pass="bob-pw"), name="bob")
        bob.wait_registered()
        bob.dial(f"sip:+15557654321@{callflow.hostport}")
        invite = provider.invited()
        provider.answer_invite(invite, telephone_event=False)
        bob.wait_event(CALL_ESTABLISHED, 10)
        for press in range(2):  # two key presses, on bob's payload type
            provider.press_rfc4733(invite, event=5, stamp=8000 * (press + 1))
        unexpected = callflow.wait_event("dtmf_unexpected")
        assert (unexpected["channel"], unexpected["digit"]) == ("ONE", "5")
        for _ in range(2):  # the relay passed both presses on (baresip offered 101): both reached Callflow
            bob.wait_event("CALL_DTMF_START", 10)
        assert len(callflow.events("dtmf_unexpected")) == 1 and callflow.events("dtmf") == []
        assert "CALL_CLOSED" not in bob.event_types()
        bob.hangup()
        provider.answer_bye()
        callflow.wait_event("closed")
        callflow.assert_alive()
    finally:
        callflow.stop()


# ---- send_dtmf from a Python SDK program ----------------------------------------------------------------
PROGRAM = '''
import asyncio, signal, sys
from callflow.sdk import Channel, SipServer, setup_logging

async def main(listen: str, rtp: str) -> None:
    low, _, high = rtp.partition("-")
    server = SipServer(listen=listen, rtp_ports=(int(low), int(high)))
    server.add_user("alice", "alice-pw")
    server.add_user("bob", "bob-pw")

    @server.on("incoming")
    def route(event):
        server.accept_call_session(event.session, to_user=str(event["to"]))

    @server.on("dtmf")
    def answer_key(event):  # alice pressed a key: press 4 and 2 on her phone in return
        if event.channel is Channel.ZERO and event["digit"] == "5":
            server.send_dtmf(event.session, "42", channel=Channel.ZERO, duration=0.08)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()

setup_logging("info")
asyncio.run(main(sys.argv[1], sys.argv[2]))
'''


class SdkProgram(CallflowServer):
    """PROGRAM in a child process, read through its log like `callflow run`."""

    def start(self, timeout: float = 15.0) -> SdkProgram:
        script = self.dir / "program.py"
        script.write_text(PROGRAM)
        cmd = [sys.executable, str(script), self.hostport, f"{self.rtp_range[0]}-{self.rtp_range[1]}"]
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                      env=env, start_new_session=True)
        ok = wait_until(lambda: self._proc.poll() is not None or options_ping(self.port) == 200, timeout)
        if not ok or self._proc.poll() is not None:
            self.stop()
            raise AssertionError(f"the program did not start ({shlex.join(cmd)}):\n{log_tail(self.log_path, 40)}")
        return self


@pytest.fixture
def program(tmp_path: Path) -> Iterator[SdkProgram]:
    server = SdkProgram("", tmp_path / "program", ports.sip_port(), ports.rtp_range(10)).start()
    try:
        yield server
    finally:
        server.stop()


def test_send_dtmf_presses_keys_on_a_phone_that_negotiated_telephone_event(
        program: SdkProgram, phone_factory: PhoneFactory) -> None:
    alice, bob = call_up(program, phone_factory)
    since = alice.mark()
    alice.command("sndcode", "5")
    assert program.wait_event("dtmf")["digit"] == "5"
    first = alice.wait_event("CALL_DTMF_START", 10, since=since)
    second = alice.wait_event("CALL_DTMF_START", 10, since=since)  # the first one was consumed
    assert (first.get("param"), second.get("param")) == ("4", "2")
    assert not program.events("dtmf_dropped")
    alice.hangup()
    program.assert_alive()


# ---- the rtpengine backend ---------------------------------------------------------------------------------
@pytest.fixture
def rtpengine(tmp_path: Path) -> Iterator[object]:
    from tests.integration.conftest import require_peer
    from tests.rig.rtpengine import Rtpengine, rtpengine_problem

    require_peer("rtpengine", rtpengine_problem())
    relay = Rtpengine(ports.port(), ports.rtp_range(40), tmp_path / "rtpengine.log")
    relay.start()
    try:
        yield relay
    finally:
        relay.stop()


@pytest.mark.parametrize("option,heard_as", [(",inject-dtmf", "received event: '9'"),
                                             ("", "call: received DTMF: '9'")])
def test_an_info_key_reaches_the_phone_as_rfc_4733_generated_by_rtpengine_or_as_info_without_injection(
        tmp_path: Path, provider: Provider, phone_factory: PhoneFactory, rtpengine: object, option: str,
        heard_as: str) -> None:
    """With `,inject-dtmf` rtpengine generates the key as RFC 4733; without it (the default, which
    keeps rtpengine's in-kernel forwarding) the key goes to the phone as the SIP INFO it came as."""
    flow = textwrap.dedent(f"""\
        user bob password "bob-pw"
        line itsp1 {{ server "127.0.0.1:{provider.port}" }}
        on incoming from line itsp1 accept to user bob
        """)
    callflow = CallflowServer(flow, tmp_path / "callflow", ports.sip_port(), ports.rtp_range(10),
                              extra_args=["--media", f"rtpengine:{rtpengine.address}{option}"]  # type: ignore[attr-defined]
                              ).start()
    try:
        callflow.wait_event("rtpengine_ready")
        bob = provider_calls_bob(callflow, provider, phone_factory, True)
        since = bob.mark()
        assert provider.request("INFO", b"Signal=9\r\nDuration=200\r\n", "application/dtmf-relay").status == 200
        assert callflow.wait_event("dtmf")["source"] == "info"
        heard = bob.wait_event("CALL_DTMF_START", 10, since=since)
        assert heard.get("param") == "9"
        assert heard_as in bob.log_text()
        assert not callflow.events("rtpengine_dtmf_failed")
        assert provider.request("BYE").status == 200
        callflow.assert_alive()
    finally:
        callflow.stop()
