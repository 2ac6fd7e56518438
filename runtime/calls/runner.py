"""The asyncio side of the call layer: carries out the call machines' actions, arms their timers on
one heap (one loop timer for all calls), and feeds back responses, timeouts and the media backend's
results.

A media coroutine that completes without suspending (today's relay) runs inline, no task: the common
call costs no more than a function call per media step. One that suspends becomes a task, bounded by
MEDIA_TIMEOUT so a backend that never answers cannot wedge a call; its result (or the error) comes
back to the machine, which queued everything else meanwhile.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol

from ..events import EventBus, logfmt_value
from ..media.base import MediaBackend, MediaError, MediaSession
from ..media.prompts import PromptCache
from ..media.recorder_live import CallHooks, record_call, record_voicemail, stop_recordings
from ..sip.message import Request, Response, create_response
from ..sip.transaction import ClientTransaction, ServerTransaction, TransactionLayer
from .io import (
    AcceptIn,
    AckIn,
    Action,
    ActionFailed,
    CancelIn,
    CancelTimer,
    Closed,
    DialIn,
    DigitIn,
    Emit,
    GatherIn,
    GatherPromptDone,
    HangupIn,
    IndexDialog,
    Input,
    MediaCall,
    MediaDone,
    MediaExpect,
    Notify,
    PlayDone,
    PlayIn,
    RejectIn,
    Released,
    RequestIn,
    Respond,
    ResponseIn,
    Route,
    SendDtmfIn,
    SendRequest,
    SendStateless,
    SetTimer,
    Start,
    StartPlaying,
    StopPlaying,
    StrayResponseIn,
    TimerFired,
    TransferIn,
)
from .legs import Failure, Leg, Target
from .machine import CallMachine
from .names import TRANSFERRED
from .states import Channel

log = logging.getLogger("callflow.calls")

MEDIA_TIMEOUT = 10.0  # seconds a media backend may take for one step before the step fails


class CallHost(Protocol):
    """What the runner needs from the engine (the engine is one; tests may pass another)."""

    layer: TransactionLayer
    bus: EventBus
    media: MediaBackend
    prompts: PromptCache
    calls: dict[str, Any]
    dialogs: dict[tuple[str, str], tuple[Any, Channel]]

    def now(self) -> float: ...

    def route(self, call: Any) -> None: ...

    def pump(self) -> None: ...


class CallSession:
    """One call as the dialplan and the engine see it (the SDK's call session): its machine, its
    media session and play task, and the keys it holds in the engine's tables."""

    __slots__ = ("runner", "machine", "media", "player", "timers", "dialog_keys", "created_wall", "queued",
                 "recordings", "__weakref__")

    def __init__(self, runner: CallRunner, machine: CallMachine) -> None:
        self.runner = runner
        self.machine = machine
        self.media: MediaSession | None = None
        self.player: asyncio.Task[None] | None = None
        self.timers: dict[str, int] = {}
        self.dialog_keys: list[tuple[str, str]] = []
        self.created_wall = time.time()
        self.queued = False
        self.recordings: list[Any] = []  # recordings under way (media/recorder_live.ActiveRecording)

    # ---- what the dialplan reads ---------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self.machine.id

    @property
    def program(self) -> object:
        return self.machine.program

    @property
    def peer_type(self) -> str:
        return self.machine.peer_type

    @property
    def peer_name(self) -> str | None:
        return self.machine.peer_name

    @property
    def caller_id(self) -> str:
        return self.machine.caller_id

    @property
    def caller_name(self) -> str | None:
        return self.machine.caller_name

    @property
    def dialled(self) -> str:
        return self.machine.dialled

    @property
    def invite(self) -> Request:
        return self.machine.invite

    @property
    def last_failure(self) -> Failure:
        return self.machine.last_failure

    @property
    def state(self) -> str:
        return self.machine.state.value

    @property
    def caller_id_override(self) -> str | None:
        return self.machine.caller_id_override

    @caller_id_override.setter
    def caller_id_override(self, value: str | None) -> None:
        self.machine.caller_id_override = value

    @property
    def extra_headers(self) -> list[tuple[str, str]]:
        return self.machine.extra_headers

    # ---- what the dialplan asks (the SDK's AcceptCallSession / RejectCallSession / HangUp) ------------
    def accept(self, targets: list[Target], timeout: float | None,
               on_result: Callable[[Failure | None], None]) -> None:
        """Ring every target at once (timeout in seconds, None for no limit); the first answer wins.
        `on_result(None)` when connected, `on_result(failure)` when none answered."""
        self.runner.feed(self, AcceptIn(self.runner.now(), targets, timeout, on_result))

    def reject(self, code: int, reason: str) -> None:
        """Refuse the call with `code reason` (or hang up, when we answered it ourselves)."""
        if self.recordings:
            stop_recordings(self._hooks())
        self.runner.feed(self, RejectIn(self.runner.now(), code, reason))

    def hangup(self) -> None:
        """End the call as its state needs: BYE, CANCEL or a final response. Recordings under way
        stop now (the files are written), not when the BYE is answered."""
        if self.recordings:
            stop_recordings(self._hooks())
        self.runner.feed(self, HangupIn(self.runner.now()))

    def play(self, path: str, answered: bool, on_done: Callable[[], None]) -> None:
        """Play a file to the caller, as early media (183) or after answering (200); `on_done()` once
        it has played (or could not be), unless the call ended meanwhile."""
        self.runner.feed(self, PlayIn(self.runner.now(), path, answered, on_done))

    def gather(self, prompt: str | None, max_digits: int, terminator: str | None, timeout: float,
               digit_timeout: float, retries: int, keys: frozenset[str] | None,
               on_done: Callable[[str, str], None]) -> None:
        """Answer the caller (if not yet), play `prompt`, collect DTMF digits (calls/gather.py); seconds
        for the timeouts. `on_done(digits, outcome)` once the entry is in (outcome `terminator`, `max`,
        `digits` or `timeout`), unless the call ended meanwhile."""
        unheard = getattr(self.runner.host.media, "keys_unheard", None)  # rtpengine without its DTMF reports
        if unheard:
            log.warning("event=gather_deaf call=%s reason=%s", self.id, logfmt_value(unheard))
        self.runner.feed(self, GatherIn(self.runner.now(), prompt, max_digits, terminator, timeout, digit_timeout,
                                        retries, keys, self._prompt_done, on_done))

    def _prompt_done(self) -> None:
        self.runner.feed(self, GatherPromptDone(self.runner.now()))

    def send_dtmf(self, channel: Channel, digits: str, duration: float) -> None:
        """Send `digits` into `channel`'s phone, each held `duration` seconds: RFC 4733 when that leg
        negotiated telephone-event, else SIP INFO (runtime/calls/dtmf.py); `dtmf_dropped` if neither."""
        self.runner.feed(self, SendDtmfIn(self.runner.now(), channel, digits, duration))

    def dial(self, targets: list[Target], timeout: float, on_answered: Callable[[], None],
             on_failed: Callable[[Failure], None]) -> None:
        """Originate (runtime/calls/originate.py): ring `targets` as channel ZERO for at most `timeout`
        seconds; `on_answered()` once one answered (then accept, play or reject as for a call we
        answered), `on_failed(failure)` when none did (the call has closed)."""
        self.runner.feed(self, DialIn(self.runner.now(), targets, timeout, on_answered, on_failed))

    def transfer(self, channel: Channel, targets: list[Target], label: str) -> None:
        """Blind transfer asked by the program: the party on `channel` leaves, the other is bridged to
        the first of `targets` to answer (`label` names the target in the `transfer` events)."""
        self.runner.feed(self, TransferIn(self.runner.now(), channel, targets, label))

    def record(self, folder: str, name: str, values: Mapping[str, str], max_seconds: float,
               silence_seconds: float | None, on_done: Callable[[], None]) -> None:
        """A voicemail: record the caller (answered by us) into `name` (a `{field}` template, relative)
        inside `folder` until `max_seconds`, `silence_seconds` without voice, `#` or hangup;
        `on_done()` once the file is written (or could not be), unless the call ended
        (runtime/media/recorder_live.py)."""
        answered = self.machine.state.value == "answered" and self.machine.answered_by_us
        record_voicemail(self._hooks(), folder, name, values, max_seconds, silence_seconds, on_done, answered)

    def record_call(self, folder: str, name: str, values: Mapping[str, str], mix: str) -> None:
        """Record both legs until the call ends, `mix` = `mixed`, `per leg` or `both`
        (runtime/media/recorder_live.py)."""
        record_call(self._hooks(), folder, name, values, mix)

    def _hooks(self) -> CallHooks:
        runner = self.runner
        host = runner.host
        call_id = self.id
        return CallHooks(call_id, self.media, runner.now, host.bus.emit, lambda: call_id in host.calls,
                         self.recordings, runner.writes)

    # ---- what the engine hands over --------------------------------------------------------------------
    def digit(self, channel: Channel, digit: str, duration: int) -> None:
        """An RFC 4733 digit (duration in ms) the media backend saw arrive on `channel`."""
        self.runner.feed(self, DigitIn(self.runner.now(), channel, digit, duration))

    def start(self) -> None:
        self.runner.feed(self, Start(self.runner.now()))

    def request(self, channel: Channel, txn: ServerTransaction) -> None:
        self.runner.feed(self, RequestIn(self.runner.now(), channel, txn))

    def ack(self, channel: Channel, request: Request) -> None:
        self.runner.feed(self, AckIn(self.runner.now(), channel, request))

    def cancel(self, txn: ServerTransaction) -> None:
        self.runner.feed(self, CancelIn(self.runner.now(), txn))

    def stray_2xx(self, response: Response) -> None:
        self.runner.feed(self, StrayResponseIn(self.runner.now(), response))

    # ---- the operator's status page ------------------------------------------------------------------
    def snapshot(self) -> dict[str, object]:
        """{"call", "state" (lowercase; a call we answered shows what it is doing: "menu" in a gather,
        "recording" in a voicemail), "created_at" and "answered_at" (wall-clock epoch seconds,
        answered_at None before the answer), "duration" (seconds since the answer, else 0),
        "legs": [{"channel", "peer_type", "peer", "address" "ip:port", "transport", "codec"}],
        "caller", "to"}."""
        m = self.machine
        now = self.runner.now()
        answered_at = None if m.answered_at is None else self.created_wall + (m.answered_at - m.created_at)
        legs = []
        relayed = _codec_name(m.one.answer_sdp) if m.one is not None else None
        for leg in (m.zero, m.one):
            if leg is None:
                continue
            codec = m.play_codec[1] if leg.channel is Channel.ZERO and m.play_codec else relayed
            legs.append({"channel": leg.channel.name, "peer_type": leg.peer_type, "peer": leg.peer,
                         "address": f"{leg.address[0]}:{leg.address[1]}", "transport": leg.transport,
                         "codec": codec})
        state = m.state.value
        if state == "answered":
            if any(getattr(r, "kind", "") == "voicemail" for r in self.recordings):
                state = "recording"
            elif m.gather is not None:
                state = "menu"
        return {"call": m.id, "state": state, "created_at": self.created_wall, "answered_at": answered_at,
                "duration": 0 if m.answered_at is None else max(0.0, now - m.answered_at), "legs": legs,
                "caller": m.caller_id_override or m.caller_id, "to": m.dialled}


_STATIC_CODECS = {0: "PCMU", 3: "GSM", 4: "G723", 8: "PCMA", 9: "G722", 18: "G729"}


def _codec_name(sdp: bytes) -> str | None:
    """The codec an SDP answer settled on: its first audio format's name (None without one)."""
    lines = sdp.decode("utf-8", "replace").splitlines()
    first = None
    for line in lines:
        if first is None and line.startswith("m=audio "):
            fields = line.split()
            if len(fields) > 3 and fields[3].isdigit():
                first = int(fields[3])
        elif first is not None and line.startswith(f"a=rtpmap:{first} "):
            return line.split(" ", 1)[1].partition("/")[0]
    return None if first is None else _STATIC_CODECS.get(first, str(first))


class _Owner:
    """A client transaction's user_data: routes its responses back to the call by id and tag (no
    reference to the call itself, so a transaction outliving its call keeps nothing alive)."""

    __slots__ = ("runner", "call_id", "tag")

    def __init__(self, runner: CallRunner, call_id: str, tag: Any) -> None:
        self.runner = runner
        self.call_id = call_id
        self.tag = tag

    def on_response(self, resp: Response, txn: ClientTransaction | None) -> None:
        self.runner.response(self.call_id, self.tag, resp)

    def on_timeout(self, txn: ClientTransaction) -> None:
        self.runner.response(self.call_id, self.tag, None)

    def on_unreachable(self, txn: ClientTransaction) -> None:
        """The destination cannot be reached (ICMP unreachable, connection refused): RFC 3261 8.1.3.1
        treats it as a 503, so a phone that is gone fails its fork at once, as busy would, and the
        rule's `otherwise` runs instead of the caller hearing a dead ring until the timeout."""
        reply = create_response(txn.request, 503, "Service Unavailable (unreachable)")
        self.runner.response(self.call_id, self.tag, reply)


COMPACT_AT = 4096  # heap entries before stale ones are worth dropping (see CallRunner._compact)


class CallRunner:
    """Runs every call machine of one engine."""

    def __init__(self, host: CallHost, media_timeout: float = MEDIA_TIMEOUT) -> None:
        self.host = host
        self.media_timeout = media_timeout  # seconds one media step may take before it fails
        self.sessions: dict[str, CallSession] = {}  # machines not yet released (a closed call may linger)
        self._heap: list[tuple[float, int, str, str]] = []
        self._live = 0  # timers set and neither fired, cancelled, replaced nor dropped with their call
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._ready: deque[CallSession] = deque()
        self._draining = False
        self._tasks: set[asyncio.Task[None]] = set()
        # recordings being written (worker threads): not cancelled at close, awaited by `settle_writes`
        self.writes: set[asyncio.Task[None]] = set()

    def now(self) -> float:
        return self.host.now()

    def add(self, session: CallSession) -> None:
        self.sessions[session.id] = session

    # ---- feeding machines ------------------------------------------------------------------------------
    def feed(self, session: CallSession, inp: Input) -> None:
        """Give `inp` to the call's machine and carry out what it asks, in order. Re-entrant calls
        (a dialplan callback accepting the call) only queue: the outer loop carries them out."""
        session.machine.handle(inp)
        self._drain(session)

    def hand_over(self, session: CallSession, channel: Channel, user: str,
                  remote_tag: str) -> tuple[Leg | None, Failure | None]:
        """CallMachine.hand_over on `session` (an attended transfer in another call takes its other
        party), then carry out what that call does (its BYE to the transferor, its close)."""
        result = session.machine.hand_over(self.host.now(), channel, user, remote_tag)
        self._drain(session)
        return result

    def _drain(self, session: CallSession) -> None:
        if not session.queued:
            session.queued = True
            self._ready.append(session)
        if self._draining:
            return
        self._draining = True
        try:
            ready = self._ready
            for _ in range(1_000_000):
                if not ready:
                    break
                s = ready[0]
                actions = s.machine.take_actions()
                if not actions:
                    ready.popleft()
                    s.queued = False
                    continue
                for action in actions:
                    try:
                        _EXECUTE[type(action)](self, s, action)
                    except Exception as exc:
                        log.exception("event=call_error call=%s action=%s", s.id, type(action).__name__)
                        s.machine.handle(ActionFailed(self.host.now(), exc))
        finally:
            self._draining = False
            self.host.pump()

    def response(self, call_id: str, tag: Any, resp: Response | None) -> None:
        session = self.sessions.get(call_id)
        if session is not None:
            self.feed(session, ResponseIn(self.host.now(), tag, resp))

    # ---- actions ---------------------------------------------------------------------------------------
    def _respond(self, s: CallSession, a: Respond) -> None:
        self.host.layer.respond(a.txn, a.response, self.host.now())

    def _send_request(self, s: CallSession, a: SendRequest) -> None:
        txn = self.host.layer.send_request(a.request, a.destination, self.host.now(), a.transport)
        txn.user_data = _Owner(self, s.id, a.tag)

    def _send_stateless(self, s: CallSession, a: SendStateless) -> None:
        self.host.layer.send_stateless(a.message, a.destination, a.transport)

    def _emit(self, s: CallSession, a: Emit) -> None:
        # (a blind transfer's transferor leaving is a hang-up of its leg, but the call goes on recording)
        if a.name == "hangup" and s.recordings and a.fields.get("reason") != TRANSFERRED:
            stop_recordings(s._hooks())  # recordings end when a leg hangs up, not when its BYE is answered
        self.host.bus.emit(a.name, **a.fields)

    def _route(self, s: CallSession, a: Route) -> None:
        self.host.route(s)

    def _notify(self, s: CallSession, a: Notify) -> None:
        a.callback(*a.args)

    def _index(self, s: CallSession, a: IndexDialog) -> None:
        key = (a.call_id, a.local_tag)
        self.host.dialogs[key] = (s, a.channel)
        s.dialog_keys.append(key)

    def _closed(self, s: CallSession, a: Closed) -> None:
        self._live -= len(s.timers)
        s.timers.clear()
        if s.machine.txn is not None and s.machine.txn.user_data is s:
            s.machine.txn.user_data = None  # the INVITE transaction outlives the call: no cycle through it
        self._stop_playing(s, None)
        if s.recordings:
            stop_recordings(s._hooks())  # before the media closes: what was recorded is written
        stats: dict[str, object] = {}
        media, s.media = s.media, None
        if media is not None:
            try:
                rtp_in, rtp_out = media.packets
                stats = {"rtp_in": rtp_in, "rtp_out": rtp_out}
            finally:
                media.close()
        host = self.host
        host.bus.emit("closed", call=s.id, reason=a.reason, **stats)
        host.calls.pop(s.id, None)
        dialogs = host.dialogs
        for key in s.dialog_keys:
            entry = dialogs.get(key)
            if entry is not None and entry[0] is s:
                del dialogs[key]
        s.dialog_keys.clear()

    def _released(self, s: CallSession, a: Released) -> None:
        self._live -= len(s.timers)
        s.timers.clear()
        self.sessions.pop(s.id, None)

    # ---- the media backend -------------------------------------------------------------------------------
    def _media_call(self, s: CallSession, a: MediaCall) -> None:
        now = self.host.now
        op, args = a.op, a.args
        try:
            media = s.media
            if op == "allocate":
                coro: Coroutine[Any, Any, Any] = self.host.media.allocate(s.id)
            elif op == "prompt":
                coro = self.host.prompts.load(*args)
            elif media is None:
                raise MediaError("the call has no media")
            elif op == "restrict_offer":
                self.feed(s, MediaDone(now(), a.token, media.restrict_offer(*args)))
                return
            elif op == "packets":
                self.feed(s, MediaDone(now(), a.token, media.packets))
                return
            elif op == "dtmf_mode":
                self.feed(s, MediaDone(now(), a.token, media.dtmf_mode(*args)))
                return
            elif op == "send_dtmf":
                self.feed(s, MediaDone(now(), a.token, media.send_dtmf(*args)))
                return
            elif op in ("anchor", "answer", "offer", "take_answer"):
                coro = getattr(media, op)(*args)
            else:
                raise MediaError(f"unknown media operation {op}")
            try:
                waiting_on = coro.send(None)
            except StopIteration as stop:
                value = stop.value
            else:
                task = asyncio.get_running_loop().create_task(self._finish(s, a.token, op, coro, waiting_on))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                return
        except Exception as exc:
            self.feed(s, MediaDone(now(), a.token, None, exc))
            return
        if op == "allocate":
            s.media, value = value, None
        self.feed(s, MediaDone(now(), a.token, value))

    async def _finish(self, s: CallSession, token: int, op: str, coro: Coroutine[Any, Any, Any],
                      waiting_on: object) -> None:
        """Drive a media coroutine on from where it first waited, as a Task would, within
        MEDIA_TIMEOUT. Only asyncio futures (or a bare yield) are awaited by media backends."""
        value: Any = None
        error: BaseException | None = None
        deadline = asyncio.get_running_loop().time() + self.media_timeout
        try:
            for _ in range(1_000_000):
                if isinstance(waiting_on, asyncio.Future):
                    waiting_on._asyncio_future_blocking = False
                    left = deadline - asyncio.get_running_loop().time()
                    done, _pending = await asyncio.wait((waiting_on,), timeout=max(0.0, left))
                    if not done:
                        waiting_on.cancel()
                        raise MediaError(f"the media backend did not answer {op} in {self.media_timeout:g} s")
                else:
                    await asyncio.sleep(0)
                try:
                    waiting_on = coro.send(None)  # the future's own __await__ returns or raises its result
                except StopIteration as stop:
                    value = stop.value
                    break
        except asyncio.CancelledError:
            coro.close()
            error = MediaError(f"media step {op} cancelled")
        except Exception as exc:
            coro.close()
            error = exc
        if op == "allocate" and error is None:
            s.media, value = value, None
        self.feed(s, MediaDone(self.host.now(), token, value, error))

    def _expect(self, s: CallSession, a: MediaExpect) -> None:
        if s.media is not None:
            s.media.expect(a.leg, a.host)

    def _start_playing(self, s: CallSession, a: StartPlaying) -> None:
        media = s.media
        if media is None:
            self.feed(s, PlayDone(self.host.now(), MediaError("the call has no media")))
            return
        self._stop_playing(s, None)
        s.player = asyncio.get_running_loop().create_task(self._play(s, media, a.payloads, a.payload_type))

    async def _play(self, s: CallSession, media: MediaSession, payloads: list[bytes], payload_type: int) -> None:
        error: Exception | None = None
        try:
            await media.play(0, payloads, payload_type)
        except asyncio.CancelledError:
            return
        except MediaError as exc:
            error = exc
        s.player = None
        if s.id in self.sessions:
            self.feed(s, PlayDone(self.host.now(), error))

    def _stop_playing(self, s: CallSession, a: StopPlaying | None) -> None:
        player, s.player = s.player, None
        if player is not None and not player.done():
            player.cancel()

    # ---- timers: one heap, one loop timer ----------------------------------------------------------------
    def _set_timer(self, s: CallSession, a: SetTimer) -> None:
        seq = next(self._seq)
        if a.name not in s.timers:
            self._live += 1
        s.timers[a.name] = seq
        heap = self._heap
        heapq.heappush(heap, (a.at, seq, s.id, a.name))
        if len(heap) > COMPACT_AT and len(heap) > 4 * self._live:
            self._compact()
        if a.at < self._timer_at:
            self._arm(a.at)

    def _cancel_timer(self, s: CallSession, a: CancelTimer) -> None:
        if s.timers.pop(a.name, None) is not None:
            self._live -= 1

    def _compact(self) -> None:
        """Drop the heap's entries for timers cancelled, replaced or gone with their call. Cancelling
        is lazy (an entry stays until its time), which costs nothing for short timers; but a call's
        hours-long maximum-duration timer would otherwise stay in the heap for hours after the call,
        one entry per call. In place: `_fire` may be walking this very list."""
        sessions = self.sessions
        heap = self._heap
        heap[:] = [e for e in heap if (s := sessions.get(e[2])) is not None and s.timers.get(e[3]) == e[1]]
        heapq.heapify(heap)
        self._live = len(heap)

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = asyncio.get_running_loop().call_at(at, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = float("inf")
        heap = self._heap
        now = self.host.now()
        for _ in range(1_000_000):
            if not heap:
                break
            at, seq, call_id, name = heap[0]
            if at > now:
                self._arm(at)
                break
            heapq.heappop(heap)
            s = self.sessions.get(call_id)
            if s is None or s.timers.get(name) != seq:
                continue  # cancelled, replaced, or its call is gone
            del s.timers[name]
            self._live -= 1
            self.feed(s, TimerFired(now, name))

    async def settle_writes(self, timeout: float = 10.0) -> None:
        """Server shutdown: wait (at most `timeout` seconds) for the recordings being written, so
        their files are complete and listed in the call records before the process goes."""
        if self.writes:
            await asyncio.wait(set(self.writes), timeout=timeout)

    def close(self) -> None:
        """Server shutdown: stop the loop timer and the tasks still running."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in list(self._tasks):
            task.cancel()
        for s in list(self.sessions.values()):
            self._stop_playing(s, None)


_EXECUTE: dict[type, Callable[[CallRunner, CallSession, Any], None]] = {
    Respond: CallRunner._respond,
    SendRequest: CallRunner._send_request,
    SendStateless: CallRunner._send_stateless,
    SetTimer: CallRunner._set_timer,
    CancelTimer: CallRunner._cancel_timer,
    MediaCall: CallRunner._media_call,
    MediaExpect: CallRunner._expect,
    StartPlaying: CallRunner._start_playing,
    StopPlaying: CallRunner._stop_playing,
    Emit: CallRunner._emit,
    Route: CallRunner._route,
    Notify: CallRunner._notify,
    IndexDialog: CallRunner._index,
    Closed: CallRunner._closed,
    Released: CallRunner._released,
}

__all__ = ["CallRunner", "CallSession", "CallHost", "Action", "Input"]
