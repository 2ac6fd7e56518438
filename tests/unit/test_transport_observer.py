"""SipEndpoint.add_observer: a SIP tracer sees every message in and out, as it crossed the socket."""

from __future__ import annotations

import asyncio
import socket

from runtime.engine import Engine
from runtime.transport import ListenSpec


def options(via_transport: str, port: int, branch: str) -> bytes:
    return (f"OPTIONS sip:callflow@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/{via_transport} 127.0.0.1:{port};branch={branch}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p1\r\nTo: <sip:callflow@127.0.0.1>\r\n"
            f"Call-ID: probe-{branch}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()


async def started(*specs: ListenSpec) -> Engine:
    engine = Engine(listen=list(specs), advertise="127.0.0.1", rtp_ports=(36100, 36199))
    await engine.start()
    return engine


def udp_client() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


async def recv(sock: socket.socket) -> bytes:
    return await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 65535), 5)


def test_observer_sees_a_udp_request_and_its_response() -> None:
    async def scenario() -> None:
        engine = await started(ListenSpec("udp", "127.0.0.1", 0))
        seen: list[tuple[str, str, tuple[str, int], bytes]] = []
        engine.endpoint.add_observer(lambda *record: seen.append(record))
        client = udp_client()
        try:
            request = options("UDP", client.getsockname()[1], "z9hG4bKobs1")
            client.sendto(request, ("127.0.0.1", engine.ports["udp"]))
            answer = await recv(client)
            assert seen[0] == ("in", "udp", client.getsockname(), request)
            assert seen[1] == ("out", "udp", client.getsockname(), answer)
            assert answer.startswith(b"SIP/2.0 200 OK")
        finally:
            client.close()
            await engine.stop()

    asyncio.run(scenario())


def test_observer_sees_a_retransmitted_request_and_the_resent_response() -> None:
    async def scenario() -> None:
        engine = await started(ListenSpec("udp", "127.0.0.1", 0))
        seen: list[tuple[str, str, tuple[str, int], bytes]] = []
        engine.endpoint.add_observer(lambda *record: seen.append(record))
        client = udp_client()
        try:
            request = options("UDP", client.getsockname()[1], "z9hG4bKobs2")
            for _ in range(2):
                client.sendto(request, ("127.0.0.1", engine.ports["udp"]))
                await recv(client)
            assert [(d, t) for d, t, _, _ in seen] == [("in", "udp"), ("out", "udp")] * 2
            # OPTIONS is answered statelessly (issue 9: nothing kept for a stranger), so the
            # retransmission gets an answer of its own
            assert seen[1][3].startswith(b"SIP/2.0 200 OK") and seen[3][3].startswith(b"SIP/2.0 200 OK")
        finally:
            client.close()
            await engine.stop()

    asyncio.run(scenario())


def test_observer_sees_messages_the_flood_guard_drops() -> None:
    async def scenario() -> None:
        engine = await started(ListenSpec("udp", "127.0.0.1", 0))
        seen: list[tuple[str, str, tuple[str, int], bytes]] = []
        engine.endpoint.add_observer(lambda *record: seen.append(record))
        engine.endpoint.admit = lambda *_: False
        client = udp_client()
        try:
            request = options("UDP", client.getsockname()[1], "z9hG4bKobs3")
            client.sendto(request, ("127.0.0.1", engine.ports["udp"]))
            for _ in range(200):  # bounded: the datagram arrives within a few loop turns on loopback
                if seen:
                    break
                await asyncio.sleep(0.01)
            assert seen == [("in", "udp", client.getsockname(), request)]
        finally:
            client.close()
            await engine.stop()

    asyncio.run(scenario())


def test_observer_names_the_stream_transport() -> None:
    async def scenario() -> None:
        engine = await started(ListenSpec("tcp", "127.0.0.1", 0))
        seen: list[tuple[str, str, tuple[str, int], bytes]] = []
        engine.endpoint.add_observer(lambda *record: seen.append(record))
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", engine.ports["tcp"])
            writer.write(options("TCP", 1, "z9hG4bKobs4"))
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            peer = writer.get_extra_info("sockname")
            assert [(d, t, a) for d, t, a, _ in seen] == [("in", "tcp", peer), ("out", "tcp", peer)]
            writer.close()
        finally:
            await engine.stop()

    asyncio.run(scenario())


def test_a_failing_observer_costs_no_answer_and_can_be_removed() -> None:
    async def scenario() -> None:
        engine = await started(ListenSpec("udp", "127.0.0.1", 0))
        calls: list[str] = []

        def broken(direction: str, *_: object) -> None:
            calls.append(direction)
            raise RuntimeError("tracer bug")

        engine.endpoint.add_observer(broken)
        client = udp_client()
        try:
            client.sendto(options("UDP", client.getsockname()[1], "z9hG4bKobs5"), ("127.0.0.1", engine.ports["udp"]))
            assert (await recv(client)).startswith(b"SIP/2.0 200 OK")
            assert calls == ["in", "out"]
            engine.endpoint.remove_observer(broken)
            client.sendto(options("UDP", client.getsockname()[1], "z9hG4bKobs6"), ("127.0.0.1", engine.ports["udp"]))
            assert (await recv(client)).startswith(b"SIP/2.0 200 OK")
            assert calls == ["in", "out"]
        finally:
            client.close()
            await engine.stop()

    asyncio.run(scenario())
