"""A line's `trust` list: calls from the provider's other addresses are the line's, nothing else is.

The engine runs on real loopback sockets; 127.0.0.2 and 127.0.0.3 stand in for a provider's media
gateways (Linux answers on all of 127.0.0.0/8).
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from runtime.engine import Engine
from runtime.lines import LineConfig
from runtime.sip.message import parse_message
from runtime.transport import ListenSpec


def invite(port: int, source: tuple[str, int], n: int) -> bytes:
    host, sport = source
    return (f"INVITE sip:+15551230000@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{sport};rport;branch=z9hG4bKtrust{n}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:+15557654321@{host}>;tag=t{n}\r\nTo: <sip:+15551230000@127.0.0.1>\r\n"
            f"Call-ID: trust-{n}\r\nCSeq: 1 INVITE\r\nContact: <sip:gw@{host}:{sport}>\r\n"
            f"Content-Length: 0\r\n\r\n").encode()


async def call_from(trust: tuple[str, ...], source_ip: str,
                    source_port: int = 0) -> tuple[int, list[tuple[str, str | None]]]:
    """Send an INVITE from `source_ip` to an engine whose line trusts `trust`; the final status the
    sender got and the (peer type, peer) each routed call was created with."""
    engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], advertise="127.0.0.1", rtp_ports=(36500, 36599))
    await engine.start()
    engine.add_user("alice", "alice-pw")
    engine.add_line(LineConfig("itsp1", "127.0.0.1", 9, register_every=None, trust=trust))
    engine.register_line("itsp1")
    routed: list[tuple[str, str | None]] = []

    def router(call) -> None:  # type: ignore[no-untyped-def]
        routed.append((call.peer_type, call.peer_name))
        call.reject(486, "Busy Here")

    engine.router = router
    await asyncio.sleep(0.05)
    port = engine.ports["udp"]

    def send() -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((source_ip, source_port))
            s.settimeout(2)
            s.sendto(invite(port, s.getsockname(), 1), ("127.0.0.1", port))
            for _ in range(10):
                resp = parse_message(s.recv(65535))
                if resp.status >= 200:
                    return resp.status
        raise AssertionError("no final response")

    try:
        status = await asyncio.get_running_loop().run_in_executor(None, send)
    finally:
        await engine.stop()
    return status, routed


def test_a_call_from_a_trusted_address_is_the_lines_on_any_port() -> None:
    status, routed = asyncio.run(call_from(("127.0.0.2",), "127.0.0.2"))
    assert routed == [("LINE", "itsp1")]
    assert status == 486  # what the router answered, not a challenge


def test_a_call_from_inside_a_trusted_network_is_the_lines() -> None:
    status, routed = asyncio.run(call_from(("127.0.0.0/30",), "127.0.0.3"))
    assert routed == [("LINE", "itsp1")]


def test_a_call_from_an_address_not_trusted_is_challenged_like_any_stranger() -> None:
    status, routed = asyncio.run(call_from(("127.0.0.2",), "127.0.0.3"))
    assert status == 407
    assert routed == []


def free_port(ip: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


def test_a_call_from_a_trusted_address_and_port_is_the_lines() -> None:
    """An edge's providers' socket sharing its IP with the phones' socket: trusted by IP and port."""
    port = free_port("127.0.0.2")
    status, routed = asyncio.run(call_from((f"127.0.0.2:{port}",), "127.0.0.2", port))
    assert routed == [("LINE", "itsp1")] and status == 486


def test_a_call_from_the_trusted_address_but_another_port_is_a_stranger() -> None:
    """The edge's phones' socket, same IP as its providers' one: a phone's call there is challenged."""
    port = free_port("127.0.0.2")
    status, routed = asyncio.run(call_from((f"127.0.0.2:{port}",), "127.0.0.2"))
    assert status == 407
    assert routed == []


def test_without_trust_the_providers_other_address_is_a_stranger() -> None:
    status, routed = asyncio.run(call_from((), "127.0.0.2"))
    assert status == 407
    assert routed == []


@pytest.mark.parametrize("new_trust", [("127.0.0.2",), ("127.0.0.0/30", "127.0.0.9")])
def test_changing_only_the_trust_list_keeps_the_line_and_its_registration(new_trust: tuple[str, ...]) -> None:
    async def scenario() -> bool:
        engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], advertise="127.0.0.1", rtp_ports=(36500, 36599))
        await engine.start()
        first = engine.add_line(LineConfig("itsp1", "127.0.0.1", 9, register_every=None))
        again = engine.add_line(LineConfig("itsp1", "127.0.0.1", 9, register_every=None, trust=new_trust))
        found = engine.trust.line_for_source(("127.0.0.2", 40000))
        await engine.stop()
        return first is again and found is first

    assert asyncio.run(scenario())


async def provider_engine(transport: str = "udp") -> Engine:
    """An engine with line itsp1 whose provider is 127.0.0.5:5080 over `transport`, static (no REGISTER)."""
    engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0), ListenSpec("tcp", "127.0.0.1", 0)],
                    advertise="127.0.0.1", rtp_ports=(36500, 36599))
    await engine.start()
    engine.add_line(LineConfig("itsp1", "127.0.0.5", 5080, register_every=None, transport=transport))
    engine.register_line("itsp1")
    await asyncio.sleep(0.05)
    return engine


def test_a_tcp_connection_from_the_providers_address_is_not_a_udp_lines_provider() -> None:
    async def scenario() -> tuple[object, object]:
        engine = await provider_engine("udp")
        try:
            return (engine.trust.line_for_source(("127.0.0.5", 5080), "udp"),
                    engine.trust.line_for_source(("127.0.0.5", 5080), "tcp"))
        finally:
            await engine.stop()

    over_udp, over_tcp = asyncio.run(scenario())
    assert over_udp is not None and over_udp.config.name == "itsp1"  # type: ignore[attr-defined]
    assert over_tcp is None  # a stranger: challenged like anyone, never the line


def test_a_tcp_lines_provider_is_its_own_over_tcp_only() -> None:
    async def scenario() -> tuple[object, object]:
        engine = await provider_engine("tcp")
        try:
            provider = ("127.0.0.5", 5080)
            return engine.trust.line_for_source(provider, "tcp"), engine.trust.line_for_source(provider, "udp")
        finally:
            await engine.stop()

    over_tcp, over_udp = asyncio.run(scenario())
    assert over_tcp is not None and over_udp is None


def test_the_flood_guard_spares_the_providers_exact_address_not_its_other_ports() -> None:
    """A busy trunk is not a flood; but a UDP packet from the provider's IP and another port may be
    spoofed, and a flood of them is ignored like anyone's."""
    async def scenario() -> tuple[int, int]:
        engine = await provider_engine("udp")
        try:
            data = b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\n\r\n"
            from_provider = sum(engine._admit("127.0.0.5", data, 0.0, 5080, "udp") for _ in range(2000))
            from_other_port = sum(engine._admit("127.0.0.5", data, 0.0, 5999, "udp") for _ in range(2000))
            return from_provider, from_other_port
        finally:
            await engine.stop()

    from_provider, from_other_port = asyncio.run(scenario())
    assert from_provider == 2000
    assert from_other_port < 2000  # the burst allowance, then ignored
