"""The RTP relay, on real sockets on 127.0.0.1: two UDP sockets stand for the two phones of a call.

Every test runs on asyncio's own loop and on uvloop (the server's loop when installed); every wait
is bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.media.base import MediaError
from runtime.media.relay import MediaRelay, PortPool, RelaySession
from runtime.sip.sdp import parse_sdp

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


class Phone(asyncio.DatagramProtocol):
    """A UDP socket standing for a phone: it sends to the relay and queues what comes back."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.inbox.put_nowait((data, addr))

    @property
    def addr(self) -> tuple[str, int]:
        return self.transport.get_extra_info("sockname")[:2]

    def send(self, data: bytes, port: int) -> None:
        self.transport.sendto(data, (HOST, port))

    async def receive(self) -> tuple[bytes, tuple[str, int]]:
        return await asyncio.wait_for(self.inbox.get(), TIMEOUT)

    async def nothing_arrives(self, wait: float = 0.1) -> bool:
        await asyncio.sleep(wait)
        return self.inbox.empty()

    def close(self) -> None:
        self.transport.close()


async def phone(port: int = 0) -> Phone:
    loop = asyncio.get_running_loop()
    _, p = await loop.create_datagram_endpoint(Phone, local_addr=(HOST, port))
    return p


def unused_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
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

    def test_a_range_without_a_whole_pair_is_refused(self) -> None:
        with pytest.raises(ValueError):
            PortPool(20001, 20002)


