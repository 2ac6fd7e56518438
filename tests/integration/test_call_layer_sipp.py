"""The call layer with real peers (issue 8): late-offer re-INVITEs (behaviour 1), retransmitted 2xx
(behaviour 2) and forked 2xx (behaviour 3), with SIPp on both lines of a call.

baresip cannot send a re-INVITE without SDP, so SIPp plays both ends, each from a scenario file in
tests/integration/sipp/: the provider on line `provider` (channel ZERO) calls through Callflow to the
far phone on line `far` (ONE). The provider holds and resumes with re-INVITEs that carry no SDP
(RFC 3264 8.4): the far phone's 200 carries the offer, the provider's ACK the answer, and that answer
must reach the far phone in Callflow's ACK (RFC 3261 13.2.2.4), with the direction the provider chose
and its new media port, which the relay must then send to.

Retransmitted 2xx: each 200 comes twice, on both legs, and each copy must be ACKed with the CSeq of
the INVITE it answers. Forked 2xx: Kamailio forks Callflow's INVITE to two far phones that both
answer; each 200 gets its own ACK in its own dialog, and the dialog Callflow does not keep gets a BYE.

Each scenario fails (SIPp exits non-zero) on any message out of order or a `check_it` expression that
does not match; the tests also read what the far peer received from SIPp's message log.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.callflow_server import CallflowServer
from tests.integration.conftest import require_peer
from tests.integration.sipp_peer import SCENARIOS, SippMessage, SippPeer, sipp_problem
from tests.rig import ports
from tests.rig.kamailio import kamailio_binary, kamailio_module_dir
from tests.rig.proc import log_tail, reap_group, stop_process, wait_until
from tests.rig.sipping import options_ping

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
        self.tmp_path = tmp_path
        self.server: CallflowServer | None = None
        self.kamailio: subprocess.Popen[bytes] | None = None
        self.media = {name: _rtp_socket() for name in ("offer", "answer", "phone")}
        self.dir = tmp_path / "sipp"
        self.peers: list[SippPeer] = []

    def start(self, far_port: int | None = None) -> CallflowServer:
        """Callflow with line `provider` at the provider's SIPp and line `far` at `far_port` (default:
        the far phone's SIPp)."""
        flow = FLOW.format(zero=self.zero_port, one=far_port or self.one_port)
        self.server = CallflowServer(flow, self.tmp_path / "callflow", ports.sip_port(), ports.rtp_range(20)).start()
        return self.server

    def forking_proxy(self, uas_ports: tuple[int, int]) -> int:
        """Kamailio on a port of its own, forking every INVITE to the two UAS ports; returns its port."""
        binary, modules = kamailio_binary(), kamailio_module_dir()
        assert binary and modules, "kamailio is installed but its modules were not found"
        port = ports.sip_port()
        run = self.tmp_path / "kamailio"
        run.mkdir()
        cfg = (SCENARIOS / "kamailio-fork.cfg").read_text()
        for name, value in (("PORT", port), ("MPATH", modules), ("UAS1", uas_ports[0]), ("UAS2", uas_ports[1])):
            cfg = cfg.replace(name, str(value))
        (run / "kamailio.cfg").write_text(cfg)
        self.kamailio_log = run / "kamailio.log"
        with open(self.kamailio_log, "wb") as log:
            self.kamailio = subprocess.Popen(
                [binary, "-f", str(run / "kamailio.cfg"), "-DD", "-E", "-n", "1", "-m", "32", "-M", "8",
                 "-P", str(run / "kamailio.pid"), "-Y", str(run)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=run, start_new_session=True)
        assert wait_until(lambda: self.kamailio is not None and (self.kamailio.poll() is not None
                                                                 or options_ping(port) == 200), 15), \
            log_tail(self.kamailio_log)
        assert self.kamailio.poll() is None, f"kamailio exited:\n{log_tail(self.kamailio_log)}"
        return port

    def live_server(self) -> CallflowServer:
        assert self.server is not None
        return self.server

    def port(self, name: str) -> int:
        return int(self.media[name].getsockname()[1])

    def far(self, scenario: str, port: int | None = None, **keys: object) -> SippPeer:
        peer = SippPeer(scenario, self.dir, port or self.one_port, keys=keys).start()
        self.peers.append(peer)
        return peer

    def provider(self, scenario: str, *, pause_ms: int = 0, **keys: object) -> SippPeer:
        # the far phones' SIPp must be listening before the call reaches them
        for far in self.peers:
            far.wait_listening()
        if self.server is None:
            self.start()
        assert self.server is not None
        peer = SippPeer(scenario, self.dir, self.zero_port, target=self.server.hostport, keys=keys,
                        pause_ms=pause_ms).start()
        self.peers.append(peer)
        return peer

    def close(self) -> None:
        for peer in self.peers:
            peer.stop()
        for sock in self.media.values():
            sock.close()
        if self.server is not None:
            self.server.stop()
        if self.kamailio is not None:
            stop_process(self.kamailio)
            reap_group(self.kamailio)


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
    call.live_server().assert_alive()


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
    call.live_server().assert_alive()


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
    call.live_server().assert_alive()


def test_forked_answers_each_get_their_own_ack_and_the_dialog_not_kept_gets_a_bye(call: Call) -> None:
    """Behaviour 3 (RFC 3261 13.2.2.4): Kamailio forks Callflow's INVITE to two far phones, and both
    answer 200 (different To tags). Each phone gets the ACK of its own dialog (its own To tag), and one
    of them, the dialog Callflow does not keep, gets a BYE while the call is still up; the other one
    stays in the call until the provider hangs up."""
    require_peer("kamailio", None if kamailio_binary() else "no kamailio executable")
    first, second = ports.sip_port(), ports.sip_port()
    fars = [call.far("fork_far_uas.xml", port) for port in (first, second)]
    call.start(far_port=call.forking_proxy((first, second)))
    provider = call.provider("simple_call_provider.xml", pause_ms=4000)

    # one far phone is hung up by Callflow while the provider still holds the call
    assert wait_until(lambda: any(f.received("BYE") for f in fars), 15), [f.messages_tail() for f in fars]
    dropped = next((f for f in fars if f.received("BYE")), None)
    assert dropped is not None, [f.messages_tail() for f in fars]
    assert not [m for m in provider.messages("sent") if m.method == "BYE"], "the BYE came only at the call's end"
    provider.wait(20)
    for far in fars:
        far.wait(20)

    for far in fars:
        answered = [m for m in far.messages("sent") if m.status == 200 and m.cseq_method == "INVITE"]
        acks = far.received("ACK")
        assert answered and len(acks) == 1, far.messages_tail()
        assert _tag(acks[0].headers["to"]) == _tag(answered[0].headers["to"]), "the ACK of another dialog"
        assert len(far.received("BYE")) == 1
    tags = {_tag(far.received("ACK")[0].headers["to"]) for far in fars}
    assert len(tags) == 2, "two dialogs, one per answer"
    call.live_server().assert_alive()


def _tag(header: str) -> str:
    return header.split("tag=", 1)[1].split(";", 1)[0] if "tag=" in header else ""
