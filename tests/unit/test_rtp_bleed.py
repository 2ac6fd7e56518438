"""RTP bleed (Asterisk AST-2017-008) against the relay, on real UDP sockets on loopback.

Each attack is what issue 9's audit did: a host that is not part of the call sprays the relay's
ports with well-formed RTP and RTCP (in-order sequences, so it would pass any probation), during
ringing, after the lock, or after the port was given to the next call. Every test counts the
audio packets leaked both ways (the attacker's inbox, and the attacker's packets reaching a phone)
and prints the figure.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from runtime.calls import Target
from runtime.engine import Engine
from runtime.lines import LineConfig
from runtime.media.relay import QUARANTINE, MediaRelay, RelaySession
from runtime.sip.message import create_response, parse_message
from runtime.sip.sdp import parse_sdp
from runtime.transport import ListenSpec
from tests.unit.test_media_relay import HOST, Phone, free_range, phone, rtcp, rtp, run, settle

__all__ = ["run"]  # the loop fixture, asyncio and uvloop

SPRAY = 40  # packets per port per attacker burst; each a stream of its own SSRC, in order


def spray(attacker: Phone, session: RelaySession, first_seq: int = 1) -> int:
    """Well-formed RTP at both legs' RTP ports and RTCP at their RTCP ports; returns packets sent."""
    sent = 0
    for leg in session.legs:
        for i in range(SPRAY):
            attacker.send(rtp(first_seq + i, ssrc=0xBAD00000 + leg.index, payload=b"INJECTED"), leg.local_port)
            attacker.send(rtcp(0xBAD00000 + leg.index, b"INJECTED"), leg.local_rtcp_port)
            sent += 2
    return sent


def leaked(attacker: Phone, *phones: Phone) -> int:
    """Packets the attacker received plus attacker packets that reached a phone (drains inboxes)."""
    count = attacker.inbox.qsize()
    for p in phones:
        while not p.inbox.empty():
            data, _ = p.inbox.get_nowait()
            count += b"INJECTED" in data
    return count


async def converse(a: Phone, b: Phone, session: RelaySession, packets: int) -> None:
    """``a`` and ``b`` talk through ``session`` and each hears all of the other's packets."""
    for _ in range(packets):
        a.talk(b"caller audio", session.legs[0].local_port)
        b.talk(b"callee audio", session.legs[1].local_port)
    for p in (a, b):
        for _ in range(packets):
            data, _ = await p.receive()
            assert b"INJECTED" not in data


def test_spraying_the_ports_while_the_callee_rings_gets_and_injects_nothing(run: Any) -> None:
    async def scenario() -> None:
        relay = MediaRelay(HOST, free_range(100))
        session = await relay.allocate("ringing")
        caller, callee, attacker = await phone(), await phone(), await phone()
        session.set_remote(0, caller.addr)  # the INVITE's SDP
        session.expect(1, callee.addr[0])  # the callee is a registered phone: its signalling source
        for _ in range(20):  # the caller talks (early media) while the attacker sprays
            caller.talk(b"caller audio", session.legs[0].local_port)
        sent = spray(attacker, session)
        await settle(lambda: sum(session.strangers) == sent)
        session.set_remote(1, callee.addr)  # the callee answers
        await converse(caller, callee, session, 10)
        count = leaked(attacker, caller, callee)
        print(f"audio packets leaked: {count} (attacker sent {sent} during ringing)")
        assert count == 0
        await relay.close()
        for p in (caller, callee, attacker):
            p.close()

    run(scenario())


