"""The call machine: one B2BUA call as a sans-IO state machine (like TransactionLayer, h11, aioquic).

Inputs (runtime/calls/io.py) carry `now`; `handle(input)` turns them into actions, taken with
`take_actions()`. No asyncio, no clock, no socket, no engine import: the runner (runtime/calls/runner.py)
carries the actions out and feeds the results back.

A step that needs the media backend is written as a generator that yields the request, e.g.
`sdp = yield ("anchor", 0, offer)`: the machine emits MediaCall(token, ...), and until MediaDone(token)
comes back every other input is queued in the machine and replayed in arrival order afterwards, so
a dialog's messages are handled in order even when a step waits. A step that raises (a MediaError
thrown into it, or a bug) never wedges the call: it ends as its state needs (`_internal_failure`).

This module keeps the machine's plumbing: the inputs' dispatch, `_move` against the transition table
(states.py), and the step/queue that waits for the media backend. Each job is a mixin in its own module:
setup_routing.py (start, accept, forks on ONE, early media), in_dialog.py (relayed requests, re-INVITE,
UPDATE, glare, challenges, next hop), session_refresh.py (RFC 4028), play.py, transfer.py, and ending.py
(CANCEL, BYE, 2xx until ACK, close).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from types import GeneratorType
from typing import Any

from ..sip.message import Request
from ..sip.transaction import ServerTransaction, new_tag
from .dtmf import DtmfJobs
from .ending import Ending
from .gather import GATHER_TIMERS, Gathering, Gathers
from .in_dialog import InDialog
from .io import (
    AcceptIn,
    AckIn,
    Action,
    ActionFailed,
    CancelIn,
    DialIn,
    DigitIn,
    Emit,
    GatherIn,
    GatherPromptDone,
    HangupIn,
    Input,
    MediaCall,
    MediaDone,
    PlayDone,
    PlayIn,
    RejectIn,
    Released,
    RequestIn,
    ResponseIn,
    SendDtmfIn,
    SetTimer,
    Start,
    StrayResponseIn,
    TimerFired,
    TransferIn,
)
from .legs import CallEnv, Failure, Leg
from .names import (
    CONNECTED_METHODS,
    LINGER,
    MAX_DURATION,
    NO_ANSWER,
    NO_HEADERS,
    ONE,
    ORIGINATE_NO_ANSWER,
    RELAYED_HEADERS,
    RESEND_2XX,
    RTP_CHECK,
    SE_EXPIRE,
    SE_REFRESH,
    SE_TIMERS,
    TOO_SMALL,
    TRANSFER_NO_ANSWER,
    TRANSFER_TIMEOUT,
    ZERO,
    Step,
)
from .originate import Originating
from .play import Playing
from .session_refresh import SessionRefresh
from .setup_routing import CallSetup
from .states import (
    CALL_TRANSITIONS,
    CallState,
    Channel,
    IllegalMove,
    TransferState,
)
from .transfer import Transfer, Transfers

log = logging.getLogger("callflow.calls")


class CallMachine(CallSetup, Originating, Playing, Gathers, InDialog, SessionRefresh, Transfers, Ending,
                  DtmfJobs):
    """One call: created on an INVITE, routed by the dialplan, closed when both legs are gone.

    Public data the dialplan reads: id, program, peer_type, peer_name, caller_id, caller_name,
    dialled, invite, last_failure; it may set caller_id_override and extra_headers.
    """

    def __init__(self, env: CallEnv, call_id: str, txn: ServerTransaction | None, *, peer_type: str,
                 peer_name: str | None, caller_id: str, dialled: str, program: object = None, now: float = 0.0,
                 t1: float = 0.5, t2: float = 4.0, max_duration: float | None = None,
                 rtp_timeout: float | None = None, invite: Request | None = None) -> None:
        if txn is None and invite is None:
            raise ValueError(f"call {call_id}: a call without ZERO's INVITE transaction (originate) needs invite=")
        self.env = env
        self.id = call_id
        # an originated call (originate.py) has no INVITE of ZERO's: `invite` stands for the call
        # (From the caller, To the number, no body) and txn is None
        self.txn = txn
        self.invite: Request = txn.request if txn is not None else invite  # type: ignore[assignment]
        self.peer_type = peer_type      # "USER" | "LINE"
        self.peer_name = peer_name
        self.program = program          # the routing program this call started with, to its end
        self.caller_id = caller_id
        self.caller_name = self.invite.from_.display
        self.dialled = dialled
        self.caller_id_override: str | None = None
        self.extra_headers: list[tuple[str, str]] = []
        self.last_failure = Failure(480, "Temporarily Unavailable")
        self.t1, self.t2 = t1, t2
        self.max_duration = max_duration
        self.rtp_timeout = rtp_timeout
        self.local_tag = new_tag()
        self.state = CallState.NEW
        self.now = now
        self.created_at = now
        self.answered_at: float | None = None
        self.zero = Leg(ZERO, peer_type, peer_name, txn.peer if txn is not None else ("0.0.0.0", 0),
                        txn.transport if txn is not None else "udp")
        # originate (originate.py): our INVITEs to ZERO, the number ZERO's phone is shown as calling
        self.originated = False
        self.zero_forks: list[Leg] = []
        self.zero_ringing = False
        self.zero_shows: str | None = None
        self.on_answered: Callable[[], None] | None = None
        self.on_dial_failed: Callable[[Failure], None] | None = None
        self.one: Leg | None = None
        self.forks: list[Leg] = []
        self.attempt = 0
        self.has_media = False
        self.answered_by_us = False     # ZERO got our own 200 OK (a prompt played after answering)
        self.early_media_sent = False   # ZERO got our 183 with our own SDP (a prompt as early media)
        self.connecting_sent = False
        self.late_answer = False        # ZERO (no offer in its INVITE) answered our offer in its ACK
        self.play_codec: tuple[int, str] | None = None
        self.pending_play: tuple[str, Callable[[], None]] | None = None  # late offer: waits for the ACK
        self.playing: Callable[[], None] | None = None  # the on_done of the file playing now
        self.gather: Gathering | None = None  # the dialplan's `gather` under way (gather.py)
        self.on_result: Callable[[Failure | None], None] | None = None
        self.hangup_channel: Channel | None = None
        # in-dialog requests we relayed, by tag: (the originator's transaction, the channel it went
        # to, what we sent, the nonce we last answered there)
        self.relays: dict[int, tuple[ServerTransaction, Channel, Request, str | None]] = {}
        self.rtp_seen: tuple[int, int] | None = None
        self.transfer: Transfer | None = None
        self.transfer_forks: list[Leg] = []   # the INVITEs of transfers, by index (tag ("transfer", i))
        self.retired: list[Leg] = []          # transferors' legs, replaced and being ended
        self.dtmf_unexpected: set[Channel] = set()  # legs that sent digits they never negotiated (dtmf.py)
        self._next_tag = 0
        self._out: list[Action] = []
        self._queue: deque[Input] = deque()
        self._waiting: tuple[int, Step] | None = None
        self._token = 0

    def handle(self, inp: Input) -> None:
        """Take one input. While a step waits for the media backend, inputs other than its result
        are queued and replayed in arrival order once it is done."""
        waiting = self._waiting
        if waiting is not None:
            if type(inp) is MediaDone and inp.token == waiting[0]:
                self._waiting = None
                self.now = inp.now
                self._drive(waiting[1], inp.value, inp.error)
            else:
                self._queue.append(inp)
                return
        else:
            self._dispatch(inp)
        queue = self._queue
        while self._waiting is None and queue:
            self._dispatch(queue.popleft())

    def take_actions(self) -> list[Action]:
        """The actions produced since the last call, in the order they must be carried out."""
        out = self._out
        if out:
            self._out = []
        return out

    @property
    def waiting(self) -> bool:
        """Whether a step waits for the media backend (inputs are being queued)."""
        return self._waiting is not None

    def _dispatch(self, inp: Input) -> None:
        self.now = inp.now
        handler = _HANDLERS[type(inp)]
        try:
            result = handler(self, inp)
        except Exception:
            self._step_failed(handler.__name__)
            return
        if type(result) is GeneratorType:
            self._drive(result, None, None)

    def _drive(self, step: Step, value: Any, error: BaseException | None) -> None:
        try:
            op = step.send(value) if error is None else step.throw(error)
        except StopIteration:
            return
        except Exception:
            self._step_failed(step.__name__)
            return
        self._token += 1
        self._waiting = (self._token, step)
        self._out.append(MediaCall(self._token, op[0], op[1:]))

    def _step_failed(self, where: str) -> None:
        log.exception("event=call_error call=%s step=%s state=%s", self.id, where, self.state.value)
        try:
            self._internal_failure()
        except Exception:
            log.exception("event=call_error call=%s step=ending", self.id)
            self._close("internal error")

    def _move(self, to: CallState) -> None:
        if to not in CALL_TRANSITIONS[self.state]:
            log.error("event=illegal_move call=%s from=%s to=%s", self.id, self.state.value, to.value)
            raise IllegalMove(f"call {self.id}: {self.state.value} -> {to.value} is not a legal move")
        if to is CallState.ANSWERED and self.max_duration and self.state in (CallState.ROUTING,
                                                                             CallState.ORIGINATING):
            # our own answer (play/gather/voicemail, an originated call's ZERO) starts the call's
            # maximum duration as ONE's answer does: a caller who never hangs up must not hold a
            # prompt, a menu or a recording forever. Armed once; CONNECTED later keeps this deadline.
            self._out.append(SetTimer(MAX_DURATION, self.now + self.max_duration))
        self.state = to

    def _emit(self, name: str, **fields: object) -> None:
        self._out.append(Emit(name, fields))

    def _tag(self) -> int:
        self._next_tag += 1
        return self._next_tag

    def _on_response(self, inp: ResponseIn) -> Step | None:
        tag = inp.tag
        if type(tag) is int:
            if 0 <= tag < len(self.forks):
                fork = self.forks[tag]
                if inp.response is None:
                    self._fork_timeout(fork)
                    return None
                return self._fork_response(fork, inp.response)
            return None
        kind = tag[0]
        if kind == "bye":
            self._bye_response(tag[1], inp.response)
        elif kind == "relay":
            return self._relayed_response(tag[1], inp.response)
        elif kind == "refresh":
            return self._refresh_response(tag[1], tag[2], inp.response)
        elif kind == "transfer":
            return self._transfer_response(tag[1], inp.response)
        elif kind == "bridge":
            return self._bridge_response(tag[1], inp.response)
        elif kind == "adopt":
            return self._adopt_response(tag[1], inp.response)
        elif kind == "dtmf":
            self._dtmf_info_response(tag[1], tag[2], inp.response)
        elif kind == "originate":
            return self._originate_response(tag[1], inp.response)
        return None  # NOTIFY, CANCEL, a BYE to another fork's dialog: nothing waits for them

    def _leg(self, channel: Channel, call_id: str) -> Leg | None:
        if channel is ZERO:
            zero = self.zero
            return zero if zero.dialog is None or zero.dialog.call_id == call_id else None
        one = self.one
        if one is not None and one.dialog is not None and one.dialog.call_id == call_id:
            return one
        return None

    def _other(self, leg: Leg) -> Leg | None:
        return self.one if leg.channel is ZERO else self.zero

    def _on_timer(self, inp: TimerFired) -> Step | None:
        name = inp.name
        if name == NO_ANSWER:
            self._no_answer()
        elif name == RESEND_2XX[ZERO]:
            self._resend_2xx(self.zero)
        elif name == RESEND_2XX[ONE]:
            if self.one is not None:
                self._resend_2xx(self.one)
        elif name == LINGER:
            self._out.append(Released())
        elif name == MAX_DURATION:
            if self.state in (CallState.CONNECTED, CallState.ANSWERED) or (
                    self.answered_by_us and self.state is CallState.DIALING):
                self._emit("hangup", call=self.id, channel=None,
                           reason=f"maximum call duration ({self.max_duration:g} s) reached")
                self._end(bye_zero=True, bye_one=True)
        elif name == RTP_CHECK:
            return self._rtp_check()
        elif name == ORIGINATE_NO_ANSWER:
            self._originate_no_answer()
        elif name == TRANSFER_NO_ANSWER:
            transfer = self.transfer
            if transfer is not None and transfer.state is TransferState.DIALING and self.state is CallState.CONNECTED:
                self._transfer_failed(transfer, Failure(480, "Temporarily Unavailable (no answer)"))
        elif name in GATHER_TIMERS:
            return self._gather_timer(name)
        elif name in SE_TIMERS:
            channel = SE_TIMERS[name]
            if name == SE_REFRESH[channel]:
                self._send_refresh(channel)
            else:
                self._session_expired(channel)
        return None

    def involves_user(self, name: str) -> bool:
        """Whether user `name` is on this call, calling or called (for per-user call limits)."""
        if self.state is CallState.CLOSED:
            return False
        if self.peer_type == "USER" and self.peer_name == name:
            return True
        one = self.one
        if one is not None:
            return one.peer_type == "USER" and one.peer == name
        return self.state is CallState.DIALING and any(
            f.peer_type == "USER" and f.peer == name and not f.settled and f.attempt == self.attempt
            for f in self.forks)


def _media_done(self: CallMachine, inp: MediaDone) -> None:
    log.error("event=call_error call=%s step=media reason=%s", self.id, '"a media result nobody waits for"')


_HANDLERS: dict[type, Callable[[CallMachine, Any], Any]] = {
    Start: CallMachine._on_start,
    AcceptIn: CallMachine._on_accept,
    RejectIn: CallMachine._on_reject,
    HangupIn: CallMachine._on_hangup,
    PlayIn: CallMachine._on_play,
    DialIn: CallMachine._on_dial,
    TransferIn: CallMachine._on_transfer,
    PlayDone: CallMachine._on_play_done,
    ResponseIn: CallMachine._on_response,
    StrayResponseIn: CallMachine._on_stray_response,
    AckIn: CallMachine._on_ack,
    CancelIn: CallMachine._on_cancel,
    RequestIn: CallMachine._on_request,
    TimerFired: CallMachine._on_timer,
    ActionFailed: CallMachine._on_action_failed,
    DigitIn: CallMachine._on_digit,
    SendDtmfIn: CallMachine._on_send_dtmf,
    MediaDone: _media_done,
    GatherIn: CallMachine._on_gather,
    GatherPromptDone: CallMachine._on_gather_prompt_done,
}

# CallMachine and IllegalMove are the API; the rest is re-exported for code that imported it from here
# before the machine was split by job (names.py, transfer.py)
__all__ = ["CallMachine", "IllegalMove", "CONNECTED_METHODS", "LINGER", "MAX_DURATION", "NO_ANSWER", "NO_HEADERS",
           "RELAYED_HEADERS", "RESEND_2XX", "RTP_CHECK", "SE_EXPIRE", "SE_REFRESH", "SE_TIMERS", "TOO_SMALL",
           "TRANSFER_NO_ANSWER", "TRANSFER_TIMEOUT", "Step", "Transfer"]
