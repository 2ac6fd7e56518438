"""The call machine: one B2BUA call as a sans-IO state machine (like TransactionLayer, h11, aioquic).

Inputs (runtime/calls/io.py) carry `now`; `handle(input)` turns them into actions, taken with
`take_actions()`. No asyncio, no clock, no socket, no engine import: the runner (runtime/calls/runner.py)
carries the actions out and feeds the results back.

A step that needs the media backend is written as a generator that yields the request, e.g.
`sdp = yield ("anchor", 0, offer)`: the machine emits MediaCall(token, ...), and until MediaDone(token)
comes back every other input is queued in the machine and replayed in arrival order afterwards, so
a dialog's messages are handled in order even when a step waits. A step that raises (a MediaError
thrown into it, or a bug) never wedges the call: it ends as its state needs (`_internal_failure`).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Generator
from types import GeneratorType
from typing import Any

from ..events import logfmt_value as _logfmt
from ..media.base import MediaError
from ..media.prompts import PromptError
from ..sip.dialog import Dialog
from ..sip.digest import DigestError, select_challenge
from ..sip.errors import SipError
from ..sip.message import Headers, Request, Response, create_response
from ..sip.sdp import SdpError
from ..sip.transaction import Address, ServerTransaction, State, new_branch, new_tag
from ..sip.uri import NameAddr, SipUri, unescape
from .io import (
    AcceptIn,
    AckIn,
    Action,
    ActionFailed,
    CancelIn,
    CancelTimer,
    Closed,
    Emit,
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
    SendRequest,
    SendStateless,
    SetTimer,
    Start,
    StartPlaying,
    StopPlaying,
    StrayResponseIn,
    TimerFired,
)
from .legs import CallEnv, Failure, Leg, Target
from .session_timer import MIN_SE, SessionTimer, allows, as_uac, as_uas, min_se, request_headers, session_expires
from .states import (
    CALL_TRANSITIONS,
    TRANSFER_TRANSITIONS,
    ByeState,
    CallState,
    CancelState,
    Channel,
    ForkState,
    InviteState,
    TransferState,
)

log = logging.getLogger("callflow.calls")

ZERO, ONE = Channel.ZERO, Channel.ONE
CONNECTED_METHODS = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, MESSAGE, NOTIFY, REFER"
# headers a relayed in-dialog request keeps, by what its method needs (the rest is rebuilt by us)
# (RFC 6086 INFO, 6665 SUBSCRIBE/NOTIFY, 3515/3892/4488/4538 REFER, 3428 MESSAGE; INVITE and UPDATE
# get the session timer headers of the leg they go to instead, see _timer_request_headers)
RELAYED_HEADERS: dict[str, frozenset[str]] = {
    "INFO": frozenset({"info-package", "content-disposition", "recv-info"}),
    "NOTIFY": frozenset({"event", "subscription-state", "content-disposition"}),
    "SUBSCRIBE": frozenset({"event", "expires", "accept"}),
    "REFER": frozenset({"refer-to", "referred-by", "refer-sub", "target-dialog"}),
    "MESSAGE": frozenset({"content-disposition"}),
    "INVITE": frozenset({"content-disposition", "recv-info"}),
    "UPDATE": frozenset({"content-disposition", "recv-info"}),
}
NO_HEADERS: frozenset[str] = frozenset()
NO_ANSWER = "no_answer"
RESEND_2XX = {ZERO: "2xx_zero", ONE: "2xx_one"}
LINGER = "linger"
MAX_DURATION = "max_duration"
RTP_CHECK = "rtp_check"
# session timers (RFC 4028), per leg: we refresh it, or we wait for its refreshes
SE_REFRESH = {ZERO: "se_refresh_zero", ONE: "se_refresh_one"}
SE_EXPIRE = {ZERO: "se_expire_zero", ONE: "se_expire_one"}
TRANSFER_NO_ANSWER = "transfer_no_answer"
TRANSFER_TIMEOUT = 60.0  # seconds a transfer's target may ring before the transferor hears 480
SE_TIMERS = {name: ch for ch in Channel for name in (SE_REFRESH[ch], SE_EXPIRE[ch])}
TOO_SMALL = "Session Interval Too Small"

Step = Generator[tuple[Any, ...], Any, None]


class Transfer:
    """A transfer under way (RFC 3515 REFER from a user's phone on `channel`, carried out by us)."""

    __slots__ = ("channel", "leg", "transferor", "target", "kind", "state", "attempt", "ringing", "transferor_gone",
                 "notify")

    def __init__(self, leg: Leg, transferor: str, target: str, kind: str, attempt: int, notify: bool) -> None:
        self.channel = leg.channel        # the transferor's channel: its leg is the one replaced
        self.leg = leg                    # the transferor's leg (NOTIFYs go there, then its BYE)
        self.transferor = transferor
        self.target = target
        self.kind = kind                  # "blind" | "attended"
        self.state = TransferState.DIALING
        self.attempt = attempt            # the transfer_forks of this transfer carry it
        self.ringing = False
        self.transferor_gone = False      # it sent BYE before the outcome (a blind transfer may)
        self.notify = notify              # Refer-Sub: false (RFC 4488) asks for no NOTIFY


class IllegalMove(RuntimeError):
    """A state change CALL_TRANSITIONS does not allow: a bug in the machine, logged with the call id."""


class CallMachine:
    """One call: created on an INVITE, routed by the dialplan, closed when both legs are gone.

    Public data the dialplan reads: id, program, peer_type, peer_name, caller_id, caller_name,
    dialled, invite, last_failure; it may set caller_id_override and extra_headers.
    """

    def __init__(self, env: CallEnv, call_id: str, txn: ServerTransaction, *, peer_type: str,
                 peer_name: str | None, caller_id: str, dialled: str, program: object = None, now: float = 0.0,
                 t1: float = 0.5, t2: float = 4.0, max_duration: float | None = None,
                 rtp_timeout: float | None = None) -> None:
        self.env = env
        self.id = call_id
        self.txn = txn
        self.invite: Request = txn.request
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
        self.zero = Leg(ZERO, peer_type, peer_name, txn.peer, txn.transport)
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
        self.on_result: Callable[[Failure | None], None] | None = None
        self.hangup_channel: Channel | None = None
        # in-dialog requests we relayed, by tag: (the originator's transaction, the channel it went
        # to, what we sent, the nonce we last answered there)
        self.relays: dict[int, tuple[ServerTransaction, Channel, Request, str | None]] = {}
        self.rtp_seen: tuple[int, int] | None = None
        self.transfer: Transfer | None = None
        self.transfer_forks: list[Leg] = []   # the INVITEs of transfers, by index (tag ("transfer", i))
        self.retired: list[Leg] = []          # transferors' legs, replaced and being ended
        self._next_tag = 0
        self._out: list[Action] = []
        self._queue: deque[Input] = deque()
        self._waiting: tuple[int, Step] | None = None
        self._token = 0

    # ---- the machine's interface ---------------------------------------------------------------
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
        self.state = to

    def _emit(self, name: str, **fields: object) -> None:
        self._out.append(Emit(name, fields))

    def _tag(self) -> int:
        self._next_tag += 1
        return self._next_tag

    # ---- setup and routing ---------------------------------------------------------------------------
    def _on_start(self, inp: Start) -> Step:
        self._emit("created", call=self.id, peer_type=self.peer_type, peer=self.peer_name, caller=self.caller_id,
                   to=self.dialled)
        self._move(CallState.ROUTING)
        se = session_expires(self.invite)
        if se is not None and se.interval < MIN_SE:  # RFC 4028 9: too short an interval gets 422
            self._fail_zero(422, TOO_SMALL, [("Min-SE", str(MIN_SE))])
            return
        self.zero.allow_update = allows(self.invite, "UPDATE") is True
        # media is anchored with or without an offer here: a late offer comes in the 2xx
        try:
            yield ("allocate",)
        except MediaError as exc:
            log.warning("call=%s no media: %s", self.id, exc)
            self._fail_zero(503, "Service Unavailable (no media ports)")
            return
        self.has_media = True
        if self.peer_type == "USER":
            self._out.append(MediaExpect(ZERO.value, self.zero.address[0]))
        self._emit("incoming", call=self.id, peer_type=self.peer_type, peer=self.peer_name, caller=self.caller_id,
                   to=self.dialled, user_agent=self.invite.headers.get("user-agent"), ip=self.zero.address[0],
                   port=self.zero.address[1])
        if self.state is CallState.ROUTING:
            self._out.append(Route())

    # ---- what the dialplan asks (the SDK's AcceptCallSession / RejectCallSession) ----------------------
    def _on_accept(self, inp: AcceptIn) -> Step | None:
        if self.state not in (CallState.ROUTING, CallState.ANSWERED):
            log.info("event=accept_ignored call=%s state=%s", self.id, self.state.value)
            return None
        return self._accept(inp.targets, inp.timeout, inp.on_result)

    def _accept(self, targets: list[Target], timeout: float | None,
                on_result: Callable[[Failure | None], None]) -> Step:
        self.on_result = on_result
        self._move(CallState.DIALING)
        self.attempt += 1
        offer = b""
        body = self.invite.body
        if self.late_answer and self.has_media:
            offer = yield ("offer", ONE.value)  # the codec the caller answered us with, on leg ONE
        elif body and self.has_media:
            try:
                offer = yield ("anchor", ZERO.value, body)
            except SdpError as exc:
                self._fail_zero(488, f"Not Acceptable Here (bad SDP: {str(exc)[:60]})")
                return
            if self.answered_by_us or self.early_media_sent:
                offer = yield ("restrict_offer", offer)  # the caller already has our codec
        if self.state is not CallState.DIALING:
            return
        failures: list[Failure] = []
        started: list[Leg] = []
        # the caller asked for a session timer: the far leg is offered one of the same interval
        zero_timer, _ = as_uas(self.invite)
        for target in targets:
            legs, failure = self.env.build_forks(self, target, offer, self.now)
            if failure is not None:
                failures.append(failure)
            for leg in legs:
                if zero_timer is not None and leg.invite is not None:
                    for name, value in request_headers(zero_timer.interval):
                        leg.invite.headers.add(name, value)
                leg.local_sdp = leg.invite.body if leg.invite is not None else b""
                leg.index = len(self.forks)
                leg.attempt = self.attempt
                self.forks.append(leg)
                started.append(leg)
        if not started:
            self._attempt_failed(failures[-1] if failures else Failure(480, "Temporarily Unavailable"))
            return
        for leg in started:
            invite = leg.invite
            assert invite is not None
            self._out.append(IndexDialog(invite.call_id, invite.from_tag or "", ONE))
            self._out.append(SendRequest(invite, leg.address, leg.transport, leg.index))
        if timeout:
            self._out.append(SetTimer(NO_ANSWER, self.now + timeout))

    def _on_reject(self, inp: RejectIn) -> None:
        self._fail_zero(inp.code, inp.reason)

    def _on_hangup(self, inp: HangupIn) -> None:
        state = self.state
        if state in (CallState.CONNECTED, CallState.ANSWERED) or (self.answered_by_us and state is CallState.DIALING):
            self._end(bye_zero=True, bye_one=True)
        elif state in (CallState.ROUTING, CallState.DIALING, CallState.NEW):
            self._fail_zero(480, "Temporarily Unavailable")

    # ---- playing to channel ZERO (the dialplan's `play`) ---------------------------------------------
    def _on_play(self, inp: PlayIn) -> Step | None:
        if self.state not in (CallState.ROUTING, CallState.ANSWERED):
            return None
        return self._play(inp.path, inp.answered, inp.on_done)

    def _play(self, path: str, answered: bool, on_done: Callable[[], None]) -> Step:
        offer = self.invite.body
        try:
            if not self.has_media:
                raise MediaError("the call has no media")
            if not offer and answered and not self.answered_by_us:
                # late offer: our 200 carries the offer and the caller's ACK the answer; the file
                # starts once that answer has told us the caller's address and codec
                ours = yield ("offer", ZERO.value)
                if self.state is not CallState.ROUTING:
                    return
                self.answered_by_us = True
                self.pending_play = (path, on_done)
                self._answer_zero(ours)
                self._move(CallState.ANSWERED)
                return
            if not offer and not self.answered_by_us:
                raise MediaError("the caller's INVITE has no SDP offer (early media needs one; "
                                 "`play ... answered` does not)")
            if not offer:
                if self.play_codec is None:
                    raise MediaError("the caller gave no SDP answer to play to")
                sdp, (payload_type, codec) = b"", self.play_codec  # settled in the caller's ACK
            else:
                sdp, payload_type, codec = yield ("answer", ZERO.value, offer)
            payloads = yield ("prompt", path, codec)
        except (MediaError, PromptError, SdpError) as exc:
            self._play_failed(path, exc)
            self._out.append(Notify(on_done, ()))
            return
        if self.state not in (CallState.ROUTING, CallState.ANSWERED):
            return  # cancelled or hung up while the file was loading
        if answered and not self.answered_by_us:
            self.answered_by_us = True
            self._answer_zero(sdp)
            self._move(CallState.ANSWERED)
        elif not self.answered_by_us and not self.early_media_sent:
            if self.txn.state is not State.PROCEEDING:
                return
            self.early_media_sent = True
            r = create_response(self.invite, 183, "Session Progress", to_tag=self.local_tag,
                                headers=[("Contact", self.env.contact(self.zero.transport))], body=sdp,
                                content_type="application/sdp")
            self._out.append(Respond(self.txn, r))
        self._start_playing(path, codec, payloads, payload_type, on_done)

    def _play_after_ack(self, ack: Request) -> Step:
        """The late-offer caller's ACK: its SDP answers our offer; now the file can play."""
        pending, self.pending_play = self.pending_play, None
        if pending is None or not self.has_media:
            return
        path, on_done = pending
        try:
            if not ack.body:
                raise MediaError("the caller's ACK carried no SDP answer to our offer")
            payload_type, codec = yield ("take_answer", ZERO.value, ack.body)
            payloads = yield ("prompt", path, codec)
        except (MediaError, PromptError, SdpError) as exc:
            self._play_failed(path, exc)
            if self.state is CallState.ANSWERED:
                self._out.append(Notify(on_done, ()))
            return
        if self.state is not CallState.ANSWERED:
            return
        self.late_answer = True
        self.play_codec = (payload_type, codec)
        self._start_playing(path, codec, payloads, payload_type, on_done)

    def _start_playing(self, path: str, codec: str, payloads: list[bytes], payload_type: int,
                       on_done: Callable[[], None]) -> None:
        log.info("event=playing call=%s file=%s codec=%s packets=%d answered=%s", self.id, _logfmt(path), codec,
                 len(payloads), "yes" if self.answered_by_us else "no")
        self.playing = on_done
        self._out.append(StartPlaying(payloads, payload_type))

    def _play_failed(self, path: str, exc: Exception) -> None:
        log.warning("event=play_failed call=%s file=%s reason=%s", self.id, _logfmt(path), _logfmt(str(exc)))

    def _on_play_done(self, inp: PlayDone) -> None:
        on_done, self.playing = self.playing, None
        if inp.error is not None:
            log.warning("event=play_failed call=%s reason=%s", self.id, _logfmt(str(inp.error)))
        if on_done is not None and self.state in (CallState.ROUTING, CallState.ANSWERED):
            self._out.append(Notify(on_done, ()))

    def _stop_playing(self) -> None:
        if self.playing is not None:
            self.playing = None
            self._out.append(StopPlaying())

    # ---- responses to our requests -------------------------------------------------------------------
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
        return None  # NOTIFY, CANCEL, a BYE to another fork's dialog: nothing waits for them

    def _fork_response(self, leg: Leg, resp: Response) -> Step | None:
        status = resp.status
        if leg.settled:
            if 200 <= status < 300:
                self._ack_and_bye(leg, resp)  # answered after we gave up on it
            return None
        if status < 200:
            if status == 100:
                return None
            leg.state = ForkState.EARLY
            if leg.cancel is CancelState.WANTED:
                self._send_cancel(leg)
                return None
            if self.state is not CallState.DIALING or leg.cancel is not CancelState.NONE:
                return None
            if not self.connecting_sent:
                self.connecting_sent = True
                self._emit("connecting", call=self.id, channel=ONE.name)
            if not self.answered_by_us:
                return self._provisional_to_zero(status, resp)
            return None
        if status < 300:
            return self._fork_answered(leg, resp)
        # a final failure
        if status == 422 and leg.cancel is CancelState.NONE and self._retry_with_interval(leg, resp):
            return None
        if status in (401, 407) and leg.auth is not None and leg.cancel is CancelState.NONE:
            if self._retry_with_auth(leg, resp):
                return None
        leg.state = ForkState.FAILED
        self._fork_failed(leg, Failure(status, resp.reason or "Failed"))
        self._maybe_released()
        return None

    def _fork_answered(self, leg: Leg, resp: Response) -> Step:
        leg.state = ForkState.ANSWERED
        leg.answer_sdp = resp.body
        leg.timer = as_uac(resp)
        leg.allow_update = allows(resp, "UPDATE") is True
        invite = leg.invite
        assert invite is not None
        leg.dialog = Dialog.as_uac(invite, resp)
        cseq = invite.cseq[0]
        # late offer (the caller's INVITE had no SDP): this 2xx carries the offer, and the answer
        # comes in the caller's ACK, so our ACK to this leg waits for it
        late_offer = not invite.body and bool(resp.body)
        if self.state is not CallState.DIALING or leg.cancel is not CancelState.NONE or leg.attempt != self.attempt:
            self._send_ack(leg, cseq)
            self._bye(leg)
            self._maybe_released()
            return
        if late_offer and self.answered_by_us:
            # the caller, answered by us already, can give no answer to this leg's offer
            self._send_ack(leg, cseq)
            self._bye(leg)
            self._fork_failed(leg, Failure(488, "Not Acceptable Here (no SDP to answer the offer with)"))
            return
        if late_offer:
            leg.ack_waiting = cseq
        else:
            self._send_ack(leg, cseq)
        self._won(leg)
        answer = resp.body
        if answer and self.has_media:
            try:
                answer = yield ("anchor", ONE.value, answer)
            except SdpError:
                self._bye(leg)
                self._fail_zero(502, "Bad Gateway (unreadable SDP answer)")
                return
        if self.state is not CallState.DIALING:
            return
        if not self.answered_by_us:
            self._answer_zero(answer)
        self._move(CallState.CONNECTED)
        self.answered_at = self.now
        self._emit("connected", call=self.id, peer_type=leg.peer_type, peer=leg.peer)
        self._arm_session(leg)
        if self.max_duration:
            self._out.append(SetTimer(MAX_DURATION, self.now + self.max_duration))
        if self.rtp_timeout:
            self._out.append(SetTimer(RTP_CHECK, self.now + self.rtp_timeout))
        if self.on_result is not None:
            cb, self.on_result = self.on_result, None
            self._out.append(Notify(cb, (None,)))

    def _fork_timeout(self, leg: Leg) -> None:
        if leg.settled:
            return
        leg.state = ForkState.FAILED
        self._fork_failed(leg, Failure(408, "Request Timeout"))
        self._maybe_released()

    def _retry_with_interval(self, leg: Leg, resp: Response) -> bool:
        """A 422 to a fork's INVITE: once, again with the Session-Expires its Min-SE asks (RFC 4028 7.4)."""
        needed = min_se(resp)
        old = leg.invite
        if leg.timer_retried or needed <= 0 or old is None:
            return False
        leg.timer_retried = True
        h = old.headers.copy()
        h.remove("via")
        h.add("Via", f"{self.env.via(leg.transport)};branch={new_branch()}", first=True)
        h.set("CSeq", f"{old.cseq[0] + 1} INVITE")
        h.set("Session-Expires", str(needed))
        h.set("Min-SE", str(needed))
        leg.invite = Request("INVITE", old.uri, h, old.body)
        leg.state = ForkState.CALLING
        self._out.append(SendRequest(leg.invite, leg.address, leg.transport, leg.index))
        return True

    def _retry_with_auth(self, leg: Leg, resp: Response, tag: Any = None) -> bool:
        header = "www-authenticate" if resp.status == 401 else "proxy-authenticate"
        challenge = select_challenge(resp.headers.get_all(header))
        if challenge is None or leg.auth is None or leg.invite is None:
            return False
        if not leg.auth.should_retry(challenge, sent_credentials=leg.sent_credentials):
            return False
        old = leg.invite
        h = old.headers.copy()
        h.remove("via")
        h.add("Via", f"{self.env.via(leg.transport)};branch={new_branch()}", first=True)
        number = old.cseq[0] + 1
        h.set("CSeq", f"{number} INVITE")
        name = "Authorization" if resp.status == 401 else "Proxy-Authorization"
        try:
            h.set(name, leg.auth.authorize(challenge, "INVITE", old.uri))
        except DigestError:
            return False
        leg.invite = Request("INVITE", old.uri, h, old.body)
        leg.sent_credentials = True
        leg.state = ForkState.CALLING
        self._out.append(SendRequest(leg.invite, leg.address, leg.transport, leg.index if tag is None else tag))
        return True

    def _fork_failed(self, leg: Leg, failure: Failure) -> None:
        if leg.attempt != self.attempt or leg.cancel is not CancelState.NONE:
            return  # a fork we gave up (another answered, or no answer in time) ending late
        self.last_failure = failure
        if self.state is not CallState.DIALING:
            return
        if any(not f.settled and f.attempt == self.attempt and f.cancel is CancelState.NONE for f in self.forks):
            return  # another fork may still answer
        self._attempt_failed(failure)

    def _attempt_failed(self, failure: Failure) -> None:
        self._out.append(CancelTimer(NO_ANSWER))
        self.last_failure = failure
        self._move(CallState.ANSWERED if self.answered_by_us else CallState.ROUTING)
        if self.on_result is not None:
            cb, self.on_result = self.on_result, None
            self._out.append(Notify(cb, (failure,)))
        else:
            self._fail_zero(failure.code, failure.reason)

    def _won(self, leg: Leg) -> None:
        self._out.append(CancelTimer(NO_ANSWER))
        self.one = leg
        if leg.peer_type == "USER" and self.has_media:
            self._out.append(MediaExpect(ONE.value, leg.address[0]))  # a phone's RTP may come from its NAT
        for other in self.forks:
            if other is not leg:
                self._cancel_fork(other)

    def _provisional_to_zero(self, status: int, resp: Response) -> Step:
        body = b""
        if resp.body and self.has_media and status == 183:
            try:
                body = yield ("anchor", ONE.value, resp.body)
            except SdpError:
                body = b""
        if status == 183 and not body:
            status = 180
        if self.txn.state is not State.PROCEEDING or self.state is not CallState.DIALING:
            return
        r = create_response(self.invite, status, "Ringing" if status == 180 else resp.reason,
                            to_tag=self.local_tag, headers=[("Contact", self.env.contact(self.zero.transport))],
                            body=body, content_type="application/sdp" if body else None)
        self._out.append(Respond(self.txn, r))

    def _on_stray_response(self, inp: StrayResponseIn) -> None:
        """A 2xx outside its transaction: the same dialog's retransmission gets the same ACK again
        (for the CSeq it answers); another dialog forked from our INVITE gets its own ACK, then BYE
        (RFC 3261 13.2.2.4)."""
        resp = inp.response
        call_id = resp.call_id
        if call_id == self.invite.call_id and (resp.from_tag or "") == self.local_tag:
            # a retransmitted 2xx to a refresh re-INVITE of ours on channel ZERO: the same ACK again
            zack = self.zero.acks.get(resp.cseq[0]) if self.zero.acks else None
            if zack is not None:
                dest, transport = self._next_hop(self.zero)
                self._out.append(SendStateless(zack, dest, transport))
            return
        leg = self.one if self.one is not None and self.one.invite is not None \
            and self.one.invite.call_id == call_id else None
        if leg is None:
            leg = next((f for f in (*self.forks, *self.transfer_forks)
                        if f.invite is not None and f.invite.call_id == call_id), None)
        if leg is None or leg.invite is None:
            return
        to_tag = resp.to_tag or ""
        if leg.dialog is not None and leg.dialog.remote_tag == to_tag:
            ack = leg.acks.get(resp.cseq[0]) if leg.acks else None
            if ack is not None:
                dest, transport = self._next_hop(leg)
                self._out.append(SendStateless(ack, dest, transport))
            return
        if resp.cseq[0] != leg.invite.cseq[0]:
            return
        extra = leg.extra_dialogs if leg.extra_dialogs is not None else {}
        leg.extra_dialogs = extra
        ack = extra.get(to_tag)
        dialog = Dialog.as_uac(leg.invite, resp)
        dest, transport = self._next_hop(leg, dialog)
        if ack is not None:
            self._out.append(SendStateless(ack, dest, transport))
            return
        ack = dialog.create_request("ACK", self.env.via(transport), cseq=leg.invite.cseq[0])
        extra[to_tag] = ack
        self._out.append(SendStateless(ack, dest, transport))
        bye = dialog.create_request("BYE", self.env.via(transport))
        self._out.append(SendRequest(bye, dest, transport, ("other_dialog",)))

    # ---- channel ZERO ---------------------------------------------------------------------------------
    def _answer_zero(self, body: bytes) -> None:
        zero = self.zero
        headers = [("Contact", self.env.contact(zero.transport)), ("Allow", CONNECTED_METHODS)]
        zero.timer, timer_headers = as_uas(self.invite)
        headers += timer_headers
        if body:
            zero.local_sdp = body
        r = create_response(self.invite, 200, "OK", to_tag=self.local_tag, headers=headers, body=body,
                            content_type="application/sdp" if body else None)
        zero.dialog = Dialog.as_uas(self.invite, self.local_tag)
        self._out.append(IndexDialog(self.invite.call_id, self.local_tag, ZERO))
        self._send_2xx(zero, self.txn, r)
        self._arm_session(zero)

    def _send_2xx(self, leg: Leg, txn: ServerTransaction, resp: Response) -> None:
        """A 2xx to an INVITE (initial or re-INVITE) on `leg`: resent from T1, doubling to T2,
        until its ACK, for 64*T1 (RFC 3261 13.3.1.4)."""
        self._out.append(Respond(txn, resp))
        leg.final = resp
        leg.final_cseq = txn.request.cseq[0]
        leg.final_to = (txn.peer, txn.transport)
        leg.final_interval = self.t1
        leg.final_deadline = self.now + 64 * self.t1
        leg.invite_state = InviteState.WAITING_ACK
        self._out.append(SetTimer(RESEND_2XX[leg.channel], self.now + self.t1))

    def _resend_2xx(self, leg: Leg) -> None:
        resp = leg.final
        if resp is None or leg.final_to is None or self.state is CallState.CLOSED:
            return
        if self.now >= leg.final_deadline:
            log.warning("call=%s no ACK for our 200 OK on channel %s", self.id, leg.channel.name)
            leg.final = None
            leg.invite_state = InviteState.IDLE
            if leg.bye is ByeState.WAITING_ACK:  # RFC 3261 15: the BYE goes now, ACK or not
                leg.bye = ByeState.NONE
                self._bye(leg)
                return
            if self.state in (CallState.ENDING,):
                return
            self.hangup_channel = leg.channel
            self._emit("hangup", call=self.id, channel=leg.channel.name, reason="no ACK")
            self._end(bye_zero=True, bye_one=True)
            return
        dest, transport = leg.final_to
        self._out.append(SendStateless(resp, dest, transport))
        leg.final_interval = min(leg.final_interval * 2, self.t2)
        self._out.append(SetTimer(RESEND_2XX[leg.channel], self.now + leg.final_interval))

    def _on_ack(self, inp: AckIn) -> Step | None:
        """An ACK for our 2xx: stop resending it; a BYE that waited for it goes now; with a late
        offer, its answer goes on to the other leg in our ACK there."""
        req = inp.request
        leg = self._leg(inp.channel, req.call_id)
        if leg is None:
            return None
        if leg.final is not None and req.cseq[0] == leg.final_cseq:
            leg.final = None
            leg.invite_state = InviteState.IDLE
            self._out.append(CancelTimer(RESEND_2XX[leg.channel]))
            if leg.bye is ByeState.WAITING_ACK:
                leg.bye = ByeState.NONE
                self._bye(leg)
        if inp.channel is ZERO and self.pending_play is not None:
            return self._play_after_ack(req)
        other = self.one if inp.channel is ZERO else self.zero
        if other is not None and other.ack_waiting is not None:
            return self._ack_with_answer(inp.channel, other, req.body)
        return None

    def _ack_with_answer(self, channel: Channel, to_leg: Leg, body: bytes) -> Step:
        cseq, to_leg.ack_waiting = to_leg.ack_waiting, None
        if body and self.has_media:
            try:
                body = yield ("anchor", channel.value, body)
            except SdpError:
                body = b""
        if cseq is not None and to_leg.dialog is not None:
            if body:
                to_leg.local_sdp = body
            self._send_ack(to_leg, cseq, body)

    def _fail_zero(self, code: int, reason: str, headers: list[tuple[str, str]] | None = None) -> None:
        """Refuse the call on channel ZERO with a final response, then close it (or, when we answered
        ZERO ourselves, hang it up: a final response can no longer be sent)."""
        if self.answered_by_us and self.state in (CallState.ANSWERED, CallState.DIALING):
            self._end(bye_zero=True, bye_one=False)
            return
        if self.state in (CallState.CLOSED, CallState.CONNECTED, CallState.ENDING):
            return
        self._out.append(CancelTimer(NO_ANSWER))
        for leg in self.forks:
            self._cancel_fork(leg)
        if self.one is not None:
            self._bye(self.one)  # it answered, but the call failed before ZERO could be answered
        if self.txn.state is State.PROCEEDING:
            self._out.append(Respond(self.txn, create_response(self.invite, code, reason, to_tag=self.local_tag,
                                                               headers=headers)))
        self._emit("failed", call=self.id, code=code, reason=reason)
        self._close(f"{code} {reason}")

    # ---- requests from either side --------------------------------------------------------------------
    def _on_cancel(self, inp: CancelIn) -> None:
        # our 200 to the CANCEL carries the To tag we gave the INVITE's responses (RFC 3261 9.2)
        self._out.append(Respond(inp.txn, create_response(inp.txn.request, 200, "OK", to_tag=self.local_tag)))
        if self.state in (CallState.CONNECTED, CallState.ENDING, CallState.CLOSED, CallState.ANSWERED) \
                or self.answered_by_us:
            return
        if self.txn.state is State.PROCEEDING:
            self._out.append(Respond(self.txn, create_response(self.invite, 487, "Request Terminated",
                                                               to_tag=self.local_tag)))
        self._out.append(CancelTimer(NO_ANSWER))
        for leg in self.forks:
            self._cancel_fork(leg)
        self.hangup_channel = ZERO
        self._emit("hangup", call=self.id, channel=ZERO.name, reason="cancelled")
        self._close("cancelled")

    def _leg(self, channel: Channel, call_id: str) -> Leg | None:
        if channel is ZERO:
            zero = self.zero
            return zero if zero.dialog is None or zero.dialog.call_id == call_id else None
        one = self.one
        if one is not None and one.dialog is not None and one.dialog.call_id == call_id:
            return one
        return None

    def _on_request(self, inp: RequestIn) -> Step | None:
        txn = inp.txn
        req = txn.request
        channel = inp.channel
        leg = self._leg(channel, req.call_id)
        dialog = leg.dialog if leg is not None else None
        if leg is None or dialog is None:
            old = next((r for r in self.retired if r.dialog is not None and r.dialog.call_id == req.call_id), None)
            if old is not None and req.method == "BYE":  # a transferor hanging up after its transfer
                self._out.append(Respond(txn, create_response(req, 200, "OK")))
                if old.bye is not ByeState.SENT:
                    old.bye = ByeState.DONE
                return None
            self._out.append(Respond(txn, create_response(req, 481, "Call/Transaction Does Not Exist")))
            return None
        if not dialog.accepts(req):
            self._out.append(Respond(txn, create_response(req, 500, "Server Internal Error (CSeq out of order)",
                                                          headers=[("Retry-After", "1")])))
            return None
        if req.method == "BYE":
            self._out.append(Respond(txn, create_response(req, 200, "OK")))
            # the peer ended its dialog: no BYE of ours is owed there, and its 2xx needs no ACK
            if leg.final is not None:
                leg.final = None
                self._out.append(CancelTimer(RESEND_2XX[channel]))
            if leg.bye is not ByeState.SENT:
                leg.bye = ByeState.DONE
            transfer = self.transfer
            if transfer is not None and transfer.channel is channel and self.state is CallState.CONNECTED \
                    and transfer.state in (TransferState.DIALING, TransferState.BRIDGING):
                # the transferor leaves before the outcome (RFC 5589 6): the transfer goes on
                transfer.transferor_gone = True
                self._out.append(CancelTimer(SE_REFRESH[channel]))
                self._out.append(CancelTimer(SE_EXPIRE[channel]))
                return None
            if self.state in (CallState.ENDING, CallState.CLOSED):
                self._maybe_closed()
                return None
            self.hangup_channel = channel
            self._emit("hangup", call=self.id, channel=channel.name)
            self._end(bye_zero=channel is ONE, bye_one=channel is ZERO)
            return None
        if req.method in ("INVITE", "UPDATE"):
            se = session_expires(req)
            if se is not None and se.interval < MIN_SE:  # RFC 4028 9 (and 11: it holds in a dialog too)
                self._out.append(Respond(txn, create_response(req, 422, TOO_SMALL,
                                                              headers=[("Min-SE", str(MIN_SE))])))
                return None
            if req.method == "UPDATE" and not req.body and self._answers_refresh_itself(leg):
                self._answer_refresh(leg, txn)
                return None
        if self.state is not CallState.CONNECTED:
            if req.method == "INVITE":
                self._out.append(Respond(txn, create_response(req, 491, "Request Pending")))
            else:
                self._out.append(Respond(txn, create_response(req, 481, "Call/Transaction Does Not Exist")))
            return None
        if req.method == "INVITE":
            # RFC 3261 14.2: a re-INVITE while ours on this dialog is pending gets 491; while theirs
            # is still being answered, 500 with Retry-After
            if leg.invite_state is InviteState.INVITE_SENT:
                self._out.append(Respond(txn, create_response(req, 491, "Request Pending")))
                return None
            if leg.invite_state is InviteState.INVITE_RECEIVED:
                self._out.append(Respond(txn, create_response(req, 500, "Server Internal Error (re-INVITE pending)",
                                                              headers=[("Retry-After", "1")])))
                return None
        if req.method == "REFER" and leg.peer_type == "USER":
            return self._on_refer(leg, txn)  # a user's phone transfers: we carry it out (RFC 3515)
        return self._relay_request(leg, txn)

    def _other(self, leg: Leg) -> Leg | None:
        return self.one if leg.channel is ZERO else self.zero

    def _relay_request(self, from_leg: Leg, txn: ServerTransaction) -> Step:
        """re-INVITE (hold, codec change), UPDATE, INFO (DTMF), MESSAGE...: pass to the other leg."""
        req = txn.request
        to_leg = self._other(from_leg)
        if to_leg is None or to_leg.dialog is None or self.state is not CallState.CONNECTED:
            self._out.append(Respond(txn, create_response(req, 481, "Call/Transaction Does Not Exist")))
            return
        method = req.method
        if method == "INVITE":
            from_leg.invite_state = InviteState.INVITE_RECEIVED
            to_leg.invite_state = InviteState.INVITE_SENT
        body = req.body
        if body and self.has_media and req.content_type == "application/sdp":
            try:
                body = yield ("anchor", from_leg.channel.value, body)
            except SdpError:
                if method == "INVITE":
                    from_leg.invite_state = to_leg.invite_state = InviteState.IDLE
                self._out.append(Respond(txn, create_response(req, 488, "Not Acceptable Here")))
                return
        if self.state is not CallState.CONNECTED or to_leg.dialog is None or from_leg.dialog is None:
            self._out.append(Respond(txn, create_response(req, 481, "Call/Transaction Does Not Exist")))
            return
        keep = RELAYED_HEADERS.get(method, NO_HEADERS)
        extra = [(n, v) for n, v in req.headers if n.lower() in keep] if keep else None
        if method in ("INVITE", "UPDATE"):  # only target refreshes move the remote target (12.2)
            from_leg.dialog.update_target(req)
            allow = allows(req, "UPDATE")
            if allow is not None:
                from_leg.allow_update = allow
            extra = (extra or []) + self._timer_request_headers(to_leg, req)
            if body:
                to_leg.local_sdp = body
        dest, transport = self._next_hop(to_leg)
        out = to_leg.dialog.create_request(method, self.env.via(transport), contact=self.env.contact(transport),
                                           body=body, content_type=req.headers.get("content-type"), extra=extra)
        tag = self._tag()
        self.relays[tag] = (txn, to_leg.channel, out, None)
        self._out.append(SendRequest(out, dest, transport, ("relay", tag)))

    def _relayed_response(self, tag: int, resp: Response | None) -> Step | None:
        entry = self.relays.get(tag)
        if entry is None:
            return None
        server_txn, to_channel, sent, nonce = entry
        req = server_txn.request
        to_leg = self.zero if to_channel is ZERO else self.one
        from_leg = self._other(to_leg) if to_leg is not None else None
        if resp is not None and resp.status in (401, 407) and to_leg is not None:
            # a challenge meant for us (the line's credentials), never for the phone: answered
            # once per nonce; one we cannot answer is not passed on either
            retry = self._with_credentials(to_leg, sent, resp, nonce)
            if retry is not None:
                request, nonce = retry
                self.relays[tag] = (server_txn, to_channel, request, nonce)
                dest, transport = self._next_hop(to_leg)
                self._out.append(SendRequest(request, dest, transport, ("relay", tag)))
                return None
            del self.relays[tag]
            self._reset_invite_states(req, to_leg, from_leg)
            self._out.append(Respond(server_txn, create_response(
                req, 403, f"Forbidden (the other side asked for credentials: {resp.status})")))
            return None
        if resp is None:
            del self.relays[tag]
            self._reset_invite_states(req, to_leg, from_leg)
            self._out.append(Respond(server_txn, create_response(req, 408, "Request Timeout")))
            return None
        if resp.status == 100:
            return None
        if resp.status >= 200:
            del self.relays[tag]
        if resp.status in (405, 501) and req.method == "UPDATE" and not req.body and to_leg is not None \
                and from_leg is not None and from_leg.dialog is not None:
            # the far leg does not do UPDATE: a session refresh must not end the call (RFC 4028 7.4)
            to_leg.allow_update = False
            self._answer_refresh(from_leg, server_txn)
            return None
        return self._relay_response(server_txn, to_leg, from_leg, resp)

    def _reset_invite_states(self, req: Request, to_leg: Leg | None, from_leg: Leg | None) -> None:
        if req.method != "INVITE":
            return
        for leg in (to_leg, from_leg):
            if leg is not None and leg.invite_state in (InviteState.INVITE_SENT, InviteState.INVITE_RECEIVED):
                leg.invite_state = InviteState.IDLE

    def _relay_response(self, server_txn: ServerTransaction, to_leg: Leg | None, from_leg: Leg | None,
                        resp: Response) -> Step:
        req = server_txn.request
        body = resp.body
        if body and self.has_media and resp.content_type == "application/sdp" and to_leg is not None:
            try:
                body = yield ("anchor", to_leg.channel.value, body)
            except SdpError:
                body = b""
        status = resp.status
        is_invite = req.method == "INVITE"
        if is_invite and status >= 200:
            self._reset_invite_states(req, to_leg, from_leg)
        refresh = req.method in ("INVITE", "UPDATE") and 200 <= status < 300
        if refresh and to_leg is not None and to_leg.dialog is not None:
            self._refreshed_by_response(to_leg, resp)
        if is_invite and 200 <= status < 300 and to_leg is not None and to_leg.dialog is not None:
            to_leg.dialog.update_target(resp)
            cseq = resp.cseq[0]
            if not req.body and resp.body:
                to_leg.ack_waiting = cseq  # late offer: the answer comes in the originator's ACK
            else:
                self._send_ack(to_leg, cseq)
        contact = self.env.contact(from_leg.transport if from_leg is not None else self.zero.transport)
        headers = [("Contact", contact)] if is_invite or (refresh and req.method == "UPDATE") else []
        timer: SessionTimer | None = None
        if refresh and from_leg is not None:
            timer, timer_headers = as_uas(req)
            headers += timer_headers
            if body:
                from_leg.local_sdp = body
        elif status == 422 and resp.headers.get("min-se"):
            headers.append(("Min-SE", resp.headers.get("min-se") or ""))
        out = create_response(req, status, resp.reason, headers=headers or None,
                              body=body, content_type=resp.headers.get("content-type") if body else None)
        if is_invite and 200 <= status < 300 and from_leg is not None:
            self._send_2xx(from_leg, server_txn, out)
        else:
            self._out.append(Respond(server_txn, out))
        if refresh and from_leg is not None:
            from_leg.timer = timer
            self._arm_session(from_leg)

    # ---- timers ---------------------------------------------------------------------------------------
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
            if self.state is CallState.CONNECTED:
                self._emit("hangup", call=self.id, channel=None,
                           reason=f"maximum call duration ({self.max_duration:g} s) reached")
                self._end(bye_zero=True, bye_one=True)
        elif name == RTP_CHECK:
            return self._rtp_check()
        elif name == TRANSFER_NO_ANSWER:
            transfer = self.transfer
            if transfer is not None and transfer.state is TransferState.DIALING and self.state is CallState.CONNECTED:
                self._transfer_failed(transfer, Failure(480, "Temporarily Unavailable (no answer)"))
        elif name in SE_TIMERS:
            channel = SE_TIMERS[name]
            if name == SE_REFRESH[channel]:
                self._send_refresh(channel)
            else:
                self._session_expired(channel)
        return None

    def _rtp_check(self) -> Step:
        if self.state is not CallState.CONNECTED or not self.rtp_timeout:
            return
        packets = yield ("packets",)
        if self.state is not CallState.CONNECTED:
            return
        if packets == self.rtp_seen:
            self._emit("hangup", call=self.id, channel=None,
                       reason=f"no RTP either way for {self.rtp_timeout:g} s")
            self._end(bye_zero=True, bye_one=True)
            return
        self.rtp_seen = packets
        self._out.append(SetTimer(RTP_CHECK, self.now + self.rtp_timeout))

    def _no_answer(self) -> None:
        if self.state is not CallState.DIALING:
            return
        for leg in self.forks:
            self._cancel_fork(leg)
        self._attempt_failed(Failure(480, "Temporarily Unavailable (no answer)"))

    # ---- session timers (RFC 4028): one per leg, refreshed by us or by the peer ---------------------
    def _answers_refresh_itself(self, leg: Leg) -> bool:
        """Whether a refresh UPDATE (no SDP) from `leg` is answered by us rather than relayed: the
        other leg does not list UPDATE in its Allow (a 501 from it must not end the call), or there
        is no other leg yet (ZERO answered by us for a prompt)."""
        if self.state is CallState.ANSWERED or (self.answered_by_us and self.state is CallState.DIALING):
            return True
        other = self._other(leg)
        return self.state is CallState.CONNECTED and (other is None or not other.allow_update)

    def _answer_refresh(self, leg: Leg, txn: ServerTransaction) -> None:
        """Answer a session refresh UPDATE without SDP ourselves: 200 with the negotiated
        Session-Expires (and Require: timer when the peer supports it), RFC 4028 9 and 3311 5.2."""
        req = txn.request
        timer, headers = as_uas(req)
        if leg.dialog is not None:
            leg.dialog.update_target(req)
        allow = allows(req, "UPDATE")
        if allow is not None:
            leg.allow_update = allow
        headers = [("Contact", self.env.contact(leg.transport)), ("Allow", CONNECTED_METHODS)] + headers
        self._out.append(Respond(txn, create_response(req, 200, "OK", headers=headers)))
        leg.timer = timer
        self._arm_session(leg)

    def _timer_request_headers(self, to_leg: Leg, req: Request) -> list[tuple[str, str]]:
        """Session timer headers of a re-INVITE/UPDATE we relay to `to_leg`: that leg's own timer
        with us (who refreshes it stays as it was), else the interval the originator asked for."""
        timer = to_leg.timer
        if timer is not None:
            return request_headers(timer.interval, "uac" if timer.we_refresh else "uas")
        se = session_expires(req)
        return request_headers(max(se.interval, MIN_SE)) if se is not None else []

    def _refreshed_by_response(self, leg: Leg, resp: Response) -> None:
        """A 2xx from `leg` to a re-INVITE/UPDATE of ours: its session is refreshed, on the terms
        its Session-Expires states (none: no expiration, RFC 4028 7.2, unless we refresh it)."""
        allow = allows(resp, "UPDATE")
        if allow is not None:
            leg.allow_update = allow
        timer = as_uac(resp)
        if timer is not None or leg.timer is None or not leg.timer.we_refresh:
            leg.timer = timer
        self._arm_session(leg)

    def _arm_session(self, leg: Leg) -> None:
        """(Re)start `leg`'s session timer from now: our refresh at half the interval, or the end of
        the call when the peer's refresh has not come by the interval minus min(32 s, a third)."""
        channel = leg.channel
        self._out.append(CancelTimer(SE_REFRESH[channel]))
        self._out.append(CancelTimer(SE_EXPIRE[channel]))
        timer = leg.timer
        if timer is None:
            return
        if timer.we_refresh:
            self._out.append(SetTimer(SE_REFRESH[channel], self.now + timer.interval / 2))
        else:
            self._out.append(SetTimer(SE_EXPIRE[channel], self.now + timer.expiry_margin))

    def _session_leg(self, channel: Channel) -> Leg | None:
        """`channel`'s leg while its session can be refreshed (answered, not ending)."""
        state = self.state
        if not (state is CallState.CONNECTED or (channel is ZERO and self.answered_by_us
                                                 and state in (CallState.ANSWERED, CallState.DIALING))):
            return None
        leg = self.zero if channel is ZERO else self.one
        if leg is None or leg.dialog is None or leg.bye is not ByeState.NONE:
            return None
        return leg

    def _send_refresh(self, channel: Channel) -> None:
        """We are `channel`'s refresher: UPDATE without SDP when the peer allows it, else a
        re-INVITE repeating the SDP we last sent there (no change of session, RFC 4028 7.4)."""
        leg = self._session_leg(channel)
        if leg is None or leg.timer is None or leg.dialog is None:
            return
        if leg.refreshing or leg.invite_state is not InviteState.IDLE or leg.ack_waiting is not None:
            # an INVITE is in progress on this dialog (its success refreshes too): try again shortly
            self._out.append(SetTimer(SE_REFRESH[channel], self.now + self.t2))
            return
        method = "UPDATE" if leg.allow_update or not leg.local_sdp else "INVITE"
        body = leg.local_sdp if method == "INVITE" else b""
        dest, transport = self._next_hop(leg)
        req = leg.dialog.create_request(method, self.env.via(transport), contact=self.env.contact(transport),
                                        body=body, content_type="application/sdp" if body else None,
                                        extra=request_headers(leg.timer.interval, "uac"))
        leg.refreshing = True
        if method == "INVITE":
            leg.invite_state = InviteState.INVITE_SENT
        self._out.append(SendRequest(req, dest, transport, ("refresh", channel, method)))

    def _refresh_response(self, channel: Channel, method: str, resp: Response | None) -> Step | None:
        leg = self.zero if channel is ZERO else self.one
        if leg is None or leg.dialog is None or (resp is not None and resp.status < 200):
            return None
        leg.refreshing = False
        if method == "INVITE" and leg.invite_state is InviteState.INVITE_SENT:
            leg.invite_state = InviteState.IDLE
        code = resp.status if resp is not None else 408
        if resp is not None and 200 <= code < 300:
            leg.dialog.update_target(resp)
            if method == "INVITE":
                self._send_ack(leg, resp.cseq[0])
            if self._session_leg(channel) is None:
                return None
            self._refreshed_by_response(leg, resp)
            if method == "INVITE" and resp.body and self.has_media:
                return self._anchor_quietly(channel, resp.body)
            return None
        if self._session_leg(channel) is None or leg.timer is None:
            return None
        if code in (408, 481):  # the dialog is gone (RFC 4028 10)
            self._emit("hangup", call=self.id, channel=None,
                       reason=f"session refresh failed: {code} from channel {channel.name}")
            self._end(bye_zero=True, bye_one=True)
            return None
        if code in (405, 501) and method == "UPDATE":
            leg.allow_update = False  # it does not do UPDATE after all: a re-INVITE now
            self._send_refresh(channel)
            return None
        if code == 422 and resp is not None and min_se(resp) > leg.timer.interval:
            leg.timer = SessionTimer(min_se(resp), True)
            self._send_refresh(channel)
            return None
        # the session lives on until it expires: one more try, then it ends (RFC 4028 10)
        remaining = leg.timer.interval / 2
        if code == 491:
            self._out.append(SetTimer(SE_REFRESH[channel], self.now + min(self.t2, remaining / 2)))
        self._out.append(SetTimer(SE_EXPIRE[channel], self.now + remaining))
        return None

    def _anchor_quietly(self, channel: Channel, body: bytes) -> Step:
        try:
            yield ("anchor", channel.value, body)
        except SdpError:
            log.warning("call=%s unreadable SDP in a session refresh's answer on channel %s", self.id, channel.name)

    def _session_expired(self, channel: Channel) -> None:
        leg = self._session_leg(channel)
        if leg is None or leg.timer is None:
            return
        self._emit("hangup", call=self.id, channel=None,
                   reason=f"session expired: no refresh on channel {channel.name} within {leg.timer.interval} s")
        self._end(bye_zero=True, bye_one=True)

    # ---- transfer (RFC 3515 REFER, 3892 Referred-By, 3420 sipfrag), carried out by us ---------------
    def _on_refer(self, leg: Leg, txn: ServerTransaction) -> Step | None:
        """A user's phone asks to transfer the other party to the Refer-To target: 202, then the
        target is routed by the program as a new call from that user, rung, and on its answer the
        remaining party is bridged to it and the transferor's leg ended; NOTIFYs report each step."""
        req = txn.request
        if self.transfer is not None and self.transfer.state in (TransferState.DIALING, TransferState.BRIDGING):
            self._out.append(Respond(txn, create_response(req, 491, "Request Pending (a transfer is under way)")))
            return None
        refer_to = req.headers.get("refer-to")
        try:
            uri = NameAddr.parse(refer_to or "").uri
        except (SipError, ValueError):
            uri = None
        target = unescape(uri.user or "") if uri is not None else ""
        if uri is None or not target:
            self._out.append(Respond(txn, create_response(req, 400, "Bad Request (Refer-To names no one to call)")))
            return None
        replaces = _replaces(uri.headers)
        kind = "attended" if replaces is not None else "blind"
        notify = (req.headers.get("refer-sub") or "true").strip().lower() != "false"
        self._out.append(Respond(txn, create_response(req, 202, "Accepted", headers=[
            ("Contact", self.env.contact(leg.transport))] + ([("Refer-Sub", "false")] if not notify else []))))
        self.attempt += 1
        transfer = Transfer(leg, leg.peer or "", target, kind, self.attempt, notify)
        self.transfer = transfer
        self._transfer_step(transfer, "trying")
        self._notify(transfer, 100, "Trying")
        if replaces is not None:
            return self._attended(transfer, *replaces)
        targets, failure = self.env.route_transfer(self, transfer.transferor, target)
        if failure is not None or not targets:
            self._transfer_failed(transfer, failure or Failure(404, "Not Found (no route)"))
            return None
        return self._dial_transfer(transfer, targets)

    def _dial_transfer(self, transfer: Transfer, targets: list[Target]) -> Step:
        offer = b""
        if self.has_media:
            try:
                offer = yield ("offer", transfer.channel.value)  # our relay's side the new leg joins
            except MediaError as exc:
                self._transfer_failed(transfer, Failure(500, f"Server Internal Error (media: {exc})"))
                return
        if transfer.state is not TransferState.DIALING or self.state is not CallState.CONNECTED:
            return
        failures: list[Failure] = []
        started = 0
        for target in targets:
            legs, failure = self.env.build_forks(self, target, offer, self.now)
            if failure is not None:
                failures.append(failure)
            for fork in legs:
                fork.channel = transfer.channel
                fork.attempt = transfer.attempt
                fork.index = -1 if transfer.channel is ZERO else len(self.forks)
                fork.local_sdp = offer
                number = len(self.transfer_forks)
                self.transfer_forks.append(fork)
                started += 1
                invite = fork.invite
                assert invite is not None
                self._out.append(IndexDialog(invite.call_id, invite.from_tag or "", transfer.channel))
                self._out.append(SendRequest(invite, fork.address, fork.transport, ("transfer", number)))
        if not started:
            self._transfer_failed(transfer, failures[-1] if failures else Failure(480, "Temporarily Unavailable"))
            return
        self._out.append(SetTimer(TRANSFER_NO_ANSWER, self.now + TRANSFER_TIMEOUT))

    def _transfer_response(self, number: int, resp: Response | None) -> Step | None:
        if not 0 <= number < len(self.transfer_forks):
            return None
        fork = self.transfer_forks[number]
        transfer = self.transfer
        live = transfer is not None and transfer.attempt == fork.attempt and transfer.state is TransferState.DIALING \
            and self.state is CallState.CONNECTED and fork.cancel is CancelState.NONE
        if resp is None:
            if not fork.settled:
                fork.state = ForkState.FAILED
                if live and transfer is not None:
                    self._transfer_fork_failed(transfer, Failure(408, "Request Timeout"))
            self._maybe_released()
            return None
        status = resp.status
        if fork.settled:
            if 200 <= status < 300:
                self._ack_and_bye(fork, resp)
            return None
        if status < 200:
            if status == 100:
                return None
            fork.state = ForkState.EARLY
            if fork.cancel is CancelState.WANTED:
                self._send_cancel(fork)
            elif live and transfer is not None and not transfer.ringing:
                transfer.ringing = True
                self._transfer_step(transfer, "ringing")
                self._notify(transfer, 180, "Ringing")
            return None
        if status < 300:
            fork.state = ForkState.ANSWERED
            fork.dialog = Dialog.as_uac(fork.invite, resp)  # type: ignore[arg-type]
            self._send_ack(fork, resp.cseq[0])
            if not live or transfer is None:
                self._bye(fork)
                self._maybe_released()
                return None
            fork.timer = as_uac(resp)
            fork.allow_update = allows(resp, "UPDATE") is True
            fork.answer_sdp = resp.body
            for other in self.transfer_forks:
                if other is not fork and other.attempt == fork.attempt:
                    self._cancel_fork(other)
            self._transfer_move(transfer, TransferState.BRIDGING)
            self._out.append(CancelTimer(TRANSFER_NO_ANSWER))
            return self._bridge(transfer, fork, resp.body)
        if status in (401, 407) and fork.auth is not None and fork.cancel is CancelState.NONE \
                and self._retry_with_auth(fork, resp, ("transfer", number)):
            return None
        fork.state = ForkState.FAILED
        if live and transfer is not None:
            self._transfer_fork_failed(transfer, Failure(status, resp.reason or "Failed"))
        self._maybe_released()
        return None

    def _transfer_fork_failed(self, transfer: Transfer, failure: Failure) -> None:
        if any(not f.settled and f.attempt == transfer.attempt and f.cancel is CancelState.NONE
               for f in self.transfer_forks):
            return  # another of the target's phones may still answer
        self._transfer_failed(transfer, failure)

    def _bridge(self, transfer: Transfer, fork: Leg, answer: bytes) -> Step:
        """The new leg answered: it replaces the transferor's leg, the remaining party is re-INVITEd
        with the new media, the transferor hears 200 in a NOTIFY and its leg is ended."""
        channel = transfer.channel
        towards_remaining = b""
        if answer and self.has_media:
            try:
                towards_remaining = yield ("anchor", channel.value, answer)
            except SdpError:
                towards_remaining = b""
        if self.state is not CallState.CONNECTED or transfer.state is not TransferState.BRIDGING:
            self._bye(fork)
            return
        self._replace_leg(transfer, fork)
        self._transfer_done(transfer, fork, towards_remaining)

    def _replace_leg(self, transfer: Transfer, new: Leg) -> None:
        """`new` takes the transferor's place on its channel; the transferor's leg is retired."""
        channel = transfer.channel
        old = transfer.leg
        if channel is ZERO:
            self.zero = new
        else:
            self.one = new
        self.retired.append(old)
        if old.final is not None:
            old.final = None
            self._out.append(CancelTimer(RESEND_2XX[channel]))
        if new.peer_type == "USER" and self.has_media:
            self._out.append(MediaExpect(channel.value, new.address[0]))

    def _transfer_done(self, transfer: Transfer, new: Leg, towards_remaining: bytes) -> None:
        """The transferor hears 200 and its leg is ended; the remaining party is re-INVITEd with the
        media of the new leg (its SDP answer anchored on the transferor's channel)."""
        old = transfer.leg
        self._notify(transfer, 200, "OK")
        if not transfer.transferor_gone and old.bye is ByeState.NONE and old.dialog is not None:
            self._send_bye(old, None)
        self._transfer_move(transfer, TransferState.DONE)
        self._transfer_step(transfer, "connected")
        self._arm_session(new)
        remaining = self._other(new)
        if remaining is None or remaining.dialog is None or not towards_remaining:
            return
        if remaining.invite_state is not InviteState.IDLE:
            log.warning("call=%s transfer: the remaining party's re-INVITE is busy; media left as it was", self.id)
            return
        dest, transport = self._next_hop(remaining)
        reinvite = remaining.dialog.create_request("INVITE", self.env.via(transport),
                                                   contact=self.env.contact(transport), body=towards_remaining,
                                                   content_type="application/sdp")
        remaining.invite_state = InviteState.INVITE_SENT
        remaining.local_sdp = towards_remaining
        self._out.append(SendRequest(reinvite, dest, transport, ("bridge", remaining.channel)))

    def _attended(self, transfer: Transfer, call_id: str, to_tag: str, from_tag: str) -> Step:
        """REFER with Replaces (RFC 3891): the transferor's consultation call names its dialog with
        us; the other party of that call is taken over (that call ends the transferor's leg and
        closes), re-INVITEd onto this call's media, and bridged to the remaining party."""
        taken, failure = self.env.take_over(self, transfer.transferor, call_id, to_tag, from_tag)
        if taken is None or taken.dialog is None:
            self._transfer_failed(transfer, failure or Failure(481, "Call/Transaction Does Not Exist"))
            return
        self._transfer_move(transfer, TransferState.BRIDGING)
        channel = transfer.channel
        taken.channel = channel
        taken.index = -1
        taken.bye = ByeState.NONE
        taken.attempt = transfer.attempt
        self.transfer_forks.append(taken)  # so its BYE's answer finds it
        self._out.append(IndexDialog(taken.dialog.call_id, taken.dialog.local_tag, channel))
        self._replace_leg(transfer, taken)
        offer = b""
        if self.has_media:
            try:
                offer = yield ("offer", channel.value)
            except MediaError as exc:
                self._transfer_failed(transfer, Failure(500, f"Server Internal Error (media: {exc})"))
                return
        if self.state is not CallState.CONNECTED or transfer.state is not TransferState.BRIDGING:
            return
        dest, transport = self._next_hop(taken)
        reinvite = taken.dialog.create_request("INVITE", self.env.via(transport), contact=self.env.contact(transport),
                                               body=offer, content_type="application/sdp" if offer else None)
        taken.invite_state = InviteState.INVITE_SENT
        taken.local_sdp = offer
        self._out.append(SendRequest(reinvite, dest, transport, ("adopt", channel)))

    def _adopt_response(self, channel: Channel, resp: Response | None) -> Step | None:
        """The taken-over party answered our re-INVITE: its media is ours now; finish the transfer."""
        leg = self.zero if channel is ZERO else self.one
        transfer = self.transfer
        if leg is None or leg.dialog is None or (resp is not None and resp.status < 200):
            return None
        if leg.invite_state is InviteState.INVITE_SENT:
            leg.invite_state = InviteState.IDLE
        if resp is not None and resp.status < 300:
            leg.dialog.update_target(resp)
            self._send_ack(leg, resp.cseq[0])
        if transfer is None or transfer.state is not TransferState.BRIDGING or self.state is not CallState.CONNECTED:
            return None
        if resp is None or resp.status >= 300:
            code = resp.status if resp is not None else 408
            self._transfer_failed(transfer, Failure(code, "re-INVITE to the transfer's target failed"))
            self.hangup_channel = channel
            self._emit("hangup", call=self.id, channel=channel.name, reason=f"transfer failed: {code}")
            self._end(bye_zero=True, bye_one=True)
            self._bye(transfer.leg)
            return None
        return self._adopted(transfer, leg, resp.body)

    def _adopted(self, transfer: Transfer, leg: Leg, answer: bytes) -> Step:
        towards_remaining = b""
        if answer and self.has_media:
            try:
                towards_remaining = yield ("anchor", transfer.channel.value, answer)
            except SdpError:
                towards_remaining = b""
        if self.state is not CallState.CONNECTED or transfer.state is not TransferState.BRIDGING:
            return
        self._transfer_done(transfer, leg, towards_remaining)

    def hand_over(self, now: float, channel: Channel, user: str, remote_tag: str) -> tuple[Leg | None, Failure | None]:
        """An attended transfer elsewhere takes this call's other party: `channel`'s leg must be user
        `user`'s dialog with that remote tag (the Replaces of its REFER). That leg is ended (BYE,
        `hangup` reason `transferred`), the call closes, and the other leg is returned, its dialog
        untouched, for the transferring call to re-INVITE. Failure (403, 481, 491) when it cannot be."""
        self.now = now
        mine = self.zero if channel is ZERO else self.one
        if self.state is not CallState.CONNECTED or self._waiting is not None or mine is None or mine.dialog is None:
            return None, Failure(481, "Call/Transaction Does Not Exist (the consultation call is not connected)")
        if mine.peer_type != "USER" or mine.peer != user or mine.dialog.remote_tag != remote_tag:
            return None, Failure(403, "Forbidden (Replaces names a dialog of someone else)")
        other = self._other(mine)
        if other is None or other.dialog is None or other.invite_state is not InviteState.IDLE \
                or other.final is not None or other.ack_waiting is not None:
            return None, Failure(491, "Request Pending (the consultation call is busy)")
        other.bye = ByeState.DONE  # handed over: this call owes it no BYE
        self.hangup_channel = channel
        self._emit("hangup", call=self.id, channel=channel.name, reason="transferred")
        self._end(bye_zero=channel is ZERO, bye_one=channel is ONE)
        return other, None

    def _bridge_response(self, channel: Channel, resp: Response | None) -> Step | None:
        leg = self.zero if channel is ZERO else self.one
        if leg is None or leg.dialog is None or (resp is not None and resp.status < 200):
            return None
        if leg.invite_state is InviteState.INVITE_SENT:
            leg.invite_state = InviteState.IDLE
        if resp is None or resp.status >= 300:
            log.warning("call=%s transfer: re-INVITE to channel %s failed (%s); media left as it was", self.id,
                        channel.name, resp.status if resp is not None else 408)
            return None
        leg.dialog.update_target(resp)
        self._send_ack(leg, resp.cseq[0])
        if resp.body and self.has_media and self.state is CallState.CONNECTED:
            return self._anchor_quietly(channel, resp.body)
        return None

    def _transfer_failed(self, transfer: Transfer, failure: Failure) -> None:
        """The target was refused or did not answer: the transferor hears the failure in a NOTIFY and
        keeps its call; one that has left already leaves the remaining party alone, so it ends."""
        if transfer.state in (TransferState.DONE, TransferState.FAILED):
            return
        self._transfer_move(transfer, TransferState.FAILED)
        self._out.append(CancelTimer(TRANSFER_NO_ANSWER))
        for fork in self.transfer_forks:
            if fork.attempt == transfer.attempt:
                self._cancel_fork(fork)
        self._transfer_step(transfer, "failed", reason=f"{failure.code} {failure.reason}")
        if transfer.transferor_gone:
            if self.state is CallState.CONNECTED:
                self.hangup_channel = transfer.channel
                self._emit("hangup", call=self.id, channel=transfer.channel.name,
                           reason=f"transfer failed: {failure.code} {failure.reason}")
                self._end(bye_zero=True, bye_one=True)
            return
        self._notify(transfer, failure.code, failure.reason)

    def _transfer_move(self, transfer: Transfer, to: TransferState) -> None:
        if to not in TRANSFER_TRANSITIONS[transfer.state]:
            log.error("event=illegal_move call=%s transfer from=%s to=%s", self.id, transfer.state.value, to.value)
            raise IllegalMove(f"call {self.id}: transfer {transfer.state.value} -> {to.value} is not a legal move")
        transfer.state = to

    def _transfer_step(self, transfer: Transfer, outcome: str, reason: str | None = None) -> None:
        fields: dict[str, object] = {"call": self.id, "transferor": transfer.transferor, "target": transfer.target,
                                     "kind": transfer.kind, "channel": transfer.channel.name, "outcome": outcome}
        if reason:
            fields["reason"] = reason
        self._out.append(Emit("transfer", fields))

    def _notify(self, transfer: Transfer, code: int, reason: str) -> None:
        """A NOTIFY of the refer subscription to the transferor: the new leg's progress as a sipfrag
        status line (RFC 3515 2.4.5); a final status ends the subscription."""
        if not transfer.notify or transfer.transferor_gone:
            return
        leg = transfer.leg
        if leg.dialog is None or leg.bye is not ByeState.NONE:
            return
        final = code >= 200
        state = "terminated;reason=noresource" if final else "active;expires=60"
        dest, transport = self._next_hop(leg)
        notify = leg.dialog.create_request("NOTIFY", self.env.via(transport), contact=self.env.contact(transport),
                                           body=f"SIP/2.0 {code} {reason}\r\n".encode(),
                                           content_type="message/sipfrag;version=2.0",
                                           extra=[("Event", "refer"), ("Subscription-State", state)])
        self._out.append(SendRequest(notify, dest, transport, ("notify",)))

    # ---- ending ---------------------------------------------------------------------------------------
    def _end(self, *, bye_zero: bool, bye_one: bool) -> None:
        if self.state is CallState.ENDING or self.state is CallState.CLOSED:
            return
        self._move(CallState.ENDING)
        self._out.append(CancelTimer(NO_ANSWER))
        for fork in self.forks:
            if fork is not self.one:
                self._cancel_fork(fork)  # ZERO answered by us hung up while ONE was still ringing
        for fork in self.transfer_forks:
            if fork is not self.one and fork is not self.zero:
                if fork.dialog is not None:
                    self._bye(fork)      # answered a transfer, not bridged yet
                else:
                    self._cancel_fork(fork)
        if self.transfer is not None and self.transfer.state in (TransferState.DIALING, TransferState.BRIDGING):
            self._transfer_move(self.transfer, TransferState.FAILED)
        self._stop_playing()
        one = self.one
        if one is not None and one.ack_waiting is not None and one.dialog is not None:
            cseq, one.ack_waiting = one.ack_waiting, None
            self._send_ack(one, cseq)  # a 2xx is ACKed before its dialog is ended
        zero = self.zero
        if zero.ack_waiting is not None and zero.dialog is not None:
            cseq, zero.ack_waiting = zero.ack_waiting, None
            self._send_ack(zero, cseq)
        if bye_zero:
            self._bye(zero)
        if bye_one and one is not None:
            self._bye(one)
        self._maybe_closed()

    def _bye(self, leg: Leg) -> None:
        """End `leg`'s dialog: one BYE per dialog whatever paths reach here; while our 2xx on it
        waits for its ACK, the BYE waits too (RFC 3261 15: until the ACK or the 2xx's timeout)."""
        if leg.bye is not ByeState.NONE or leg.dialog is None:
            return
        if leg.final is not None:
            leg.bye = ByeState.WAITING_ACK
            return
        self._send_bye(leg, None)

    def _send_bye(self, leg: Leg, credentials: tuple[str, str] | None) -> None:
        assert leg.dialog is not None
        leg.bye = ByeState.SENT
        dest, transport = self._next_hop(leg)
        bye = leg.dialog.create_request("BYE", self.env.via(transport), extra=[credentials] if credentials else None)
        self._out.append(SendRequest(bye, dest, transport, ("bye", self._leg_ref(leg))))

    def _leg_ref(self, leg: Leg) -> tuple[str, int]:
        """A name for `leg` that a request's tag can carry (no object: the tag outlives nothing)."""
        if leg is self.zero:
            return ("zero", 0)
        for pool, legs in (("fork", self.forks), ("transfer", self.transfer_forks), ("retired", self.retired)):
            for i, other in enumerate(legs):
                if other is leg:
                    return (pool, i)
        return ("none", 0)

    def _leg_at(self, ref: tuple[str, int]) -> Leg | None:
        pool, i = ref
        if pool == "zero":
            return self.zero
        legs = {"fork": self.forks, "transfer": self.transfer_forks, "retired": self.retired}.get(pool)
        return legs[i] if legs is not None and 0 <= i < len(legs) else None

    def _bye_response(self, ref: tuple[str, int], resp: Response | None) -> None:
        leg = self._leg_at(ref)
        if leg is None or leg.bye is not ByeState.SENT:
            return
        if resp is not None:
            if resp.status < 200:
                return
            if resp.status in (401, 407) and self._bye_with_credentials(leg, resp):
                return
        leg.bye = ByeState.DONE
        self._maybe_closed()
        self._maybe_released()

    def _bye_with_credentials(self, leg: Leg, resp: Response) -> bool:
        """A line's provider challenged our BYE: answer once per nonce with the line's credentials."""
        if leg.auth is None or leg.dialog is None:
            return False
        header = "www-authenticate" if resp.status == 401 else "proxy-authenticate"
        challenge = select_challenge(resp.headers.get_all(header))
        if challenge is None or challenge.nonce == leg.bye_auth_nonce:
            return False
        leg.bye_auth_nonce = challenge.nonce
        name = "Authorization" if resp.status == 401 else "Proxy-Authorization"
        try:
            value = leg.auth.authorize(challenge, "BYE", leg.dialog.remote_target)
        except DigestError:
            return False
        self._send_bye(leg, (name, value))
        return True

    def _with_credentials(self, leg: Leg, sent: Request, resp: Response,
                          answered_nonce: str | None) -> tuple[Request, str] | None:
        """`sent` again (new branch, next CSeq of the dialog) with the line's credentials for the
        challenge in `resp`; None when the leg has none or that nonce was answered already."""
        if leg.auth is None or leg.dialog is None:
            return None
        header = "www-authenticate" if resp.status == 401 else "proxy-authenticate"
        challenge = select_challenge(resp.headers.get_all(header))
        if challenge is None or challenge.nonce == answered_nonce:
            return None
        try:
            value = leg.auth.authorize(challenge, sent.method, sent.uri)
        except DigestError:
            return None
        h = sent.headers.copy()
        h.remove("via")
        _, transport = self._next_hop(leg)
        h.add("Via", f"{self.env.via(transport)};branch={new_branch()}", first=True)
        leg.dialog.local_cseq += 1
        h.set("CSeq", f"{leg.dialog.local_cseq} {sent.method}")
        h.set("Authorization" if resp.status == 401 else "Proxy-Authorization", value)
        return Request(sent.method, sent.uri, h, sent.body), challenge.nonce

    def _maybe_closed(self) -> None:
        if self.state is not CallState.ENDING:
            return
        for leg in (self.zero, self.one):
            if leg is not None and leg.bye in (ByeState.SENT, ByeState.WAITING_ACK):
                return
        self._close("hangup")

    def _ack_and_bye(self, leg: Leg, resp: Response) -> None:
        """A fork that answered after we gave up on it: ACK its 2xx in its dialog, then end it."""
        invite = leg.invite
        assert invite is not None
        if leg.dialog is None:
            leg.dialog = Dialog.as_uac(invite, resp)
            self._send_ack(leg, invite.cseq[0])
            self._bye(leg)

    def _send_ack(self, leg: Leg, cseq: int, body: bytes = b"") -> None:
        """ACK a 2xx on `leg` for the INVITE with `cseq`; kept so a retransmitted 2xx gets it again."""
        assert leg.dialog is not None
        dest, transport = self._next_hop(leg)
        ack = leg.dialog.create_request("ACK", self.env.via(transport), cseq=cseq, body=body)
        if leg.acks is None:
            leg.acks = {}
        leg.acks[cseq] = ack
        self._out.append(SendStateless(ack, dest, transport))

    def _cancel_fork(self, leg: Leg) -> None:
        """Give up a fork: one CANCEL per fork, and only after a provisional response (RFC 3261 9.1)."""
        if leg.cancel is not CancelState.NONE or leg.settled:
            return
        if leg.state is ForkState.EARLY:
            self._send_cancel(leg)
        else:
            leg.cancel = CancelState.WANTED

    def _send_cancel(self, leg: Leg) -> None:
        leg.cancel = CancelState.SENT
        inv = leg.invite
        assert inv is not None
        h = Headers()
        h.add("Via", inv.headers.values("via")[0])
        for route in inv.headers.get_all("route"):
            h.add("Route", route)
        h.add("Max-Forwards", "70")
        h.add("From", inv.headers.get("from") or "")
        h.add("To", inv.headers.get("to") or "")
        h.add("Call-ID", inv.call_id)
        h.add("CSeq", f"{inv.cseq[0]} CANCEL")
        h.add("Content-Length", "0")
        self._out.append(SendRequest(Request("CANCEL", inv.uri, h), leg.address, leg.transport, ("cancel",)))

    def _next_hop(self, leg: Leg, dialog: Dialog | None = None) -> tuple[Address, str]:
        """Where an in-dialog request or ACK goes (RFC 3261 12.2.1.1): the first route of the route
        set, else the remote target. A registered phone (USER) is the exception: it is reached
        where its packets came from, not at the private Contact it wrote behind a NAT. Host names
        (which would need DNS) fall back to the leg's known address."""
        d = dialog if dialog is not None else leg.dialog
        if d is not None:
            try:
                if d.route_set:
                    uri = d.next_hop()
                elif leg.peer_type == "LINE":
                    uri = SipUri.parse(d.remote_target)
                else:
                    return leg.address, leg.transport
            except (SipError, ValueError):
                return leg.address, leg.transport
            host = uri.bare_host
            if _is_ip(host):
                transport = uri.params.get("transport")
                transport = transport.lower() if transport else leg.transport
                default = 5061 if transport in ("tls", "wss") else 5060
                return (host, uri.port or default), transport
        return leg.address, leg.transport

    def _internal_failure(self) -> None:
        state = self.state
        if state in (CallState.NEW, CallState.ROUTING, CallState.DIALING):
            self._fail_zero(500, "Server Internal Error")
        elif state in (CallState.CONNECTED, CallState.ANSWERED):
            self._end(bye_zero=True, bye_one=True)
        elif state is CallState.ENDING:
            self._close("internal error")

    def _on_action_failed(self, inp: ActionFailed) -> None:
        log.error("event=call_error call=%s step=action error=%s", self.id, _logfmt(repr(inp.error)))
        self._internal_failure()

    def _close(self, reason: str) -> None:
        if self.state is CallState.CLOSED:
            return
        self._move(CallState.CLOSED)
        self._stop_playing()
        self.on_result = None
        self.pending_play = None
        self.relays.clear()
        self._out.append(Closed(reason))  # also cancels every timer the call has armed
        if self._outstanding():
            # a cancelled fork may still answer: its 2xx is ACKed and BYEd, for 64*T1 at most
            self._out.append(SetTimer(LINGER, self.now + 64 * self.t1))
        else:
            self._out.append(Released())

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

    def _outstanding(self) -> bool:
        return any(not f.settled and f.cancel is not CancelState.NONE for f in (*self.forks, *self.transfer_forks))

    def _maybe_released(self) -> None:
        if self.state is CallState.CLOSED and not self._outstanding():
            self._out.append(CancelTimer(LINGER))
            self._out.append(Released())


def _is_ip(host: str) -> bool:
    if not host:
        return False
    if ":" in host:
        return True
    parts = host.split(".")
    return len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts)


