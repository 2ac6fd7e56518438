"""Audio files the dialplan plays (`play "closed.wav"`), turned into G.711 RTP payloads.

Decoding goes through PyAV (FFmpeg), the codec layer aiortc is built on, so any format an operator
records prompts in works (WAV at any rate, MP3, FLAC...), resampled to 8 kHz mono and cut into 20 ms
frames of 160 samples. A file is decoded once per codec and kept (bounded), since the same prompts
play on call after call; decoding runs in a worker thread so the event loop never waits for a disk.
"""

from __future__ import annotations

import asyncio
import os
from collections import OrderedDict
from pathlib import Path

SAMPLE_RATE = 8000
FRAME_SAMPLES = 160                      # 20 ms at 8 kHz: one RTP packet
MAX_SECONDS = 600                        # a prompt longer than 10 minutes is refused, not buffered
_CODEC_NAMES = {"PCMU": "pcm_mulaw", "PCMA": "pcm_alaw"}


class PromptError(Exception):
    """A file that cannot be played: the message names it and says why."""


def encode_file(path: str, codec: str) -> list[bytes]:
    """The file as 160-byte G.711 payloads (the last one padded with silence)."""
    try:
        import av  # noqa: PLC0415  (imported where needed: the server starts without touching FFmpeg)
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise PromptError(f"cannot play {path}: PyAV is not installed ({exc})") from None
    name = _CODEC_NAMES.get(codec)
    if name is None:
        raise PromptError(f"cannot play {path}: no encoder for {codec}")
    payloads: list[bytes] = []
    limit = MAX_SECONDS * SAMPLE_RATE // FRAME_SAMPLES
    try:
        with av.open(path) as container:
            if not container.streams.audio:
                raise PromptError(f"cannot play {path}: it has no audio stream")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE,
                                          frame_size=FRAME_SAMPLES)
            encoder = av.CodecContext.create(name, "w")
            encoder.format = "s16"
            encoder.layout = "mono"
            encoder.sample_rate = SAMPLE_RATE

            def take(frames: list) -> None:  # type: ignore[type-arg]
                for frame in frames:
                    for packet in encoder.encode(frame):
                        payloads.append(bytes(packet))
                if len(payloads) > limit:
                    raise PromptError(f"cannot play {path}: longer than {MAX_SECONDS} s")

            for frame in container.decode(audio=0):
                take(resampler.resample(frame))
            take(resampler.resample(None))
            for packet in encoder.encode(None):
                payloads.append(bytes(packet))
    except PromptError:
        raise
    except Exception as exc:  # noqa: BLE001 - FFmpeg can fail in many ways on a bad file; none may escape
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise PromptError(f"cannot play {path}: {reason}") from None
    if not payloads:
        raise PromptError(f"cannot play {path}: no audio in it")
    silence = b"\xff" if codec == "PCMU" else b"\xd5"
    last = payloads[-1]
    if len(last) < FRAME_SAMPLES:
        payloads[-1] = last + silence * (FRAME_SAMPLES - len(last))
    return payloads


class PromptCache:
    """Decoded prompts by (path, size, mtime, codec): an edited file is decoded again. Bounded by
    entries and by bytes (8,000 bytes a second of G.711: 64 MiB hold over two hours of prompts),
    least recently played first out."""

    def __init__(self, max_entries: int = 64, max_bytes: int = 64 << 20) -> None:
        self._entries: OrderedDict[tuple[str, int, int, str], list[bytes]] = OrderedDict()
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0

    async def load(self, path: str, codec: str) -> list[bytes]:
        try:
            st = os.stat(path)
        except OSError as exc:
            raise PromptError(f"cannot play {path}: {exc.strerror or exc}") from None
        key = (str(Path(path)), st.st_size, st.st_mtime_ns, codec)
        cached = self._entries.get(key)
        if cached is not None:
            self._entries.move_to_end(key)
            return cached
        payloads = await asyncio.get_running_loop().run_in_executor(None, encode_file, path, codec)
        if key not in self._entries:
            self._entries[key] = payloads
            self.bytes += len(payloads) * FRAME_SAMPLES
        while len(self._entries) > 1 and (len(self._entries) > self.max_entries or self.bytes > self.max_bytes):
            _, dropped = self._entries.popitem(last=False)
            self.bytes -= len(dropped) * FRAME_SAMPLES
        return payloads
