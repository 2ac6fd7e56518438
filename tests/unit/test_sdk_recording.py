"""Recording from the Python SDK (callflow.sdk.SipServer.record_voicemail / record_call_session) on
real loopback sockets: a UDP socket plays a line's provider that calls in with an SDP offer, and
what the program awaits is what was written (or why not)."""

from __future__ import annotations

import asyncio
import socket
import struct
import wave
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from callflow.sdk import Event, Failure, SipServer
from runtime.sip.message import Request, Response, parse_message
from tests.rig.ports import ports

pytest.importorskip("av")


def offer(rtp_port: int) -> bytes:
    return ("\r\n".join(["v=0", "o=gw 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
                         f"m=audio {rtp_port} RTP/AVP 0 101", "a=rtpmap:101 telephone-event/8000",
                         "a=fmtp:101 0-15"]) + "\r\n").encode()


def invite(server: int, me: int, rtp: int) -> bytes:
    body = offer(rtp)
    return (f"INVITE sip:+15551230000@127.0.0.1:{server} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};rport;branch=z9hG4bKrec1\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:+15550001111@127.0.0.1>;tag=p1\r\nTo: <sip:+15551230000@127.0.0.1>\r\n"
            f"Call-ID: sdkrec1\r\nCSeq: 1 INVITE\r\nContact: <sip:p@127.0.0.1:{me}>\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def ack(server: int, me: int, to: str) -> bytes:
    return (f"ACK sip:x@127.0.0.1:{server} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKrec2\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:+15550001111@127.0.0.1>;tag=p1\r\nTo: {to}\r\n"
            "Call-ID: sdkrec1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n").encode()


async def provider_call(decide: Callable[[SipServer, Event], Awaitable[object]]) -> tuple[object, list[str]]:
    """A provider's call with an SDP offer (PCMU) on line itsp1; `decide(server, incoming)` is the
    program's incoming handler. Returns what it returned and the requests the provider received."""
    sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sip.bind(("127.0.0.1", 0))
    sip.setblocking(False)
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind(("127.0.0.1", 0))
    rtp.setblocking(False)
    server = SipServer(listen="udp:127.0.0.1:0", advertise="127.0.0.1", rtp_ports=ports.rtp_range(10))
    server.add_line("itsp1", server=f"127.0.0.1:{sip.getsockname()[1]}", username="trunk1", register_every=None)
    result: asyncio.Future[object] = asyncio.get_running_loop().create_future()

    @server.on("incoming")
    async def incoming(event: Event) -> None:
        result.set_result(await decide(server, event))

    loop = asyncio.get_running_loop()
    requests: list[str] = []
    async with server:
        server.register_line("itsp1")
        for _ in range(100):  # bounded: the address is resolved in a task
            if server.engine.lines["itsp1"].address is not None:
                break
            await asyncio.sleep(0.01)
        port = server.ports["udp"]
        await loop.sock_sendto(sip, invite(port, sip.getsockname()[1], rtp.getsockname()[1]), ("127.0.0.1", port))
        for _ in range(200):  # bounded: 10 s
            if result.done() and ("BYE" in requests or "refused" in requests):
                break
            try:
                data = await asyncio.wait_for(loop.sock_recv(sip, 65535), 0.05)
            except TimeoutError:
                continue
            msg = parse_message(data)
            if isinstance(msg, Request):
                requests.append(msg.method)
            elif isinstance(msg, Response) and msg.status >= 300:
                requests.append("refused")
            elif isinstance(msg, Response) and msg.status == 200 and msg.body:
                await loop.sock_sendto(sip, ack(port, sip.getsockname()[1], str(msg.headers.get("to"))),
                                       ("127.0.0.1", port))
                # the caller speaks: a few PCMU packets to the relay's port for this call
                media_port = int(msg.body.decode().split("m=audio ")[1].split()[0])
                for seq in range(10):
                    packet = struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 7) + b"\x7f" * 160
                    await loop.sock_sendto(rtp, packet, ("127.0.0.1", media_port))
        value = await asyncio.wait_for(result, 5)
    sip.close()
    rtp.close()
    return value, requests