def _replaces(uri_headers: str | None) -> tuple[str, str, str] | None:
    """(call-id, to-tag, from-tag) of a Replaces in a Refer-To URI's headers (RFC 3891 6.1), else None."""
    if not uri_headers:
        return None
    for part in uri_headers.split("&"):
        name, _, value = part.partition("=")
        if name.strip().lower() != "replaces":
            continue
        call_id, *params = unescape(value).split(";")
        tags = {}
        for p in params:
            k, _, v = p.partition("=")
            tags[k.strip().lower()] = v.strip()
        if call_id.strip() and "to-tag" in tags and "from-tag" in tags:
            return call_id.strip(), tags["to-tag"], tags["from-tag"]
    return None


def _media_done(self: CallMachine, inp: MediaDone) -> None:
    log.error("event=call_error call=%s step=media reason=%s", self.id, '"a media result nobody waits for"')


_HANDLERS: dict[type, Callable[[CallMachine, Any], Any]] = {
    Start: CallMachine._on_start,
    AcceptIn: CallMachine._on_accept,
    RejectIn: CallMachine._on_reject,
    HangupIn: CallMachine._on_hangup,
    PlayIn: CallMachine._on_play,
    PlayDone: CallMachine._on_play_done,
    ResponseIn: CallMachine._on_response,
    StrayResponseIn: CallMachine._on_stray_response,
    AckIn: CallMachine._on_ack,
    CancelIn: CallMachine._on_cancel,
    RequestIn: CallMachine._on_request,
    TimerFired: CallMachine._on_timer,
    ActionFailed: CallMachine._on_action_failed,
    MediaDone: _media_done,
}

__all__ = ["CallMachine", "IllegalMove"]
