"""`record` against real peers: a provider's caller (baresip behind Kamailio, its microphone a 1 kHz
tone file) leaves a voicemail whose file decodes to the expected length and tone, and a bridged call
recorded mixed and per leg writes files that decode, each leg with its own phone's tone."""

from __future__ import annotations

import math
import struct
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.callflow_server import CallflowServer
from tests.integration.test_seed_flows import DID, office_flow
from tests.rig import CALL_CLOSED, CALL_ESTABLISHED, CALL_INCOMING, Kamailio, PhoneFactory, account_line, ports

av = pytest.importorskip("av")
np = pytest.importorskip("numpy")

TONE_HZ = 1000
SINE_HZ = 440  # the rig's default microphone (ausine)


def write_tone(path: Path, seconds: float = 20.0, frequency: int = TONE_HZ) -> None:
    """48 kHz stereo, as baresip 1.0's aufile source wants it (tests/rig/baresip.py)."""
    rate = 48000
    frames = bytearray()
    for i in range(int(rate * seconds)):
        v = int(12000 * math.sin(2 * math.pi * frequency * i / rate))
        frames += struct.pack("<hh", v, v)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(frames))


def decode(path: str) -> tuple[np.ndarray, int]:
    """The file's samples (mono float) and rate, through PyAV."""
    with av.open(path) as container:
        stream = container.streams.audio[0]
        rate = stream.rate
        chunks = [frame.to_ndarray().astype(np.float64).reshape(-1) for frame in container.decode(audio=0)]
    return (np.concatenate(chunks) if chunks else np.zeros(0)), rate


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    spectrum[0] = 0
    return float(np.argmax(spectrum) * rate / len(samples))


@pytest.fixture
def callflow(tmp_path: Path) -> Iterator[Callable[[str, Kamailio], CallflowServer]]:
    servers: list[CallflowServer] = []

    def start(rules: str, kamailio: Kamailio) -> CallflowServer:
        server = CallflowServer(office_flow(kamailio.hostport, rules=rules), tmp_path / f"callflow{len(servers)}",
                                ports.sip_port(), ports.rtp_range(40))
        servers.append(server)
        return server.start()

    yield start  # type: ignore[misc]
    for server in servers:
        server.stop()


