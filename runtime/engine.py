"""The engine: the SIP server SDK's model (AddUser, AddLine, RegisterLine, AcceptCallSession and the
OnCallSession... events) on top of the transaction layer.

It decides what each incoming message is for: a REGISTER for the registrar, a new INVITE for a new
call session (after it knows who is calling: a line by its address, a user by digest auth, nobody
else), an in-dialog request for the call that owns the dialog. The routing decision itself belongs to
whoever set `router` (the dialplan).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from .call_table import CallTable
from .calls import CallMachine, CallRunner, CallSession, CallState, Channel, Failure, Leg, Target
from .calls.forks import ALLOW, ForkBuilder
from .calls.ids import new_call_session_id
from .chat import ChatRelay
from .events import EventBus
from .lines import LineClient, LineConfig
from .lines.lease_pump import LeasePump
from .lines.trust import LineTrust
from .media.base import MediaBackend
from .media.prompts import PromptCache
from .media.relay import MediaRelay
from .registrar import LocationStore, Registrar
from .security.auth import Authenticator, AuthOutcome
from .security.edge import EdgeTrust
from .security.flood import FloodGuard
from .sip.errors import SipError
from .sip.message import Refusal, Request, Response, check_request, create_response
from .sip.transaction import (
    Address,
    ClientTransaction,
    Event,
    MessageDiscarded,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    TransactionLayer,
    TransactionTimeout,
    new_tag,
)
from .sip.uri import has_control, unescape
from .transport import ListenSpec, SipEndpoint

log = logging.getLogger("callflow.engine")

LAG_PROBE = 0.1        # seconds between event-loop lag probes
OVERLOAD_LAG = 0.3     # a timer this late means the loop is saturated: shed new calls
CPU_WINDOW = 1.0       # seconds of process CPU time looked at
# bytes queued unread on the SIP sockets (about 500 datagrams, 150-300 ms of work; the buffer is
# 4 MiB): beyond it, and growing, new calls are shed
OVERLOAD_BACKLOG = 1024 * 1024
OVERLOAD_CPU = 0.93    # without a measurable queue: share of one core above which new calls are shed
RECOVER_CPU = 0.80     # ... and below which they are taken again
EXPIRY_SWEEP = 5.0     # seconds between sweeps for lapsed phone registrations
KNOWN_METHODS = frozenset({"INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER", "UPDATE", "INFO",
                           "MESSAGE", "NOTIFY", "REFER", "SUBSCRIBE", "PUBLISH", "PRACK"})


@dataclass(frozen=True, slots=True)
class UserAccount:
    name: str
    password: str
    caller_id: str | None = None
    max_calls: int | None = None
    legacy_digest: bool = False  # may answer digest without qop (RFC 2069 phones); see runtime/security/auth.py


class Engine:
    def __init__(self, *, listen: Address | list[ListenSpec] = ("0.0.0.0", 5060), advertise: str | None = None,
                 realm: str = "callflow", rtp_ports: tuple[int, int] = (20000, 29999),
                 user_agent: str | None = None, media: MediaBackend | None = None,
                 bus: EventBus | None = None, tls: ssl.SSLContext | None = None,
                 client_tls: ssl.SSLContext | None = None,
                 screen: Callable[[Request], Refusal | None] | None = check_request,
                 admission_control: bool = True, digest_algorithms: tuple[str, ...] = ("MD5",),
                 location_store: LocationStore | None = None) -> None:
        if isinstance(listen, tuple):
            listen = [ListenSpec("udp", listen[0], listen[1])]
        self.listen = listen
        host = listen[0].host
        self.advertise = advertise or _advertise_for(host)
        self.port = listen[0].port
        self.ports: dict[str, int] = {}
        self.tls = tls
        self.client_tls = client_tls
        self.admission_control = admission_control
        self.realm = realm
        # None: no Server/User-Agent header, so a scanner is not told which software (and version) to
        # attack; the script's `server { user-agent "..." }` sets one
        self.user_agent = user_agent
        self.bus = bus or EventBus()
        self.layer = TransactionLayer(screen=screen, server_header=user_agent, trying_after_tu=True)
        self.endpoint = SipEndpoint(self.layer, self.on_event)
        self.guard = FloodGuard()  # what a line trusts is let through before it (_admit)
        self.endpoint.admit = self._admit
        self.edges = EdgeTrust()  # edge proxies (--edge): their requests are judged by the phone's address
        self.media: MediaBackend = media or MediaRelay(host if host not in ("", "::") else "0.0.0.0",
                                                       rtp_ports, advertise=self.advertise)
        self.media.dtmf_listener = self._on_dtmf
        self.registrar = Registrar(location_store)
        self.prompts = PromptCache()
        self.users: dict[str, UserAccount] = {}
        self.lines: dict[str, LineClient] = {}
        self.auth = Authenticator(realm, self._password_for, algorithms=digest_algorithms,
                                  legacy_for=self._legacy_for)
        # active calls (closed ones are gone), indexed per user and line for the call limits
        self.calls: CallTable = CallTable()
        # (Call-ID, our tag) -> the call and the channel whose dialog it is
        self.dialogs: dict[tuple[str, str], tuple[CallSession, Channel]] = {}
        self.call_runner = CallRunner(self)
        self.chat = ChatRelay(self)  # MESSAGE outside a dialog (RFC 3428); its `router` is the dialplan's
        self.max_call_duration: float | None = None  # seconds; None: no limit
        self.rtp_timeout: float | None = None        # seconds without RTP either way; None: not checked
        # call limits (the script's `max calls`, set by the dialplan): calls in the whole server, and per
        # line (both directions); None or absent: no limit. Users carry theirs in UserAccount.
        self.max_calls: int | None = None
        self.line_max_calls: dict[str, int | None] = {}
        self.program: object = None
        self.router: Callable[[CallSession], None] = lambda call: call.reject(404, "Not Found (no routing)")
        # a transfer's target, routed as a call from the transferring user (the dialplan sets it)
        self.transfer_router: Callable[[CallMachine, str, str], tuple[list[Target], Failure | None]] = \
            lambda call, user, target: ([], Failure(404, "Not Found (no routing)"))
        self._line_starts: set[asyncio.Task] = set()
        # in a cluster: a line registers only while this node holds its lease (runtime/lines/lease_pump.py),
        # with the edge's address as its Contact (`--line-contact`); None: every line is ours
        self.leases: LeasePump | None = None
        self.line_contact: str | None = None
        self._leaving_lines: set[LineClient] = set()
        self.trust = LineTrust()  # which sources are a line's provider (no auth, no flood guard)
        self.forks = ForkBuilder(self)  # the INVITEs that ring a call's target
        self.overloaded = False
        self._late = False
        self._pressed = False
        self._backlog = 0
        self._cpu_window: deque[tuple[float, float]] = deque()
        self._lag_timer: asyncio.TimerHandle | None = None
        self._expiry_timer: asyncio.TimerHandle | None = None

    # ---- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        if self.client_tls is not None:
            self.endpoint.set_client_tls(self.client_tls)
        for spec in self.listen:
            local = await self.endpoint.listen(spec, self.tls)
            self.ports.setdefault(spec.transport, local[1])
            log.info("event=listening transport=%s address=%s:%s advertise=%s", spec.transport, local[0], local[1],
                     self.advertise)
        self.port = self.ports.get("udp") or next(iter(self.ports.values()))
        self.layer.tcp_for_large = "tcp" in self.ports
        if self.admission_control:
            self._probe_lag(self.now())
        self._expiry_timer = self.endpoint.loop.call_later(EXPIRY_SWEEP, self._expire_registrations)

    async def stop(self) -> None:
        """End the calls (BYE, CANCEL or 503 as their state needs), unregister the lines, close."""
        for call in list(self.calls.values()):
            call.hangup()
        for _ in range(40):  # bounded: a peer that never answers its BYE does not hold up a shutdown
            if not self.calls:
                break
            await asyncio.sleep(0.05)
        await self.call_runner.settle_writes()  # recordings of the calls just ended (bounded)
        for line in self.lines.values():
            line.stop()
        self.endpoint.pump()
        # the providers confirm the un-registrations (a challenge round trip); each line gives up by
        # itself after a bounded time
        leaving = [*self.lines.values(), *self._leaving_lines]  # removed or replaced a moment ago too
        if leaving:
            await asyncio.gather(*(line.wait_stopped() for line in leaving))
        if self._lag_timer is not None:
            self._lag_timer.cancel()
        self.call_runner.close()
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
        self.endpoint.close()
        await self.media.close()

    def now(self) -> float:
        return self.endpoint.loop.time()

    def _probe_lag(self, expected: float) -> None:
        """Admission control (RFC 3261 21.5.4 503 + Retry-After): new calls are shed while the
        process is saturated, so the calls already up (and their retransmissions) are not drowned.

        Saturation is work arriving faster than it is done. The direct sign is the kernel's receive
        queue on our SIP sockets growing (a busy loop keeps its timers nearly on time while
        datagrams pile up unread): shed when it holds over OVERLOAD_BACKLOG at two probes in a row
        without draining between them, or over twice that at once.
        The other is the event loop running a timer far too late (twice in a row, or badly once;
        one late timer can be the machine descheduling us). Where the queue cannot be measured, a
        process using nearly a whole core over the last second stands in for it. A high CPU figure
        alone is not shed on where the queue is known: bursts reach 95 % for a moment while every
        datagram is still answered within milliseconds."""
        now = self.now()
        lag = now - expected
        late = lag > OVERLOAD_LAG
        cpu = time.process_time()
        window = self._cpu_window
        window.append((now, cpu))
        while len(window) > 2 and now - window[0][0] > CPU_WINDOW:
            window.popleft()
        span = now - window[0][0]
        busy = (cpu - window[0][1]) / span if span >= CPU_WINDOW / 2 else 0.0
        backlog = self.endpoint.receive_backlog()
        if backlog is None:
            pressed, calm = busy > OVERLOAD_CPU, busy < RECOVER_CPU
            pressed_before = pressed
        else:
            # over the limit and not draining since the last probe (a burst drains by itself), or
            # so far over it that the buffer is close to dropping datagrams
            pressed = backlog > OVERLOAD_BACKLOG
            calm = backlog < OVERLOAD_BACKLOG // 8
            pressed_before = (self._pressed and backlog >= self._backlog) or backlog > 2 * OVERLOAD_BACKLOG
            self._backlog = backlog
        saturated = (late and (self._late or lag > 3 * OVERLOAD_LAG)) or (pressed and pressed_before)
        if saturated and not self.overloaded:
            self.overloaded = True
            log.warning("event=overload lag_ms=%d cpu=%.0f%% backlog_kb=%s action=%s", lag * 1000, busy * 100,
                        "-" if backlog is None else backlog // 1024, '"new calls get 503"')
        elif self.overloaded and lag < OVERLOAD_LAG / 4 and calm:
            self.overloaded = False
            log.warning("event=overload_over lag_ms=%d cpu=%.0f%% backlog_kb=%s", lag * 1000, busy * 100,
                        "-" if backlog is None else backlog // 1024)
        self._late = late
        self._pressed = pressed
        due = now + LAG_PROBE
        self._lag_timer = self.endpoint.loop.call_at(due, self._probe_lag, due)

    # ---- the SDK facade ----------------------------------------------------------------------------
    def add_user(self, name: str, password: str, caller_id: str | None = None,
                 max_calls: int | None = None, legacy_digest: bool = False) -> None:
        self.users[name] = UserAccount(name, password, caller_id, max_calls, legacy_digest)

    def remove_user(self, name: str) -> None:
        """The user goes, and so do its phones' registrations."""
        self.users.pop(name, None)
        self.registrar.drop_user(name)
        self.auth.guard.forget_user(name)

    def add_line(self, config: LineConfig) -> LineClient:
        """Add (or replace) a line; an unchanged config keeps its registration untouched."""
        old = self.lines.get(config.name)
        if old is not None:
            if old.config == config:
                return old
            if replace(old.config, trust=config.trust) == config:
                old.config = config  # only the trusted sources changed: keep the registration
                self.index_lines()
                return old
            old.stop()
            self._leave(old)
        # a replaced line registers only once the old one's un-registration is over
        line = LineClient(self, config, predecessor=old)
        self.lines[config.name] = line
        self.index_lines()
        return line

    def _leave(self, line: LineClient) -> None:
        """Keep a stopped line until its un-registration is over, so a shutdown can wait for it."""
        if not line.stopped_done:
            self._leaving_lines.add(line)
            line.on_done(self._leaving_lines.discard)

    def register_line(self, name: str) -> None:
        line = self.lines[name]
        if self.leases is not None:
            self.leases.want(line)
            return
        task = asyncio.get_running_loop().create_task(self._start_line(line))
        self._line_starts.add(task)
        task.add_done_callback(self._line_starts.discard)

    async def _start_line(self, line: LineClient) -> None:
        await line.start()
        self.endpoint.pump()

    def remove_line(self, name: str) -> None:
        line = self.lines.pop(name, None)
        if line is not None:
            line.stop()
            self._leave(line)
            self.index_lines()
            if self.leases is not None:
                self.leases.drop(name)
            self.endpoint.pump()

    # ---- incoming ----------------------------------------------------------------------------------
    def on_event(self, event: Event) -> None:
        if isinstance(event, RequestReceived):
            try:
                self._on_request(event)
            except SipError as exc:
                if event.transaction is not None:
                    self.respond(event.transaction, 400, f"Bad Request ({exc})")
        elif isinstance(event, ResponseReceived):
            txn = event.transaction
            if txn is not None:
                owner = txn.user_data
                if owner is not None:
                    owner.on_response(event.response, txn)  # type: ignore[attr-defined]
            else:
                self._stray_2xx(event.response, event.source)
        elif isinstance(event, TransactionTimeout):
            txn = event.transaction
            if isinstance(txn, ClientTransaction) and txn.user_data is not None:
                owner = txn.user_data
                if event.transport_error and hasattr(owner, "on_unreachable"):
                    owner.on_unreachable(txn)  # RFC 3261 8.1.3.1: a 503, not a 408 after the timeout
                else:
                    owner.on_timeout(txn)  # type: ignore[attr-defined]
        elif isinstance(event, MessageDiscarded):
            log.info("event=message_refused source=%s:%s code=%s reason=%s", event.source[0], event.source[1],
                     event.answered or "dropped", _q(event.reason))

    def _on_request(self, event: RequestReceived) -> None:
        req = event.request
        txn = event.transaction
        method = req.method
        if txn is None:  # an ACK for a 2xx: the dialog's business
            entry = self.dialogs.get((req.call_id, req.to_tag or ""))
            if entry is not None:
                entry[0].ack(entry[1], req)
            return
        to_tag = req.to_tag
        if method == "REGISTER":
            self._on_register(txn)
        elif method == "CANCEL":
            invite_txn = self.layer.find_invite(req)
            call = invite_txn.user_data if invite_txn is not None else None
            if isinstance(call, CallSession):
                call.cancel(txn)
            elif invite_txn is not None:
                self.respond(txn, 200, "OK")  # the call is over; the CANCEL has nothing left to do (9.2)
            else:
                self.respond_once(txn, 481, "Call/Transaction Does Not Exist")
        # Answers that create no state go once and statelessly: the source may be spoofed, and an
        # INVITE's 481 kept in a transaction was resent until Timer H (11 datagrams for 1)
        elif to_tag:
            entry = self.dialogs.get((req.call_id, to_tag))
            if entry is None:
                self.respond_once(txn, 481, "Call/Transaction Does Not Exist")
            else:
                entry[0].request(entry[1], txn)
        elif method == "INVITE":
            self._on_invite(event, txn)
        elif method == "OPTIONS":
            self.respond_once(txn, 200, "OK", [("Allow", ALLOW), ("Accept", "application/sdp")])
        elif method == "MESSAGE":
            self._on_message(txn)
        elif method in KNOWN_METHODS:
            self.respond_once(txn, 405, "Method Not Allowed", [("Allow", ALLOW)])
        else:
            self.respond_once(txn, 501, "Not Implemented", [("Allow", ALLOW)])

    def _on_register(self, txn: ServerTransaction) -> None:
        req = txn.request
        now = self.now()
        ip, phone_port = self.edges.client_address(txn.peer[0], txn.peer[1], req)  # behind an edge: the phone's
        outcome = self.auth.authenticate(req, ip, now)
        if outcome.user is None:
            self._refused(txn, outcome)
            return
        user = outcome.user
        aor_user = req.to.uri.user
        if aor_user is not None and unescape(aor_user) != user:
            self.respond(txn, 403, "Forbidden (authenticated user does not own that address)")
            self.bus.emit("user_register_failed", user=aor_user, ip=ip, reason="auth user mismatch")
            return
        resp, added, removed = self.registrar.register(user, req, txn.peer, txn.transport, now)
        self.layer.respond(txn, resp, now)
        if added:
            granted = {b.contact: round(b.expires_at - now) for b in self.registrar.lookup(user, now)}
        for contact in added:
            self.bus.emit("user_registered", user=user, contact=contact, ip=ip, port=phone_port,
                          expires=granted.get(contact))
        for contact, why in removed:
            self.bus.emit("user_unregistered", user=user, contact=contact, reason=why)

    def _expire_registrations(self) -> None:
        """Phones whose registration lapsed: `user_unregistered` reason=expired, every few seconds."""
        try:
            for binding in self.registrar.expire(self.now()):
                self.bus.emit("user_unregistered", user=binding.user, contact=binding.contact, reason="expired")
        finally:
            self._expiry_timer = self.endpoint.loop.call_later(EXPIRY_SWEEP, self._expire_registrations)

    def client_ip(self, txn: ServerTransaction) -> str:
        """The address a request counts as for the guards and the nonce's scope: its source, or behind
        a configured edge the phone's address the edge reports (runtime/security/edge.py)."""
        return self.edges.client_ip(txn.peer[0], txn.peer[1], txn.request)

    def _refused(self, txn: ServerTransaction, outcome: AuthOutcome) -> None:
        response = outcome.response
        assert response is not None
        ip = self.client_ip(txn)
        # once, statelessly: the source may be spoofed, and a challenge must not be an amplifier
        self.layer.respond_statelessly(txn, response)
        if response.status == 403:
            log.info("event=auth_failed method=%s ip=%s reason=%s", txn.method, ip, _q(outcome.reason))
        for trip in outcome.trips:
            if trip.kind == "source":
                self.bus.emit("attack_detected", kind="brute_force", ip=trip.key,
                              action=f"no password checked from it for {int(trip.seconds)}s")
            else:
                self.bus.emit("attack_detected", kind="brute_force", user=trip.key, ip=ip,
                              action=f"account backed off {int(trip.seconds)}s, except from its known addresses")

    def _on_invite(self, event: RequestReceived, txn: ServerTransaction) -> None:
        req = txn.request
        if self.overloaded:
            self.respond(txn, 503, "Service Unavailable (overloaded)", [("Retry-After", "2")])
            return
        if self.max_calls is not None and len(self.calls) >= self.max_calls:
            self.respond(txn, 503, "Service Unavailable (call limit of the server reached)", [("Retry-After", "5")])
            return
        line = self.trust.line_for_source(txn.peer, txn.transport)
        if line is not None:
            peer_type, peer_name = "LINE", line.config.name
            account = None
            limit = self.line_max_calls.get(peer_name)
            if limit is not None and self.calls_of_line(peer_name) >= limit:
                self.respond(txn, 486, f"Busy Here (line {peer_name} call limit reached)")
                return
        else:
            outcome = self.auth.authenticate(req, self.client_ip(txn), self.now())
            if outcome.user is None:
                # nobody we know: never a call, and certainly never a line (toll fraud)
                self._refused(txn, outcome)
                return
            peer_type, peer_name = "USER", outcome.user
            account = self.users.get(peer_name)
            if account and account.max_calls is not None:
                if self.calls_of_user(peer_name) >= account.max_calls:
                    self.respond(txn, 486, "Busy Here (call limit reached)")
                    return
        if peer_type == "USER":
            # the caller is who authenticated, named by the account's caller-id: not the From header
            caller_id = account.caller_id if account is not None and account.caller_id else peer_name
        else:
            caller_id = unescape(req.from_.uri.user or "")
        dialled = self.dialled_number(req, peer_type, peer_name)
        # %0D%0A in a user part unescapes to a line break: such a number or caller id would become
        # header lines of the INVITE we build, so it is refused here, once and statelessly
        if has_control(dialled):
            self.respond_once(txn, 484, "Address Incomplete (the dialled number holds control characters)")
            return
        if has_control(caller_id):
            self.respond_once(txn, 400, "Bad Request (the From user holds control characters)")
            return
        machine = CallMachine(self, new_call_session_id(), txn, peer_type=peer_type, peer_name=peer_name,
                              caller_id=caller_id, dialled=dialled, program=self.program,
                              now=self.now(), t1=self.layer.t1, t2=self.layer.t2,
                              max_duration=self.max_call_duration, rtp_timeout=self.rtp_timeout)
        if line is not None:
            # a provider that challenges our in-dialog requests gets the line's credentials
            cfg = line.config
            machine.zero.auth = line.auth.__class__(cfg.auth_username or cfg.username, cfg.password)
        call = CallSession(self.call_runner, machine)
        txn.user_data = call
        self.calls[call.id] = call
        self.call_runner.add(call)
        call.start()

    def _on_message(self, txn: ServerTransaction) -> None:
        """Chat (RFC 3428) outside a dialog: from a line (by address) or a user who authenticates
        like a caller (407, then 403); anyone else's MESSAGE is never relayed."""
        if self.overloaded:
            self.respond(txn, 503, "Service Unavailable (overloaded)", [("Retry-After", "2")])
            return
        req = txn.request
        line = self.trust.line_for_source(txn.peer, txn.transport)
        if line is not None:
            sender = unescape(req.from_.uri.user or "")
            if has_control(sender) or has_control(self.dialled_number(req, "LINE", line.config.name)):
                self.respond_once(txn, 400, "Bad Request (the From or To user holds control characters)")
                return
            self.chat.receive(txn, "LINE", line.config.name, sender)
            return
        outcome = self.auth.authenticate(req, self.client_ip(txn), self.now())
        if outcome.user is None:
            self._refused(txn, outcome)
            return
        account = self.users.get(outcome.user)
        sender = account.caller_id if account is not None and account.caller_id else outcome.user
        self.chat.receive(txn, "USER", outcome.user, sender)

    def _on_dtmf(self, call_id: str, leg: int, digit: str, duration: int) -> None:
        """An RFC 4733 digit the media relay saw on a leg of a live call: the call reports and
        delivers it (runtime/calls/dtmf.py)."""
        call = self.calls.get(call_id)
        if call is not None:
            call.digit(Channel(leg), digit, duration)

    def calls_of_user(self, name: str, besides: CallMachine | None = None) -> int:
        """How many active calls user `name` is on, placed or received (its `max calls` counts both),
        not counting `besides` (the call asking to ring it)."""
        return self.calls.count("USER", name, lambda m: m.involves_user(name), besides)

    def calls_of_line(self, name: str, besides: CallMachine | None = None) -> int:
        """How many active calls go through line `name`, in or out: the line is their channel ZERO's
        peer, or channel ONE's (a fork of the current attempt still ringing counts), not counting
        `besides` (the call asking to dial it)."""
        return self.calls.count("LINE", name, lambda m: _on_line(m, name), besides)

    def _admit(self, ip: str, data: bytes, now: float, port: int | None = None, transport: str = "udp") -> bool:
        """The flood and scanner guard, except for what a line trusts (LineTrust.admits)."""
        if self.trust.admits(ip, port, transport):
            return True
        if self.edges:  # from an edge: the phone it reports is judged, the edge itself never held
            client = self.edges.client_ip_in(ip, port, data)
            if client is None:
                return True
            ip = client
        ok, attack = self.guard.admit(ip, data, now)
        if attack is not None:
            action = f"ignored {int(self.guard.block)}s" if attack == "flood" else "dropped, no answer"
            self.bus.emit("attack_detected", kind=attack, ip=ip, action=action)
        return ok

    def index_lines(self) -> None:
        """Lines added, removed or resolved: rebuild the provider-address index (LineTrust.index)."""
        self.trust.index(self.lines.values())

    def dialled_number(self, invite: Request, peer_type: str, peer_name: str | None) -> str:
        """The number a new INVITE or MESSAGE dials (ForkBuilder.dialled_number)."""
        return self.forks.dialled_number(invite, peer_type, peer_name)

    def _stray_2xx(self, resp: Response, source: Address) -> None:
        """A 2xx for an INVITE of ours outside its transaction: a retransmission (our ACK was lost)
        or another fork's answer; the call's machine knows which."""
        entry = self.dialogs.get((resp.call_id, resp.from_tag or ""))
        if entry is not None:  # ONE: our INVITE to a fork; ZERO: a session refresh re-INVITE of ours
            entry[0].stray_2xx(resp)

    # ---- what call sessions use ---------------------------------------------------------------------
    def build_forks(self, call: CallMachine, target: Target, offer: bytes,
                    now: float) -> tuple[list[Leg], Failure | None]:
        """The INVITEs that ring `target` for `call` (CallEnv.build_forks; ForkBuilder builds them)."""
        legs, failure = self.forks.build_forks(call, target, offer, now)
        for leg in legs:  # the call now counts against that user's or line's limit while it rings
            self.calls.note(call, leg.peer_type, leg.peer)
        return legs, failure

    def route(self, call: CallSession) -> None:
        """Hand a new call to whoever set `router` (the dialplan); a router that raises refuses it."""
        try:
            self.router(call)
        except Exception:
            log.exception("call=%s routing failed", call.id)
            call.reject(500, "Server Internal Error (routing)")

    def route_transfer(self, call: CallMachine, user: str, target: str) -> tuple[list[Target], Failure | None]:
        """CallEnv.route_transfer: `transfer_router` (the dialplan) decides; one that raises refuses."""
        try:
            return self.transfer_router(call, user, target)
        except Exception:
            log.exception("call=%s transfer routing failed", call.id)
            return [], Failure(500, "Server Internal Error (routing)")

    def take_over(self, call: CallMachine, user: str, call_id: str, local_tag: str,
                  remote_tag: str) -> tuple[Leg | None, Failure | None]:
        """CallEnv.take_over: the call holding that dialog hands its other party over (attended transfer)."""
        entry = self.dialogs.get((call_id, local_tag))
        if entry is None or entry[0].machine is call:
            return None, Failure(481, "Call/Transaction Does Not Exist (Replaces names no other call)")
        leg, failure = self.call_runner.hand_over(entry[0], entry[1], user, remote_tag)
        if leg is not None:  # the party handed over now counts on this call too
            self.calls.note(call, leg.peer_type, leg.peer)
        return leg, failure

    def send_request(self, req: Request, destination: Address, owner: object,
                     transport: str = "udp") -> ClientTransaction:
        txn = self.layer.send_request(req, destination, self.now(), transport)
        txn.user_data = owner
        return txn

    def respond_once(self, txn: ServerTransaction, code: int, reason: str,
                     headers: list[tuple[str, str]] | None = None) -> None:
        """A final answer sent once and statelessly (RFC 3261 8.2.7): the transaction is forgotten, so
        nothing is resent or held for a request that may come from a spoofed source. For refusals
        and answers that create no state (481, 405, 501, OPTIONS' 200)."""
        self.layer.respond_statelessly(txn, create_response(txn.request, code, reason, to_tag=new_tag(),
                                                            headers=headers))

    def respond(self, txn: ServerTransaction, code: int, reason: str,
                headers: list[tuple[str, str]] | None = None) -> None:
        self.layer.respond(txn, create_response(txn.request, code, reason, to_tag=new_tag(), headers=headers),
                           self.now())

    def pump(self) -> None:
        """Send what the layer queued and hand it what arrived (the call runner's flush)."""
        self.endpoint.pump()

    def port_for(self, transport: str) -> int:
        return self.ports.get(transport, self.port)

    @property
    def advertise_host(self) -> str:
        """The advertised address as a host in a Via or URI: an IPv6 address in brackets (RFC 3261 25.1)."""
        host = self.advertise
        return f"[{host}]" if ":" in host and not host.startswith("[") else host

    def via(self, transport: str = "udp") -> str:
        return f"SIP/2.0/{transport.upper()} {self.advertise_host}:{self.port_for(transport)};rport"

    def contact_uri(self, user: str, transport: str = "udp") -> str:
        uri = f"sip:{user}@{self.advertise_host}:{self.port_for(transport)}"
        return uri if transport == "udp" else f"{uri};transport={transport}"

    def contact(self, transport: str = "udp") -> str:
        return f"<{self.contact_uri('callflow', transport)}>"

    def _password_for(self, user: str) -> str | None:
        account = self.users.get(user)
        return account.password if account else None

    def _legacy_for(self, user: str) -> bool:
        account = self.users.get(user)
        return account is not None and account.legacy_digest


def _on_line(m: CallMachine, name: str) -> bool:
    """Whether line `name` is channel ZERO's or ONE's peer of call `m` (CallMachine.involves_user's
    rule, for a line): a fork of the current attempt still ringing counts."""
    if m.state is CallState.CLOSED:
        return False
    if m.peer_type == "LINE" and m.peer_name == name:
        return True
    one = m.one
    if one is not None:
        return one.peer_type == "LINE" and one.peer == name
    return m.state is CallState.DIALING and any(
        f.peer_type == "LINE" and f.peer == name and not f.settled and f.attempt == m.attempt for f in m.forks)


def _advertise_for(host: str) -> str:
    if host not in ("0.0.0.0", "::", ""):
        return host
    import socket

    # the address the kernel would use towards the outside; connect() on UDP sends nothing
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"


def _q(text: str) -> str:
    from .events import logfmt_value

    return logfmt_value(text)
