"""The RTP relay, on real sockets on loopback: two UDP sockets stand for the two phones of a call.

The relay listens on 127.0.0.1; each phone (and each stranger) sends from a loopback address of its
own (127.0.0.11, .12, ...), since the relay takes media only from the hosts a call negotiated.
Every test runs on asyncio's own loop and on uvloop (the server's loop when installed); every wait
is bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import socket
import struct
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.media.base import MediaError
from runtime.media.relay import MediaRelay, PortPool, RelaySession
from runtime.sip import sdp as sdp_module
from runtime.sip.sdp import SdpError, parse_sdp, rewrite_sdp

HOST = "127.0.0.1"
TIMEOUT = 2.0

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is optional off Linux/macOS
    uvloop = None

LOOPS = ["asyncio"] + (["uvloop"] if uvloop is not None else [])


@pytest.fixture(params=LOOPS)
def run(request: pytest.FixtureRequest) -> Iterator[Callable[[Awaitable[Any]], Any]]:
    """Run a coroutine to completion on the loop under test."""
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        yield runner.run


def rtp(seq: int, ssrc: int = 0x1234, payload: bytes = b"audio") -> bytes:
    """An RTP packet (RFC 3550 5.1): V=2, PT 0 (PCMU)."""
    return struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, ssrc) + payload


def rtcp(ssrc: int = 0x1234, payload: bytes = b"") -> bytes:
    """An RTCP receiver report (RFC 3550 6.4.2) with no report blocks."""
    return struct.pack("!BBHI", 0x80, 201, 1, ssrc) + payload


_hosts = itertools.count(11)


def next_host() -> str:
    """A loopback address no other party of this test process uses."""
    return f"127.0.0.{next(_hosts) % 200 + 11}"


class Phone(asyncio.DatagramProtocol):
    """A UDP socket standing for a phone: it sends to the relay and queues what comes back."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport
        self.seq = random.randrange(1 << 16)
        self.ssrc = random.randrange(1 << 32)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.inbox.put_nowait((data, addr))

    @property
    def addr(self) -> tuple[str, int]:
        return self.transport.get_extra_info("sockname")[:2]

    def send(self, data: bytes, port: int) -> None:
        self.transport.sendto(data, (HOST, port))

    def talk(self, payload: bytes, port: int) -> None:
        """The next RTP packet of this phone's stream, carrying ``payload``."""
        self.seq += 1
        self.send(rtp(self.seq, self.ssrc, payload), port)

    async def receive(self) -> tuple[bytes, tuple[str, int]]:
        return await asyncio.wait_for(self.inbox.get(), TIMEOUT)

    async def nothing_arrives(self, wait: float = 0.1) -> bool:
        await asyncio.sleep(wait)
        return self.inbox.empty()

    def close(self) -> None:
        self.transport.close()


async def phone(host: str | None = None, port: int = 0) -> Phone:
    """A phone on a loopback address of its own (or ``host``)."""
    loop = asyncio.get_running_loop()
    _, p = await loop.create_datagram_endpoint(Phone, local_addr=(host or next_host(), port))
    return p


async def received(p: Phone) -> bytes:
    """The payload of the next RTP packet ``p`` receives."""
    return (await p.receive())[0][12:]


def unused_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


async def settle(predicate: Callable[[], bool]) -> None:
    """Wait (bounded) until the relay has processed what was sent."""
    for _ in range(200):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
        return True


def free_range(size: int) -> tuple[int, int]:
    """A block of ``size`` ports (even start) nobody holds right now, so tests can run beside a busy server.

    Scans 1000-port steps below the kernel's ephemeral range from a random start; bounded.
    """
    bases = list(range(20000, 32000 - size, 1000))
    start = random.randrange(len(bases))
    for base in bases[start:] + bases[:start]:
        if all(port_is_free(p) for p in range(base, base + size)):
            return base, base + size - 1
    raise AssertionError(f"no free block of {size} ports on {HOST}")


async def call(relay: MediaRelay) -> tuple[RelaySession, Phone, Phone]:
    """A session with both phones' SDP addresses known (their real addresses)."""
    session = await relay.allocate("call-1")
    alice, bob = await phone(), await phone()
    session.set_remote(0, alice.addr)
    session.set_remote(1, bob.addr)
    return session, alice, bob


