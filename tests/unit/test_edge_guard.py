"""The guards behind an edge (--edge): a request from a configured edge counts as the phone's, whose
address the edge wrote into the Via below its own; the edge itself is never held; nobody else's Via
is believed."""

from __future__ import annotations

import asyncio

import pytest

from flowlang import compile_source
from runtime.dialplan import Dialplan
from runtime.engine import Engine
from runtime.security.edge import EdgeTrust, parse_edge
from runtime.sip.message import Request, parse_message
from runtime.transport import ListenSpec
from tests.rig.ports import ports
from tests.unit.test_path import FakeEdge

EDGE_IP = "192.0.2.1"


def datagram(*vias: str, compact: bool = False) -> bytes:
    name = "v" if compact else "Via"
    lines = "".join(f"{name}: {v}\r\n" for v in vias)
    return (f"REGISTER sip:pbx SIP/2.0\r\n{lines}Max-Forwards: 69\r\nFrom: <sip:alice@pbx>;tag=1\r\n"
            f"To: <sip:alice@pbx>\r\nCall-ID: c1\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n").encode()


def request(*vias: str) -> Request:
    msg = parse_message(datagram(*vias))
    assert isinstance(msg, Request)
    return msg


EDGE_VIA = f"SIP/2.0/UDP {EDGE_IP}:5060;branch=z9hG4bKe1"
PHONE_VIA = "SIP/2.0/UDP 10.0.0.7:5062;received=198.51.100.7;rport=40123;branch=z9hG4bKp1"


def test_a_request_from_an_edge_counts_as_the_phone_the_edge_received_it_from() -> None:
    edges = EdgeTrust([EDGE_IP])
    assert edges.client_ip(EDGE_IP, 5060, request(EDGE_VIA, PHONE_VIA)) == "198.51.100.7"
    assert edges.client_ip_in(EDGE_IP, 5060, datagram(EDGE_VIA, PHONE_VIA)) == "198.51.100.7"


def test_without_received_the_phones_via_host_is_its_address() -> None:
    edges = EdgeTrust([EDGE_IP])
    phone = "SIP/2.0/UDP 198.51.100.8:5062;rport=5062;branch=z9hG4bKp2"
    assert edges.client_ip(EDGE_IP, 5060, request(EDGE_VIA, phone)) == "198.51.100.8"


def test_the_vias_are_read_in_one_header_or_several_and_in_compact_form() -> None:
    edges = EdgeTrust([EDGE_IP])
    assert edges.client_ip_in(EDGE_IP, 5060, datagram(f"{EDGE_VIA}, {PHONE_VIA}")) == "198.51.100.7"
    assert edges.client_ip_in(EDGE_IP, 5060, datagram(EDGE_VIA, PHONE_VIA, compact=True)) == "198.51.100.7"
    assert edges.client_ip(EDGE_IP, 5060, request(f"{EDGE_VIA}, {PHONE_VIA}")) == "198.51.100.7"


def test_a_phones_own_via_is_not_believed_when_it_does_not_come_from_an_edge() -> None:
    edges = EdgeTrust([EDGE_IP])
    forged = request("SIP/2.0/UDP 203.0.113.66:5060;branch=z9hG4bKx", PHONE_VIA)
    assert edges.client_ip("203.0.113.66", 5060, forged) == "203.0.113.66"
    assert edges.client_ip_in("203.0.113.66", 5060, datagram(EDGE_VIA, PHONE_VIA)) == "203.0.113.66"
    assert EdgeTrust().client_ip(EDGE_IP, 5060, request(EDGE_VIA, PHONE_VIA)) == EDGE_IP


def test_an_edge_named_with_a_port_is_trusted_on_that_port_only() -> None:
    edges = EdgeTrust([f"{EDGE_IP}:5060"])
    assert edges.client_ip(EDGE_IP, 5060, request(EDGE_VIA, PHONE_VIA)) == "198.51.100.7"
    assert edges.client_ip(EDGE_IP, 5999, request(EDGE_VIA, PHONE_VIA)) == EDGE_IP