def test_a_voicemail_from_the_sdk_gives_the_path_of_the_file_written_and_hangs_up(tmp_path: Path) -> None:
    async def voicemail(server: SipServer, event: Event) -> object:
        return await server.record_voicemail(event.session, "vm/{call}.wav", folder=str(tmp_path), max_seconds=1,
                                             silence_seconds=None)

    path, requests = asyncio.run(provider_call(voicemail))
    assert isinstance(path, str) and path.startswith(str(tmp_path / "vm"))
    with wave.open(path) as w:
        assert w.getframerate() == 8000 and w.getnchannels() == 1
    assert "BYE" in requests  # hangup=True: the call ends once the message is saved


def test_a_voicemail_into_a_name_leaving_the_folder_gives_a_failure_naming_why(tmp_path: Path) -> None:
    async def voicemail(server: SipServer, event: Event) -> object:
        return await server.record_voicemail(event.session, "../escape.wav", folder=str(tmp_path), max_seconds=1)

    failure, requests = asyncio.run(provider_call(voicemail))
    assert isinstance(failure, Failure) and failure.code == 500
    assert "folder" in failure.reason or ".." in failure.reason
    assert "BYE" in requests


class RecordingSession:
    """A stand-in call session (unit spec of the SDK's bookkeeping only): record_call announces its
    files on the engine's bus as runtime/media/recorder_live.py does."""

    id = "c1"

    def __init__(self, server: SipServer) -> None:
        self.bus = server.engine.bus

    def record_call(self, folder: str, name: str, values: dict[str, str], mix: str) -> None:
        for path in (f"{folder}/c1.zero.wav", f"{folder}/c1.one.wav"):
            self.bus.emit("recording_started", call="c1", path=path, kind="call", mix=mix)


def test_a_call_recording_per_leg_gives_both_paths_once_both_files_are_written() -> None:
    async def scenario() -> object:
        server = SipServer(listen="udp:127.0.0.1:0", rtp_ports=(40000, 40003))  # never started: nothing is bound
        server.engine.calls["c1"] = RecordingSession(server)
        pending = server.record_call_session("c1", "{call}.wav", mix="per leg", folder="/rec")
        bus = server.engine.bus
        bus.emit("closed", call="c1", reason="hangup")  # the files are written after the call closed
        bus.emit("recording", call="c1", path="/rec/c1.zero.wav", seconds=2.0, bytes=32044, channel="ZERO",
                 kind="call", stop="hangup")
        assert not pending.done()
        bus.emit("recording", call="c1", path="/rec/c1.one.wav", seconds=2.0, bytes=32044, channel="ONE",
                 kind="call", stop="hangup")
        return await pending

    assert asyncio.run(scenario()) == ["/rec/c1.zero.wav", "/rec/c1.one.wav"]


def test_a_call_recording_whose_every_file_failed_gives_the_failure() -> None:
    async def scenario() -> object:
        server = SipServer(listen="udp:127.0.0.1:0", rtp_ports=(40000, 40003))  # never started: nothing is bound
        server.engine.calls["c1"] = RecordingSession(server)
        pending = server.record_call_session("c1", "{call}.wav", mix="per leg", folder="/rec")
        for leg in ("zero", "one"):
            server.engine.bus.emit("recording_failed", call="c1", path=f"/rec/c1.{leg}.wav",
                                   reason="cannot write: no space left on the device")
        return await pending

    failure = asyncio.run(scenario())
    assert isinstance(failure, Failure) and failure.code == 500 and "no space left" in failure.reason


def test_the_recording_arguments_are_checked_before_anything_happens() -> None:
    async def scenario() -> None:
        server = SipServer(listen="udp:127.0.0.1:0", rtp_ports=(40000, 40003))  # never started: nothing is bound
        with pytest.raises(ValueError, match="mix 'stereo'"):
            server.record_call_session("c1", "x.wav", mix="stereo")
        with pytest.raises(ValueError, match="max_seconds"):
            server.record_voicemail("c1", "x.wav", max_seconds=0)
        with pytest.raises(ValueError, match="silence_seconds"):
            server.record_voicemail("c1", "x.wav", silence_seconds=-1)
        closed = await server.record_voicemail("no-such-call", "x.wav")
        assert isinstance(closed, Failure) and closed.code == 487

    asyncio.run(scenario())
