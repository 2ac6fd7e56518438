"""Late-offer re-INVITEs and retransmitted 2xx (issue 8, behaviours 1 and 2) with real peers: SIPp on
both lines of a call.

baresip cannot send a re-INVITE without SDP, so SIPp plays both ends, each from a scenario file in
tests/integration/sipp/: the provider on line `provider` (channel ZERO) calls through Callflow to the
far phone on line `far` (ONE). The provider holds and resumes with re-INVITEs that carry no SDP
(RFC 3264 8.4): the far phone's 200 carries the offer, the provider's ACK the answer, and that answer
must reach the far phone in Callflow's ACK (RFC 3261 13.2.2.4), with the direction the provider chose
and its new media port, which the relay must then send to.

Each scenario fails (SIPp exits non-zero) on any message out of order or a `check_it` expression that
does not match; the tests also read what the far peer received from SIPp's message log.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.callflow_server import CallflowServer
from tests.integration.conftest import require_peer
from tests.integration.sipp_peer import SippMessage, SippPeer, sipp_problem
from tests.rig import ports
from tests.rig.proc import wait_until

FLOW = """
line provider {{
    server "127.0.0.1:{zero}"
    max calls off
}}

line far {{
    server "127.0.0.1:{one}"
}}

on incoming from line provider accept to line far
"""


class Call:
    """Callflow between two SIPp peers on their own ports, plus three media sockets: the provider's
    first port, the port its late-offer answers move to, and the far phone's."""

    def __init__(self, tmp_path: Path) -> None:
        self.zero_port, self.one_port = ports.sip_port(), ports.sip_port()
        self.server = CallflowServer(FLOW.format(zero=self.zero_port, one=self.one_port), tmp_path / "callflow",
                                     ports.sip_port(), ports.rtp_range(20)).start()
        self.media = {name: _rtp_socket() for name in ("offer", "answer", "phone")}
        self.dir = tmp_path / "sipp"
        self.peers: list[SippPeer] = []

    def port(self, name: str) -> int:
        return int(self.media[name].getsockname()[1])

    def far(self, scenario: str, **keys: object) -> SippPeer:
        peer = SippPeer(scenario, self.dir, self.one_port, keys=keys).start()
        self.peers.append(peer)
        return peer

    def provider(self, scenario: str, *, pause_ms: int = 0, **keys: object) -> SippPeer:
        # the far phone's SIPp must be listening before the call reaches it
        assert wait_until(lambda: _udp_bound(self.one_port), 10), "the far SIPp did not bind its port"
        peer = SippPeer(scenario, self.dir, self.zero_port, target=self.server.hostport, keys=keys,
                        pause_ms=pause_ms).start()
        self.peers.append(peer)
        return peer

    def close(self) -> None:
        for peer in self.peers:
            peer.stop()
        for sock in self.media.values():
            sock.close()
        self.server.stop()


@pytest.fixture
def call(tmp_path: Path) -> Iterator[Call]:
    require_peer("sipp", sipp_problem())
    c = Call(tmp_path)
    try:
        yield c
    finally:
        c.close()


def _rtp_socket() -> socket.socket:
    for _ in range(50):
        port = ports.port()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.close()
            continue
        sock.settimeout(0.2)
        return sock
    raise AssertionError("no free port for a media socket")


def _udp_bound(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _rtp(seq: int, ssrc: int) -> bytes:
    """One G.711 RTP packet (RFC 3550 5.1: version 2, payload type 0, 20 ms of silence)."""
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, ssrc) + b"\xff" * 160


def _relayed(sender: socket.socket, relay_port: int, receiver: socket.socket, packets: int = 20) -> int:
    """Send `packets` RTP packets from `sender` to the relay's port and count what `receiver` gets."""
    ssrc = int.from_bytes(os.urandom(4), "big")
    got = 0
    for seq in range(1, packets + 1):
        sender.sendto(_rtp(seq, ssrc), ("127.0.0.1", relay_port))
        got += _drain(receiver)
    for _ in range(10):
        got += _drain(receiver)
        if got:
            break
    return got


