"""Call sessions: the back-to-back user agent that joins the caller's leg (channel ZERO) to the leg
we dial (channel ONE), with media anchored on us.

Each session handles its SIP events one at a time, in arrival order, on a small serial executor:
that keeps a dialog's messages in order even when a step awaits the media backend.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .events import logfmt_value as _logfmt
from .media.base import MediaError, MediaSession
from .media.prompts import PromptError
from .sip.dialog import Dialog
from .sip.digest import DigestClient, DigestError, select_challenge
from .sip.errors import SipError
from .sip.message import Headers, Request, Response, create_response
from .sip.sdp import SdpError
from .sip.transaction import (
    Address,
    ClientTransaction,
    ServerTransaction,
    State,
    new_branch,
    new_tag,
    token_hex,
)

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("callflow.calls")

ZERO, ONE = "ZERO", "ONE"
CONNECTED_METHODS = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, MESSAGE, NOTIFY, REFER"


@dataclass(frozen=True, slots=True)
class Target:
    """Where AcceptCallSession sends a call: a user's phones or a line, with the number to dial."""

    kind: str          # "USER" | "LINE"
    name: str
    number: str | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    code: int
    reason: str


class OutboundLeg:
    """One INVITE we sent (a fork of channel ONE) and, once it is answered, its dialog."""

    def __init__(self, call: CallSession, target: Target, destination: Address, invite: Request,
                 auth: DigestClient | None, transport: str = "udp") -> None:
        self.call = call
        self.transport = transport
        self.target = target
        self.destination = destination
        self.invite = invite
        self.auth = auth
        self.txn: ClientTransaction | None = None
        self.dialog: Dialog | None = None
        self.provisional = False
        self.cancel_pending = False
        self.cancelled = False
        self.done = False
        self.sent_credentials = False
        self.ack: Request | None = None

    # the transaction layer hands responses to whoever owns the transaction (user_data)
    def on_response(self, resp: Response, txn: ClientTransaction | None) -> None:
        self.call.post(self.call.leg_response, self, resp)

    def on_timeout(self, txn: ClientTransaction) -> None:
        self.call.post(self.call.leg_timeout, self)


class _Relay:
    """An in-dialog request we forwarded: its answer goes back on the server transaction."""

    def __init__(self, call: CallSession, server_txn: ServerTransaction, to_leg: int) -> None:
        self.call = call
        self.server_txn = server_txn
        self.to_leg = to_leg

    def on_response(self, resp: Response, txn: ClientTransaction | None) -> None:
        self.call.post(self.call.relayed_response, self, resp, txn)

    def on_timeout(self, txn: ClientTransaction) -> None:
        self.call.post(self.call.relayed_response, self, None, txn)


class _Bye:
    def __init__(self, call: CallSession) -> None:
        self.call = call

    def on_response(self, resp: Response, txn: ClientTransaction | None) -> None:
        if resp.status >= 200:
            self.call.post(self.call.bye_done)

    def on_timeout(self, txn: ClientTransaction) -> None:
        self.call.post(self.call.bye_done)