def test_an_edges_message_naming_no_phone_is_not_counted_against_anyone() -> None:
    edges = EdgeTrust([EDGE_IP])
    assert edges.client_ip_in(EDGE_IP, 5060, datagram(EDGE_VIA)) is None  # its own probe, a response
    assert edges.client_ip(EDGE_IP, 5060, request(EDGE_VIA)) == EDGE_IP


def test_an_edge_must_be_an_address_not_a_name() -> None:
    assert parse_edge("[2001:db8::1]:5060") == ("2001:db8::1", 5060)
    with pytest.raises(ValueError, match="an address, not a name"):
        parse_edge("edge.example.net")


def test_a_flooding_phone_behind_an_edge_is_ignored_while_the_edge_and_other_phones_are_not() -> None:
    async def scenario() -> tuple[list[bool], bool, bool]:
        engine = Engine(advertise="127.0.0.1")  # not started (built in a loop, as its endpoint wants): its guard
        engine.edges = EdgeTrust([EDGE_IP])
        flooder = "SIP/2.0/UDP 10.0.0.9:5062;received=198.51.100.9;rport=1;branch=z9hG4bK%d"
        admitted = [engine.endpoint.admit(EDGE_IP, datagram(EDGE_VIA, flooder % i), 0.0, 5060, "udp")
                    for i in range(int(engine.guard.burst) + 50)]
        other = engine.endpoint.admit(EDGE_IP, datagram(EDGE_VIA, PHONE_VIA), 0.0, 5060, "udp")
        own = engine.endpoint.admit(EDGE_IP, datagram(EDGE_VIA), 0.0, 5060, "udp")  # the edge's own
        return admitted, other, own

    admitted, other, own = asyncio.run(scenario())
    assert admitted.count(False) == 50
    assert other and own


def test_a_password_guesser_behind_an_edge_is_held_while_other_phones_behind_it_still_register() -> None:
    async def scenario(trust_edge: bool) -> tuple[list[int], int]:
        edge = FakeEdge()
        engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], advertise="127.0.0.1",
                        rtp_ports=ports.rtp_range(10))
        if trust_edge:
            engine.edges = EdgeTrust([f"127.0.0.1:{edge.port}"])
        await engine.start()
        Dialplan(engine).load(compile_source('user alice password "alice-pw"\nuser bob password "bob-pw"\n'))
        edge.start()
        try:
            port = engine.ports["udp"]
            guesses = [(await edge.register(port, "bob", f"guess{i}", phone="203.0.113.66")).status
                       for i in range(engine.auth.guard.source_limit + 1)]
            alice = (await edge.register(port, "alice", "alice-pw", phone="198.51.100.7")).status
            return guesses, alice
        finally:
            await engine.stop()
            edge.stop()

    guesses, alice = asyncio.run(scenario(trust_edge=True))
    assert guesses[:10] == [403] * 10 and guesses[10] == 401  # held: challenged, no password checked
    assert alice == 200
    _, alice_untrusted = asyncio.run(scenario(trust_edge=False))
    assert alice_untrusted == 401  # without --edge the edge itself was held: every phone behind it locked out


def test_the_phones_port_is_its_rport_else_its_via_port() -> None:
    edges = EdgeTrust([EDGE_IP])
    assert edges.client_address(EDGE_IP, 5060, request(EDGE_VIA, PHONE_VIA)) == ("198.51.100.7", 40123)
    plain = "SIP/2.0/UDP 198.51.100.8;branch=z9hG4bKp3"
    assert edges.client_address(EDGE_IP, 5060, request(EDGE_VIA, plain)) == ("198.51.100.8", 5060)
    assert EdgeTrust().client_address(EDGE_IP, 5060, request(EDGE_VIA, PHONE_VIA)) == (EDGE_IP, 5060)