def _drain(sock: socket.socket) -> int:
    n = 0
    for _ in range(100):
        try:
            sock.recv(2048)
        except (TimeoutError, BlockingIOError):
            return n
        n += 1
        sock.settimeout(0.01)
    return n


def _acks(peer: SippPeer, cseq: int) -> list[SippMessage]:
    return [m for m in peer.received("ACK") if m.cseq == cseq]


def test_late_offer_answer_reaches_the_far_phone_in_our_ack_on_hold_and_resume(call: Call) -> None:
    far = call.far("late_offer_far_uas.xml", phone_port=call.port("phone"))
    provider = call.provider("late_offer_hold_uac.xml", offer_port=call.port("offer"),
                             answer_port=call.port("answer"), pause_ms=500)
    provider.wait(20)
    far.wait(20)

    relayed_reinvites = far.received("INVITE")[1:]
    assert [m.cseq for m in relayed_reinvites] == [2, 3]
    assert all(m.body == "" for m in relayed_reinvites), "a late offer is relayed as a late offer"
    hold_ack, resume_ack = _acks(far, 2), _acks(far, 3)
    assert len(hold_ack) == 1 and "a=sendonly" in hold_ack[0].body, far.messages_tail()
    assert len(resume_ack) == 1 and "a=sendrecv" in resume_ack[0].body, far.messages_tail()
    call.server.assert_alive()


def test_media_moves_to_the_port_of_a_late_offer_answer(call: Call) -> None:
    far = call.far("late_offer_far_uas.xml", phone_port=call.port("phone"))
    # the resumed call lasts long enough for the media check below, then the provider hangs up
    provider = call.provider("late_offer_hold_uac.xml", offer_port=call.port("offer"),
                             answer_port=call.port("answer"), pause_ms=5000)
    assert wait_until(lambda: bool(_acks(far, 3)), 15), far.messages_tail()
    relay_one = _acks(far, 3)[0].media_port()
    resumed = provider.received_responses(200, "INVITE")
    relay_zero = resumed[-1].media_port() if resumed else None
    assert relay_one and relay_zero, (far.messages_tail(), provider.messages_tail())

    # the far phone speaks: its voice goes to the port the provider's late-offer answer named
    assert _relayed(call.media["phone"], relay_one, call.media["answer"]) > 0
    assert _drain(call.media["offer"]) == 0, "media still went to the provider's first port"
    # and the provider's voice from its new port reaches the far phone
    assert _relayed(call.media["answer"], relay_zero, call.media["phone"]) > 0

    provider.wait(20)
    far.wait(20)
    call.server.assert_alive()


def test_every_retransmitted_2xx_is_acked_with_the_cseq_of_the_invite_it_answers(call: Call) -> None:
    """Behaviour 2 (RFC 3261 13.2.2.4) on both legs: the far phone sends its 200 to the call's INVITE
    and to a re-INVITE twice (the second copy after our ACK, as when an ACK and a retransmission
    cross), and so does the provider to a re-INVITE we relay to it. Each copy gets an ACK, and the
    ACK carries the CSeq of the INVITE that 200 answers (2 for the re-INVITE, not 1)."""
    far = call.far("retransmitted_2xx_far.xml")
    provider = call.provider("retransmitted_2xx_provider.xml", pause_ms=300)
    provider.wait(20)
    far.wait(20)

    invites_to_far = [m.cseq for m in far.received("INVITE")]
    assert invites_to_far == [1, 2], far.messages_tail()
    for cseq in invites_to_far:
        assert len(_acks(far, cseq)) == 2, f"ACKs for CSeq {cseq}: {far.messages_tail()}"
    assert [m.cseq for m in far.received("ACK")] == [1, 1, 2, 2]

    invites_to_provider = [m.cseq for m in provider.received("INVITE")]
    assert len(invites_to_provider) == 1, provider.messages_tail()
    acks = [m.cseq for m in provider.received("ACK")]
    assert acks == invites_to_provider * 2, provider.messages_tail()
    call.server.assert_alive()