class TestRelay:
    def test_carries_packets_both_ways_and_counts_them_per_direction(self, run: Any) -> None:
        async def scenario() -> None:
            relay = MediaRelay(HOST, free_range(100))
            session, alice, bob = await call(relay)
            leg0, leg1 = session.legs

            alice.send(b"hello bob", leg0.local_port)
            data, source = await bob.receive()
            assert data == b"hello bob"
            assert source == (HOST, leg1.local_port)  # from the callee-facing socket

            bob.send(b"hi alice!!", leg1.local_port)
            data, source = await alice.receive()
            assert data == b"hi alice!!"
            assert source == (HOST, leg0.local_port)

            assert session.packets == (1, 1)
            assert session.bytes == (9, 10)
            assert relay.stats().packets == 2
            await relay.close()
            alice.close(), bob.close()

        run(scenario())

    def test_a_full_size_datagram_is_relayed_intact(self, run: Any) -> None:
        async def scenario() -> None:
            relay = MediaRelay(HOST, free_range(50))
            session, alice, bob = await call(relay)
            video = bytes(range(256)) * 32  # 8 KiB: larger than any MTU-sized RTP packet
            alice.send(video, session.legs[0].local_port)
            assert (await bob.receive())[0] == video
            await relay.close()
            alice.close(), bob.close()

        run(scenario())

    def test_rtcp_is_relayed_on_the_ports_above(self, run: Any) -> None:
        async def scenario() -> None:
            relay = MediaRelay(HOST, free_range(100))
            session = await relay.allocate("call-rtcp")
            alice_rtcp, bob_rtcp = await phone(), await phone()
            # the SDP names the RTP port; RTCP is expected one above it unless a=rtcp says otherwise
            session.set_remote(0, (HOST, 9), rtcp=alice_rtcp.addr)
            session.set_remote(1, (bob_rtcp.addr[0], bob_rtcp.addr[1] - 1))
            leg0, leg1 = session.legs

            alice_rtcp.send(b"SR from alice", leg0.local_rtcp_port)
            assert await bob_rtcp.receive() == (b"SR from alice", (HOST, leg1.local_port + 1))
            bob_rtcp.send(b"RR from bob", leg1.local_rtcp_port)
            assert await alice_rtcp.receive() == (b"RR from bob", (HOST, leg0.local_port + 1))

            assert session.rtcp_packets == (1, 1)
            assert session.packets == (0, 0)  # RTP counters untouched
            await relay.close()
            alice_rtcp.close(), bob_rtcp.close()

        run(scenario())

    def test_latches_to_the_real_source_when_the_sdp_address_is_different(self, run: Any) -> None:
        async def scenario() -> None:
            relay = MediaRelay(HOST, free_range(100))
            session = await relay.allocate("call-nat")
            alice, bob = await phone(), await phone()
            sdp_says = (HOST, unused_port())  # the private address a phone behind NAT puts in its SDP
            session.set_remote(0, sdp_says)
            session.set_remote(1, bob.addr)
            leg0, leg1 = session.legs
            assert leg0.remote == sdp_says and not leg0.latched

            alice.send(b"rtp from behind nat", leg0.local_port)
            assert (await bob.receive())[0] == b"rtp from behind nat"
            assert leg0.remote == alice.addr and leg0.latched

            bob.send(b"answer", leg1.local_port)  # reaches alice at her real address, not the SDP one
            assert (await alice.receive())[0] == b"answer"
            await relay.close()
            alice.close(), bob.close()

        run(scenario())

    def test_after_the_latch_window_a_foreign_source_is_dropped_and_cannot_steal_the_stream(self, run: Any) -> None:
        async def scenario() -> None:
            relay = MediaRelay(HOST, free_range(100), latch_window=3)
            session, alice, bob = await call(relay)
            intruder = await phone()
            leg0, leg1 = session.legs
            for i in range(3):  # the window: alice's first packets
                alice.send(b"a%d" % i, leg0.local_port)
                await bob.receive()

            intruder.send(b"spoofed", leg0.local_port)
            assert await bob.nothing_arrives()
            assert leg0.remote == alice.addr
            bob.send(b"still for alice", leg1.local_port)
            assert (await alice.receive())[0] == b"still for alice"
            assert await intruder.nothing_arrives(0.0)
            assert leg0.rtp.foreign == 1
            assert session.dropped == (1, 0)
            await relay.close()
            alice.close(), bob.close(), intruder.close()

        run(scenario())

    def test_within_the_window_the_phones_own_packets_correct_a_stray_early_packet(self, run: Any) -> None:
        async def scenario() -> None:
            relay = MediaRelay(HOST, free_range(100))
            session, alice, bob = await call(relay)
            stray = await phone()
            leg0 = session.legs[0]
            stray.send(b"stray", leg0.local_port)
            await bob.receive()
            assert leg0.remote == stray.addr
            alice.send(b"the real phone", leg0.local_port)
            await bob.receive()
            assert leg0.remote == alice.addr
            await relay.close()
            alice.close(), bob.close(), stray.close()

        run(scenario())

    def test_packets_before_the_other_sides_address_is_known_are_dropped_and_counted(self, run: Any) -> None:
        async def scenario() -> None:
            relay = MediaRelay(HOST, free_range(100))
            session = await relay.allocate("call-early")
            alice, bob = await phone(), await phone()
            session.set_remote(0, alice.addr)  # the callee has not answered: leg 1 has no address
            leg0, leg1 = session.legs

            alice.send(b"too early", leg0.local_port)
            await settle(lambda: session.dropped == (1, 0))
            assert session.packets == (0, 0)

            session.set_remote(1, bob.addr)  # the answer arrives
            alice.send(b"now", leg0.local_port)
            assert (await bob.receive())[0] == b"now"
            await relay.close()
            alice.close(), bob.close()

        run(scenario())

    def test_a_new_sdp_address_reopens_the_latch_and_the_same_one_changes_nothing(self, run: Any) -> None:
        async def scenario() -> None:
            relay = MediaRelay(HOST, free_range(100), latch_window=1)
            session, alice, bob = await call(relay)
            leg0 = session.legs[0]
            sdp_address = leg0.rtp.sdp_remote
            natted = await phone()
            natted.send(b"x", leg0.local_port)
            await bob.receive()
            assert leg0.remote == natted.addr and leg0.latched

            session.set_remote(0, alice.addr)  # re-INVITE with the same SDP address: keep the latch
            assert leg0.remote == natted.addr and leg0.latched
            assert leg0.rtp.sdp_remote == sdp_address

            moved = await phone()  # re-INVITE: the phone moved to a new address
            session.set_remote(0, moved.addr)
            assert leg0.remote == moved.addr and not leg0.latched
            await relay.close()
            for p in (alice, bob, natted, moved):
                p.close()

        run(scenario())

    def test_close_closes_the_sockets_and_gives_the_ports_back(self, run: Any) -> None:
        async def scenario() -> None:
            relay = MediaRelay(HOST, free_range(4))  # room for exactly one call
            session, alice, bob = await call(relay)
            ports = [leg.local_port for leg in session.legs]
            assert not any(port_is_free(p) or port_is_free(p + 1) for p in ports)

            session.close()
            session.close()  # idempotent
            await asyncio.wait_for(session.wait_closed(), TIMEOUT)
            assert all(port_is_free(p) and port_is_free(p + 1) for p in ports)
            assert relay.sessions == 0 and relay.pool.in_use == 0

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