def test_a_stranger_after_the_lock_gets_and_injects_nothing(run: Any) -> None:
    async def scenario() -> None:
        relay = MediaRelay(HOST, free_range(100))
        session = await relay.allocate("locked")
        caller, callee, attacker = await phone(), await phone(), await phone()
        session.set_remote(0, caller.addr)
        session.set_remote(1, callee.addr)
        await converse(caller, callee, session, 5)
        assert all(leg.rtp.locked for leg in session.legs)
        sent = spray(attacker, session)
        await settle(lambda: sum(session.strangers) == sent)
        await converse(caller, callee, session, 5)
        count = leaked(attacker, caller, callee)
        print(f"audio packets leaked: {count} (attacker sent {sent} after the lock)")
        assert relay.stats().strangers == sent
        assert count == 0 and all(leg.remote in (caller.addr, callee.addr) for leg in session.legs)
        await relay.close()
        for p in (caller, callee, attacker):
            p.close()

    run(scenario())


def test_the_previous_caller_of_a_reused_port_gets_and_injects_nothing(run: Any) -> None:
    async def scenario() -> None:
        relay = MediaRelay(HOST, free_range(4))  # one call's ports: the next call reuses them at once
        first = await relay.allocate("first")
        old_caller, old_callee = await phone(), await phone()
        first.set_remote(0, old_caller.addr)
        first.set_remote(1, old_callee.addr)
        await converse(old_caller, old_callee, first, 5)
        first.close()

        second = await relay.allocate("second")
        assert set(second.legs) == set(first.legs)
        caller, callee = await phone(), await phone()
        second.set_remote(0, caller.addr)
        second.set_remote(1, callee.addr)
        for _ in range(SPRAY):  # the previous call's phones keep sending their streams, in order
            old_caller.talk(b"INJECTED", second.legs[0].local_port)
            old_callee.talk(b"INJECTED", second.legs[1].local_port)
        sent = 2 * SPRAY + spray(old_caller, second, first_seq=old_caller.seq + 1)
        await settle(lambda: sum(second.strangers) == sent)
        await converse(caller, callee, second, 10)
        count = leaked(old_caller, caller, callee) + leaked(old_callee)
        print(f"audio packets leaked: {count} (previous peers sent {sent} after the port was reused)")
        assert count == 0
        await relay.close()
        for p in (old_caller, old_callee, caller, callee):
            p.close()

    run(scenario())


def test_a_previous_stream_from_the_new_calls_own_host_is_refused_too(run: Any) -> None:
    async def scenario() -> None:
        # one provider's media server serves both calls: its old stream comes from an acceptable host
        relay = MediaRelay(HOST, free_range(4))
        first = await relay.allocate("first")
        provider_old, phone_a = await phone(), await phone()
        first.set_remote(0, provider_old.addr)
        first.set_remote(1, phone_a.addr)
        await converse(provider_old, phone_a, first, 5)
        first.close()

        second = await relay.allocate("second")
        provider_new, phone_b = await phone(provider_old.addr[0]), await phone()
        second.set_remote(0, provider_new.addr)
        second.set_remote(1, phone_b.addr)
        for _ in range(SPRAY):  # the old stream goes on: same address, same SSRC, in order
            provider_old.talk(b"INJECTED", second.legs[0].local_port)
        await settle(lambda: second.strangers == (SPRAY, 0))
        await converse(provider_new, phone_b, second, 10)
        assert second.legs[0].remote == provider_new.addr
        count = leaked(provider_old, phone_b, provider_new)
        print(f"audio packets leaked: {count} (the old stream sent {SPRAY} from the new call's host)")
        assert count == 0
        await relay.close()
        for p in (provider_old, phone_a, provider_new, phone_b):
            p.close()

    run(scenario())


def test_a_phone_behind_nat_still_talks_both_ways(run: Any) -> None:
    async def scenario() -> None:
        relay = MediaRelay(HOST, free_range(100))
        session = await relay.allocate("nat")
        caller, callee, attacker = await phone(), await phone(), await phone()
        session.set_remote(0, ("10.0.0.7", 4000))  # its SDP names its private address
        session.expect(0, caller.addr[0])  # its INVITE came from its public one
        session.set_remote(1, callee.addr)
        for _ in range(3):  # until its stream passes probation, the relay sends to the SDP's address
            caller.talk(b"caller audio", session.legs[0].local_port)
            await callee.receive()
        assert session.legs[0].remote == caller.addr
        await converse(caller, callee, session, 10)
        sent = spray(attacker, session)
        await settle(lambda: sum(session.strangers) == sent)
        count = leaked(attacker, caller, callee)
        print(f"audio packets leaked: {count}; NAT'd phone heard {session.packets[1]} packets")
        assert count == 0
        await relay.close()
        for p in (caller, callee, attacker):
            p.close()

    run(scenario())


