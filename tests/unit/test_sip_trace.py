"""SIP trace: every message in and out as one readable debug line, and as HEP v3 for Homer/sngrep."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct

import pytest

from runtime.engine import Engine
from runtime.records.hep import HepError, HepSender, decode_hep3, encode_hep3
from runtime.records.trace import SipTracer, call_id_of
from runtime.transport import ListenSpec

INVITE = (b"INVITE sip:+15557654321@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK1\r\n"
          b"From: <sip:alice@127.0.0.1>;tag=a\r\nTo: <sip:+15557654321@127.0.0.1>\r\nCall-ID: 3f2a9c01@phone\r\n"
          b"CSeq: 1 INVITE\r\nContent-Type: application/sdp\r\nContent-Length: 10\r\n\r\nv=0\r\no=x\r\n")


def test_hep3_packet_carries_addresses_ports_time_protocol_capture_id_and_the_message() -> None:
    packet = encode_hep3(source=("192.0.2.10", 5062), destination=("198.51.100.1", 5060), transport="udp",
                         payload=INVITE, timestamp=1_800_000_000.25, capture_id=7, correlation_id="3f2a9c01@phone")
    assert packet[:4] == b"HEP3" and struct.unpack("!H", packet[4:6])[0] == len(packet)
    chunks = decode_hep3(packet)
    assert chunks[0x0001] == bytes([2]) and chunks[0x0002] == bytes([17])       # IPv4, UDP
    assert socket.inet_ntoa(chunks[0x0003]) == "192.0.2.10"
    assert socket.inet_ntoa(chunks[0x0004]) == "198.51.100.1"
    assert struct.unpack("!H", chunks[0x0007])[0] == 5062 and struct.unpack("!H", chunks[0x0008])[0] == 5060
    assert struct.unpack("!I", chunks[0x0009])[0] == 1_800_000_000
    assert struct.unpack("!I", chunks[0x000A])[0] == 250_000
    assert chunks[0x000B] == bytes([1])                                         # SIP
    assert struct.unpack("!I", chunks[0x000C])[0] == 7
    assert chunks[0x0011] == b"3f2a9c01@phone"
    assert chunks[0x000F] == INVITE


def test_hep3_over_ipv6_and_a_stream_transport() -> None:
    chunks = decode_hep3(encode_hep3(source=("2001:db8::1", 5061), destination=("2001:db8::2", 40000),
                                     transport="tls", payload=INVITE, timestamp=0.0))
    assert chunks[0x0001] == bytes([10]) and chunks[0x0002] == bytes([6])       # IPv6, TCP
    assert socket.inet_ntop(socket.AF_INET6, chunks[0x0005]) == "2001:db8::1"
    assert socket.inet_ntop(socket.AF_INET6, chunks[0x0006]) == "2001:db8::2"


def test_a_collector_that_cannot_be_resolved_is_an_error_naming_it() -> None:
    with pytest.raises(HepError, match="no-such-host.invalid"):
        HepSender("no-such-host.invalid", 9060)


def test_call_id_is_found_in_full_and_compact_form() -> None:
    assert call_id_of(INVITE) == "3f2a9c01@phone"
    assert call_id_of(b"SIP/2.0 200 OK\r\ni: compact-1\r\n\r\n") == "compact-1"
    assert call_id_of(b"garbage") is None


def test_each_message_is_one_debug_line_with_call_id_direction_transport_and_address(
        caplog: pytest.LogCaptureFixture) -> None:
    tracer = SipTracer(lambda transport: ("198.51.100.1", 5060), log_messages=True)
    with caplog.at_level(logging.DEBUG, logger="callflow.trace"):
        tracer("in", "udp", ("192.0.2.10", 5062), INVITE)
    [line] = caplog.messages
    assert "\n" not in line
    assert line.startswith("event=sip_trace direction=in transport=udp address=192.0.2.10:5062 "
                           "local=198.51.100.1:5060 call_id=3f2a9c01@phone ")
    assert 'first_line="INVITE sip:+15557654321@127.0.0.1 SIP/2.0"' in line
    assert 'message="INVITE sip:+15557654321@127.0.0.1 SIP/2.0\\nVia:' in line and "\\nv=0\\no=x\\n" in line


def test_a_real_endpoint_traces_what_it_receives_and_what_it_answers_to_a_hep_collector() -> None:
    """OPTIONS in, 200 out: both reach a UDP collector as HEP, sender and receiver the right way round."""

    async def scenario() -> list[dict[int, bytes]]:
        collector = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        collector.bind(("127.0.0.1", 0))
        collector.settimeout(5)
        engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], advertise="127.0.0.1", rtp_ports=(36700, 36709))
        await engine.start()
        hep = HepSender(*collector.getsockname())
        engine.endpoint.add_observer(SipTracer(lambda t: ("127.0.0.1", engine.ports["udp"]), hep=hep,
                                               log_messages=False))
        port = engine.ports["udp"]
        phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        phone.bind(("127.0.0.1", 0))
        options = (f"OPTIONS sip:callflow@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:"
                   f"{phone.getsockname()[1]};branch=z9hG4bKtrace1\r\nMax-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;"
                   "tag=1\r\nTo: <sip:callflow@127.0.0.1>\r\nCall-ID: trace-test-1\r\nCSeq: 1 OPTIONS\r\n"
                   "Content-Length: 0\r\n\r\n").encode()
        loop = asyncio.get_running_loop()
        try:
            phone.sendto(options, ("127.0.0.1", port))
            packets = [await loop.run_in_executor(None, collector.recv, 65535) for _ in range(2)]
        finally:
            await engine.stop()
            hep.close()
            phone.close()
            collector.close()
        return [decode_hep3(p) for p in packets]

    received, answered = asyncio.run(scenario())
    assert received[0x000F].startswith(b"OPTIONS ") and answered[0x000F].startswith(b"SIP/2.0 200")
    assert received[0x0011] == answered[0x0011] == b"trace-test-1"
    assert struct.unpack("!H", received[0x0008]) == struct.unpack("!H", answered[0x0007])  # our port both ways
    assert struct.unpack("!H", received[0x0007]) == struct.unpack("!H", answered[0x0008])  # the phone's