class TestPortPool:
    def test_hands_out_even_ports_whose_rtcp_port_fits_in_the_range(self) -> None:
        pool = PortPool(20001, 20008)
        ports = [pool.allocate() for _ in range(pool.capacity)]
        assert ports == [20002, 20004, 20006]  # 20008 would need 20009 for RTCP
        assert all(p % 2 == 0 for p in ports)

    def test_exhaustion_raises_media_error(self) -> None:
        pool = PortPool(20000, 20003)
        pool.allocate(), pool.allocate()
        with pytest.raises(MediaError, match="exhausted"):
            pool.allocate()

    @given(st.lists(st.tuples(st.booleans(), st.integers(0, 1000)), max_size=300))
    def test_never_hands_out_a_port_in_use(self, steps: list[tuple[bool, int]]) -> None:
        pool = PortPool(20000, 20019)
        held: list[int] = []
        for allocate, pick in steps:
            if allocate and pool.free:
                port = pool.allocate()
                assert port not in held
                held.append(port)
            elif held:
                pool.release(held.pop(pick % len(held)))
            assert pool.in_use == len(held) and pool.in_use + pool.free == pool.capacity

    def test_a_released_port_is_reused_last(self) -> None:
        pool = PortPool(20000, 20005)
        first = pool.allocate()
        pool.release(first)
        assert pool.allocate() != first

    def test_releasing_a_port_not_handed_out_is_refused(self) -> None:
        pool = PortPool(20000, 20005)
        with pytest.raises(MediaError, match="not allocated"):
            pool.release(20000)
        port = pool.allocate()
        pool.release(port)
        with pytest.raises(MediaError):
            pool.release(port)

    def test_parked_ports_count_as_free_but_are_not_handed_out_by_allocate(self) -> None:
        pool = PortPool(20000, 20003)
        a, b = pool.allocate(), pool.allocate()
        pool.park(a)
        assert (pool.in_use, pool.free, pool.parked, pool.unbound) == (1, 1, 1, 0)
        with pytest.raises(MediaError, match="parked"):
            pool.allocate()
        pool.unpark(a)
        assert (pool.in_use, pool.free) == (2, 0)
        pool.park(a)
        pool.release(a)  # a parked port whose sockets were closed
        pool.release(b)
        assert (pool.in_use, pool.free, pool.parked, pool.unbound) == (0, 2, 0, 2)
        with pytest.raises(MediaError):
            pool.unpark(a)
        with pytest.raises(MediaError):
            pool.park(a)

    @given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1000)), max_size=300))
    def test_parking_keeps_the_accounting_whole(self, steps: list[tuple[int, int]]) -> None:
        pool = PortPool(20000, 20019)
        held: list[int] = []
        parked: list[int] = []
        for op, pick in steps:
            if op == 0 and pool.unbound:
                port = pool.allocate()
                assert port not in held and port not in parked
                held.append(port)
            elif op == 1 and held:
                pool.park(port := held.pop(pick % len(held)))
                parked.append(port)
            elif op == 2 and parked:
                pool.unpark(port := parked.pop(pick % len(parked)))
                held.append(port)
            elif op == 3 and (held or parked):
                both = held + parked
                port = both[pick % len(both)]
                (held if port in held else parked).remove(port)
                pool.release(port)
            assert pool.in_use == len(held) and pool.parked == len(parked)
            assert pool.in_use + pool.free == pool.capacity

    def test_a_range_without_a_whole_pair_is_refused(self) -> None:
        with pytest.raises(ValueError):
            PortPool(20001, 20002)


