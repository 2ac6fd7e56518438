"""Recording files: where they go (inside the recordings folder, never outside) and how they are
written (PyAV, atomically). Blocking: the caller runs `write_wav` in a worker thread.

Atomic: the file is encoded under a hidden temporary name in the same folder
(`.NAME.RANDOM.part`), flushed to disk (fsync), then renamed over the final name (rename is atomic
within one file system) and the folder's entry fsynced. A crash at any moment leaves either no file
with the final name or the whole file; a failed write removes its temporary file.
"""

from __future__ import annotations

import atexit
import errno
import math
import os
import re
import secrets
import shutil
import tempfile
from array import array
from collections.abc import Callable, Mapping

__all__ = ["RecordingError", "beep_file", "recording_path", "safe_value", "write_wav"]

RATE = 8000
CHUNK = 1600  # samples per encoded frame (200 ms)
_UNSAFE = re.compile(r"[^A-Za-z0-9+@._-]")
_FIELD = re.compile(r"\{\{|\}\}|\{([A-Za-z0-9_]+)\}")


class RecordingError(Exception):
    """A recording that cannot be written: the message names the file and says what to fix."""


def safe_value(value: str) -> str:
    """A call's value made safe inside a file name: only letters, digits and `+@._-` stay (anything
    else, `/` included, becomes `_`), and no leading dot (no hidden file, no `..`)."""
    text = _UNSAFE.sub("_", value).lstrip(".")
    return text or "_"


def render_name(template: str, values: Mapping[str, str]) -> str:
    """`template`'s `{name}` fields filled with `safe_value`s (an unknown name stays `{name}`, which
    `recording_path` then refuses as unsafe... no: braces are replaced by `_` too, so it is visible)."""

    def fill(m: re.Match[str]) -> str:
        tok = m.group(0)
        if tok == "{{" or tok == "}}":
            return "_"
        value = values.get(m.group(1))
        return safe_value(value) if value is not None else "_" + m.group(1) + "_"

    return _FIELD.sub(fill, template)


def recording_path(folder: str, template: str, values: Mapping[str, str]) -> str:
    """The absolute path of a recording named by `template` (relative, `{name}` fields from `values`)
    inside `folder`. Raises RecordingError for a name that would leave the folder (absolute, `..`)."""
    name = render_name(template, values)
    if os.path.isabs(name) or name.startswith(("/", "\\")):
        raise RecordingError(f"recording name {name!r} is absolute: names are relative to the recordings folder")
    parts = name.replace("\\", "/").split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise RecordingError(f"recording name {name!r} has an empty, `.` or `..` part: it must stay inside the "
                             "recordings folder")
    base = os.path.realpath(folder)
    path = os.path.realpath(os.path.join(base, *parts))
    if os.path.commonpath([base, path]) != base:  # a symbolic link inside the folder pointing out of it
        raise RecordingError(f"recording {name!r} would be written outside the recordings folder {base}")
    return path


def _reason(exc: BaseException) -> str:
    code = getattr(exc, "errno", None)
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    if code == errno.ENOSPC:
        return f"no space left on the device ({text}): free some space or point `recordings` elsewhere"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"the folder is not writable ({text}): fix its permissions or point `recordings` elsewhere"
    if code == errno.ENOTDIR:
        return f"a part of the folder's path is a file ({text}): point `recordings` at a folder"
    return text


def _encode_pyav(path: str, pcm: bytes, rate: int) -> None:
    """Encode 16-bit LE mono PCM to a WAV file at `path` through PyAV (FFmpeg's WAV muxer)."""
    import av  # noqa: PLC0415  (a dependency; imported where needed so the server starts without FFmpeg)

    with av.open(path, "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=rate, layout="mono")
        samples = len(pcm) // 2
        for start in range(0, samples, CHUNK):
            n = min(CHUNK, samples - start)
            frame = av.AudioFrame(format="s16", layout="mono", samples=n)
            frame.planes[0].update(pcm[2 * start:2 * (start + n)])
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def write_wav(path: str, pcm: bytes, rate: int = RATE,
              encode: Callable[[str, bytes, int], None] = _encode_pyav) -> int:
    """Write `pcm` (16-bit LE mono at `rate` Hz) as the WAV file `path`, atomically (module docstring).
    Makes the folder when missing. Returns the file's size in bytes. Raises RecordingError saying why."""
    folder = os.path.dirname(path)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(4)}.part")
    try:
        os.makedirs(folder, exist_ok=True)
        encode(tmp, pcm, rate)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except Exception as exc:  # noqa: BLE001 - OS and FFmpeg errors alike: none may escape, none leave a file
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise RecordingError(f"cannot write {path}: {_reason(exc)}") from None
    try:
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)  # the rename itself on disk
        finally:
            os.close(dfd)
    except OSError:
        pass  # some file systems cannot fsync a folder; the file itself is on disk
    return os.path.getsize(path)


_beeps: dict[tuple[int, float], str] = {}


def beep_file(frequency: int = 1000, seconds: float = 0.4) -> str:
    """A WAV file of a sine beep (the tone before a voicemail), written once per process in a
    private temporary folder; played through the prompt player like any prompt."""
    key = (frequency, seconds)
    found = _beeps.get(key)
    if found is not None and os.path.isfile(found):
        return found
    n = int(seconds * RATE)
    fade = RATE // 100  # 10 ms in and out: no click
    tone = array("h", (int(12000 * min(1.0, i / fade, (n - i) / fade) * math.sin(2 * math.pi * frequency * i / RATE))
                       for i in range(n)))
    folder = tempfile.mkdtemp(prefix="callflow-beep-")
    atexit.register(shutil.rmtree, folder, True)
    path = os.path.join(folder, f"beep-{frequency}.wav")
    write_wav(path, tone.tobytes())
    _beeps[key] = path
    return path
