"""RTP bleed (Asterisk AST-2017-008) against the relay, on real UDP sockets on loopback.

Each attack is what issue 9's audit did: a host that is not part of the call sprays the relay's
ports with well-formed RTP and RTCP (in-order sequences, so it would pass any probation), during
ringing, after the lock, or after the port was given to the next call. Every test counts the
audio packets leaked both ways (the attacker's inbox, and the attacker's packets reaching a phone)
and prints the figure.
"""

from __future__ import annotations

import asyncio
from typing import Any

from runtime.media.relay import QUARANTINE, MediaRelay, RelaySession
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
