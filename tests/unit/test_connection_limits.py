"""No client can exhaust the server's connections (issue 9): limits per source and in total, the
deadlines of a connection that brings no SIP message, a slow loris, and what a WebSocket may hold.

Real TCP and WebSocket clients on loopback, each source on a loopback address of its own. The
deadlines are checked by calling the endpoint's sweep with a time in the future (the loop clock
plus the deadline), so no test waits for a timeout to pass.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from callflow.flowrun.dialplan import Dialplan
from callflow.sdk import SipServer
from flowlang import compile_source
from runtime.engine import Engine
from runtime.sip.digest import DigestClient, parse_challenge
from runtime.transport import ConnectionLimits, ListenSpec

ROOT = Path(__file__).resolve().parents[2]


def invite(port: int, branch: str) -> bytes:
    return (f"INVITE sip:+15551234567@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP 127.0.0.1:{port};branch={branch}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=c1\r\nTo: <sip:+15551234567@127.0.0.1>\r\n"
            f"Call-ID: limits-{branch}\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:{port};transport=tcp>\r\n"
            f"Content-Length: 0\r\n\r\n").encode()


def options(port: int, branch: str) -> bytes:
    return (f"OPTIONS sip:callflow@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP 127.0.0.1:{port};branch={branch}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p1\r\nTo: <sip:callflow@127.0.0.1>\r\n"
            f"Call-ID: probe-{branch}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()


async def started(*specs: ListenSpec, limits: ConnectionLimits | None = None) -> Engine:
    engine = Engine(listen=list(specs), advertise="127.0.0.1", rtp_ports=(36200, 36299))
    if limits is not None:
        engine.endpoint.limits = limits
    await engine.start()
    return engine


async def connect(engine: Engine, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", engine.ports["tcp"], local_addr=(source, 0))


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """True when the server closed (or reset) this connection; waits at most 2 s for it."""
    try:
        return await asyncio.wait_for(reader.read(1), 2) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


async def settle(predicate, rounds: int = 300) -> None:  # type: ignore[no-untyped-def]
    for _ in range(rounds):  # bounded
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


def descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_flood_of_idle_tcp_connections_from_one_source_is_bounded_and_calls_are_still_served() -> None:
    flood = 400

    async def scenario() -> None:
        engine = await started(ListenSpec("tcp", "127.0.0.1", 0))
        try:
            before = descriptors()
            clients = [await connect(engine, "127.0.0.5") for _ in range(flood)]
            outcomes = await asyncio.gather(*(closed_by_server(reader) for reader, _ in clients))
            held_by_server = descriptors() - before - flood  # our own client sockets are still open
            kept = outcomes.count(False)
            print(f"\nidle TCP connections from one source: {flood}; kept open by the server: {kept}; "
                  f"server descriptors for them: {held_by_server}; refused: {outcomes.count(True)}")
            limits = engine.endpoint.limits
            assert kept == limits.max_per_source == engine.endpoint.open_connections
            assert held_by_server <= limits.max_per_source

            reader, writer = await connect(engine, "127.0.0.6")  # a phone elsewhere places a call
            writer.write(invite(5060, "z9hG4bKflood1"))
            answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert answer.startswith(b"SIP/2.0 407") or answer.startswith(b"SIP/2.0 100")
            writer.close()
            for _, w in clients:
                w.close()
        finally:
            await engine.stop()

    asyncio.run(scenario())


def test_the_total_cap_holds_across_sources_by_closing_the_oldest_unproven_connections() -> None:
    async def scenario() -> None:
        engine = await started(ListenSpec("tcp", "127.0.0.1", 0),
                               limits=ConnectionLimits(max_connections=20, max_per_source=50))
        try:
            clients = [await connect(engine, f"127.0.0.{7 + i % 3}") for i in range(30)]
            outcomes = await asyncio.gather(*(closed_by_server(reader) for reader, _ in clients))
            assert outcomes == [True] * 10 + [False] * 20  # the 10 oldest made room for the newest
            assert engine.endpoint.open_connections == 20 and engine.endpoint.evicted == 10
            for _, w in clients:
                w.close()
        finally:
            await engine.stop()

    asyncio.run(scenario())


def test_a_closed_connection_frees_its_place_for_the_same_source() -> None:
    async def scenario() -> None:
        engine = await started(ListenSpec("tcp", "127.0.0.1", 0), limits=ConnectionLimits(max_per_source=2))
        try:
            first = [await connect(engine, "127.0.0.11") for _ in range(2)]
            await settle(lambda: engine.endpoint.open_connections == 2)
            first[0][1].close()
            await settle(lambda: engine.endpoint.open_connections == 1)
            reader, writer = await connect(engine, "127.0.0.11")
            writer.write(options(5060, "z9hG4bKagain"))
            assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"SIP/2.0 200")
            writer.close()
            first[1][1].close()
        finally:
            await engine.stop()

    asyncio.run(scenario())


def test_a_connection_that_brings_no_sip_message_is_closed() -> None:
    async def scenario() -> None:
        engine = await started(ListenSpec("tcp", "127.0.0.1", 0))
        try:
            reader, writer = await connect(engine, "127.0.0.12")
            writer.write(b"\r\n")  # a lone CRLF is not a message
            await settle(lambda: engine.endpoint.open_connections == 1)
            limits = engine.endpoint.limits
            assert engine.endpoint.sweep(engine.endpoint.now() + limits.first_message_timeout / 2) == 0
            assert engine.endpoint.sweep(engine.endpoint.now() + limits.first_message_timeout + 1) == 1
            assert await closed_by_server(reader)
            writer.close()
        finally:
            await engine.stop()

    asyncio.run(scenario())


def test_a_slow_loris_trickling_a_message_is_closed() -> None:
    async def scenario() -> None:
        engine = await started(ListenSpec("tcp", "127.0.0.1", 0))
        try:
            reader, writer = await connect(engine, "127.0.0.13")
            writer.write(options(5060, "z9hG4bKloris"))  # a whole message first: it looks like a phone
            assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"SIP/2.0 200")
            conn = next(iter(engine.endpoint.connections.values()))
            writer.write(b"I")  # then one byte of a message, and one more "a minute later"
            await settle(lambda: conn.partial_since is not None)
            started_at = conn.partial_since
            writer.write(b"N")
            await writer.drain()
            limits = engine.endpoint.limits
            assert engine.endpoint.sweep(started_at + limits.message_timeout - 1) == 0
            assert engine.endpoint.sweep(started_at + limits.message_timeout + 1) == 1
            assert await closed_by_server(reader)
            writer.close()
        finally:
            await engine.stop()

    asyncio.run(scenario())


def test_a_registered_phones_connection_stays_open_until_idle() -> None:
    async def scenario() -> None:
        engine = await started(ListenSpec("tcp", "127.0.0.1", 0))
        Dialplan(SipServer(engine=engine)).load(compile_source('user alice password "alice-pw"\n'))
        try:
            reader, writer = await registered_phone(engine, "127.0.0.14")
            writer.write(b"\r\n\r\n")  # a keep-alive ping (RFC 5626) counts as use once a message came
            assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"
            idle = engine.endpoint.limits.idle_timeout
            assert engine.endpoint.sweep(engine.endpoint.now() + idle - 5) == 0
            assert engine.endpoint.sweep(engine.endpoint.now() + idle + 1) == 1
            assert await closed_by_server(reader)
            writer.close()
        finally:
            await engine.stop()

    asyncio.run(scenario())


def test_websocket_connections_are_limited_per_source_from_the_tcp_accept() -> None:
    pytest.importorskip("websockets")
    from websockets.asyncio.client import connect as ws_connect

    async def scenario() -> None:
        engine = await started(ListenSpec("ws", "127.0.0.1", 0), limits=ConnectionLimits(max_per_source=3))
        try:
            url = f"ws://127.0.0.1:{engine.ports['ws']}"
            opened, refused = [], 0
            for _ in range(5):
                try:
                    opened.append(await ws_connect(url, subprotocols=["sip"], open_timeout=5))
                except Exception:  # the server dropped it before the upgrade
                    refused += 1
            assert (len(opened), refused) == (3, 2)
            assert engine.endpoint.open_connections == 3
            for ws in opened:
                await ws.close()
            await settle(lambda: engine.endpoint.open_connections == 0)
        finally:
            await engine.stop()

    asyncio.run(scenario())


def test_a_websocket_frame_larger_than_any_sip_message_closes_the_connection() -> None:
    pytest.importorskip("websockets")
    from websockets.asyncio.client import connect as ws_connect
    from websockets.exceptions import ConnectionClosed

    async def scenario() -> None:
        engine = await started(ListenSpec("ws", "127.0.0.1", 0))
        try:
            async with ws_connect(f"ws://127.0.0.1:{engine.ports['ws']}", subprotocols=["sip"]) as ws:
                await ws.send("x" * 100_000)
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), 5)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009  # message too big
        finally:
            await engine.stop()

    asyncio.run(scenario())


_WS_SERVER = textwrap.dedent("""
    import asyncio
    from runtime.engine import Engine
    from runtime.transport import ListenSpec

    async def main():
        engine = Engine(listen=[ListenSpec("ws", "127.0.0.1", 0)], advertise="127.0.0.1", rtp_ports=(36300, 36399))
        await engine.start()
        print(engine.ports["ws"], flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
""")


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _hostile_ws(port: int, source: str, frame: int, sent: int) -> socket.socket:
    """A WebSocket client that opens (offering compression, as browsers do), announces a
    ``frame``-octet frame, sends ``sent`` octets of it and stops (no frame when ``frame`` is 0):
    what a stranger can park on the server without authenticating."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n"
                  f"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
                  ).encode())
    answer = b""
    for _ in range(100):  # bounded: the 101 fits in a few reads
        if b"\r\n\r\n" in answer:
            break
        chunk = sock.recv(4096)
        if not chunk:
            break
        answer += chunk
    sock.setblocking(False)
    if frame == 0:
        return sock
    sock.sendall(struct.pack("!BBQ", 0x81, 0x80 | 127, frame) + bytes(4))
    try:
        sock.send(bytes(sent))
    except OSError:
        pass  # the server already closed it: the point
    return sock


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize(("what", "frame", "sent", "before_fix"), [
    ("idle after the upgrade", 0, 0, 46),
    ("each 990,000 octets into a 1 MB frame", 1_000_000, 990_000, 983),
])
def test_300_unauthenticated_websocket_connections_hold_almost_nothing(what: str, frame: int, sent: int,
                                                                       before_fix: int) -> None:
    pytest.importorskip("websockets")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    server = subprocess.Popen([sys.executable, "-c", _WS_SERVER], stdout=subprocess.PIPE, text=True, env=env)
    sockets: list[socket.socket] = []
    try:
        port = int(server.stdout.readline())  # type: ignore[union-attr]
        before = _rss_kib(server.pid)
        # from six addresses, 50 each: the per-source limit lets each of them in
        sockets = [_hostile_ws(port, f"127.0.0.{101 + i % 6}", frame, sent) for i in range(300)]
        for sock in sockets if frame else ():  # wait (bounded) for the server's close frame, or its close
            sock.setblocking(True)
            sock.settimeout(0.5)
            try:
                sock.recv(4096)
            except OSError:
                pass
        time.sleep(0.2)  # each client read its 101 already: the server is holding all 300
        after = _rss_kib(server.pid)
        each = (after - before) / 300
        print(f"\n300 WebSocket connections {what}: server RSS {before} -> {after} KiB, {each:.1f} KiB each "
              f"(websockets' defaults: about {before_fix} KiB each)")
        assert each < 32
    finally:
        for sock in sockets:
            sock.close()
        server.kill()
        server.wait(timeout=10)


