"""Call records (CDRs): one row per call, assembled from the call's engine events.

A `CallRecorder` listens on the EventBus. It keeps what each event of a call says (who called whom,
when it rang, when it was answered, who hung up, how it ended) and, when `closed` arrives, hands one
finished `CallRecord` to its sink (the writer thread, see writer.py). It does no I/O and reads the
time only through the `clock` it is given, so a spec can drive it with a fake clock.

Events used (runtime/calls.py emits them):

    created     call, peer_type, peer, caller, to      the caller's side: channel ZERO
    incoming    user_agent, ip, port                   where the call came from
    connecting  channel                                the far end rings
    connected   peer_type, peer                        the far end answered: channel ONE
    answered    call                                   Callflow answered channel ZERO itself (a
                                                       voicemail, `play ... answered`, `gather`)
    originated  call                                   channel ZERO of a call Callflow dialled answered
    hangup      channel, reason                        who ended an answered (or cancelled) call
    failed      code, reason                           the call never connected
    closed      reason, rtp_in, rtp_out                the call is over: the record is written, unless
                                                       a recording of the call is still being written
    recording_started  path                            a file will be written: the record waits for it
    recording / recording_failed  path                 the file is written (listed) or not (not listed)

Outcomes, after Asterisk's dispositions and the SIP code the caller got:

    answered    channel ZERO was answered (2xx): by the far end, or by Callflow itself (a voicemail,
                `play ... answered`, `gather`: answered_at is our 200's time), or, for a call Callflow
                dialled, by ZERO's phone
    busy        486 Busy Here, 600 Busy Everywhere
    no_answer   408, 480, 487 without a CANCEL from the caller (nobody picked up in time)
    cancelled   the caller hung up before an answer (CANCEL, 487)
    failed      any other final failure (404, 403, 503, an internal error...)
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, fields
from dataclasses import replace as dc_replace

log = logging.getLogger("callflow.cdr")

OUTCOMES = ("answered", "busy", "no_answer", "cancelled", "failed")
BUSY_CODES = frozenset({486, 600})
NO_ANSWER_CODES = frozenset({408, 480, 487})
MAX_OPEN = 100_000  # calls being assembled; beyond, the oldest is written as it stands (a lost `closed`)


@dataclass(slots=True)
class CallRecord:
    """One finished call. Times are wall-clock seconds since the epoch (UTC); `duration` is the
    answered time in seconds (0 when never answered); `code` is the final SIP status channel ZERO got
    (200 when answered)."""

    call_id: str
    from_type: str | None = None        # USER | LINE
    from_peer: str | None = None        # the user or line that called (channel ZERO)
    to_type: str | None = None          # USER | LINE that answered (channel ONE), when one did
    to_peer: str | None = None
    caller: str | None = None           # caller id as received
    dialled: str | None = None          # the number (or user) dialled
    created_at: float | None = None
    answered_at: float | None = None
    ended_at: float | None = None
    duration: float = 0.0
    outcome: str = "failed"
    code: int | None = None
    reason: str | None = None           # the failure's reason phrase, or why the call closed
    hangup_channel: str | None = None   # ZERO | ONE: who hung up an answered call
    hangup_reason: str | None = None    # e.g. cancelled, no ACK
    program_version: str | None = None  # the routing program the call ran under
    user_agent: str | None = None
    source: str | None = None           # ip:port the call came from
    rtp_in: int | None = None           # RTP packets from the caller (relayed, or heard by Callflow alone)
    rtp_out: int | None = None          # RTP packets towards the caller (relayed, or played by Callflow)
    # the row's unique key: a record is written at most once however often a write is retried, and an
    # answered call's row written at answer (a cluster) is completed, not duplicated, at its end
    record_id: str | None = None
    node: str | None = None             # the node that carried the call (--node-id)
    recordings: str | None = None       # the recording files written for the call, comma-separated

    def as_dict(self) -> dict[str, object]:
        # not dataclasses.asdict: that deep-copies every value, and this runs once per call on the loop
        return {name: getattr(self, name) for name in COLUMNS}


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(CallRecord))


def outcome_for(answered: bool, code: int | None, cancelled: bool) -> str:
    """The outcome of a call from what happened to channel ZERO (see the module docstring)."""
    if answered:
        return "answered"
    if cancelled:
        return "cancelled"
    if code in BUSY_CODES:
        return "busy"
    if code in NO_ANSWER_CODES:
        return "no_answer"
    return "failed"


class CallRecorder:
    """EventBus listener that turns each call's events into one CallRecord, given to `sink` on close.

    `clock` gives wall-clock seconds (time.time); `version` the running program's version id, read
    when a call is created (a call keeps the program it started with). Calls `sink(record)` from the
    emitting (event-loop) thread: the sink must not block.
    """

    def __init__(self, sink: Callable[[CallRecord], None], clock: Callable[[], float] = time.time,
                 version: Callable[[], str | None] = lambda: None, *, node: str | None = None,
                 on_answer: Callable[[CallRecord], None] | None = None) -> None:
        self.sink = sink
        self.clock = clock
        self.version = version
        self.node = node
        # given: an answered call's record is also handed over at answer, in progress (no end yet), so a
        # node killed during the call leaves its row (same record_id: the end completes it)
        self.on_answer = on_answer
        self.open: dict[str, CallRecord] = {}
        self._cancelled: set[str] = set()
        # recordings still being written, by call; a closed call waits here (with its closed fields)
        # until the last is done, so its record lists them. Bounded by the writes under way.
        self._writing: dict[str, set[str]] = {}
        self._closing: dict[str, dict[str, object]] = {}

    def __call__(self, event: object) -> None:
        """The bus listener: `event` has `.name` and `.fields` (runtime.events.EngineEvent)."""
        name: str = event.name  # type: ignore[attr-defined]
        handler = self._HANDLERS.get(name)
        if handler is None:
            return
        f: dict[str, object] = event.fields  # type: ignore[attr-defined]
        call = f.get("call")
        if call is None:
            return
        record = self.open.get(str(call))
        if record is None:  # normally `created`; any event of a call we missed the start of opens one
            record = self._open(str(call))
        handler(self, record, f)

    # ---- per event -----------------------------------------------------------------------------
    def _open(self, call: str) -> CallRecord:
        if len(self.open) >= MAX_OPEN:
            oldest = next(iter(self.open))
            log.warning("event=cdr_incomplete call=%s reason=%s", oldest, '"too many open calls; written as is"')
            self._finish(self.open[oldest], {})
        record = CallRecord(call_id=call, created_at=self.clock(), record_id=uuid.uuid4().hex, node=self.node)
        self.open[call] = record
        return record

    def _created(self, r: CallRecord, f: dict[str, object]) -> None:
        r.from_type = _text(f.get("peer_type"))
        r.from_peer = _text(f.get("peer"))
        r.caller = _text(f.get("caller"))
        r.dialled = _text(f.get("to"))
        try:
            r.program_version = self.version()
        except Exception:  # a version we cannot read is no reason to lose the call's record
            r.program_version = None

    def _incoming(self, r: CallRecord, f: dict[str, object]) -> None:
        r.from_type = r.from_type or _text(f.get("peer_type"))
        r.from_peer = r.from_peer or _text(f.get("peer"))
        r.user_agent = _text(f.get("user_agent"))
        if f.get("ip") is not None:
            r.source = f"{f.get('ip')}:{f.get('port')}"

    def _connecting(self, r: CallRecord, f: dict[str, object]) -> None:
        pass  # ringing: nothing the record keeps (the setup time is the metrics' business)

    def _connected(self, r: CallRecord, f: dict[str, object]) -> None:
        r.to_type = _text(f.get("peer_type"))
        r.to_peer = _text(f.get("peer"))
        self._answered(r, f)

    def _answered(self, r: CallRecord, f: dict[str, object]) -> None:
        """Channel ZERO has its 2xx: from the far end (`connected`), from Callflow itself (`answered`),
        or ZERO's phone answered a call Callflow dialled (`originated`). The first answer counts."""
        first = r.answered_at is None
        if first:
            r.answered_at = self.clock()
        r.code = 200
        if first and self.on_answer is not None:
            try:
                self.on_answer(dc_replace(r, outcome="answered", reason="in progress"))
            except Exception:
                log.exception("event=cdr_lost call=%s", r.call_id)

    def _hangup(self, r: CallRecord, f: dict[str, object]) -> None:
        r.hangup_channel = _text(f.get("channel"))
        r.hangup_reason = _text(f.get("reason"))
        if r.hangup_reason == "transferred" and r.answered_at is not None:
            return  # a transferor left; the call goes on with the party it was transferred to
        if r.hangup_reason == "cancelled" and r.answered_at is None:
            self._cancelled.add(r.call_id)
            r.code = 487
        elif r.code is None:
            r.code = 200  # a BYE ends a dialog, so channel ZERO had its 2xx (from us, for a `play`)
        if r.ended_at is None:
            r.ended_at = self.clock()

    def _failed(self, r: CallRecord, f: dict[str, object]) -> None:
        code = f.get("code")
        r.code = int(code) if isinstance(code, int | str) and str(code).isdigit() else r.code
        r.reason = _text(f.get("reason"))
        if r.ended_at is None:
            r.ended_at = self.clock()

    def _closed(self, r: CallRecord, f: dict[str, object]) -> None:
        if self._writing.get(r.call_id):
            r.ended_at = r.ended_at or self.clock()
            self._closing[r.call_id] = dict(f)  # written once its recordings are
            return
        self._finish(r, f)

    def _recording_started(self, r: CallRecord, f: dict[str, object]) -> None:
        self._writing.setdefault(r.call_id, set()).add(str(f.get("path")))

    def _recording(self, r: CallRecord, f: dict[str, object]) -> None:
        path = str(f.get("path"))
        if f.get("bytes") is not None:  # `recording`: written
            r.recordings = path if not r.recordings else f"{r.recordings},{path}"
        writing = self._writing.get(r.call_id)
        if writing is None:
            return
        writing.discard(path)
        if not writing:
            del self._writing[r.call_id]
            closed = self._closing.pop(r.call_id, None)
            if closed is not None:
                self._finish(r, closed)

    def _finish(self, r: CallRecord, f: dict[str, object]) -> None:
        self.open.pop(r.call_id, None)
        self._writing.pop(r.call_id, None)
        self._closing.pop(r.call_id, None)
        cancelled = r.call_id in self._cancelled
        self._cancelled.discard(r.call_id)
        now = self.clock()
        r.ended_at = r.ended_at or now
        if r.reason is None:
            r.reason = _text(f.get("reason"))
        for key in ("rtp_in", "rtp_out"):
            value = f.get(key)
            if isinstance(value, int):
                setattr(r, key, value)
        answered = r.code == 200 and not cancelled
        r.outcome = outcome_for(answered, r.code, cancelled)
        if answered:
            r.duration = round(max(0.0, r.ended_at - (r.answered_at or r.ended_at)), 3)
        try:
            self.sink(r)
        except Exception:
            log.exception("event=cdr_lost call=%s", r.call_id)

    _HANDLERS: dict[str, Callable[[CallRecorder, CallRecord, dict[str, object]], None]] = {
        "created": _created, "incoming": _incoming, "connecting": _connecting, "connected": _connected,
        "answered": _answered, "originated": _answered,
        "hangup": _hangup, "failed": _failed, "closed": _closed,
        "recording_started": _recording_started, "recording": _recording, "recording_failed": _recording,
    }


def _text(value: object) -> str | None:
    return None if value is None else str(value)