class TestRelay:
    def test_carries_packets_both_ways_and_counts_them_per_direction(self, run: Any) -> None:
        async def scenario() -> None:
            relay = MediaRelay(HOST, free_range(100))
            session, alice, bob = await call(relay)
            leg0, leg1 = session.legs

            alice.talk(b"hello bob", leg0.local_port)
            data, source = await bob.receive()
            assert data[12:] == b"hello bob"
            assert source == (HOST, leg1.local_port)  # from the callee-facing socket

            bob.talk(b"hi alice!!", leg1.local_port)
            data, source = await alice.receive()
            assert data[12:] == b"hi alice!!"
            assert source == (HOST, leg0.local_port)

            assert session.packets == (1, 1)
            assert session.bytes == (21, 22)
            assert relay.stats().packets == 2
            await relay.close()
            alice.close(), bob.close()

        run(scenario())

    def test_a_full_size_datagram_is_relayed_intact(self, run: Any) -> None:
        async def scenario() -> None:
            relay = MediaRelay(HOST, free_range(50))
            session, alice, bob = await call(relay)
            video = bytes(range(256)) * 32  # 8 KiB: larger than any MTU-sized RTP packet
            alice.talk(video, session.legs[0].local_port)
            assert await received(bob) == video
            await relay.close()
            alice.close(), bob.close()

        run(scenario())

    def test_rtcp_is_relayed_on_the_ports_above(self, run: Any) -> None:
        async def scenario() -> None:
            relay = MediaRelay(HOST, free_range(100))
            session = await relay.allocate("call-rtcp")
            alice_rtcp, bob_rtcp = await phone(), await phone()
            # the SDP names the RTP port; RTCP is expected one above it unless a=rtcp says otherwise
            session.set_remote(0, (alice_rtcp.addr[0], 9), rtcp=alice_rtcp.addr)
            session.set_remote(1, (bob_rtcp.addr[0], bob_rtcp.addr[1] - 1))
            leg0, leg1 = session.legs

            alice_rtcp.send(rtcp(1, b"SR from alice"), leg0.local_rtcp_port)
            assert await bob_rtcp.receive() == (rtcp(1, b"SR from alice"), (HOST, leg1.local_port + 1))
            bob_rtcp.send(rtcp(2, b"RR from bob"), leg1.local_rtcp_port)
            assert await alice_rtcp.receive() == (rtcp(2, b"RR from bob"), (HOST, leg0.local_port + 1))

            assert session.rtcp_packets == (1, 1)
            assert session.packets == (0, 0)  # RTP counters untouched
            await relay.close()
            alice_rtcp.close(), bob_rtcp.close()

        run(scenario())

    def test_a_phones_stream_from_the_sdp_host_locks_after_probation_even_from_another_port(
            self, run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr("runtime.media.latch.WEAK_PROBATION", 0.0)  # no wait for the stream's second

        async def scenario() -> None:
            relay = MediaRelay(HOST, free_range(100), probation=3)
            session = await relay.allocate("call-port")
            alice, bob = await phone(), await phone()
            sdp_says = (alice.addr[0], unused_port(alice.addr[0]))  # the SDP's port is not the one it sends from
            session.set_remote(0, sdp_says)
            session.expect(0, alice.addr[0])  # a phone's leg: its signalling host
            session.set_remote(1, bob.addr)
            leg0, leg1 = session.legs
            for i in range(3):
                assert leg0.remote == sdp_says and not leg0.locked
                alice.talk(b"a%d" % i, leg0.local_port)
            assert await received(bob) == b"a2"  # relayed once it passed probation (its SDP address is usable)
            assert leg0.remote == alice.addr and leg0.locked
            assert leg0.rtp.dest == sdp_says  # bob's audio goes where alice's SDP says she receives
            await relay.close()
            alice.close(), bob.close()

        run(scenario())

    def test_a_phone_behind_nat_is_latched_at_its_signalling_source(self, run: Any) -> None:
        async def scenario() -> None:
            relay = MediaRelay(HOST, free_range(100))
            session = await relay.allocate("call-nat")
            alice, bob = await phone(), await phone()
            session.set_remote(0, ("192.168.1.20", 4000))  # the private address its SDP names
            session.expect(0, alice.addr[0])  # where its REGISTER and INVITE came from
            session.set_remote(1, bob.addr)
            leg0, leg1 = session.legs
            for i in range(3):
                alice.talk(b"from behind nat %d" % i, leg0.local_port)
                assert await received(bob) == b"from behind nat %d" % i
            assert leg0.remote == alice.addr and leg0.locked
            bob.talk(b"answer", leg1.local_port)
            assert await received(alice) == b"answer"
            await relay.close()
            alice.close(), bob.close()

        run(scenario())

    def test_without_expect_a_source_the_sdp_does_not_name_is_a_stranger(self, run: Any) -> None:
        async def scenario() -> None:
            relay = MediaRelay(HOST, free_range(100))
            session = await relay.allocate("call-nat")
            alice, bob = await phone(), await phone()
            session.set_remote(0, ("192.168.1.20", 4000))
            session.set_remote(1, bob.addr)
            leg0 = session.legs[0]
            for _ in range(5):
                alice.talk(b"x", leg0.local_port)
            await settle(lambda: session.strangers == (5, 0))
            assert await bob.nothing_arrives() and not leg0.locked
            await relay.close()
            alice.close(), bob.close()

        run(scenario())

    def test_after_the_lock_a_stranger_is_dropped_and_cannot_steal_the_stream(self, run: Any) -> None:
        async def scenario() -> None:
            relay = MediaRelay(HOST, free_range(100), probation=3)
            session, alice, bob = await call(relay)
            intruder = await phone()
            leg0, leg1 = session.legs
            for i in range(3):
                alice.talk(b"a%d" % i, leg0.local_port)
                await bob.receive()
            assert leg0.locked

            intruder.talk(b"spoofed", leg0.local_port)
            assert await bob.nothing_arrives()
            assert leg0.remote == alice.addr
            bob.talk(b"still for alice", leg1.local_port)
            assert await received(alice) == b"still for alice"
            assert await intruder.nothing_arrives(0.0)
            assert leg0.rtp.strangers == 1
            assert session.dropped == (1, 0) and session.strangers == (1, 0)
            await relay.close()
            alice.close(), bob.close(), intruder.close()

        run(scenario())

    def test_probation_wants_consecutive_packets_of_one_stream(self, run: Any) -> None:
        async def scenario() -> None:
            relay = MediaRelay(HOST, free_range(100), probation=3)
            session, alice, bob = await call(relay)
            leg0 = session.legs[0]
            port = leg0.local_port
            session.set_remote(0, ("192.168.1.20", 4000))  # behind NAT: its SDP names a private address
            session.expect(0, alice.addr[0])  # so its signalling host may lock, after probation
            alice.send(rtp(10, ssrc=1), port)
            alice.send(rtp(12, ssrc=1), port)  # a gap: counting starts again
            alice.send(rtp(13, ssrc=2), port)  # another stream: again
            alice.send(rtp(14, ssrc=2), port)
            for _ in range(4):
                await bob.receive()
            assert not leg0.locked
            alice.send(rtp(15, ssrc=2), port)
            await bob.receive()
            assert leg0.locked and leg0.rtp.locked_ssrc == 2
            await relay.close()
            alice.close(), bob.close()

        run(scenario())

    def test_what_is_not_rtp_is_not_relayed_before_the_lock(self, run: Any) -> None:
        async def scenario() -> None:
            relay = MediaRelay(HOST, free_range(100))
            session, alice, bob = await call(relay)
            alice.send(b"GET / HTTP/1.0\r\n\r\n", session.legs[0].local_port)
            await settle(lambda: session.strangers == (1, 0))
            assert await bob.nothing_arrives()
            await relay.close()
            alice.close(), bob.close()

        run(scenario())

    def test_packets_before_the_other_sides_address_is_known_are_dropped_and_counted(self, run: Any) -> None:
        async def scenario() -> None:
            relay = MediaRelay(HOST, free_range(100))
            session = await relay.allocate("call-early")
            alice, bob = await phone(), await phone()
            session.set_remote(0, alice.addr)  # the callee has not answered: leg 1 has no address
            leg0, leg1 = session.legs

            alice.talk(b"too early", leg0.local_port)
            await settle(lambda: session.dropped == (1, 0))
            assert session.relayed == (0, 0)
            assert session.packets == (1, 0)  # not relayed, but the caller's media reached us (a voicemail's)

            session.set_remote(1, bob.addr)  # the answer arrives
            alice.talk(b"now", leg0.local_port)
            assert await received(bob) == b"now"
            await relay.close()
            alice.close(), bob.close()

        run(scenario())

    def test_a_new_sdp_address_restarts_probation_and_the_same_one_changes_nothing(
            self, run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr("runtime.media.latch.WEAK_PROBATION", 0.0)

        async def scenario() -> None:
            relay = MediaRelay(HOST, free_range(100), probation=1)
            session, alice, bob = await call(relay)
            session.expect(0, alice.addr[0])  # a phone's leg: another port of its host may lock
            leg0 = session.legs[0]
            sdp_address = leg0.rtp.sdp_remote
            alice_other_port = await phone(alice.addr[0])
            alice_other_port.talk(b"x", leg0.local_port)
            await bob.receive()
            assert leg0.remote == alice_other_port.addr and leg0.locked

            session.set_remote(0, alice.addr)  # re-INVITE with the same SDP address: keep the lock
            assert leg0.remote == alice_other_port.addr and leg0.locked
            assert leg0.rtp.sdp_remote == sdp_address

            moved = await phone()  # re-INVITE: the phone moved to a new address
            session.set_remote(0, moved.addr)
            session.expect(0, moved.addr[0])  # and signals from its new host
            assert leg0.remote == moved.addr and not leg0.locked
            alice_other_port.talk(b"old address", leg0.local_port)  # its old host is a stranger now
            await settle(lambda: leg0.rtp.strangers == 1)
            moved.talk(b"new address", leg0.local_port)
            assert await received(bob) == b"new address"
            assert leg0.remote == moved.addr and leg0.locked
            await relay.close()
            for p in (alice, bob, alice_other_port, moved):
                p.close()

        run(scenario())

    def test_close_gives_the_ports_back_and_keeps_the_sockets_bound_for_the_next_call(self, run: Any) -> None:
        async def scenario() -> None:
            relay = MediaRelay(HOST, free_range(4))  # room for exactly one call
            session, alice, bob = await call(relay)
            ports = [leg.local_port for leg in session.legs]
            assert not any(port_is_free(p) or port_is_free(p + 1) for p in ports)

            session.close()
            session.close()  # idempotent
            await asyncio.wait_for(session.wait_closed(), TIMEOUT)
            assert relay.sessions == 0 and relay.pool.in_use == 0
            stats = relay.stats()
            assert (stats.ports_in_use, stats.ports_free, stats.ports_idle) == (0, 2, 2)
            assert not any(port_is_free(p) or port_is_free(p + 1) for p in ports)  # still ours, bound

            again = await relay.allocate("call-2")
            assert [leg.local_port for leg in again.legs] == ports
            assert relay.stats().ports_idle == 0 and relay.pool.in_use == 2
            await relay.close()
            assert all(port_is_free(p) and port_is_free(p + 1) for p in ports)
            alice.close(), bob.close()

        run(scenario())

    def test_without_a_free_list_close_closes_the_sockets(self, run: Any) -> None:
        async def scenario() -> None:
            relay = MediaRelay(HOST, free_range(4), max_idle_legs=0)
            session, alice, bob = await call(relay)
            ports = [leg.local_port for leg in session.legs]
            session.close()
            await asyncio.wait_for(session.wait_closed(), TIMEOUT)
            assert all(port_is_free(p) and port_is_free(p + 1) for p in ports)
            assert relay.pool.in_use == 0 and relay.stats().ports_idle == 0

            again = await relay.allocate("call-2")
            assert [leg.local_port for leg in again.legs] == ports
            await relay.close()
            alice.close(), bob.close()

        run(scenario())

    def test_relay_close_ends_every_session(self, run: Any) -> None:
        async def scenario() -> None:
            relay = MediaRelay(HOST, free_range(100))
            sessions = [await relay.allocate(f"call-{i}") for i in range(3)]
            assert relay.sessions == 3 and relay.stats().ports_in_use == 6
            await relay.close()
            assert all(s.closed for s in sessions)
            assert relay.stats().ports_in_use == 0
            with pytest.raises(MediaError, match="closed"):
                await relay.allocate("late")

        run(scenario())

    def test_pool_exhaustion_raises_media_error_and_leaks_nothing(self, run: Any) -> None:
        async def scenario() -> None:
            relay = MediaRelay(HOST, free_range(6))  # three RTP ports: one call and a half
            await relay.allocate("call-1")
            with pytest.raises(MediaError, match="exhausted"):
                await relay.allocate("call-2")
            assert relay.pool.in_use == 2 and relay.pool.free == 1
            await relay.close()

        run(scenario())

    def test_ports_another_program_holds_are_skipped(self, run: Any) -> None:
        async def scenario() -> None:
            lo, hi = free_range(100)
            squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            squatter.bind((HOST, lo + 1))  # the RTCP port of the first pair
            try:
                relay = MediaRelay(HOST, (lo, hi))
                session = await relay.allocate("call-1")
                assert lo not in [leg.local_port for leg in session.legs]
                assert relay.pool.in_use == 2
                await relay.close()
            finally:
                squatter.close()

        run(scenario())

    def test_anchor_learns_the_offerers_address_and_points_the_sdp_at_the_other_leg(self, run: Any) -> None:
        async def scenario() -> None:
            relay = MediaRelay(HOST, free_range(100), advertise="192.0.2.1")
            session = await relay.allocate("call-sdp")
            offer = (
                b"v=0\r\no=- 1 1 IN IP4 10.0.0.7\r\ns=-\r\nc=IN IP4 10.0.0.7\r\nt=0 0\r\n"
                b"m=audio 4000 RTP/AVP 0 8\r\na=rtcp:4001\r\na=sendrecv\r\n"
                b"m=video 5000 RTP/AVP 96\r\n"
            )
            to_callee = await session.anchor(0, offer)
            assert session.legs[0].remote == ("10.0.0.7", 4000)
            assert session.legs[0].rtcp_remote == ("10.0.0.7", 4001)
            d = parse_sdp(to_callee)
            assert d.endpoint(0) == ("192.0.2.1", session.legs[1].local_port)
            assert d.media[1].port == 0  # one relayed stream per session for now: video is declined
            await relay.close()

        run(scenario())


class TestReuse:
    """Legs (RTP + RTCP sockets, protocols, transports) outlive their call on the relay's free list."""

    def test_a_closed_calls_legs_are_reused_without_binding_a_socket(self, run: Any, monkeypatch: Any) -> None:
        async def scenario() -> None:
            relay = MediaRelay(HOST, free_range(100), reuse_after=0)
            first = await relay.allocate("call-1")
            legs = set(first.legs)

            def sockets(s: RelaySession) -> set[Any]:
                return {e.transport for leg in s.legs for e in (leg.rtp, leg.rtcp)}

            transports = sockets(first)
            first.close()
            await asyncio.wait_for(first.wait_closed(), TIMEOUT)

            def no_bind() -> None:
                raise AssertionError("bound a socket although rested legs were there")

            monkeypatch.setattr(relay, "_bind_pair", no_bind)
            second = await relay.allocate("call-2")
            assert set(second.legs) == legs
            assert sockets(second) == transports and len(transports) == 4
            assert [leg.index for leg in second.legs] == [0, 1]
            assert second.legs[0].rtp.peer is second.legs[1].rtp and second.legs[1].rtcp.peer is second.legs[0].rtcp
            alice, bob = await phone(), await phone()
            second.set_remote(0, alice.addr)
            second.set_remote(1, bob.addr)
            alice.talk(b"through a reused leg", second.legs[0].local_port)
            data, source = await bob.receive()
            assert (data[12:], source) == (b"through a reused leg", (HOST, second.legs[1].local_port))
            await relay.close()
            alice.close(), bob.close()

        run(scenario())

    def test_the_leg_released_longest_ago_is_reused_first(self, run: Any) -> None:
        async def scenario() -> None:
            relay = MediaRelay(HOST, free_range(100), reuse_after=0)
            a, b = await relay.allocate("a"), await relay.allocate("b")
            a.close(), b.close()
            c = await relay.allocate("c")
            assert c.legs == a.legs
            d = await relay.allocate("d")
            assert d.legs == b.legs
            await relay.close()

        run(scenario())

    def test_a_just_released_leg_rests_while_unbound_ports_remain(self, run: Any) -> None:
        async def scenario() -> None:
            relay = MediaRelay(HOST, free_range(100), reuse_after=60)
            first = await relay.allocate("call-1")
            first.close()
            second = await relay.allocate("call-2")
            assert not set(second.legs) & set(first.legs)
            assert relay.stats().ports_idle == 2
            await relay.close()

            tight = MediaRelay(HOST, free_range(4), reuse_after=60)  # no other port: reuse at once
            first = await tight.allocate("call-1")
            first.close()
            assert (await tight.allocate("call-2")).legs == first.legs
            await tight.close()

        run(scenario())

    def test_a_packet_arriving_on_a_resting_leg_is_dropped(self, run: Any) -> None:
        async def scenario() -> None:
            relay = MediaRelay(HOST, free_range(4))
            session, alice, bob = await call(relay)
            leg0, leg1 = session.legs
            alice.talk(b"during the call", leg0.local_port)
            await bob.receive()
            session.close()

            alice.talk(b"late rtp", leg0.local_port)
            alice.send(rtcp(alice.ssrc), leg0.local_rtcp_port)
            bob.talk(b"late the other way", leg1.local_port)
            await settle(lambda: leg0.rtp.dropped + leg0.rtcp.dropped + leg1.rtp.dropped == 3)
            assert await bob.nothing_arrives() and await alice.nothing_arrives(0.0)
            assert leg0.remote is None and not leg0.locked  # nothing learnt while resting
            assert session.packets == (1, 0) and session.dropped == (0, 0)  # the call's own, as at close
            assert relay.stats().packets == 1 and relay.stats().dropped == 0
            await relay.close()
            alice.close(), bob.close()

        run(scenario())

    def test_a_reused_leg_starts_unlocked_with_zeroed_counters(self, run: Any) -> None:
        async def scenario() -> None:
            relay = MediaRelay(HOST, free_range(4), probation=2)  # one call: the next reuses its legs
            session, alice, bob = await call(relay)
            intruder = await phone()
            leg0, leg1 = session.legs
            for _ in range(2):
                alice.talk(b"x" * 10, leg0.local_port)  # locks leg 0
                await bob.receive()
            intruder.talk(b"foreign", leg0.local_port)
            session.set_remote(1, bob.addr, rtcp=bob.addr)  # bob's RTCP comes from its RTP socket
            bob.send(rtcp(bob.ssrc), leg1.local_rtcp_port)
            await settle(lambda: leg0.rtp.strangers == 1 and leg1.rtcp.packets == 1)
            assert leg0.locked
            session.close()
            alice.talk(b"stray while resting", leg0.local_port)
            await settle(lambda: leg0.rtp.dropped == 1)

            again = await relay.allocate("call-2")
            assert set(again.legs) == {leg0, leg1}
            for leg in again.legs:
                for e in (leg.rtp, leg.rtcp):
                    assert e.remote is None and e.sdp_remote is None and not e.locked and e.hosts == ()
                    assert (e.packets, e.bytes, e.dropped, e.strangers, e.errors) == (0, 0, 0, 0, 0)
            assert again.packets == (0, 0) and again.bytes == (0, 0)
            assert again.rtcp_packets == (0, 0) and again.dropped == (0, 0)
            assert session.packets == (2, 0) and session.rtcp_packets == (0, 1) and session.dropped == (1, 0)

            # the new call locks afresh on its own phones
            carol, dave = await phone(), await phone()
            again.set_remote(0, carol.addr)
            again.set_remote(1, dave.addr)
            for _ in range(2):
                carol.talk(b"new call", again.legs[0].local_port)
                assert await received(dave) == b"new call"
            assert again.legs[0].remote == carol.addr and again.legs[0].locked
            assert again.packets == (2, 0)
            await relay.close()
            for p in (alice, bob, intruder, carol, dave):
                p.close()

        run(scenario())

    def test_a_closed_session_no_longer_touches_its_legs(self, run: Any) -> None:
        async def scenario() -> None:
            relay = MediaRelay(HOST, free_range(4), advertise="192.0.2.1")
            old = await relay.allocate("old")
            old.close()
            new, alice, bob = await call(relay)
            assert new.legs == old.legs
            before = [(leg.rtp.remote, leg.rtcp.remote) for leg in new.legs]
            old.set_remote(0, ("10.9.9.9", 4000))
            offer = b"v=0\r\no=- 1 1 IN IP4 10.0.0.7\r\ns=-\r\nc=IN IP4 10.0.0.7\r\nm=audio 4000 RTP/AVP 0\r\n"
            late = await old.anchor(1, offer)
            assert [(leg.rtp.remote, leg.rtcp.remote) for leg in new.legs] == before
            assert parse_sdp(late).media[0].port == 0  # never point a phone at another call's port
            await relay.close()
            alice.close(), bob.close()

        run(scenario())

    def test_the_free_list_is_capped_and_legs_beyond_it_are_closed(self, run: Any) -> None:
        async def scenario() -> None:
            relay = MediaRelay(HOST, free_range(100), max_idle_legs=3)
            a, b = await relay.allocate("a"), await relay.allocate("b")
            a_ports = [leg.local_port for leg in a.legs]
            b_ports = [leg.local_port for leg in b.legs]
            a.close(), b.close()
            await asyncio.wait_for(asyncio.gather(a.wait_closed(), b.wait_closed()), TIMEOUT)
            assert relay.idle_legs == 3
            stats = relay.stats()
            assert (stats.sessions, stats.ports_in_use, stats.ports_idle) == (0, 0, 3)
            assert stats.ports_free == relay.pool.capacity
            assert not any(port_is_free(p) for p in a_ports + b_ports[:1])
            assert port_is_free(b_ports[1]) and port_is_free(b_ports[1] + 1)  # the fourth was closed
            await relay.close()

        run(scenario())

    def test_relay_close_closes_the_resting_sockets_too(self, run: Any) -> None:
        async def scenario() -> None:
            relay = MediaRelay(HOST, free_range(100))
            live, rested = await relay.allocate("live"), await relay.allocate("rested")
            ports = [leg.local_port for s in (live, rested) for leg in s.legs]
            rested.close()
            assert relay.idle_legs == 2
            await relay.close()
            assert live.closed and relay.idle_legs == 0
            assert all(port_is_free(p) and port_is_free(p + 1) for p in ports)
            stats = relay.stats()
            assert (stats.sessions, stats.ports_in_use, stats.ports_idle) == (0, 0, 0)
            assert stats.ports_free == relay.pool.capacity

        run(scenario())

    def test_a_leg_that_lost_a_socket_is_not_reused(self, run: Any) -> None:
        async def scenario() -> None:
            relay = MediaRelay(HOST, free_range(100), reuse_after=0)
            first = await relay.allocate("call-1")
            broken = first.legs[0]
            broken.rtcp.transport.close()  # type: ignore[union-attr]  # as the loop does on a fatal error
            await settle(lambda: broken.rtcp.transport is None)
            first.close()
            await asyncio.wait_for(first.wait_closed(), TIMEOUT)
            assert port_is_free(broken.local_port) and port_is_free(broken.local_port + 1)
            second = await relay.allocate("call-2")
            assert broken not in second.legs and first.legs[1] in second.legs
            assert relay.pool.in_use == 2
            await relay.close()

        run(scenario())

    def test_anchor_parses_the_sdp_once_and_still_refuses_a_malformed_body(self, run: Any, monkeypatch: Any) -> None:
        async def scenario() -> None:
            relay = MediaRelay(HOST, free_range(100), advertise="192.0.2.1")
            session = await relay.allocate("call-sdp")
            parses = 0
            real = sdp_module._parse_lines

            def counting(lines: list[str]) -> Any:
                nonlocal parses
                parses += 1
                return real(lines)

            monkeypatch.setattr(sdp_module, "_parse_lines", counting)
            offer = b"v=0\r\no=- 1 1 IN IP4 10.0.0.7\r\ns=-\r\nc=IN IP4 10.0.0.7\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
            out = await session.anchor(0, offer)
            assert parses == 1
            assert out == rewrite_sdp(offer, "192.0.2.1", [session.legs[1].local_port])
            for bad in (b"", b"hello", offer.replace(b"m=audio 4000", b"m=audio port"), offer + b"c=IN IP4\r\n"):
                with pytest.raises(SdpError):
                    await session.anchor(0, bad)
            await relay.close()

        run(scenario())

    def test_allocate_and_close_keep_the_port_accounting_whole(self, run: Any) -> None:
        async def scenario() -> None:
            relay = MediaRelay(HOST, free_range(40), max_idle_legs=6, reuse_after=0)
            rng = random.Random(7)
            live: list[RelaySession] = []
            for _ in range(200):
                if live and (rng.random() < 0.5 or relay.pool.free < 2):
                    live.pop(rng.randrange(len(live))).close()
                else:
                    live.append(await relay.allocate("c"))
                stats = relay.stats()
                assert stats.sessions == len(live)
                assert stats.ports_idle == relay.idle_legs <= 6
                assert stats.ports_in_use + stats.ports_free == relay.pool.capacity
                ports = [leg.local_port for s in live for leg in s.legs]
                assert len(set(ports)) == len(ports)
            await relay.close()
            assert relay.pool.in_use == 0 and relay.pool.parked == 0

        run(scenario())

    def test_the_default_free_list_leaves_most_file_descriptors_to_everything_else(self, monkeypatch: Any) -> None:
        import resource

        from runtime.media import relay as relay_module

        monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 4096))
        assert MediaRelay(HOST, (40000, 40099)).max_idle_legs == 128  # 256 sockets of 1024
        monkeypatch.setattr(resource, "getrlimit", lambda _: (1 << 20, 1 << 20))
        assert MediaRelay(HOST, (40000, 40099)).max_idle_legs == relay_module.MAX_IDLE_LEGS
        assert MediaRelay(HOST, (40000, 40099), max_idle_legs=7).max_idle_legs == 7
        with pytest.raises(ValueError):
            MediaRelay(HOST, (40000, 40099), max_idle_legs=-1)