@pytest.mark.parametrize("transport", ["tls", "ws"])
def test_an_opening_handshake_that_never_finishes_is_closed(transport: str, tmp_path: Path) -> None:
    import ssl

    from tests.rig.certs import make_ca_and_cert

    if transport == "ws":
        pytest.importorskip("websockets")
    certs = make_ca_and_cert(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.cert, certs.key)

    async def scenario() -> None:
        engine = Engine(listen=[ListenSpec(transport, "127.0.0.1", 0)], advertise="127.0.0.1",
                        rtp_ports=(36200, 36299), tls=context)
        engine.endpoint.limits = ConnectionLimits(handshake_timeout=0.2)
        await engine.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", engine.ports[transport])
            writer.write(b"\x16\x03\x01" if transport == "tls" else b"GET / HTTP/1.1\r\n")  # and then nothing
            for _ in range(25):  # bounded: the server's deadline is 0.2 s
                if await closed_by_server(reader):
                    break
            else:
                raise AssertionError("the half-open handshake was never closed")
            writer.close()
        finally:
            await engine.stop()

    asyncio.run(scenario())


def test_a_refused_flood_logs_one_line_per_source_not_one_per_connection(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        engine = await started(ListenSpec("tcp", "127.0.0.1", 0), limits=ConnectionLimits(max_per_source=1))
        try:
            clients = [await connect(engine, "127.0.0.15") for _ in range(10)]
            outcomes = await asyncio.gather(*(closed_by_server(reader) for reader, _ in clients))
            assert outcomes.count(True) == 9
            for _, w in clients:
                w.close()
        finally:
            await engine.stop()

    with caplog.at_level("WARNING", logger="callflow.transport"):
        asyncio.run(scenario())
    lines = [r.getMessage() for r in caplog.records if "event=connection_refused" in r.getMessage()]
    assert len(lines) == 1 and "source=127.0.0.15" in lines[0] and "reason=per_source_limit" in lines[0]


# ---- strangers cannot fill the total cap (issue 9, attack 5) -----------------------------------
def register(port: int, source: tuple[str, int], cseq: int, authorization: str = "") -> bytes:
    auth = f"Authorization: {authorization}\r\n" if authorization else ""
    return (f"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP {source[0]}:{source[1]};branch=z9hG4bKreg{cseq}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=r1\r\nTo: <sip:alice@127.0.0.1>\r\n"
            f"Call-ID: proven-phone\r\nCSeq: {cseq} REGISTER\r\n"
            f"Contact: <sip:alice@{source[0]}:{source[1]};transport=tcp>\r\nExpires: 300\r\n{auth}"
            f"Content-Length: 0\r\n\r\n").encode()


async def registered_phone(engine: Engine, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A phone on ``source`` that registered over TCP (401, then 200 with its digest)."""
    reader, writer = await connect(engine, source)
    local = writer.get_extra_info("sockname")
    writer.write(register(5060, local, 1))
    challenge = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode()
    assert challenge.startswith("SIP/2.0 401"), challenge
    value = next(line.split(":", 1)[1].strip() for line in challenge.split("\r\n")
                 if line.lower().startswith("www-authenticate:"))
    authorization = DigestClient("alice", "alice-pw").authorize(parse_challenge(value), "REGISTER", "sip:127.0.0.1")
    writer.write(register(5060, local, 2, authorization))
    ok = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode()
    assert ok.startswith("SIP/2.0 200"), ok
    return reader, writer


def test_a_flood_from_40_sources_filling_the_total_cap_does_not_keep_a_new_phone_out() -> None:
    sources, each = 40, 5  # attack 5 at a tenth of the scale: 40 sources x 5 take every slot

    async def scenario() -> None:
        engine = await started(ListenSpec("tcp", "127.0.0.1", 0),
                               limits=ConnectionLimits(max_connections=sources * each, max_per_source=each))
        try:
            flood = [await connect(engine, f"127.0.3.{1 + i // each}") for i in range(sources * each)]
            await settle(lambda: engine.endpoint.open_connections == sources * each)
            reader, writer = await connect(engine, "127.0.4.1")  # a new phone, from a fresh source
            writer.write(options(5060, "z9hG4bKnewphone"))
            answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            status = answer.split(b"\r\n")[0].decode()
            print(f"\n{sources} sources x {each} connections fill the cap; a new phone from a fresh source: "
                  f"{status}; strangers' connections evicted: {engine.endpoint.evicted}")
            assert answer.startswith(b"SIP/2.0 200")
            assert engine.endpoint.open_connections == sources * each  # still bounded
            assert await closed_by_server(flood[0][0])  # the oldest stranger made room
            writer.close()
            for _, w in flood:
                w.close()
        finally:
            await engine.stop()

    asyncio.run(scenario())


def test_a_registered_phones_connection_is_never_evicted_by_a_flood() -> None:
    async def scenario() -> None:
        engine = await started(ListenSpec("tcp", "127.0.0.1", 0),
                               limits=ConnectionLimits(max_connections=10, max_per_source=50))
        Dialplan(SipServer(engine=engine)).load(compile_source('user alice password "alice-pw"\n'))
        try:
            phone_reader, phone_writer = await registered_phone(engine, "127.0.4.2")  # the oldest connection
            flood = [await connect(engine, f"127.0.4.{10 + i % 5}") for i in range(30)]
            outcomes = await asyncio.gather(*(closed_by_server(r) for r, _ in flood))
            assert outcomes.count(False) == 9  # the newest strangers; the phone keeps its place
            assert not await closed_by_server(phone_reader)
            phone_writer.write(options(5060, "z9hG4bKstill"))
            assert (await asyncio.wait_for(phone_reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"SIP/2.0 200")
            phone_writer.close()
            for _, w in flood:
                w.close()
        finally:
            await engine.stop()

    asyncio.run(scenario())


def test_an_unproven_connection_is_closed_after_a_short_idle_and_a_proven_one_is_not() -> None:
    async def scenario() -> None:
        engine = await started(ListenSpec("tcp", "127.0.0.1", 0))
        Dialplan(SipServer(engine=engine)).load(compile_source('user alice password "alice-pw"\n'))
        try:
            stranger_reader, stranger_writer = await connect(engine, "127.0.4.20")
            stranger_writer.write(options(5060, "z9hG4bKonce"))  # one OPTIONS: it carried a message
            await asyncio.wait_for(stranger_reader.readuntil(b"\r\n\r\n"), 5)
            phone_reader, phone_writer = await registered_phone(engine, "127.0.4.21")
            limits = engine.endpoint.limits
            assert engine.endpoint.sweep(engine.endpoint.now() + limits.unproven_idle_timeout - 5) == 0
            assert engine.endpoint.sweep(engine.endpoint.now() + limits.unproven_idle_timeout + 1) == 1
            assert await closed_by_server(stranger_reader)
            assert not await closed_by_server(phone_reader)
            stranger_writer.close()
            phone_writer.close()
        finally:
            await engine.stop()

    asyncio.run(scenario())