class CallSession:
    """One call: created on an INVITE, routed by the dialplan, closed when both legs are gone."""

    def __init__(self, engine: Engine, txn: ServerTransaction, peer_type: str, peer_name: str | None,
                 program: object) -> None:
        self.engine = engine
        self.id = token_hex(4)
        self.txn = txn
        self.invite = txn.request
        self.source = txn.peer
        self.transport = txn.transport
        self.peer_type = peer_type      # "USER" | "LINE"
        self.peer_name = peer_name
        self.program = program          # the routing program this call started with, to its end
        self.local_tag = new_tag()
        self.dialog_a: Dialog | None = None
        self.forks: list[OutboundLeg] = []
        self.leg_b: OutboundLeg | None = None
        self.media: MediaSession | None = None
        # new -> routing -> dialing -> connected -> ending -> closed; `play ... answered` adds
        # routing -> answered (ZERO answered by us, nothing dialled) -> dialing -> connected
        self.state = "new"
        self.answered_by_us = False     # ZERO got our own 200 OK (a prompt played after answering)
        self.early_media_sent = False   # ZERO got our 183 with our own SDP (a prompt as early media)
        self.player: asyncio.Task | None = None  # type: ignore[type-arg]
        self.pending_play: tuple[str, Callable[[], None]] | None = None  # late offer: waits for the ACK
        self.late_answer = False        # ZERO (no offer in its INVITE) answered our offer in its ACK
        self.play_codec: tuple[int, str] | None = None  # that answer's payload type and codec
        self.connecting_sent = False
        self.on_result: Callable[[Failure | None], None] | None = None
        self.answer_timer: asyncio.TimerHandle | None = None
        self.ack_timer: asyncio.TimerHandle | None = None
        self.ack_interval = engine.layer.t1
        self.ack_deadline = 0.0
        self.final_a: Response | None = None
        self.pending_ack: OutboundLeg | None = None  # late offer: ONE's 2xx waits for ZERO's ACK
        self.byes_pending = 0
        self.hangup_channel: str | None = None
        self.caller_id_override: str | None = None
        self.extra_headers: list[tuple[str, str]] = []
        self.last_failure = Failure(480, "Temporarily Unavailable")
        self._queue: deque[tuple[Callable[..., object], tuple]] = deque()
        self._running = False
        self._tasks: set[asyncio.Task] = set()  # type: ignore[type-arg]
        self.caller_id = self.invite.from_.uri.user or ""
        self.caller_name = self.invite.from_.display
        self.dialled = engine.dialled_number(self.invite, peer_type, peer_name)

    # ---- the serial executor ---------------------------------------------------------------------
    def post(self, fn: Callable[..., object], *args: object) -> None:
        """Run `fn` after every step posted before it. Steps run at once (no task, no loop turn)
        unless one really waits (the media backend doing I/O): then it, and whatever was posted
        meanwhile, continue in a task, still in order."""
        self._queue.append((fn, args))
        if not self._running:
            self._running = True
            self._run()

    def _run(self) -> None:
        try:
            for _ in range(1_000_000):
                if not self._queue:
                    break
                fn, args = self._queue.popleft()
                try:
                    result = fn(*args)
                    if inspect.iscoroutine(result):
                        try:
                            waiting_on = result.send(None)
                        except StopIteration:
                            continue  # finished without waiting: the common case
                        task = asyncio.get_running_loop().create_task(self._resume(fn, result, waiting_on))
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
                        return
                except Exception:
                    self._step_failed(fn)
            self._running = False
        finally:
            self.engine.endpoint.pump()

    async def _resume(self, fn: Callable[..., object], coro: Coroutine[object, object, object],
                      waiting_on: object) -> None:
        """Drive a step's coroutine on from where it first waited, as a Task would, then go on
        with the queue. Only asyncio futures (or a bare yield) are awaited by our steps."""
        try:
            for _ in range(1_000_000):
                if isinstance(waiting_on, asyncio.Future):
                    waiting_on._asyncio_future_blocking = False
                    await asyncio.wait((waiting_on,))
                else:
                    await asyncio.sleep(0)
                try:
                    waiting_on = coro.send(None)  # the future's own __await__ returns or raises its result
                except StopIteration:
                    break
        except Exception:
            self._step_failed(fn)
        self._run()

    def _step_failed(self, fn: Callable[..., object]) -> None:
        log.exception("call=%s internal error in %s", self.id, getattr(fn, "__name__", fn))
        try:
            self._internal_failure()
        except Exception:
            log.exception("call=%s could not end after an internal error", self.id)

    # ---- setup and routing ---------------------------------------------------------------------------
    async def start(self) -> None:
        engine = self.engine
        engine.bus.emit("created", call=self.id, peer_type=self.peer_type, peer=self.peer_name,
                        caller=self.caller_id, to=self.dialled)
        self.state = "routing"
        # media is anchored with or without an offer here: a late offer comes in the 2xx
        try:
            self.media = await engine.media.allocate(self.id)
        except MediaError as exc:
            log.warning("call=%s no media: %s", self.id, exc)
            self.fail_a(503, "Service Unavailable (no media ports)")
            return
        engine.bus.emit("incoming", call=self.id, peer_type=self.peer_type, peer=self.peer_name,
                        caller=self.caller_id, to=self.dialled,
                        user_agent=self.invite.headers.get("user-agent"), ip=self.source[0],
                        port=self.source[1])
        if self.state != "routing":
            return  # cancelled while media was being set up
        engine.route(self)

    # ---- what the dialplan calls (the SDK's AcceptCallSession / RejectCallSession) ----------------
    def accept(self, targets: list[Target], timeout: float | None,
               on_result: Callable[[Failure | None], None]) -> None:
        """Ring every target at once; the first answer wins. `on_result(None)` when connected,
        `on_result(failure)` when none answered (then the dialplan may try its next step)."""
        self.post(self._accept, targets, timeout, on_result)

    async def _accept(self, targets: list[Target], timeout: float | None,
                      on_result: Callable[[Failure | None], None]) -> None:
        if self.state not in ("routing", "dialing", "answered"):
            return
        self.on_result = on_result
        self.state = "dialing"
        self.forks = []
        offer = b""
        if self.late_answer and self.media is not None:
            offer = await self.media.offer(1)  # the codec the caller answered us with, on leg 1
        elif self.invite.body and self.media is not None:
            try:
                offer = await self.media.anchor(0, self.invite.body)
            except SdpError as exc:
                self.fail_a(488, f"Not Acceptable Here (bad SDP: {str(exc)[:60]})")
                return
            if self.answered_by_us or self.early_media_sent:
                offer = self.media.restrict_offer(offer)  # the caller already has our codec
        failures: list[Failure] = []
        for target in targets:
            legs, failure = self.engine.build_forks(self, target, offer)
            if failure is not None:
                failures.append(failure)
            for leg in legs:
                self.forks.append(leg)
        if not self.forks:
            self._attempt_failed(failures[-1] if failures else Failure(480, "Temporarily Unavailable"))
            return
        for leg in self.forks:
            self.engine.send_leg_invite(leg)
        if timeout:
            self.answer_timer = asyncio.get_running_loop().call_later(
                timeout, self.post, self._no_answer)

    def reject(self, code: int, reason: str) -> None:
        self.post(self.fail_a, code, reason)

    def hangup(self) -> None:
        self.post(self._hangup_by_us)

    # ---- playing to channel ZERO (the dialplan's `play`) ---------------------------------------------
    def play(self, path: str, answered: bool, on_done: Callable[[], None]) -> None:
        """Play a file to the caller, as early media (183) or after answering (200); `on_done()` once
        it has played (or could not be), unless the call ended meanwhile."""
        self.post(self._play, path, answered, on_done)

    async def _play(self, path: str, answered: bool, on_done: Callable[[], None]) -> None:
        if self.state not in ("routing", "answered"):
            return
        media = self.media
        offer = self.invite.body
        try:
            if media is None:
                raise MediaError("the call has no media")
            if not offer and answered and not self.answered_by_us:
                # late offer: our 200 carries the offer and the caller's ACK the answer; the file
                # starts once that answer has told us the caller's address and codec
                ours = await media.offer(0)
                if self.state != "routing":
                    return
                self.answered_by_us = True
                self.pending_play = (path, on_done)
                self._answer_a(ours)
                self.state = "answered"
                return
            if not offer and not self.answered_by_us:
                raise MediaError("the caller's INVITE has no SDP offer (early media needs one; "
                                 "`play ... answered` does not)")
            if not offer:
                if self.play_codec is None:
                    raise MediaError("the caller gave no SDP answer to play to")
                sdp, (payload_type, codec) = b"", self.play_codec  # settled in the caller's ACK
            else:
                sdp, payload_type, codec = await media.answer(0, offer)
            payloads = await self.engine.prompts.load(path, codec)
        except (MediaError, PromptError, SdpError) as exc:
            self._play_failed(path, exc)
            on_done()
            return
        if self.state not in ("routing", "answered"):
            return  # cancelled or hung up while the file was loading
        if answered and not self.answered_by_us:
            self.answered_by_us = True
            self._answer_a(sdp)
            self.state = "answered"
        elif not self.answered_by_us and not self.early_media_sent:
            if self.txn.state is not State.PROCEEDING:
                return
            self.early_media_sent = True
            r = create_response(self.invite, 183, "Session Progress", to_tag=self.local_tag,
                                headers=[("Contact", self.engine.contact(self.transport))], body=sdp,
                                content_type="application/sdp")
            self.engine.layer.respond(self.txn, r, self.engine.now())
        self._start_playing(media, path, codec, payloads, payload_type, on_done)

    async def _play_after_ack(self, ack: Request) -> None:
        """The late-offer caller's ACK: its SDP answers our offer; now the file can play."""
        pending, self.pending_play = self.pending_play, None
        if pending is None or self.media is None:
            return
        path, on_done = pending
        try:
            if not ack.body:
                raise MediaError("the caller's ACK carried no SDP answer to our offer")
            payload_type, codec = await self.media.take_answer(0, ack.body)
            payloads = await self.engine.prompts.load(path, codec)
        except (MediaError, PromptError, SdpError) as exc:
            self._play_failed(path, exc)
            if self.state == "answered":
                on_done()
            return
        if self.state != "answered":
            return
        self.late_answer = True
        self.play_codec = (payload_type, codec)
        self._start_playing(self.media, path, codec, payloads, payload_type, on_done)

    def _start_playing(self, media: MediaSession, path: str, codec: str, payloads: list[bytes],
                       payload_type: int, on_done: Callable[[], None]) -> None:
        log.info("event=playing call=%s file=%s codec=%s packets=%d answered=%s", self.id, _logfmt(path), codec,
                 len(payloads), "yes" if self.answered_by_us else "no")
        self.player = asyncio.get_running_loop().create_task(self._stream(media, payloads, payload_type, on_done))

    def _play_failed(self, path: str, exc: Exception) -> None:
        log.warning("event=play_failed call=%s file=%s reason=%s", self.id, _logfmt(path), _logfmt(str(exc)))

    async def _stream(self, media: MediaSession, payloads: list[bytes], payload_type: int,
                      on_done: Callable[[], None]) -> None:
        try:
            await media.play(0, payloads, payload_type)
        except asyncio.CancelledError:
            return
        except MediaError as exc:
            log.warning("event=play_failed call=%s reason=%s", self.id, _logfmt(str(exc)))
        self.player = None
        self.post(self._played, on_done)

    def _played(self, on_done: Callable[[], None]) -> None:
        if self.state in ("routing", "answered"):
            on_done()

    def _stop_playing(self) -> None:
        player, self.player = self.player, None
        if player is not None and not player.done():
            player.cancel()

    # ---- responses on channel ONE ------------------------------------------------------------------
    async def leg_response(self, leg: OutboundLeg, resp: Response) -> None:
        status = resp.status
        if leg.done:
            if 200 <= status < 300:
                self._ack_and_bye(leg, resp)  # answered after we gave up on it
            return
        if status < 200:
            if status == 100:
                return
            leg.provisional = True
            if resp.to_tag:
                leg.dialog = Dialog.as_uac(leg.invite, resp)
            if leg.cancel_pending:
                self._send_cancel(leg)
                return
            if self.state != "dialing":
                return
            if not self.connecting_sent:
                self.connecting_sent = True
                self.engine.bus.emit("connecting", call=self.id, channel=ONE)
            if not self.answered_by_us:
                await self._provisional_to_a(status, resp)
            return
        if 200 <= status < 300:
            leg.done = True
            leg.dialog = Dialog.as_uac(leg.invite, resp)
            # late offer (the caller's INVITE had no SDP): this 2xx carries the offer, and the answer
            # comes in the caller's ACK, so our ACK to this leg waits for it
            late_offer = not leg.invite.body and bool(resp.body)
            if self.state != "dialing" or leg.cancelled:
                self._send_ack(leg)
                self._bye_leg(leg)
                return
            if late_offer and self.answered_by_us:
                # the caller, answered by us already, can give no answer to this leg's offer
                self._send_ack(leg)
                self._bye_leg(leg)
                self._fork_failed(leg, Failure(488, "Not Acceptable Here (no SDP to answer the offer with)"))
                return
            if late_offer:
                self.pending_ack = leg
            else:
                self._send_ack(leg)
            self._won(leg)
            answer = resp.body
            if answer and self.media is not None:
                try:
                    answer = await self.media.anchor(1, answer)
                except SdpError:
                    self._bye_leg(leg)
                    self.fail_a(502, "Bad Gateway (unreadable SDP answer)")
                    return
            if not self.answered_by_us:
                self._answer_a(answer)
            self.state = "connected"
            self.engine.bus.emit("connected", call=self.id, peer_type=leg.target.kind, peer=leg.target.name)
            if self.on_result:
                self.on_result(None)
            return
        # a final failure
        if status in (401, 407) and leg.auth is not None and not leg.cancelled:
            if self._retry_with_auth(leg, resp):
                return
        leg.done = True
        self._fork_failed(leg, Failure(status, resp.reason or "Failed"))

    def leg_timeout(self, leg: OutboundLeg) -> None:
        if leg.done:
            return
        leg.done = True
        self._fork_failed(leg, Failure(408, "Request Timeout"))

    def _retry_with_auth(self, leg: OutboundLeg, resp: Response) -> bool:
        header = "www-authenticate" if resp.status == 401 else "proxy-authenticate"
        challenge = select_challenge(resp.headers.get_all(header))
        if challenge is None or leg.auth is None:
            return False
        if not leg.auth.should_retry(challenge, sent_credentials=leg.sent_credentials):
            return False
        old = leg.invite
        h = old.headers.copy()
        h.remove("via")
        h.add("Via", f"{self.engine.via(leg.transport)};branch={new_branch()}", first=True)
        number = old.cseq[0] + 1
        h.set("CSeq", f"{number} INVITE")
        name = "Authorization" if resp.status == 401 else "Proxy-Authorization"
        try:
            h.set(name, leg.auth.authorize(challenge, "INVITE", old.uri))
        except DigestError:
            return False
        leg.invite = Request("INVITE", old.uri, h, old.body)
        leg.sent_credentials = True
        leg.provisional = False
        self.engine.send_leg_invite(leg)
        return True

    def _fork_failed(self, leg: OutboundLeg, failure: Failure) -> None:
        if leg not in self.forks:
            return  # a fork of an earlier attempt (cancelled on no answer) ending late
        self.last_failure = failure
        if self.state != "dialing":
            return
        if any(not f.done for f in self.forks):
            return  # another fork may still answer
        self._attempt_failed(failure)

    def _attempt_failed(self, failure: Failure) -> None:
        self._cancel_answer_timer()
        self.last_failure = failure
        self.state = "answered" if self.answered_by_us else "routing"
        if self.on_result is not None:
            cb, self.on_result = self.on_result, None
            cb(failure)
        else:
            self.fail_a(failure.code, failure.reason)

    def _no_answer(self) -> None:
        self.answer_timer = None
        if self.state != "dialing":
            return
        for leg in self.forks:
            if not leg.done:
                self._cancel_leg(leg)
        self._attempt_failed(Failure(480, "Temporarily Unavailable (no answer)"))

    def _won(self, leg: OutboundLeg) -> None:
        self._cancel_answer_timer()
        self.leg_b = leg
        self.engine.index_dialog(self, 1, leg.dialog)  # type: ignore[arg-type]
        for other in self.forks:
            if other is not leg and not other.done:
                self._cancel_leg(other)

    # ---- channel ZERO ---------------------------------------------------------------------------------
    async def _provisional_to_a(self, status: int, resp: Response) -> None:
        body = b""
        if resp.body and self.media is not None and status == 183:
            try:
                body = await self.media.anchor(1, resp.body)
            except SdpError:
                body = b""
        if status == 183 and not body:
            status = 180
        if self.txn.state is not State.PROCEEDING:
            return
        r = create_response(self.invite, status, "Ringing" if status == 180 else resp.reason,
                            to_tag=self.local_tag, headers=[("Contact", self.engine.contact(self.transport))],
                            body=body, content_type="application/sdp" if body else None)
        self.engine.layer.respond(self.txn, r, self.engine.now())

    def _answer_a(self, body: bytes) -> None:
        headers = [("Contact", self.engine.contact(self.transport)), ("Allow", CONNECTED_METHODS)]
        r = create_response(self.invite, 200, "OK", to_tag=self.local_tag, headers=headers, body=body,
                            content_type="application/sdp" if body else None)
        self.dialog_a = Dialog.as_uas(self.invite, self.local_tag)
        self.engine.index_dialog(self, 0, self.dialog_a)
        self.final_a = r
        self.engine.layer.respond(self.txn, r, self.engine.now())
        # the UAS core resends the 2xx until the ACK arrives (RFC 3261 13.3.1.4)
        self.ack_interval = self.engine.layer.t1
        self.ack_deadline = self.engine.now() + 64 * self.engine.layer.t1
        self._arm_ack_timer()

    def _arm_ack_timer(self) -> None:
        loop = asyncio.get_running_loop()
        self.ack_timer = loop.call_later(self.ack_interval, self.post, self._resend_2xx)

    def _resend_2xx(self) -> None:
        self.ack_timer = None
        if self.final_a is None or self.state in ("ending", "closed"):
            return
        if self.engine.now() >= self.ack_deadline:
            log.warning("call=%s no ACK for our 200 OK: ending the call", self.id)
            self.hangup_channel = ZERO
            self.engine.bus.emit("hangup", call=self.id, channel=ZERO, reason="no ACK")
            self._end(bye_a=True, bye_b=True)
            return
        self.engine.layer.send_stateless(self.final_a, self.source, self.transport)
        self.ack_interval = min(self.ack_interval * 2, self.engine.layer.t2)
        self._arm_ack_timer()

    async def ack_from_a(self, req: Request) -> None:
        """The caller confirmed our 200 OK: stop resending it; with a late offer, its answer goes on
        to the dialled leg in our ACK."""
        if self.ack_timer is not None:
            self.ack_timer.cancel()
            self.ack_timer = None
        self.final_a = None
        if self.pending_play is not None:
            await self._play_after_ack(req)
            return
        leg, self.pending_ack = self.pending_ack, None
        if leg is not None:
            body = req.body
            if body and self.media is not None:
                try:
                    body = await self.media.anchor(0, body)
                except SdpError:
                    body = b""
            self._send_ack(leg, body=body)

    def fail_a(self, code: int, reason: str) -> None:
        """Refuse the call on channel ZERO with a final response, then close it (or, when we answered
        ZERO ourselves, hang it up: a final response can no longer be sent)."""
        if self.answered_by_us and self.state in ("answered", "dialing"):
            self._end(bye_a=True, bye_b=False)
            return
        if self.state in ("closed", "connected", "ending"):
            return
        self._cancel_answer_timer()
        for leg in self.forks:
            if not leg.done:
                self._cancel_leg(leg)
        if self.txn.state is State.PROCEEDING:
            self.engine.layer.respond(self.txn, create_response(self.invite, code, reason,
                                                                to_tag=self.local_tag), self.engine.now())
        self.engine.bus.emit("failed", call=self.id, code=code, reason=reason)
        self._close(f"{code} {reason}")

    # ---- requests from either side --------------------------------------------------------------------
    def cancel_from_a(self, cancel_txn: ServerTransaction) -> None:
        layer = self.engine.layer
        layer.respond(cancel_txn, create_response(cancel_txn.request, 200, "OK"), self.engine.now())
        if self.state in ("connected", "ending", "closed", "answered") or self.answered_by_us:
            return
        if self.txn.state is State.PROCEEDING:
            layer.respond(self.txn, create_response(self.invite, 487, "Request Terminated",
                                                    to_tag=self.local_tag), self.engine.now())
        self._cancel_answer_timer()
        for leg in self.forks:
            if not leg.done:
                self._cancel_leg(leg)
        self.hangup_channel = ZERO
        self.engine.bus.emit("hangup", call=self.id, channel=ZERO, reason="cancelled")
        self._close("cancelled")

    def in_dialog_request(self, leg_index: int, txn: ServerTransaction) -> None:
        req = txn.request
        dialog = self.dialog_a if leg_index == 0 else (self.leg_b.dialog if self.leg_b else None)
        layer = self.engine.layer
        now = self.engine.now()
        if dialog is None:
            layer.respond(txn, create_response(req, 481, "Call/Transaction Does Not Exist"), now)
            return
        if not dialog.accepts(req):
            layer.respond(txn, create_response(req, 500, "Server Internal Error (CSeq out of order)",
                                               headers=[("Retry-After", "1")]), now)
            return
        if req.method == "BYE":
            layer.respond(txn, create_response(req, 200, "OK"), now)
            if self.state in ("ending", "closed"):
                return
            self.hangup_channel = ZERO if leg_index == 0 else ONE
            self.engine.bus.emit("hangup", call=self.id, channel=self.hangup_channel)
            self._end(bye_a=leg_index == 1, bye_b=leg_index == 0)
            return
        if self.state != "connected":
            layer.respond(txn, create_response(req, 491 if req.method == "INVITE" else 481,
                                               "Request Pending" if req.method == "INVITE"
                                               else "Call/Transaction Does Not Exist"), now)
            return
        self.post(self._relay_request, leg_index, txn)

    async def _relay_request(self, from_leg: int, txn: ServerTransaction) -> None:
        """re-INVITE (hold, codec change), UPDATE, INFO (DTMF), MESSAGE...: pass to the other leg."""
        req = txn.request
        to_leg = 1 - from_leg
        dialog = self.dialog_a if to_leg == 0 else (self.leg_b.dialog if self.leg_b else None)
        if dialog is None or self.state != "connected":
            self.engine.layer.respond(txn, create_response(req, 481, "Call/Transaction Does Not Exist"),
                                      self.engine.now())
            return
        body = req.body
        if body and self.media is not None and req.content_type == "application/sdp":
            try:
                body = await self.media.anchor(from_leg, body)
            except SdpError:
                self.engine.layer.respond(txn, create_response(req, 488, "Not Acceptable Here"),
                                          self.engine.now())
                return
        (self.dialog_a if from_leg == 0 else self.leg_b.dialog).update_target(req)  # type: ignore[union-attr]
        extra = [(n, v) for n, v in req.headers if n.lower() in ("event", "subscription-state", "info-package")]
        transport = self._transport(to_leg)
        out = dialog.create_request(req.method, self.engine.via(transport), contact=self.engine.contact(transport),
                                    body=body,
                                    content_type=req.headers.get("content-type"), extra=extra)
        self.engine.send_in_dialog(out, dialog, _Relay(self, txn, to_leg), self._addr(to_leg), transport)

    async def relayed_response(self, relay: _Relay, resp: Response | None, txn: ClientTransaction) -> None:
        server_txn = relay.server_txn
        req = server_txn.request
        now = self.engine.now()
        if resp is None:
            self.engine.layer.respond(server_txn, create_response(req, 408, "Request Timeout"), now)
            return
        if resp.status == 100:
            return
        body = resp.body
        if body and self.media is not None and resp.content_type == "application/sdp":
            try:
                body = await self.media.anchor(relay.to_leg, body)
            except SdpError:
                body = b""
        if req.method == "INVITE" and 200 <= resp.status < 300:
            dialog = self.dialog_a if relay.to_leg == 0 else self.leg_b.dialog  # type: ignore[union-attr]
            dialog.update_target(resp)  # type: ignore[union-attr]
            transport = self._transport(relay.to_leg)
            ack = dialog.create_request("ACK", self.engine.via(transport), cseq=resp.cseq[0])  # type: ignore[union-attr]
            self.engine.send_ack(ack, dialog, self._addr(relay.to_leg), transport)  # type: ignore[arg-type]
        contact = self.engine.contact(self._transport(1 - relay.to_leg))
        out = create_response(req, resp.status, resp.reason, headers=[("Contact", contact)]
                              if req.method == "INVITE" else None, body=body,
                              content_type=resp.headers.get("content-type") if body else None)
        self.engine.layer.respond(server_txn, out, now)

    # ---- ending ---------------------------------------------------------------------------------------
    def _hangup_by_us(self) -> None:
        if self.state in ("connected", "answered") or (self.answered_by_us and self.state == "dialing"):
            self._end(bye_a=True, bye_b=True)
        elif self.state in ("routing", "dialing", "new"):
            self.fail_a(480, "Temporarily Unavailable")

    def _end(self, *, bye_a: bool, bye_b: bool) -> None:
        self.state = "ending"
        self._cancel_answer_timer()
        for fork in self.forks:
            if not fork.done:
                self._cancel_leg(fork)  # ZERO answered by us hung up while ONE was still ringing
        self._stop_playing()
        leg, self.pending_ack = self.pending_ack, None
        if leg is not None:
            self._send_ack(leg)  # a 2xx is ACKed before its dialog is ended
        if self.ack_timer is not None:
            self.ack_timer.cancel()
            self.ack_timer = None
        if bye_a and self.dialog_a is not None:
            self._send_bye(self.dialog_a, 0)
        if bye_b and self.leg_b is not None and self.leg_b.dialog is not None:
            self._send_bye(self.leg_b.dialog, 1)
        if self.byes_pending == 0:
            self._close("hangup")

    def _send_bye(self, dialog: Dialog, leg_index: int) -> None:
        self.byes_pending += 1
        transport = self._transport(leg_index)
        bye = dialog.create_request("BYE", self.engine.via(transport))
        self.engine.send_in_dialog(bye, dialog, _Bye(self), self._addr(leg_index), transport)

    def _transport(self, leg_index: int) -> str:
        if leg_index == 0 or self.leg_b is None:
            return self.transport
        return self.leg_b.transport

    def _addr(self, leg_index: int) -> Address:
        if leg_index == 0 or self.leg_b is None:
            return self.source
        return self.leg_b.destination

    def bye_done(self) -> None:
        self.byes_pending -= 1
        if self.byes_pending <= 0 and self.state == "ending":
            self._close("hangup")

    def _bye_leg(self, leg: OutboundLeg) -> None:
        if leg.dialog is not None:
            bye = leg.dialog.create_request("BYE", self.engine.via(leg.transport))
            self.engine.send_in_dialog(bye, leg.dialog, None, leg.destination, leg.transport)

    def _ack_and_bye(self, leg: OutboundLeg, resp: Response) -> None:
        dialog = Dialog.as_uac(leg.invite, resp)
        self._send_ack(leg, dialog=dialog)
        bye = dialog.create_request("BYE", self.engine.via(leg.transport))
        self.engine.send_in_dialog(bye, dialog, None, leg.destination, leg.transport)

    def _send_ack(self, leg: OutboundLeg, *, dialog: Dialog | None = None, body: bytes = b"") -> None:
        """ACK a 2xx on channel ONE; kept on the leg so a retransmitted 2xx gets the same ACK."""
        d = dialog or leg.dialog
        assert d is not None
        ack = d.create_request("ACK", self.engine.via(leg.transport), cseq=leg.invite.cseq[0], body=body)
        leg.ack = ack
        self.engine.send_ack(ack, d, leg.destination, leg.transport)

    def _cancel_leg(self, leg: OutboundLeg) -> None:
        leg.cancelled = True
        if leg.done:
            return
        if leg.provisional:
            self._send_cancel(leg)
        else:
            leg.cancel_pending = True  # RFC 3261 9.1: CANCEL only after a provisional response

    def _send_cancel(self, leg: OutboundLeg) -> None:
        leg.cancel_pending = False
        inv = leg.invite
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
        cancel = Request("CANCEL", inv.uri, h)
        self.engine.send_request(cancel, leg.destination, None, leg.transport)

    def _cancel_answer_timer(self) -> None:
        if self.answer_timer is not None:
            self.answer_timer.cancel()
            self.answer_timer = None

    def _internal_failure(self) -> None:
        try:
            if self.state in ("new", "routing", "dialing"):
                self.fail_a(500, "Server Internal Error")
            elif self.state in ("connected", "answered"):
                self._end(bye_a=True, bye_b=True)
        except (SipError, RuntimeError):
            self._close("internal error")

    def _close(self, reason: str) -> None:
        if self.state == "closed":
            return
        self.state = "closed"
        self._cancel_answer_timer()
        self._stop_playing()
        if self.ack_timer is not None:
            self.ack_timer.cancel()
        media_stats = {}
        if self.media is not None:
            packets = getattr(self.media, "packets", None)
            if packets is not None:
                media_stats = {"rtp_in": packets[0], "rtp_out": packets[1]}
            self.media.close()
        self.engine.bus.emit("closed", call=self.id, reason=reason, **media_stats)
        self.engine.forget(self)