def test_a_callers_voicemail_is_a_file_of_the_maximum_length_holding_the_callers_tone(
        kamailio: Kamailio, phone_factory: PhoneFactory, callflow: Callable[..., CallflowServer],
        tmp_path: Path) -> None:
    tone = tmp_path / "tone-1khz.wav"
    write_tone(tone)
    server = callflow('on incoming from line itsp1 {\n record "voicemail/{caller_id}-{time}.wav" max 3s silence 2s\n'
                      ' hangup\n}', kamailio)
    server.wait_event("line_registered", line="itsp1")
    pstn = phone_factory(kamailio.account_line("pstn"), name="pstn", audio_source=f"aufile,{tone}")
    pstn.wait_registered()
    pstn.dial(f"sip:{DID}@{kamailio.hostport}")
    pstn.wait_event(CALL_ESTABLISHED, 10)
    pstn.wait_event(CALL_CLOSED, 20)  # the plan's hangup, after the message
    saved = server.wait_event("recording", timeout=10)
    assert (saved["kind"], saved["channel"], saved["stop"]) == ("voicemail", "ZERO", "max length")
    path = Path(saved["path"])
    assert path.parent == server.dir / "recordings" / "voicemail"
    assert path.is_file() and int(saved["bytes"]) == path.stat().st_size
    samples, rate = decode(str(path))
    assert rate == 8000
    assert abs(len(samples) / rate - 3.0) < 0.1, f"{len(samples) / rate:.2f} s recorded"
    heard = samples[rate // 2:]  # past the first packets' jitter
    assert abs(dominant_hz(heard, rate) - TONE_HZ) < 20
    assert np.sqrt(np.mean(heard ** 2)) > 1000, "the tone is in the file, not silence"
    assert not list(path.parent.glob(".*.part")), "no temporary file left behind"
    server.wait_event("closed")
    server.assert_alive()


def test_a_bridged_call_recorded_both_ways_writes_a_mix_and_one_file_per_leg_that_decode(
        kamailio: Kamailio, phone_factory: PhoneFactory, callflow: Callable[..., CallflowServer],
        tmp_path: Path) -> None:
    tone = tmp_path / "tone-1khz.wav"
    write_tone(tone)
    server = callflow('on incoming from line itsp1 {\n record call "calls/{call}.wav" both\n accept to user alice\n}',
                      kamailio)
    server.wait_event("line_registered", line="itsp1")
    pstn = phone_factory(kamailio.account_line("pstn"), name="pstn", audio_source=f"aufile,{tone}")
    pstn.wait_registered()
    alice = phone_factory(account_line("alice", server.hostport, auth_pass="alice-pw"), name="alice")
    alice.wait_registered()
    pstn.dial(f"sip:{DID}@{kamailio.hostport}")
    alice.wait_event(CALL_INCOMING, 10)
    alice.accept()
    pstn.wait_event(CALL_ESTABLISHED, 10)
    time.sleep(2.0)
    pstn.hangup()
    alice.wait_event(CALL_CLOSED, 10)
    files = {}
    for n in range(3):
        saved = server.wait_event("recording", timeout=10, since=n)
        files[saved["channel"]] = saved
    assert set(files) == {"mixed", "ZERO", "ONE"}
    assert files["ZERO"]["path"].endswith(".zero.wav") and files["ONE"]["path"].endswith(".one.wav")
    lengths = set()
    for channel, saved in files.items():
        samples, rate = decode(saved["path"])
        assert len(samples) > rate, f"{channel}: less than a second recorded"
        lengths.add(len(samples))
        if channel != "mixed":
            expected = TONE_HZ if channel == "ZERO" else SINE_HZ
            assert abs(dominant_hz(samples[rate // 2:], rate) - expected) < 20, channel
    assert len(lengths) == 1, "the mix and the legs share one time line"
    server.wait_event("closed")
    server.assert_alive()


def test_an_on_connected_handler_records_the_call_mixed_with_both_phones_in_one_file(
        kamailio: Kamailio, phone_factory: PhoneFactory, callflow: Callable[..., CallflowServer],
        tmp_path: Path) -> None:
    tone = tmp_path / "tone-1khz.wav"
    write_tone(tone)
    server = callflow('on incoming from line itsp1 accept to user alice\n'
                      'on connected record call "answered/{peer}-{call}.wav"\n', kamailio)
    server.wait_event("line_registered", line="itsp1")
    pstn = phone_factory(kamailio.account_line("pstn"), name="pstn", audio_source=f"aufile,{tone}")
    pstn.wait_registered()
    alice = phone_factory(account_line("alice", server.hostport, auth_pass="alice-pw"), name="alice")
    alice.wait_registered()
    pstn.dial(f"sip:{DID}@{kamailio.hostport}")
    alice.wait_event(CALL_INCOMING, 10)
    alice.accept()
    pstn.wait_event(CALL_ESTABLISHED, 10)
    time.sleep(2.0)
    alice.hangup()
    pstn.wait_event(CALL_CLOSED, 10)
    saved = server.wait_event("recording", timeout=10)
    assert saved["channel"] == "mixed" and "/answered/alice-" in saved["path"]
    samples, rate = decode(saved["path"])
    spectrum = np.abs(np.fft.rfft(samples[rate // 2:] * np.hanning(len(samples) - rate // 2)))
    hz = np.fft.rfftfreq(len(samples) - rate // 2, 1 / rate)
    strength = {f: spectrum[np.abs(hz - f) < 15].max() for f in (TONE_HZ, SINE_HZ, 700)}
    assert strength[TONE_HZ] > 10 * strength[700] and strength[SINE_HZ] > 10 * strength[700], strength
    server.wait_event("closed")
    server.assert_alive()
