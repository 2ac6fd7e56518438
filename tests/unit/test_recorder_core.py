"""The recorder core (runtime/media/recorder.py), sans-IO on a fake clock: what a voicemail keeps and
when it stops (maximum length, silence, `#`, hangup), and how a call recording lays both legs on one
time line (mixed, per leg)."""

from __future__ import annotations

import math
from array import array

import pytest

from runtime.media.recorder import (
    RATE,
    CallRecording,
    StopReason,
    Voicemail,
    decode_g711,
)

av = pytest.importorskip("av")


def ulaw(samples: list[int]) -> bytes:
    """PCM -> G.711 mu-law through PyAV (the codec library), so the core's decoder is checked against it."""
    encoder = av.CodecContext.create("pcm_mulaw", "w")
    encoder.format, encoder.layout, encoder.sample_rate = "s16", "mono", RATE
    frame = av.AudioFrame(format="s16", layout="mono", samples=len(samples))
    frame.planes[0].update(array("h", samples).tobytes())
    frame.sample_rate = RATE
    return b"".join(bytes(p) for p in encoder.encode(frame)) + b"".join(bytes(p) for p in encoder.encode(None))


TONE = ulaw([int(8000 * math.sin(2 * math.pi * 1000 * i / RATE)) for i in range(160)])  # 20 ms of 1 kHz
QUIET = ulaw([0] * 160)


def test_g711_decoding_agrees_with_the_codec_library_for_every_byte() -> None:
    for name, payload_type in (("pcm_mulaw", 0), ("pcm_alaw", 8)):
        decoder = av.CodecContext.create(name, "r")
        decoder.sample_rate, decoder.layout = RATE, "mono"
        frames = decoder.decode(av.Packet(bytes(range(256))))
        reference = [int(v) for f in frames for v in f.to_ndarray().reshape(-1)]
        assert list(decode_g711(payload_type, bytes(range(256)))) == reference, name


def test_a_payload_that_is_not_g711_is_not_decoded() -> None:
    assert decode_g711(101, b"\x00" * 4) is None
    assert decode_g711(18, b"\x00" * 20) is None


def speak(vm: Voicemail, start: float, seconds: float, payload: bytes = TONE):  # type: ignore[no-untyped-def]
    """20 ms packets from `start` for `seconds`; the first stop the recorder reports, else None."""
    for i in range(round(seconds / 0.02)):
        stop = vm.audio(0, payload, start + (i + 1) * 0.02)
        if stop is not None:
            return stop
    return None


def test_a_caller_who_talks_past_the_maximum_is_cut_at_exactly_the_maximum() -> None:
    vm = Voicemail(100.0, max_seconds=2.0, silence_seconds=1.0)
    stop = speak(vm, 100.0, 5.0)
    assert stop is not None and stop.reason is StopReason.MAX_LENGTH
    assert len(vm.pcm()) == 2 * 2 * RATE


def test_the_maximum_is_reached_on_the_clock_even_when_packets_stop_coming() -> None:
    vm = Voicemail(0.0, max_seconds=3.0, silence_seconds=None)
    assert speak(vm, 0.0, 1.0) is None
    assert vm.deadline() == 3.0
    stop = vm.tick(3.0)
    assert stop is not None and stop.reason is StopReason.MAX_LENGTH
    assert len(vm.pcm()) == 2 * 3 * RATE  # what did not come is silence


def test_silence_after_speech_ends_the_message_and_the_trailing_silence_is_cut() -> None:
    vm = Voicemail(0.0, max_seconds=60.0, silence_seconds=2.0)
    assert speak(vm, 0.0, 1.0) is None
    stop = speak(vm, 1.0, 5.0, QUIET)
    assert stop is not None and stop.reason is StopReason.SILENCE
    assert len(vm.pcm()) == 2 * 1 * RATE  # the spoken second, not the silence after it


def test_a_caller_who_never_speaks_is_stopped_after_the_silence_and_leaves_an_empty_message() -> None:
    vm = Voicemail(0.0, max_seconds=60.0, silence_seconds=3.0)
    assert vm.deadline() == 3.0
    assert vm.tick(2.9) is None
    stop = vm.tick(3.0)
    assert stop is not None and stop.reason is StopReason.SILENCE
    assert vm.pcm() == b""


