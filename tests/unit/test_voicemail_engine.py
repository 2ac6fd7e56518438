"""`record` in the engine, with a scripted provider on loopback (tests/unit/test_play.py's): the
caller is answered, hears the beep, is recorded until `#`, and the plan hangs up; the file is
listed in the events; an unusable folder or a prompt that cannot be decoded ends in a clear event
and a clean end of the call."""

from __future__ import annotations

import asyncio
import math
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from callflow.flowrun.dialplan import Dialplan
from callflow.sdk import SipServer
from flowlang import compile_source
from runtime.engine import Engine
from runtime.sip.message import Request, create_response
from runtime.sip.sdp import parse_sdp
from runtime.transport import ListenSpec
from tests.unit.test_play import Provider, line

av = pytest.importorskip("av")

SSRC = 0x1234ABCD


def ulaw_tone(count: int) -> list[bytes]:
    """`count` 20 ms PCMU payloads of a 1 kHz tone (encoded by PyAV)."""
    encoder = av.CodecContext.create("pcm_mulaw", "w")
    encoder.format, encoder.layout, encoder.sample_rate = "s16", "mono", 8000
    n = 160 * count
    frame = av.AudioFrame(format="s16", layout="mono", samples=n)
    frame.planes[0].update(struct.pack(f"<{n}h", *(int(9000 * math.sin(2 * math.pi * 1000 * i / 8000))
                                                   for i in range(n))))
    frame.sample_rate = 8000
    data = b"".join(bytes(p) for p in encoder.encode(frame)) + b"".join(bytes(p) for p in encoder.encode(None))
    return [data[i:i + 160] for i in range(0, n, 160)]


class Caller:
    """The provider's caller's RTP: a tone, then `#` as RFC 4733 end packets (one stream, one SSRC)."""

    def __init__(self, provider: Provider, port: int) -> None:
        self.provider = provider
        self.dest = ("127.0.0.1", port)
        self.seq = 0
        self.stamp = 0

    def send(self, payload_type: int, payload: bytes, marker: bool = False, advance: bool = True) -> None:
        header = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | payload_type, self.seq & 0xFFFF,
                             self.stamp & 0xFFFFFFFF, SSRC)
        self.provider.rtp.sendto(header + payload, self.dest)
        self.seq += 1
        if advance:
            self.stamp += 160

    def talk(self, seconds: float) -> None:
        for payload in ulaw_tone(round(seconds / 0.02)):
            self.send(0, payload)
            time.sleep(0.02)  # paced like a phone, so the recording sees a real-time stream

    def press_hash(self) -> None:
        for _ in range(3):  # the end packet, sent three times (RFC 4733 2.5.1.4)
            self.send(101, bytes([11, 0x80 | 10]) + (800).to_bytes(2, "big"), advance=False)


async def run(flow: str, tmp_path: Path, scenario: Callable[[int], Any]) -> tuple[Any, list[Any]]:
    engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], advertise="127.0.0.1", rtp_ports=(37700, 37799))
    events: list[Any] = []
    engine.bus.subscribe(events.append)
    await engine.start()
    Dialplan(SipServer(engine=engine)).load(compile_source(flow, str(tmp_path / "main.flow")))
    await asyncio.sleep(0.05)
    try:
        out = await asyncio.get_running_loop().run_in_executor(None, scenario, engine.ports["udp"])
        for _ in range(100):  # the file is written in a worker thread: until its event (bounded)
            if any(e.name in ("recording", "recording_failed") for e in events) and any(
                    e.name == "closed" for e in events):
                break
            await asyncio.sleep(0.05)
        return out, events
    finally:
        await asyncio.sleep(0.1)
        await engine.stop()


def answered_then_bye(provider: Provider, server: int, during: Callable[[int], None] | None = None) -> Request:
    """INVITE, ACK the 200, let `during(our RTP port)` run, then answer the BYE that ends the call."""
    provider.invite(server)
    ok = provider.responses_until_final()[-1]
    assert ok.status == 200, ok.status
    provider.ack(server, ok)
    if during is not None:
        during(parse_sdp(ok.body).media[0].port)
    for _ in range(50):
        msg = provider.next_message()
        if isinstance(msg, Request) and msg.method == "BYE":
            ok = create_response(msg, 200, "OK")
            provider.sip.sendto(bytes(ok), ("127.0.0.1", server))
            return msg
    raise AssertionError("no BYE")


def fields(events: list[Any], name: str) -> list[dict[str, object]]:
    return [e.fields for e in events if e.name == name]


