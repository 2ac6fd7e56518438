"""Prompt files into G.711 payloads: any rate in, 20 ms frames of 8 kHz out, kept within bounds."""

from __future__ import annotations

import asyncio
import math
import struct
import wave
from pathlib import Path

import pytest

from runtime.media.prompts import PromptCache, PromptError, encode_file

pytest.importorskip("av")


def wav(path: Path, seconds: float, rate: int = 8000, channels: int = 1) -> str:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        frame = lambda i: struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))  # noqa: E731
        w.writeframes(b"".join(frame(i) * channels for i in range(int(rate * seconds))))
    return str(path)


@pytest.mark.parametrize("rate,channels", [(8000, 1), (16000, 1), (44100, 2)])
def test_a_second_of_audio_is_fifty_frames_of_160_bytes_whatever_its_rate(tmp_path: Path, rate: int,
                                                                           channels: int) -> None:
    payloads = encode_file(wav(tmp_path / "a.wav", 1.0, rate, channels), "PCMU")
    assert 49 <= len(payloads) <= 51
    assert {len(p) for p in payloads} == {160}


def test_pcmu_and_pcma_differ_for_the_same_sound(tmp_path: Path) -> None:
    path = wav(tmp_path / "a.wav", 0.1)
    assert encode_file(path, "PCMU") != encode_file(path, "PCMA")


def test_a_missing_file_names_the_file_and_the_reason(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match=r"cannot play .*nope\.wav: .*No such file"):
        asyncio.run(PromptCache().load(str(tmp_path / "nope.wav"), "PCMU"))


def test_a_file_that_is_not_audio_is_refused_with_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("these are not samples\n" * 50)
    with pytest.raises(PromptError, match="cannot play .*notes.wav: "):
        encode_file(str(path), "PCMU")


def test_the_cache_decodes_once_and_again_after_an_edit(tmp_path: Path) -> None:
    path = wav(tmp_path / "a.wav", 0.2)
    cache = PromptCache()

    async def twice() -> tuple[list[bytes], list[bytes]]:
        return await cache.load(path, "PCMU"), await cache.load(path, "PCMU")

    first, second = asyncio.run(twice())
    assert first is second
    wav(tmp_path / "a.wav", 0.4)
    assert len(asyncio.run(cache.load(path, "PCMU"))) > len(first)


def test_the_cache_keeps_within_its_byte_budget(tmp_path: Path) -> None:
    cache = PromptCache(max_bytes=160 * 60)  # room for 60 frames: one 1 s prompt, not two
    a, b = wav(tmp_path / "a.wav", 1.0), wav(tmp_path / "b.wav", 1.0)
    asyncio.run(cache.load(a, "PCMU"))
    asyncio.run(cache.load(b, "PCMU"))
    assert cache.bytes <= 160 * 60
