"""The asyncio adapters on real loopback sockets: TCP framing, keep-alive pongs, WebSocket (RFC 7118)."""

from __future__ import annotations

import asyncio

import pytest

from runtime.engine import Engine
from runtime.transport import ListenSpec


def options(via_transport: str, port: int, branch: str = "z9hG4bKt1") -> bytes:
    return (f"OPTIONS sip:callflow@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/{via_transport} 127.0.0.1:{port};branch={branch}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p1\r\nTo: <sip:callflow@127.0.0.1>\r\n"
            f"Call-ID: probe-{branch}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()


async def started(*specs: ListenSpec) -> Engine:
    engine = Engine(listen=list(specs), advertise="127.0.0.1", rtp_ports=(36000, 36099))
    await engine.start()
    return engine


async def read_response(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return head


def test_options_over_tcp_is_answered_on_the_same_connection() -> None:
    async def scenario() -> None:
        engine = await started(ListenSpec("tcp", "127.0.0.1", 0))
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", engine.ports["tcp"])
            # two messages in one segment, the second split across writes: framing by Content-Length
            data = options("TCP", 1, "z9hG4bKa") + options("TCP", 1, "z9hG4bKb")
            writer.write(data[:-30])
            await asyncio.sleep(0.05)
            writer.write(data[-30:])
            first = await read_response(reader)
            second = await read_response(reader)
            assert first.startswith(b"SIP/2.0 200 OK") and b"z9hG4bKa" in first
            assert second.startswith(b"SIP/2.0 200 OK") and b"z9hG4bKb" in second
            writer.close()
        finally:
            await engine.stop()

    asyncio.run(scenario())


def test_double_crlf_ping_gets_a_crlf_pong() -> None:
    async def scenario() -> None:
        engine = await started(ListenSpec("tcp", "127.0.0.1", 0))
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", engine.ports["tcp"])
            writer.write(b"\r\n\r\n")
            assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"
            writer.close()
        finally:
            await engine.stop()

    asyncio.run(scenario())


def test_garbage_on_a_tcp_connection_closes_it_and_the_server_goes_on() -> None:
    async def scenario() -> None:
        engine = await started(ListenSpec("tcp", "127.0.0.1", 0))
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", engine.ports["tcp"])
            writer.write(b"INVITE sip:x SIP/2.0\r\nContent-Length: lots\r\n\r\n")
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by us
            reader, writer = await asyncio.open_connection("127.0.0.1", engine.ports["tcp"])
            writer.write(options("TCP", 1))
            assert (await read_response(reader)).startswith(b"SIP/2.0 200 OK")
            writer.close()
        finally:
            await engine.stop()

    asyncio.run(scenario())


def test_register_over_websocket_is_challenged() -> None:
    websockets = pytest.importorskip("websockets")
    from websockets.asyncio.client import connect

    async def scenario() -> None:
        engine = await started(ListenSpec("ws", "127.0.0.1", 0))
        engine.add_user("alice", "alice-pw")
        try:
            async with connect(f"ws://127.0.0.1:{engine.ports['ws']}", subprotocols=["sip"]) as ws:
                assert ws.subprotocol == "sip"
                register = ("REGISTER sip:127.0.0.1 SIP/2.0\r\n"
                            "Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKws1\r\n"
                            "Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=w1\r\nTo: <sip:alice@127.0.0.1>\r\n"
                            "Call-ID: ws-1\r\nCSeq: 1 REGISTER\r\n"
                            "Contact: <sip:a1b2@df7jal23ls0d.invalid;transport=ws>\r\nContent-Length: 0\r\n\r\n")
                await ws.send(register)
                answer = await asyncio.wait_for(ws.recv(), 5)
                assert answer.startswith("SIP/2.0 401 Unauthorized")
                assert "WWW-Authenticate: Digest" in answer
        finally:
            await engine.stop()

    assert websockets
    asyncio.run(scenario())
