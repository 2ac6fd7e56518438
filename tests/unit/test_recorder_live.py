"""The recording glue (runtime/media/recorder_live.py) on a real event loop with a stand-in media
session: packets from the relay's taps reach the files, a write that fails (a full disk, simulated
by a fake writer) is a `recording_failed` event and the call goes on, and a call that closes writes
what its recordings hold."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime.media.recorder_file import RecordingError
from runtime.media.recorder_live import CallHooks, record_call, record_voicemail, rtp_payload, stop_recordings


class Media:
    """What a recording needs of a RelaySession: taps per leg (several may listen), the
    telephone-event types."""

    def __init__(self) -> None:
        self.taps: dict[int, list[Callable[[bytes], None]]] = {}
        self.event_types = {101: 8000}
        self.answered_codec = (0, "PCMU")

    def tap(self, leg: int, listener: Callable[[bytes], None]) -> None:
        self.taps.setdefault(leg, []).append(listener)

    def untap(self, leg: int, listener: Callable[[bytes], None]) -> None:
        self.taps[leg].remove(listener)

    def send(self, leg: int, payload_type: int, payload: bytes, seq: int = 0) -> None:
        for listener in list(self.taps.get(leg, ())):
            listener(struct.pack("!BBHII", 0x80, payload_type, seq, seq * 160, 7) + payload)


class Call:
    def __init__(self) -> None:
        self.media = Media()
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.live = True
        self.recordings: list[Any] = []
        self.tasks: set[asyncio.Task[None]] = set()

    def hooks(self) -> CallHooks:
        loop = asyncio.get_running_loop()
        return CallHooks("c1", self.media, loop.time, lambda name, **f: self.events.append((name, f)),
                         lambda: self.live, self.recordings, self.tasks)

    def named(self, name: str) -> list[dict[str, Any]]:
        return [f for n, f in self.events if n == name]

    async def settle(self) -> None:
        for _ in range(200):  # bounded: until the worker threads' writes have come back
            if not self.tasks:
                return
            await asyncio.gather(*self.tasks, return_exceptions=True)


def enospc(path: str, pcm: bytes, rate: int) -> int:
    raise RecordingError(f"cannot write {path}: no space left on the device ({os.strerror(errno.ENOSPC)})")


def test_rtp_payloads_are_found_past_csrcs_extensions_and_padding() -> None:
    plain = struct.pack("!BBHII", 0x80, 8, 1, 160, 7) + b"\xd5" * 160
    assert rtp_payload(plain) == (8, b"\xd5" * 160)
    csrc_ext_pad = (struct.pack("!BBHII", 0xB1, 0, 1, 160, 7) + b"CSRC" + b"\xbe\xde\x00\x01" + b"EXT!"
                    + b"\xff" * 160 + b"\x00\x00\x03")
    assert rtp_payload(csrc_ext_pad) == (0, b"\xff" * 160)
    assert rtp_payload(b"\x40" + bytes(20)) is None  # version 1
    assert rtp_payload(b"\x80\x00") is None


def test_a_call_recording_per_leg_writes_each_legs_packets_to_its_own_file(tmp_path: Path) -> None:
    async def scenario() -> Call:
        call = Call()
        record_call(call.hooks(), str(tmp_path), "calls/{call}.wav", {}, "per leg")
        for i in range(10):
            call.media.send(0, 0, b"\x80" * 160, i)  # loud on ZERO
            call.media.send(1, 0, b"\xff" * 160, i)  # silence on ONE
        stop_recordings(call.hooks())
        await call.settle()
        return call

    call = asyncio.run(scenario())
    written = {f["channel"]: f for f in call.named("recording")}
    assert set(written) == {"ZERO", "ONE"}
    assert written["ZERO"]["path"] == str(tmp_path.resolve() / "calls" / "c1.zero.wav")
    assert all(f["stop"] == "hangup" and f["kind"] == "call" for f in written.values())
    assert [f["path"] for f in call.named("recording_started")] == [written["ZERO"]["path"], written["ONE"]["path"]]
    assert call.media.taps == {0: [], 1: []}  # the relay is untapped once stopped


def test_a_full_disk_during_a_call_recording_is_reported_and_the_call_goes_on(tmp_path: Path) -> None:
    async def scenario() -> Call:
        call = Call()
        record_call(call.hooks(), str(tmp_path), "c.wav", {}, "mixed", writer=enospc)
        call.media.send(0, 0, b"\x80" * 160)
        stop_recordings(call.hooks())
        await call.settle()
        return call

    call = asyncio.run(scenario())
    [failed] = call.named("recording_failed")
    assert "no space left on the device" in failed["reason"] and failed["path"].endswith("c.wav")
    assert call.named("recording") == [] and call.live


def test_a_voicemail_on_a_call_callflow_did_not_answer_fails_and_the_rule_goes_on(tmp_path: Path) -> None:
    done: list[bool] = []

    async def scenario() -> Call:
        call = Call()
        record_voicemail(call.hooks(), str(tmp_path), "vm.wav", {}, 10.0, 2.0, lambda: done.append(True),
                         answered=False)
        return call

    call = asyncio.run(scenario())
    [failed] = call.named("recording_failed")
    assert "not answered by Callflow" in failed["reason"]
    assert done == [True] and os.listdir(tmp_path) == []


def test_a_name_that_climbs_out_of_the_folder_is_refused_at_run_time(tmp_path: Path) -> None:
    async def scenario() -> Call:
        call = Call()
        record_call(call.hooks(), str(tmp_path), "../{call}.wav", {}, "mixed")
        return call

    call = asyncio.run(scenario())
    [failed] = call.named("recording_failed")
    assert failed["path"] == "" and "recordings folder" in failed["reason"]
    assert call.media.taps == {}


def test_hash_ends_a_voicemail_and_the_rule_goes_on_once_the_file_is_written(tmp_path: Path) -> None:
    done: list[bool] = []

    async def scenario() -> Call:
        call = Call()
        record_voicemail(call.hooks(), str(tmp_path), "vm.wav", {}, 30.0, None, lambda: done.append(True),
                         answered=True)
        for i in range(5):
            call.media.send(0, 0, b"\x80" * 160, i)
        call.media.send(0, 101, bytes([11, 0x8A, 0x03, 0x20]), 5)  # '#', end
        assert done == []  # not before the file is written
        await call.settle()
        return call

    call = asyncio.run(scenario())
    [saved] = call.named("recording")
    assert saved["stop"] == "digit" and done == [True]


def test_a_voicemail_whose_call_ended_does_not_resume_the_rule(tmp_path: Path) -> None:
    done: list[bool] = []

    async def scenario() -> Call:
        call = Call()
        record_voicemail(call.hooks(), str(tmp_path), "vm.wav", {}, 30.0, None, lambda: done.append(True),
                         answered=True)
        call.media.send(0, 0, b"\x80" * 160)
        call.live = False
        stop_recordings(call.hooks())
        await call.settle()
        return call

    call = asyncio.run(scenario())
    assert call.named("recording")[0]["stop"] == "hangup" and done == []



def test_the_relay_hands_a_legs_packets_to_every_recording_listening_until_it_stops() -> None:
    from runtime.media.relay import MediaRelay

    async def scenario() -> tuple[list[bytes], list[bytes]]:
        relay = MediaRelay("127.0.0.1", (37900, 37919), max_idle_legs=0)
        session = await relay.allocate("c1")
        phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        phone.bind(("127.0.0.1", 0))
        session.set_remote(0, phone.getsockname())
        voicemail: list[bytes] = []
        recording: list[bytes] = []
        session.tap(0, voicemail.append)
        session.tap(0, recording.append)
        packet = struct.pack("!BBHII", 0x80, 0, 1, 160, 7) + b"\xff" * 160
        phone.sendto(packet, ("127.0.0.1", session.legs[0].local_port))
        for _ in range(100):  # bounded: until the loop has read it
            if recording:
                break
            await asyncio.sleep(0.01)
        session.untap(0, voicemail.append)
        phone.sendto(packet, ("127.0.0.1", session.legs[0].local_port))
        for _ in range(100):
            if len(recording) == 2:
                break
            await asyncio.sleep(0.01)
        phone.close()
        session.close()
        await relay.close()
        return voicemail, recording

    voicemail, recording = asyncio.run(scenario())
    assert len(voicemail) == 1 and len(recording) == 2  # the relay has no phone on leg 1: taps still hear