def test_packets_forged_from_the_phones_host_before_its_first_packet_do_not_keep_its_leg(
        run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # attack 1c: in-order packets from the caller's IP (another port) while the callee rings; the worst
    # case, where the forger streamed long enough to lock (its second of probation taken away here)
    monkeypatch.setattr("runtime.media.latch.WEAK_PROBATION", 0.0)

    async def scenario() -> None:
        relay = MediaRelay(HOST, free_range(100))
        session = await relay.allocate("forged-phone")
        caller, callee = await phone(), await phone()
        spoofer = await phone(caller.addr[0])  # what a forged source address looks like on loopback
        session.set_remote(0, caller.addr)  # the INVITE's SDP
        session.expect(0, caller.addr[0])  # the INVITE's source: the same host
        for _ in range(3):  # no callee address yet: dropped, but they pass probation
            spoofer.send(rtp(spoofer.seq, ssrc=0xBAD00000, payload=b"INJECTED"), session.legs[0].local_port)
            spoofer.seq += 1
        await settle(lambda: session.legs[0].locked)
        session.set_remote(1, callee.addr)  # the callee answers
        session.expect(1, callee.addr[0])
        caller.talk(b"caller audio", session.legs[0].local_port)  # from the address its SDP names: retaken
        assert b"INJECTED" not in (await callee.receive())[0]
        refused = session.strangers[0]
        for _ in range(10):  # the forger goes on
            spoofer.send(rtp(spoofer.seq, ssrc=0xBAD00000, payload=b"INJECTED"), session.legs[0].local_port)
            spoofer.seq += 1
        await settle(lambda: session.strangers[0] == refused + 10)
        await converse(caller, callee, session, 10)
        assert session.legs[0].remote == caller.addr
        count = leaked(spoofer, caller, callee)
        print(f"audio packets leaked: {count}; callee heard the phone {session.packets[0]} packets")
        assert count == 0
        await relay.close()
        for p in (caller, callee, spoofer):
            p.close()

    run(scenario())


def test_packets_forged_from_the_providers_host_never_reach_the_phone(run: Any) -> None:
    # attack 1e: forged from the provider's IP (another port) as its answer names its media address
    async def scenario() -> None:
        relay = MediaRelay(HOST, free_range(100))
        session = await relay.allocate("forged-provider")
        caller, provider = await phone(), await phone()
        spoofer = await phone(provider.addr[0])
        session.set_remote(0, caller.addr)
        session.expect(0, caller.addr[0])
        session.set_remote(1, provider.addr)  # the provider's answer; a LINE leg expects no host
        injected = 0
        for _ in range(3 * SPRAY):
            spoofer.send(rtp(spoofer.seq, ssrc=0xBAD00001, payload=b"INJECTED"), session.legs[1].local_port)
            spoofer.seq += 1
            injected += 1
        await settle(lambda: session.strangers[1] == injected)
        await converse(caller, provider, session, 10)
        assert session.legs[1].remote == provider.addr
        count = leaked(spoofer, caller, provider)
        print(f"injected: {count} (the spoofer sent {injected} from the provider's IP)")
        assert count == 0
        await relay.close()
        for p in (caller, provider, spoofer):
            p.close()

    run(scenario())


def test_a_released_port_rests_longer_than_two_lost_byes_take() -> None:
    # Timer E (RFC 3261 17.1.2.2): a lost BYE is resent after 0.5 s, 1 s, 2 s
    assert QUARANTINE >= 0.5 + 1 + 2
    assert MediaRelay(HOST, (40000, 40099)).reuse_after == QUARANTINE


def test_a_just_released_port_is_not_handed_to_the_next_call_while_others_are_free(run: Any) -> None:
    async def scenario() -> None:
        relay = MediaRelay(HOST, free_range(100))
        first = await relay.allocate("first")
        first.close()
        second = await relay.allocate("second")
        assert not {leg.local_port for leg in second.legs} & {leg.local_port for leg in first.legs}
        await relay.close()

    run(scenario())


def test_the_previous_stream_is_refused_on_a_port_bound_anew(run: Any) -> None:
    async def scenario() -> None:
        relay = MediaRelay(HOST, free_range(4), max_idle_legs=0)  # legs are closed, the port rebound
        first = await relay.allocate("first")
        old_caller, old_callee = await phone(), await phone()
        first.set_remote(0, old_caller.addr)
        first.set_remote(1, old_callee.addr)
        await converse(old_caller, old_callee, first, 5)
        first.close()
        await asyncio.wait_for(first.wait_closed(), 2)
        second = await relay.allocate("second")
        assert [leg.local_port for leg in second.legs] == [leg.local_port for leg in first.legs]
        caller = await phone(old_caller.addr[0])  # same host, a new stream
        callee = await phone()
        second.set_remote(0, caller.addr)
        second.set_remote(1, callee.addr)
        for _ in range(SPRAY):
            old_caller.talk(b"INJECTED", second.legs[0].local_port)
        await settle(lambda: second.strangers == (SPRAY, 0))
        await converse(caller, callee, second, 5)
        assert leaked(old_caller, callee) == 0
        await relay.close()
        for p in (old_caller, old_callee, caller, callee):
            p.close()

    run(scenario())


# ---- the same attack against a running server: two providers' calls through the B2BUA -----------

def _sdp(host: str, port: int) -> bytes:
    return (f"v=0\r\no=p 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n").encode()


def _udp(host: str, timeout: float = 3) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.settimeout(timeout)
    return s


def _recv_sip(s: socket.socket, start: bytes):  # type: ignore[no-untyped-def]
    for _ in range(20):  # bounded: skip 100 Trying and retransmissions
        data = s.recv(65535)
        if data.startswith(start):
            return parse_message(data)
    raise AssertionError(f"nothing starting {start!r}")


def _drain(s: socket.socket) -> list[bytes]:
    """Everything queued on ``s`` now (non-blocking)."""
    s.setblocking(False)
    out = []
    for _ in range(100_000):  # bounded
        try:
            out.append(s.recv(65535))
        except BlockingIOError:
            break
    s.settimeout(3)
    return out


def _call_under_attack(sip_port: int, rtp_range: tuple[int, int], a: socket.socket,
                       b: socket.socket) -> tuple[int, int, int]:
    """Caller line a rings callee line b through the server while an attacker sprays every port of
    the relay's range; then they talk, and the attacker sprays again. Returns the packets leaked
    (either way), the caller's packets the callee heard (of 30) and the callee's the caller heard."""
    media_a, media_b, attacker = _udp("127.0.0.21"), _udp("127.0.0.22"), _udp("127.0.0.66")
    me = a.getsockname()[1]
    offer = _sdp("127.0.0.21", media_a.getsockname()[1])
    invite = (f"INVITE sip:+15551234567@127.0.0.1:{sip_port} SIP/2.0\r\n"
              f"Via: SIP/2.0/UDP 127.0.0.1:{me};rport;branch=z9hG4bKbleed1\r\nMax-Forwards: 70\r\n"
              f"From: <sip:a@127.0.0.1>;tag=a1\r\nTo: <sip:+15551234567@127.0.0.1>\r\nCall-ID: bleed-1\r\n"
              f"CSeq: 1 INVITE\r\nContact: <sip:a@127.0.0.1:{me}>\r\nContent-Type: application/sdp\r\n"
              f"Content-Length: {len(offer)}\r\n\r\n").encode() + offer
    a.sendto(invite, ("127.0.0.1", sip_port))
    b_invite = _recv_sip(b, b"INVITE")
    callee_port = parse_sdp(b_invite.body).endpoint()[1]  # leg 1: where the callee is to send
    contact = [("Contact", f"<sip:b@127.0.0.1:{b.getsockname()[1]}>")]
    b.sendto(bytes(create_response(b_invite, 180, "Ringing", to_tag="b1", headers=contact)), ("127.0.0.1", sip_port))
    _recv_sip(a, b"SIP/2.0 180")

    def spray(first_seq: int) -> None:
        for port in range(rtp_range[0], rtp_range[1] + 1):
            for i in range(SPRAY // 4):
                attacker.sendto(rtp(first_seq + i, ssrc=0xBAD, payload=b"INJECTED"), ("127.0.0.1", port))

    spray(1)  # while the callee rings
    answer = _sdp("127.0.0.22", media_b.getsockname()[1])
    b.sendto(bytes(create_response(b_invite, 200, "OK", to_tag="b1", headers=contact, body=answer,
                                   content_type="application/sdp")), ("127.0.0.1", sip_port))
    a_ok = _recv_sip(a, b"SIP/2.0 200")
    caller_port = parse_sdp(a_ok.body).endpoint()[1]  # leg 0: where the caller is to send
    ack = (f"ACK sip:b@127.0.0.1:{sip_port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};rport;branch=z9hG4bKbleed2\r\n"
           f"Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=a1\r\nTo: {a_ok.headers.get('to')}\r\n"
           f"Call-ID: bleed-1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n").encode()
    a.sendto(ack, ("127.0.0.1", sip_port))

    def hear(s: socket.socket, count: int) -> list[bytes]:
        got = []
        for _ in range(count):  # bounded; a relay that sends elsewhere makes this stop short
            try:
                got.append(s.recv(2048))
            except TimeoutError:
                break
        return got

    for seq in range(1, 21):  # they talk
        media_a.sendto(rtp(seq, ssrc=0xA, payload=b"caller audio"), ("127.0.0.1", caller_port))
        media_b.sendto(rtp(seq, ssrc=0xB, payload=b"callee audio"), ("127.0.0.1", callee_port))
    heard_b, heard_a = hear(media_b, 20), hear(media_a, 20)
    spray(1000)  # after the lock
    for seq in range(21, 31):
        media_a.sendto(rtp(seq, ssrc=0xA, payload=b"caller audio"), ("127.0.0.1", caller_port))
    heard_b += hear(media_b, 10)
    heard_a += _drain(media_a)
    heard_b += _drain(media_b)
    stolen = _drain(attacker)
    injected = sum(b"INJECTED" in p for p in heard_a + heard_b)
    for s in (media_a, media_b, attacker):
        s.close()
    return len(stolen) + injected, sum(p.endswith(b"caller audio") for p in heard_b), len(heard_a)


def test_spraying_a_running_servers_rtp_ports_during_and_after_ringing_leaks_nothing() -> None:
    async def scenario() -> tuple[int, int, int]:
        a, b = _udp("127.0.0.1"), _udp("127.0.0.1")
        rtp_range = (37400, 37439)
        engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], advertise="127.0.0.1", rtp_ports=rtp_range)
        await engine.start()
        for name, s in (("a", a), ("b", b)):
            engine.add_line(LineConfig(name, "127.0.0.1", s.getsockname()[1], register_every=None))
            engine.register_line(name)
        await asyncio.sleep(0.05)
        engine.router = lambda call: call.accept([Target("LINE", "b")], None, lambda failure: None)
        try:
            return await asyncio.get_running_loop().run_in_executor(
                None, _call_under_attack, engine.ports["udp"], rtp_range, a, b)
        finally:
            await engine.stop()
            a.close()
            b.close()

    count, callee_heard, caller_heard = asyncio.run(scenario())
    print(f"\naudio packets leaked: {count} (a running server, sprayed during ringing and after the lock); "
          f"callee heard {callee_heard} of 30, caller {caller_heard} of 20")
    assert count == 0
    assert (callee_heard, caller_heard) == (30, 20)
