"""Recording files (runtime/media/recorder_file.py): names stay inside the recordings folder whatever
the call's values are, files are written through PyAV atomically, and a full disk or an unusable
folder is an error an operator can act on, leaving no file behind."""

from __future__ import annotations

import errno
import math
import os
from array import array
from pathlib import Path

import pytest

from runtime.media.recorder_file import RecordingError, beep_file, recording_path, safe_value, write_wav

av = pytest.importorskip("av")


def pcm(seconds: float, frequency: int = 1000) -> bytes:
    return array("h", (int(9000 * math.sin(2 * math.pi * frequency * i / 8000))
                       for i in range(int(seconds * 8000)))).tobytes()


def decoded_seconds(path: Path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        assert (stream.codec_context.name, stream.rate, stream.channels) == ("pcm_s16le", 8000, 1)
        return sum(frame.samples for frame in container.decode(audio=0)) / 8000


def test_a_recording_is_a_wav_file_that_decodes_to_its_length(tmp_path: Path) -> None:
    path = tmp_path / "voicemail" / "alice.wav"  # the folder is made when missing
    size = write_wav(str(path), pcm(2.5))
    assert size == path.stat().st_size
    assert decoded_seconds(path) == 2.5
    assert os.listdir(path.parent) == ["alice.wav"]  # no temporary file left


def test_a_full_disk_leaves_neither_the_file_nor_a_temporary_one_and_says_so(tmp_path: Path) -> None:
    def half_then_enospc(tmp: str, data: bytes, rate: int) -> None:
        with open(tmp, "wb") as f:
            f.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(RecordingError, match="no space left on the device") as caught:
        write_wav(str(tmp_path / "m.wav"), pcm(1.0), encode=half_then_enospc)
    assert str(tmp_path / "m.wav") in str(caught.value)
    assert os.listdir(tmp_path) == []


def test_a_crash_while_encoding_never_leaves_a_file_under_the_final_name(tmp_path: Path) -> None:
    def crash(tmp: str, data: bytes, rate: int) -> None:
        Path(tmp).write_bytes(b"RIFF....half")
        raise RuntimeError("killed")

    with pytest.raises(RecordingError, match="killed"):
        write_wav(str(tmp_path / "m.wav"), pcm(1.0), encode=crash)
    assert not (tmp_path / "m.wav").exists() and os.listdir(tmp_path) == []


def test_a_folder_that_cannot_be_made_is_an_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file where the folder should be")
    with pytest.raises(RecordingError, match="cannot write .*taken/vm/m.wav"):
        write_wav(str(tmp_path / "taken" / "vm" / "m.wav"), pcm(0.5))


def test_a_read_only_folder_is_reported_as_not_writable(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(RecordingError, match="not writable"):
            write_wav(str(folder / "m.wav"), pcm(0.5))
    finally:
        folder.chmod(0o700)


def test_values_from_the_call_cannot_add_folders_or_climb_out(tmp_path: Path) -> None:
    path = recording_path(str(tmp_path), "vm/{caller_id}-{call}.wav", {"caller_id": "../../etc/passwd", "call": "a b"})
    assert path == str(tmp_path.resolve() / "vm" / "_.._etc_passwd-a_b.wav")
    assert safe_value("..") == "_" and safe_value(".hidden") == "hidden" and safe_value("+4930 123") == "+4930_123"


@pytest.mark.parametrize("name", ["/etc/x.wav", "../x.wav", "vm/../../x.wav", "vm//x.wav", "./x.wav"])
def test_a_name_that_would_leave_the_folder_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(RecordingError, match="recordings folder"):
        recording_path(str(tmp_path), name, {})


def test_a_symbolic_link_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / "out").symlink_to(tmp_path)
    with pytest.raises(RecordingError, match="outside the recordings folder"):
        recording_path(str(tmp_path / "rec"), "out/x.wav", {})


def test_a_value_the_call_does_not_have_shows_in_the_name() -> None:
    assert recording_path("/srv/rec", "{nope}.wav", {}) == "/srv/rec/_nope_.wav"


def test_the_beep_is_a_short_tone_file() -> None:
    path = Path(beep_file())
    assert 0.3 <= decoded_seconds(path) <= 0.5
    assert beep_file() == str(path)  # made once
