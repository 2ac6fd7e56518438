"""Recording a call's audio, sans-IO: G.711 RTP payloads in, 16-bit PCM timelines out.

Two recorders share one building block, the `Track` (one leg's audio on the call's time line):

- `Voicemail`: channel ZERO's audio after the beep, until the first of: the maximum length, a stretch
  of silence, the stop digit (`#`, an RFC 4733 event the caller's phone sends), or the caller hanging
  up. Inputs carry `now` (seconds on any monotonic clock); each returns a `Stop` once the recording
  is over, and `deadline()` says when `tick(now)` must be called at the latest.
- `CallRecording`: both legs while bridged, until the call ends (or `MAX_CALL_SECONDS`), rendered as
  one mono mix and/or one file per leg.

Audio is placed by arrival time, not RTP timestamp: a leg that pauses (silence suppression, hold)
leaves silence in its track, so both legs stay aligned for the mix; jitter below `JITTER` is
absorbed. Only static G.711 payload types are decoded (RFC 3551: 0 PCMU, 8 PCMA); the relay answers
or relays them, and other packets (telephone-event, comfort noise, another codec) are counted in
`skipped`, never written as noise.

Samples are numpy arrays (16-bit little-endian): decoding is a table lookup, levels and mixes are
whole-array operations, so a long call costs no per-sample Python.

No file, clock, socket or thread here: the files are written by `runtime.media.recorder_file` in a
worker thread, and `runtime.media.recorder_live` feeds the packets.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

__all__ = ["CallRecording", "MIXES", "Stop", "StopReason", "Track", "Voicemail", "decode_g711", "level"]

RATE = 8000                 # G.711 samples per second
JITTER = 0.06               # seconds a packet may arrive late before the gap counts as silence
VOICE_LEVEL = 300.0         # RMS (of 32768) above which a 20 ms frame is voice, not line noise (~ -41 dBFS)
MAX_CALL_SECONDS = 4 * 3600  # a call recording is cut here: 8000 samples x 2 bytes x 4 h = 230 MB per leg
MIXES = ("mixed", "per leg", "both")

PCMU, PCMA = 0, 8  # RFC 3551 static payload types


def _ulaw(byte: int) -> int:
    """ITU-T G.711 mu-law -> linear (16-bit range)."""
    b = ~byte & 0xFF
    sample = (((b & 0x0F) << 3) + 0x84) << ((b >> 4) & 0x07)
    sample -= 0x84
    return -sample if b & 0x80 else sample


def _alaw(byte: int) -> int:
    """ITU-T G.711 A-law -> linear (16-bit range)."""
    b = byte ^ 0x55
    exponent = (b >> 4) & 0x07
    mantissa = b & 0x0F
    sample = (mantissa << 4) + 8 if exponent == 0 else ((mantissa << 4) + 0x108) << (exponent - 1)
    return sample if b & 0x80 else -sample


_TABLES = {PCMU: np.array([_ulaw(i) for i in range(256)], dtype="<i2"),
           PCMA: np.array([_alaw(i) for i in range(256)], dtype="<i2")}
_EMPTY = np.zeros(0, dtype="<i2")


def decode_g711(payload_type: int, payload: bytes) -> np.ndarray | None:
    """A G.711 payload as signed 16-bit samples (a numpy array); None for any other payload type."""
    table = _TABLES.get(payload_type)
    if table is None:
        return None
    return table[np.frombuffer(payload, dtype=np.uint8)]


def level(samples: np.ndarray) -> float:
    """RMS of the samples (0 for none), on the 16-bit scale."""
    if not len(samples):
        return 0.0
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


class Track:
    """One leg's audio on the recording's time line: sample n is `origin + n / RATE` seconds.
    Kept as a list of chunks (one per packet or gap), joined once at the end."""

    __slots__ = ("chunks", "length", "origin", "limit")

    def __init__(self, origin: float, limit: int) -> None:
        self.chunks: list[np.ndarray] = []
        self.length = 0
        self.origin = origin
        self.limit = limit  # samples at most

    def add(self, pcm: np.ndarray, now: float) -> None:
        """Append `pcm` heard at `now`; a gap longer than JITTER since the last audio is filled with silence."""
        due = int((now - self.origin) * RATE) - len(pcm)  # where this packet's first sample belongs
        if due - self.length > JITTER * RATE:
            self._append(np.zeros(due - self.length, dtype="<i2"))
        self._append(pcm)

    def pad_to(self, count: int) -> None:
        """Silence up to `count` samples (bounded by the limit)."""
        if count > self.length:
            self._append(np.zeros(count - self.length, dtype="<i2"))

    def truncate(self, count: int) -> None:
        """Keep the first `count` samples."""
        if count < self.length:
            joined = self.samples()[:count]
            self.chunks, self.length = [joined], count

    def samples(self) -> np.ndarray:
        """The whole track (16-bit little-endian)."""
        if len(self.chunks) != 1:
            self.chunks = [np.concatenate(self.chunks) if self.chunks else _EMPTY]
        return self.chunks[0]

    def _append(self, pcm: np.ndarray) -> None:
        room = self.limit - self.length
        if room <= 0:
            return
        if len(pcm) > room:
            pcm = pcm[:room]
        self.chunks.append(pcm)
        self.length += len(pcm)

    @property
    def seconds(self) -> float:
        return self.length / RATE


class StopReason(enum.Enum):
    MAX_LENGTH = "max length"
    SILENCE = "silence"
    DIGIT = "digit"
    HANGUP = "hangup"


@dataclass(frozen=True, slots=True)
class Stop:
    """Why a recording ended (`detail` for the log: the digit, the seconds of silence...)."""

    reason: StopReason
    detail: str = ""


class Voicemail:
    """Channel ZERO's audio from `now` (the end of the beep) on.

    `max_seconds` caps the length; `silence_seconds` (None: off) ends it after that long without
    voice (a caller who never speaks included); a digit in `stop_digits` ends it at once. After a
    silence stop the trailing silence is cut off, so the message does not end in seconds of nothing.
    Once stopped, further input is ignored and returns None.
    """

    def __init__(self, now: float, max_seconds: float, silence_seconds: float | None = None,
                 stop_digits: str = "#") -> None:
        if max_seconds <= 0:
            raise ValueError("max_seconds must be more than 0")
        if silence_seconds is not None and silence_seconds <= 0:
            raise ValueError("silence_seconds must be more than 0")
        self.start = now
        self.max_seconds = max_seconds
        self.silence_seconds = silence_seconds
        self.stop_digits = stop_digits
        self.track = Track(now, int(max_seconds * RATE))
        self.last_voice = now   # the caller gets silence_seconds to start speaking
        self.voice_samples = 0  # the track's length at the end of the last voiced packet
        self.skipped = 0        # packets that were not G.711 (telephone-event, comfort noise...)
        self.stopped: Stop | None = None

    def audio(self, payload_type: int, payload: bytes, now: float) -> Stop | None:
        """One RTP payload from the caller (its payload type and bytes, arrived at `now`)."""
        if self.stopped is not None:
            return None
        found = self.tick(now)
        if found is not None:
            return found
        pcm = decode_g711(payload_type, payload)
        if pcm is None:
            self.skipped += 1
            return None
        self.track.add(pcm, now)
        if level(pcm) >= VOICE_LEVEL:
            self.last_voice = now
            self.voice_samples = self.track.length
        if self.track.length >= self.track.limit:
            return self._stop(Stop(StopReason.MAX_LENGTH, f"{self.max_seconds:g} s"))
        return None

    def digit(self, digit: str, now: float) -> Stop | None:
        """A DTMF digit from the caller (RFC 4733)."""
        if self.stopped is not None:
            return None
        found = self.tick(now)
        if found is not None:
            return found
        if digit in self.stop_digits:
            return self._stop(Stop(StopReason.DIGIT, digit))
        return None

    def tick(self, now: float) -> Stop | None:
        """The clock moved: the maximum length or the silence may have run out."""
        if self.stopped is not None:
            return None
        if now - self.start >= self.max_seconds:
            self.track.pad_to(self.track.limit)  # the caller's last packets may not have come: still max long
            return self._stop(Stop(StopReason.MAX_LENGTH, f"{self.max_seconds:g} s"))
        if self.silence_seconds is not None and now - self.last_voice >= self.silence_seconds:
            self.track.truncate(self.voice_samples)
            return self._stop(Stop(StopReason.SILENCE, f"{self.silence_seconds:g} s"))
        return None

    def hangup(self, now: float) -> Stop | None:
        """The caller hung up: what was recorded is the message."""
        if self.stopped is not None:
            return None
        return self.tick(now) or self._stop(Stop(StopReason.HANGUP))

    def deadline(self) -> float | None:
        """When `tick` must be called at the latest (None once stopped)."""
        if self.stopped is not None:
            return None
        at = self.start + self.max_seconds
        if self.silence_seconds is not None:
            at = min(at, self.last_voice + self.silence_seconds)
        return at

    def pcm(self) -> bytes:
        """The recording as signed 16-bit little-endian mono PCM at 8 kHz."""
        return self.track.samples().tobytes()

    def _stop(self, stop: Stop) -> Stop:
        self.stopped = stop
        return stop


class CallRecording:
    """Both legs of a bridged call (leg 0 = channel ZERO, 1 = channel ONE) from its first packet on.

    `mix` is `mixed` (one mono file: both legs summed), `per leg` (two mono files) or `both`."""

    def __init__(self, mix: str, max_seconds: float = MAX_CALL_SECONDS) -> None:
        if mix not in MIXES:
            raise ValueError(f"mix must be one of {', '.join(MIXES)}")
        self.mix = mix
        self.limit = int(max_seconds * RATE)
        self.origin: float | None = None
        self.tracks: tuple[Track, Track] | None = None
        self.skipped = 0
        self.full = False  # the length limit was reached

    def audio(self, leg: int, payload_type: int, payload: bytes, now: float) -> None:
        """One RTP payload that arrived on `leg` at `now`."""
        pcm = decode_g711(payload_type, payload)
        if pcm is None:
            self.skipped += 1
            return
        if self.tracks is None:
            self.origin = now - len(pcm) / RATE
            self.tracks = (Track(self.origin, self.limit), Track(self.origin, self.limit))
        track = self.tracks[leg]
        track.add(pcm, now)
        if track.length >= self.limit:
            self.full = True

    @property
    def seconds(self) -> float:
        if self.tracks is None:
            return 0.0
        return max(t.seconds for t in self.tracks)

    def outputs(self) -> list[tuple[str, bytes]]:
        """(channel, PCM) per file to write: `mixed` for the mix, `ZERO`/`ONE` per leg; 16-bit LE mono
        at 8 kHz, all of the same length. Empty tracks (no packet ever) give silence of that length.
        Joins and mixes the whole recording: call it off the event loop (a worker thread)."""
        if self.tracks is None:
            zero = one = _EMPTY
        else:
            zero, one = (t.samples() for t in self.tracks)
        n = max(len(zero), len(one))
        zero = np.pad(zero, (0, n - len(zero)))
        one = np.pad(one, (0, n - len(one)))
        out: list[tuple[str, bytes]] = []
        if self.mix in ("mixed", "both"):
            mixed = np.clip(zero.astype(np.int32) + one, -32768, 32767).astype("<i2")
            out.append(("mixed", mixed.tobytes()))
        if self.mix in ("per leg", "both"):
            out.append(("ZERO", zero.tobytes()))
            out.append(("ONE", one.tobytes()))
        return out