def test_silence_off_records_until_the_maximum() -> None:
    vm = Voicemail(0.0, max_seconds=4.0, silence_seconds=None)
    assert speak(vm, 0.0, 3.9, QUIET) is None
    stop = vm.tick(4.0)
    assert stop is not None and stop.reason is StopReason.MAX_LENGTH


def test_hash_stops_the_recording_at_once_and_keeps_what_was_said() -> None:
    vm = Voicemail(0.0, max_seconds=60.0, silence_seconds=5.0)
    speak(vm, 0.0, 1.5)
    assert vm.digit("5", 1.6) is None  # other digits are not a stop
    stop = vm.digit("#", 1.7)
    assert stop is not None and (stop.reason, stop.detail) == (StopReason.DIGIT, "#")
    assert len(vm.pcm()) == 2 * int(1.5 * RATE)
    assert vm.audio(0, TONE, 1.8) is None and len(vm.pcm()) == 2 * int(1.5 * RATE)  # stopped: nothing more


def test_a_hangup_keeps_the_message_as_it_stands() -> None:
    vm = Voicemail(0.0, max_seconds=60.0, silence_seconds=5.0)
    speak(vm, 0.0, 1.0)
    stop = vm.hangup(1.1)
    assert stop is not None and stop.reason is StopReason.HANGUP
    assert len(vm.pcm()) == 2 * RATE
    assert vm.deadline() is None


def test_packets_of_another_payload_type_are_counted_and_left_out() -> None:
    vm = Voicemail(0.0, max_seconds=60.0)
    vm.audio(0, TONE, 0.02)
    vm.audio(13, b"\x40", 0.04)  # comfort noise
    vm.audio(18, b"\x00" * 20, 0.06)
    assert vm.skipped == 2 and len(vm.pcm()) == 2 * 160


def test_a_pause_in_the_callers_packets_becomes_silence_in_the_message() -> None:
    vm = Voicemail(0.0, max_seconds=60.0, silence_seconds=None)
    vm.audio(0, TONE, 0.02)
    vm.audio(0, TONE, 1.02)  # a second without packets (silence suppression)
    assert len(vm.pcm()) == 2 * (RATE + 160)


def test_a_call_recording_mixes_both_legs_on_one_time_line() -> None:
    rec = CallRecording("both")
    for i in range(50):  # one second, both legs talking at once
        rec.audio(0, 0, TONE, (i + 1) * 0.02)
        rec.audio(1, 0, QUIET, (i + 1) * 0.02)
    rec.audio(1, 0, TONE, 2.0)  # ONE alone, a second later
    outputs = dict(rec.outputs())
    assert set(outputs) == {"mixed", "ZERO", "ONE"}
    assert len({len(pcm) for pcm in outputs.values()}) == 1  # same length: aligned
    zero = array("h", outputs["ZERO"])
    one = array("h", outputs["ONE"])
    mixed = array("h", outputs["mixed"])
    assert all(m == max(-32768, min(32767, a + b)) for m, a, b in zip(mixed, zero, one, strict=True))
    assert not any(one[RATE:RATE + 1000])  # ONE's pause is silence on its track
    assert any(one[-160:])


def test_a_per_leg_recording_gives_two_files_and_no_mix() -> None:
    rec = CallRecording("per leg")
    rec.audio(0, 8, b"\xd5" * 160, 0.02)
    assert [channel for channel, _ in rec.outputs()] == ["ZERO", "ONE"]


def test_a_call_recording_is_full_at_its_maximum() -> None:
    rec = CallRecording("mixed", max_seconds=1.0)
    for i in range(60):
        rec.audio(0, 0, TONE, (i + 1) * 0.02)
    assert rec.full and rec.seconds == 1.0


def test_an_unknown_mix_is_refused() -> None:
    with pytest.raises(ValueError, match="mixed, per leg, both"):
        CallRecording("stereo")
