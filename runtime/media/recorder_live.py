"""Recording calls (the dialplan's `record` and `record call`): the asyncio side.

The logic (silence, maximum length, the stop digit, mixing) is the sans-IO core in
runtime/media/recorder.py; the file writing is runtime/media/recorder_file.py, run in a worker
thread. This module glues them to a call's media: it taps the relay's RTP sockets of the call's
legs (`RelaySession.tap`), feeds the core with the loop's clock, arms one loop timer at the core's
deadline, and when the recording stops hands the PCM to the worker, then emits the events:

    recording_started   per file, when the recording begins (the call record waits for it)
    recording           per file written: path, seconds, bytes, channel, kind, stop
    recording_failed    the name was refused, the call had no answered media, or the write failed

A voicemail goes on with the rule's next statement once its file is written (or could not be); a
call recording stops when the call closes. Neither ever ends the call by itself. The call layer
(runtime/calls/runner.py, `CallSession.record` / `record_call`) decides whether a call can record
and hands over what this module needs as plain callables, so media never imports the call layer.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .dtmf import EventDetector
from .recorder import RATE, CallRecording, Stop, StopReason, Voicemail
from .recorder_file import RecordingError, recording_path, write_wav

__all__ = ["ActiveRecording", "CallHooks", "record_call", "record_voicemail", "rtp_payload", "stop_recordings"]

log = logging.getLogger("callflow.media")

Writer = Callable[[str, bytes, int], int]  # (path, 16-bit LE mono PCM, rate) -> bytes written; blocking


@dataclass(slots=True)
class CallHooks:
    """What a recording needs of its call, as plain values and callables.

    `media`: the call's media session (a RelaySession: `tap`, `untap`, `event_types`); `now()`: the loop's
    clock in seconds; `emit(name, **fields)`: the engine's event bus; `live()`: whether the call is
    still up; `recordings`: the call's list of recordings under way (shared with the call);
    `tasks`: where write tasks are kept until done (the runner's, cancelled at shutdown)."""

    call_id: str
    media: Any
    now: Callable[[], float]
    emit: Callable[..., object]
    live: Callable[[], bool]
    recordings: list[Any]
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


def rtp_payload(data: bytes) -> tuple[int, bytes] | None:
    """(payload type, payload) of an RTP packet (RFC 3550 5.1: CSRCs, extension and padding
    skipped); None when it is not RTP version 2 or is cut short."""
    if len(data) < 12 or data[0] >> 6 != 2:
        return None
    offset = 12 + 4 * (data[0] & 0x0F)
    if data[0] & 0x10:
        if len(data) < offset + 4:
            return None
        offset += 4 + 4 * int.from_bytes(data[offset + 2:offset + 4], "big")
    end = len(data)
    if data[0] & 0x20 and end > offset:
        end -= data[-1]
    if end < offset:
        return None
    return data[1] & 0x7F, data[offset:end]


def name_values(call_id: str, values: Mapping[str, str]) -> dict[str, str]:
    """The values a recording's name may use: the rule's (or the event's), the call's id, and `time`
    (UTC, `20261130-021500`)."""
    out = dict(values)
    out.setdefault("call", call_id)
    out["time"] = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return out


class ActiveRecording:
    """One recording under way on one call (a voicemail, or a call recording)."""

    def __init__(self, call: CallHooks, kind: str, paths: list[tuple[str, str]],
                 core: Voicemail | CallRecording, on_done: Callable[[], None] | None, writer: Writer) -> None:
        self.call = call
        self.kind = kind          # "voicemail" | "call"
        self.paths = paths        # (channel, path) for each file, in core.outputs()'s order
        self.core = core
        self.on_done = on_done
        self.writer = writer
        self.timer: asyncio.TimerHandle | None = None
        self.detector: EventDetector | None = None
        self.finished = False
        self.listeners: dict[int, Callable[[bytes], None]] = {}  # leg -> what listens on it (for untap)

    # ---- feeding the core -------------------------------------------------------------------------
    def packet(self, leg: int, data: bytes) -> None:
        """The relay's tap: one RTP packet that arrived on `leg`."""
        if self.finished:
            return
        found = rtp_payload(data)
        if found is None:
            return
        payload_type, payload = found
        now = self.call.now()
        core = self.core
        if isinstance(core, Voicemail):
            detector = self.detector
            if detector is not None and payload_type in detector.rates:
                digit = detector.feed(data)
                stop = core.digit(digit[0], now) if digit is not None else core.tick(now)
            else:
                stop = core.audio(payload_type, payload, now)
            if stop is not None:
                self.finish(stop)
        else:
            core.audio(leg, payload_type, payload, now)
            if core.full:
                self.finish(Stop(StopReason.MAX_LENGTH))

    def arm(self) -> None:
        """The loop timer at the core's deadline (a voicemail's silence or maximum length)."""
        core = self.core
        if not isinstance(core, Voicemail) or self.finished:
            return
        at = core.deadline()
        if at is None:
            return
        loop = asyncio.get_running_loop()
        self.timer = loop.call_at(at, self._fire)

    def _fire(self) -> None:
        self.timer = None
        if self.finished:
            return
        stop = self.core.tick(self.call.now())  # type: ignore[union-attr]
        if stop is not None:
            self.finish(stop)
        else:
            self.arm()  # voice came meanwhile: the silence deadline moved on

    # ---- the end ------------------------------------------------------------------------------------
    def finish(self, stop: Stop) -> None:
        """Stop listening and write the files in a worker thread; events (and a voicemail's next step)
        follow when they are written."""
        if self.finished:
            return
        self.finished = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        call = self.call
        media = call.media
        if media is not None:
            for leg, listener in self.listeners.items():
                media.untap(leg, listener)
        self.listeners.clear()  # they close over this recording: no cycle left behind
        if self in call.recordings:
            call.recordings.remove(self)
        core = self.core
        seconds = core.track.seconds if isinstance(core, Voicemail) else core.seconds
        log.info("event=recording_stopped call=%s kind=%s stop=%s seconds=%.2f skipped=%d", call.call_id, self.kind,
                 _quote(stop.reason.value), seconds, core.skipped)
        task = asyncio.get_running_loop().create_task(self._write_all(stop))
        call.tasks.add(task)
        task.add_done_callback(call.tasks.discard)

    def _render(self) -> list[tuple[str, bytes]]:
        """The files' PCM (joining and mixing a long call takes a while: run in a worker thread; the
        core gets no more input once finished)."""
        core = self.core
        return [("ZERO", core.pcm())] if isinstance(core, Voicemail) else core.outputs()

    async def _write_all(self, stop: Stop) -> None:
        call = self.call
        loop = asyncio.get_running_loop()
        try:
            outputs = await loop.run_in_executor(None, self._render)
            for (channel, path), (_, pcm) in zip(self.paths, outputs, strict=True):
                await self._write(path, pcm, channel, stop)
        except Exception as exc:  # a bug rendering: still one event per file, and the call goes on
            log.exception("event=call_error call=%s step=recording", call.call_id)
            for _, path in self.paths:
                call.emit("recording_failed", call=call.call_id, path=path, reason=f"cannot write {path}: {exc}")
        finally:
            self._done()

    async def _write(self, path: str, pcm: bytes, channel: str, stop: Stop) -> None:
        call = self.call
        try:
            size = await asyncio.get_running_loop().run_in_executor(None, self.writer, path, pcm, RATE)
        except RecordingError as exc:
            call.emit("recording_failed", call=call.call_id, path=path, reason=str(exc))
        except Exception as exc:  # a writer's bug: still one event per file, and the call goes on
            log.exception("event=call_error call=%s step=recording", call.call_id)
            call.emit("recording_failed", call=call.call_id, path=path, reason=f"cannot write {path}: {exc}")
        else:
            call.emit("recording", call=call.call_id, path=path, seconds=round(len(pcm) / 2 / RATE, 3), bytes=size,
                      channel=channel, kind=self.kind, stop=stop.reason.value)
        self.paths = [p for p in self.paths if p[1] != path]

    def _done(self) -> None:
        on_done, self.on_done = self.on_done, None
        if on_done is not None and self.call.live():
            on_done()  # the call is still up: the rule goes on


def _quote(text: str) -> str:
    return '"' + text.replace('"', "'") + '"' if " " in text else text


def _failed(call: CallHooks, path: str, reason: str, on_done: Callable[[], None] | None) -> None:
    call.emit("recording_failed", call=call.call_id, path=path, reason=reason)
    if on_done is not None:
        on_done()


def _resolve(call: CallHooks, folder: str, template: str, values: Mapping[str, str],
             on_done: Callable[[], None] | None) -> str | None:
    try:
        return recording_path(folder, template, name_values(call.call_id, values))
    except RecordingError as exc:
        _failed(call, "", str(exc), on_done)
        return None


def record_voicemail(call: CallHooks, folder: str, template: str, values: Mapping[str, str],
                     max_seconds: float, silence_seconds: float | None, on_done: Callable[[], None],
                     answered: bool, writer: Writer = write_wav) -> None:
    """Record channel ZERO (answered by us: after `play ... answered` and the beep) into the file
    `template` names inside `folder`; `on_done()` once written or failed, unless the call ended.
    `answered`: the call layer's word that Callflow answered channel ZERO itself."""
    path = _resolve(call, folder, template, values, on_done)
    if path is None:
        return
    media = call.media
    if media is None or not hasattr(media, "untap"):
        _failed(call, path, "the call's media backend cannot record (the in-process relay can)", on_done)
        return
    if not answered or getattr(media, "answered_codec", None) is None:
        _failed(call, path, "the caller was not answered by Callflow (a voicemail records after `play ... "
                               "answered`: the caller's phone must offer PCMU or PCMA)", on_done)
        return
    core = Voicemail(call.now(), max_seconds, silence_seconds)
    rec = ActiveRecording(call, "voicemail", [("ZERO", path)], core, on_done, writer)
    types: dict[int, int] = media.event_types  # type: ignore[attr-defined]
    if types:
        rec.detector = EventDetector(types)
    _start(call, rec, media, (0,), "mono")


def record_call(call: CallHooks, folder: str, template: str, values: Mapping[str, str], mix: str,
                writer: Writer = write_wav) -> None:
    """Record both legs of the call from now until it closes, as `mix` (`mixed`, `per leg`, `both`):
    `mixed` writes the name itself, `per leg` two files named with `.zero` and `.one` before the
    extension (`calls/ID.zero.wav`, `calls/ID.one.wav`), `both` all three."""
    path = _resolve(call, folder, template, values, None)
    if path is None:
        return
    media = call.media
    if media is None or not hasattr(media, "untap"):
        _failed(call, path, "the call's media backend cannot record (the in-process relay can)", None)
        return
    if any(r.kind == "call" for r in call.recordings):
        _failed(call, path, "the call is being recorded already", None)
        return
    stem, ext = os.path.splitext(path)
    paths: list[tuple[str, str]] = []
    if mix in ("mixed", "both"):
        paths.append(("mixed", path))
    if mix in ("per leg", "both"):
        paths += [("ZERO", f"{stem}.zero{ext}"), ("ONE", f"{stem}.one{ext}")]
    rec = ActiveRecording(call, "call", paths, CallRecording(mix), None, writer)
    _start(call, rec, media, (0, 1), mix)


def _start(call: CallHooks, rec: ActiveRecording, media: Any, legs: tuple[int, ...], mix: str) -> None:
    call.recordings.append(rec)
    for _, path in rec.paths:
        call.emit("recording_started", call=call.call_id, path=path, kind=rec.kind, mix=mix)
    for leg in legs:
        listener = rec.listeners[leg] = lambda data, leg=leg: rec.packet(leg, data)
        media.tap(leg, listener)
    rec.arm()


def stop_recordings(call: CallHooks) -> None:
    """The call is closing: every recording under way stops (`hangup`) and is written."""
    now = call.now()
    for rec in list(call.recordings):
        core = rec.core
        stop = core.hangup(now) if isinstance(core, Voicemail) else None
        rec.finish(stop or Stop(StopReason.HANGUP))