def test_a_caller_recorded_until_hash_leaves_a_file_and_the_plan_hangs_up(tmp_path: Path) -> None:
    provider = Provider()
    flow = line(provider) + ('on incoming from line itsp1 {\n record "vm/{caller_id}.wav" max 30s silence 10s\n'
                             ' hangup\n}\n')

    def leave_message(port: int) -> None:
        time.sleep(0.6)  # the beep plays first (0.4 s): what is said during it is not recorded
        caller = Caller(provider, port)
        caller.talk(1.0)
        caller.press_hash()

    try:
        bye, events = asyncio.run(run(flow, tmp_path, lambda server: answered_then_bye(provider, server,
                                                                                       leave_message)))
    finally:
        provider.close()
    assert bye.method == "BYE"
    [saved] = fields(events, "recording")
    assert (saved["kind"], saved["stop"], saved["channel"]) == ("voicemail", "digit", "ZERO")
    assert saved["path"] == str((tmp_path / "recordings" / "vm" / "+15557654321.wav").resolve())
    # from the beep's end: the second of tone (and the moment before the caller's first packet)
    assert 0.95 <= float(saved["seconds"]) < 5
    with av.open(str(saved["path"])) as container:
        decoded = sum(f.samples for f in container.decode(audio=0)) / 8000
    assert abs(decoded - float(saved["seconds"])) < 0.001  # the event's length is the file's
    names = [e.name for e in events]
    assert names.index("recording_started") < names.index("recording")


def test_an_unusable_recordings_folder_is_reported_and_the_voicemail_call_ends_cleanly(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file, not a folder")
    provider = Provider()
    flow = line(provider) + ('server { recordings "taken/rec" }\n'
                             'on incoming from line itsp1 {\n record "vm.wav" max 1s\n hangup\n}\n')
    try:
        bye, events = asyncio.run(run(flow, tmp_path, lambda server: answered_then_bye(provider, server)))
    finally:
        provider.close()
    assert bye.method == "BYE"  # the plan went on to its hangup
    [failed] = fields(events, "recording_failed")
    assert failed["path"] == str(tmp_path / "taken" / "rec" / "vm.wav")
    assert "is a file" in str(failed["reason"]) and "recordings" in str(failed["reason"])
    assert not fields(events, "recording")
    assert os.listdir(tmp_path) == ["taken"] or sorted(os.listdir(tmp_path)) == ["main.flow", "taken"]


def test_a_prompt_that_cannot_be_decoded_is_reported_and_the_caller_still_gets_the_beep_and_the_recording(
        tmp_path: Path) -> None:
    (tmp_path / "greeting.wav").write_bytes(b"this is not audio")
    provider = Provider()
    flow = line(provider) + ('on incoming from line itsp1 {\n record "vm.wav" prompt "greeting.wav" max 1s\n'
                             ' hangup\n}\n')
    try:
        bye, events = asyncio.run(run(flow, tmp_path, lambda server: answered_then_bye(provider, server)))
    finally:
        provider.close()
    assert bye.method == "BYE"
    [saved] = fields(events, "recording")
    assert saved["stop"] == "max length" and float(saved["seconds"]) == 1.0  # the caller said nothing: silence


def test_a_caller_who_hangs_up_during_the_message_still_leaves_it(tmp_path: Path) -> None:
    provider = Provider()
    flow = line(provider) + 'on incoming from line itsp1 {\n record "vm.wav" max 30s silence off\n hangup\n}\n'

    def hang_up_while_talking(server: int) -> None:
        provider.invite(server)
        ok = provider.responses_until_final()[-1]
        provider.ack(server, ok)
        time.sleep(0.6)
        Caller(provider, parse_sdp(ok.body).media[0].port).talk(0.5)
        to = ok.headers.get("to")
        contact = ok.headers.get("contact").strip("<>")
        provider.sip.sendto((
            f"BYE {contact} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{provider.port};branch=z9hG4bKbye1\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:+15557654321@127.0.0.1>;tag=p1\r\nTo: {to}\r\n"
            f"Call-ID: play-1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n").encode(), ("127.0.0.1", server))

    try:
        _, events = asyncio.run(run(flow, tmp_path, hang_up_while_talking))
    finally:
        provider.close()
    [saved] = fields(events, "recording")
    assert saved["stop"] == "hangup" and 0.45 <= float(saved["seconds"]) < 5


def test_a_server_stopping_during_a_message_writes_it_before_it_goes(tmp_path: Path) -> None:
    provider = Provider()
    flow = line(provider) + 'on incoming from line itsp1 {\n record "vm.wav" max 30s silence off\n hangup\n}\n'

    async def scenario() -> list[Any]:
        engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], advertise="127.0.0.1",
                        rtp_ports=(37800, 37899))
        events: list[Any] = []
        engine.bus.subscribe(events.append)
        await engine.start()
        Dialplan(SipServer(engine=engine)).load(compile_source(flow, str(tmp_path / "main.flow")))

        def call(server: int) -> None:
            provider.invite(server)
            ok = provider.responses_until_final()[-1]
            provider.ack(server, ok)
            time.sleep(0.6)
            Caller(provider, parse_sdp(ok.body).media[0].port).talk(0.4)

        await asyncio.get_running_loop().run_in_executor(None, call, engine.ports["udp"])
        await engine.stop()  # the provider never answers the BYE: the call is not closed in time
        return events

    try:
        events = asyncio.run(scenario())
    finally:
        provider.close()
    [saved] = fields(events, "recording")
    assert saved["stop"] == "hangup" and (tmp_path / "recordings" / "vm.wav").is_file()
