"""One line's registration as a sans-IO state machine (RFC 3261 section 10.2, as a registering UA).

Shaped like the transaction layer: every input carries `now` (seconds on the caller's monotonic
clock) and returns a list of actions (`SendRequest`, `SetTimer`, `CancelTimer`, `Emit`); the machine
never reads a clock, touches a socket or sleeps. `runtime/lines/client.py` runs it on asyncio.

The states are the ones an operator knows from FreeSWITCH's `sofia status gateway` and Asterisk's
`pjsip show registrations`:

    state            meaning                                              carries calls
    unregistered     not started, or stopped and un-bound                 no
    trying           a REGISTER is on its way (first one, or a retry)     while an old grant lasts
    registered       the provider granted our binding; refreshes keep it  yes
    failed_waiting   the last attempt failed; retrying after a backoff    while an old grant lasts
    rejected         the provider refuses our credentials (or realm);      no
                     retrying slowly, so as not to trip its fail2ban
    expired          our grant ran out before a refresh succeeded         no
    unregistering    REGISTER Expires: 0 on its way (stop, removal, reload) no
    not_registering  an IP-authenticated trunk: nothing to register       yes

Every transition emits `line_state` (line, state, previous, code, reason); entering `registered`
also emits `line_registered`, a failure `line_register_failed` (with retry_in and state), the end
of an un-registration `line_unregistered`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from ..sip.digest import Challenge, DigestClient, DigestError, select_challenge
from ..sip.errors import SipSyntaxError
from ..sip.message import Headers, Request, Response
from ..sip.transaction import new_branch, new_tag, token_hex
from ..sip.uri import SipUri, unescape

log = logging.getLogger("callflow.lines")


class LineState(Enum):
    UNREGISTERED = "unregistered"
    TRYING = "trying"
    REGISTERED = "registered"
    FAILED_WAITING = "failed_waiting"
    REJECTED = "rejected"
    EXPIRED = "expired"
    UNREGISTERING = "unregistering"
    NOT_REGISTERING = "not_registering"


S = LineState
# Which state may follow which. Anything else is a bug in this module and raises LineStateError.
TRANSITIONS: dict[LineState, frozenset[LineState]] = {
    S.UNREGISTERED:    frozenset({S.TRYING, S.NOT_REGISTERING}),
    S.TRYING:          frozenset({S.REGISTERED, S.FAILED_WAITING, S.REJECTED, S.EXPIRED, S.UNREGISTERING,
                                  S.UNREGISTERED}),
    # a refresh keeps `registered` while it is on its way; a keepalive that finds the provider
    # gone moves to `trying` (re-register at once)
    # ... and a node that lost the line's lease stops at once, without un-registering (lease.py)
    S.REGISTERED:      frozenset({S.TRYING, S.FAILED_WAITING, S.REJECTED, S.EXPIRED, S.UNREGISTERING,
                                  S.UNREGISTERED}),
    S.FAILED_WAITING:  frozenset({S.TRYING, S.EXPIRED, S.UNREGISTERING, S.UNREGISTERED}),
    S.REJECTED:        frozenset({S.TRYING, S.UNREGISTERED}),
    # a refresh sent before the grant ran out may still be answered
    S.EXPIRED:         frozenset({S.TRYING, S.REGISTERED, S.FAILED_WAITING, S.REJECTED, S.UNREGISTERING,
                                  S.UNREGISTERED}),
    S.UNREGISTERING:   frozenset({S.UNREGISTERED}),
    S.NOT_REGISTERING: frozenset({S.UNREGISTERED}),
}

# ---- tuning (seconds) ----------------------------------------------------------------------------
BACKOFF_FIRST = 2.0        # first retry after a failure; doubles per failure
BACKOFF_MAX = 300.0        # ... up to this
JITTER = 0.2               # every wait is spread by +-20 %, so lines do not retry in lock-step
REJECTED_RETRY = 600.0     # credentials refused: retry this slowly (a provider's fail2ban typically
                           # bans after 5 failures in 10 min)
REJECT_AFTER = 2           # consecutive refusals of our credentials before `rejected`
REFRESH_MARGIN = 5.0       # refresh this long before the grant ends (pjsip's 5 s), ...
REFRESH_MARGIN_SHARE = 0.1  # ... or 10 % of a long grant (at most MAX_MARGIN) ...
MAX_MARGIN = 60.0
SHORT_GRANT = 10           # ... and at half of a grant this short
MIN_REFRESH = 1.0          # never refresh more often than this, whatever the grant
UNREGISTER_TIMEOUT = 4.0   # an un-registration gives up after this (a shutdown must not hang)
KEEPALIVE_EVERY = 30.0     # OPTIONS to the provider while registered: holds NAT bindings (RFC 5626
                           # section 4.4 asks for keepalives well inside a NAT's 60 s UDP timeout) and
                           # finds an outage before the next refresh would
TIMER_F = 32.0             # RFC 3261 64*T1: a transaction timeout earlier than this was the transport


class LineStateError(RuntimeError):
    """A transition the table does not allow: a bug in this module, never the provider's doing."""


@dataclass(frozen=True, slots=True)
class LineConfig:
    """The SDK's AddLine arguments; equal configs mean the line need not re-register on reload."""

    name: str
    server_host: str
    server_port: int = 5060
    username: str = ""
    password: str = ""
    auth_username: str | None = None
    realm: str | None = None
    transport: str = "udp"
    register_every: int | None = 300
    numbers: tuple[str, ...] = ()
    display: str | None = None
    caller_id: str | None = None
    outbound_proxy: str | None = None
    codecs: tuple[str, ...] = field(default=())
    # other source addresses of the provider's calls (IPs or CIDR networks), any port
    trust: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LocalAddress:
    """Where the provider reaches us: `via` is the Via value without its branch
    ("SIP/2.0/UDP 192.0.2.1:5060;rport"), `contact_uri` the URI we register."""

    via: str
    contact_uri: str
    user_agent: str | None = None  # no User-Agent header unless the operator sets one (issue 9)


# ---- actions ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SendRequest:
    """Send `request` to the provider in a new client transaction; `purpose` is "register" or
    "keepalive"."""

    request: Request
    purpose: str


@dataclass(frozen=True, slots=True)
class SetTimer:
    """(Re)arm the timer `name` to call `LineMachine.timer(name, now)` at `at`."""

    name: str
    at: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    name: str


@dataclass(frozen=True, slots=True)
class Emit:
    """An operator event for the engine's bus."""

    name: str
    fields: dict[str, object]


Action = SendRequest | SetTimer | CancelTimer | Emit

# timer names
REGISTER_TIMER = "register"      # refresh or retry
EXPIRY_TIMER = "expiry"          # our grant ends
KEEPALIVE_TIMER = "keepalive"
GIVE_UP_TIMER = "give_up"        # the un-registration's bound


def refresh_delay(granted: float) -> float:
    """Seconds after a grant of `granted` seconds at which to refresh it: 5 s (or 10 %, at most 60 s)
    before it ends, half-way through a grant of 10 s or less, never sooner than MIN_REFRESH.
    A 30 s grant refreshes at 25 s, 3600 s at 3540 s."""
    if granted <= SHORT_GRANT:
        return max(MIN_REFRESH, granted / 2)
    margin = min(MAX_MARGIN, max(REFRESH_MARGIN, granted * REFRESH_MARGIN_SHARE))
    return max(MIN_REFRESH, granted - margin)


def same_uri(a: SipUri, b: SipUri) -> bool:
    """URI equality as RFC 3261 section 19.1.4 defines it for sip/sips URIs.

    Scheme and host compare case-insensitively, user and password case-sensitively after
    %-unescaping; a port present in one and absent in the other differs (5060 is not implied);
    user, ttl, method, maddr and transport must match when either has them; any other parameter
    only when both have it; headers must all match."""
    if a.scheme.lower() != b.scheme.lower():
        return False
    if (unescape(a.user) if a.user is not None else None) != (unescape(b.user) if b.user is not None else None):
        return False
    if a.password != b.password:
        return False
    if unescape(a.host).lower() != unescape(b.host).lower() or a.port != b.port:
        return False
    pa = {k.lower(): v for k, v in a.params.items()}
    pb = {k.lower(): v for k, v in b.params.items()}
    for name in ("user", "ttl", "method", "maddr", "transport"):
        if (name in pa) != (name in pb):
            return False
    for name in pa.keys() & pb.keys():
        va, vb = pa[name], pb[name]
        if (va or "").lower() != (vb or "").lower():
            return False
    if (a.headers or None) != (b.headers or None):
        return False
    return True


class LineMachine:
    """One line's registration; see the module docstring for the states.

    `rng` returns floats in [0, 1) for the jitter (tests pass a fixed one). `keepalive_every` is the
    OPTIONS interval while registered (None: no keepalives).
    """

    def __init__(self, config: LineConfig, *, rng: Callable[[], float] = random.random,
                 keepalive_every: float | None = KEEPALIVE_EVERY) -> None:
        self.config = config
        self.rng = rng
        self.keepalive_every = keepalive_every
        self.state = S.UNREGISTERED
        self.code: int | None = None       # the last SIP status that moved us (0: no SIP answer)
        self.reason = ""
        self.local: LocalAddress | None = None
        self.call_id = f"{token_hex(8)}@callflow"
        self.from_tag = new_tag()
        self.cseq = 0
        self.auth = DigestClient(config.auth_username or config.username, config.password)
        self.requested = config.register_every or 300   # what we ask for; 423 raises it for good
        self.granted: int | None = None
        self.expires_at: float | None = None    # end of our current grant, None when we hold none
        self.retry_at: float | None = None
        self.failures = 0           # consecutive failed attempts (backoff)
        self.refusals = 0           # consecutive refusals of our credentials
        self.stopping = False
        self._pending: int | None = None       # CSeq of the REGISTER we wait for
        self._pending_sent_at = 0.0
        self._pending_expires = 0
        self._answered = False     # the pending REGISTER answers a challenge of this exchange
        self._challenge: tuple[str, Challenge] | None = None  # (header name, challenge) to reuse
        self._raised_to: int | None = None     # Min-Expires we just raised to (a 2nd 423 fails)
        self._keepalive: int | None = None     # CSeq of the OPTIONS we wait for
        self._keepalive_sent_at = 0.0

    # ---- what the engine asks --------------------------------------------------------------------
    @property
    def binding_live(self) -> bool:
        """We hold a grant that has not lapsed (the expiry timer clears it)."""
        return self.expires_at is not None

    @property
    def carries_calls(self) -> bool:
        """Whether calls may go out through this line now: registered, an IP trunk, or a failed
        refresh whose earlier grant still stands at the provider."""
        if self.state in (S.REGISTERED, S.NOT_REGISTERING):
            return True
        return self.state in (S.TRYING, S.FAILED_WAITING) and self.binding_live

    @property
    def done(self) -> bool:
        """Stopped, and nothing more to send or wait for."""
        return self.stopping and self.state is S.UNREGISTERED

    # ---- inputs ----------------------------------------------------------------------------------
    def start(self, now: float, local: LocalAddress) -> list[Action]:
        """Begin: register (or, for an IP-authenticated trunk, settle in `not_registering`)."""
        self.local = local
        out: list[Action] = []
        if self.stopping or self.state is not S.UNREGISTERED:
            return out  # stopped before it began, or started already
        if not self.config.register_every:
            self._move(out, S.NOT_REGISTERING, None, "IP-authenticated trunk: nothing to register")
            return out
        self._move(out, S.TRYING, None, "registering")
        self._send_register(out, now, self.requested)
        return out

    def unresolved(self, now: float, reason: str) -> list[Action]:
        """The provider's name did not resolve: a failure like any other, retried with backoff."""
        out: list[Action] = []
        if self.state is not S.TRYING:
            self._move(out, S.TRYING, self.code, "resolving the provider's address")
        self._fail(out, now, 0, reason)
        return out

    def stop(self, now: float, *, unregister: bool = True) -> list[Action]:
        """Stop refreshing; un-register (Expires: 0, answering a challenge) when the provider may
        hold our binding. Ends in `unregistered` within UNREGISTER_TIMEOUT, with `line_unregistered`.
        `unregister=False` (a node that lost the line's lease, runtime/lines/lease.py) stops at once
        and leaves the provider's binding alone: it is the new holder's too (same Contact)."""
        out: list[Action] = []
        if self.stopping:
            return out
        self.stopping = True
        for name in (REGISTER_TIMER, EXPIRY_TIMER, KEEPALIVE_TIMER):
            out.append(CancelTimer(name))
        self._keepalive = None
        may_hold = self.binding_live or (self._pending is not None and self.state is not S.REJECTED)
        if unregister and may_hold and S.UNREGISTERING in TRANSITIONS[self.state] and self.local is not None:
            self._move(out, S.UNREGISTERING, None, "un-registering")
            out.append(SetTimer(GIVE_UP_TIMER, now + UNREGISTER_TIMEOUT))
            self._send_register(out, now, 0)
            return out
        self._pending = None
        self.expires_at = None  # not ours to count on any more (a lease lost: another node's now)
        if self.state is not S.UNREGISTERED:
            self._move(out, S.UNREGISTERED, None, "stopped" if unregister else "stopped without un-registering")
        return out

    def response(self, resp: Response, now: float) -> list[Action]:
        """A final or provisional response to one of our requests."""
        out: list[Action] = []
        try:
            number, method = resp.cseq
        except (SipSyntaxError, ValueError):
            log.warning("event=line_response_ignored line=%s reason=\"unreadable CSeq\"", self.config.name)
            return out
        if method == "OPTIONS" and number == self._keepalive:
            if resp.status >= 200:
                self._keepalive = None  # any final answer means the provider is there
            return out
        if method != "REGISTER" or number != self._pending:
            log.debug("line=%s ignores a %s to %s %s (waiting for %s)", self.config.name, resp.status, number,
                      method, self._pending)
            return out
        status = resp.status
        if status < 200:
            return out
        self._pending = None
        if self.state is S.UNREGISTERING:
            self._unregister_answer(out, resp, now)
            return out
        if status in (401, 407):
            self._challenged(out, resp, now)
        elif status == 423:
            self._too_brief(out, resp, now)
        elif 200 <= status < 300:
            self._granted(out, resp, now)
        elif status == 403:
            self._refused(out, now, status, resp.reason or "Forbidden")
        else:
            retry_after = _retry_after(resp) if status in (503, 500, 480, 486, 600, 603) else None
            self._fail(out, now, status, resp.reason or "Failed", at_least=retry_after)
        return out

    def timeout(self, request: Request, now: float, *, transport_failure: bool | None = None) -> list[Action]:
        """Our request's transaction ended without a final response: timer F (408), or the transport
        failed (connection refused, ICMP unreachable: 503 at once, RFC 3261 8.1.3.1). Without
        `transport_failure`, a timeout sooner than timer F is taken for a transport failure."""
        out: list[Action] = []
        number, method = request.cseq
        if transport_failure is None:
            transport_failure = now - (self._pending_sent_at if method == "REGISTER"
                                       else self._keepalive_sent_at) < TIMER_F - 1
        code, reason = ((503, "Service Unavailable (provider unreachable: connection refused or ICMP)")
                        if transport_failure else (408, "Request Timeout (the provider did not answer)"))
        if method == "OPTIONS":
            if number != self._keepalive:
                return out
            self._keepalive = None
            if self.state is S.REGISTERED:
                # the provider went away: re-register now rather than at the next refresh
                self._move(out, S.TRYING, code, f"keepalive unanswered: {reason}")
                out.append(CancelTimer(REGISTER_TIMER))
                self._send_register(out, now, self.requested)
            return out
        if number != self._pending:
            return out
        self._pending = None
        if self.state is S.UNREGISTERING:
            self._unregistered(out, code, reason)
            return out
        self._fail(out, now, code, reason)
        return out

    def timer(self, name: str, now: float) -> list[Action]:
        """A timer this machine set has come due."""
        out: list[Action] = []
        if name == REGISTER_TIMER:
            if self.stopping:
                return out
            self.retry_at = None
            if self.state not in (S.REGISTERED, S.TRYING):
                self._move(out, S.TRYING, self.code, "retrying" if self.failures else "registering")
            self._send_register(out, now, self.requested)
        elif name == EXPIRY_TIMER:
            if self.expires_at is None or now < self.expires_at - 1e-6:
                return out
            self.expires_at = None
            if self.state in (S.REGISTERED, S.TRYING, S.FAILED_WAITING):
                self._move(out, S.EXPIRED, self.code, f"our registration lapsed ({self.reason})"
                           if self.state is not S.REGISTERED else "our registration lapsed before a refresh "
                           "was answered")
        elif name == KEEPALIVE_TIMER:
            if self.state is not S.REGISTERED or self.keepalive_every is None or self.stopping:
                return out
            if self._keepalive is None:
                self._send_keepalive(out, now)
            out.append(SetTimer(KEEPALIVE_TIMER, now + self.keepalive_every))
        elif name == GIVE_UP_TIMER:
            if self.state is S.UNREGISTERING:
                self._pending = None
                self._unregistered(out, 408, f"gave up after {UNREGISTER_TIMEOUT:.0f}s without an answer")
        else:
            raise LineStateError(f"line {self.config.name}: no timer named {name!r}")
        return out

    # ---- responses -------------------------------------------------------------------------------
    def _granted(self, out: list[Action], resp: Response, now: float) -> None:
        granted = self._granted_expires(resp)
        if granted <= 0:
            self._fail(out, now, resp.status, "the provider's 200 does not keep our binding")
            return
        self._raised_to = None
        self.failures = 0
        self.refusals = 0
        self.granted = granted
        self.expires_at = now + granted
        out.append(SetTimer(EXPIRY_TIMER, self.expires_at))
        self._schedule(out, now + refresh_delay(granted) * (1 - JITTER / 4 * self.rng()))
        if self.state is not S.REGISTERED:
            self._move(out, S.REGISTERED, resp.status, resp.reason or "OK", expires=granted)
            out.append(Emit("line_registered", {"line": self.config.name, "code": resp.status,
                                                "reason": resp.reason, "expires": granted}))
            if self.keepalive_every is not None:
                out.append(SetTimer(KEEPALIVE_TIMER, now + self.keepalive_every))
        else:
            self.code, self.reason = resp.status, resp.reason or "OK"

    def _granted_expires(self, resp: Response) -> int:
        """Seconds the provider granted our binding: our Contact's expires among all the bindings the
        200 lists (found by RFC 3261 19.1.4 URI equality, never another binding of the account),
        else the Expires header, else what we asked for."""
        assert self.local is not None
        try:
            mine = SipUri.parse(self.local.contact_uri)
            contacts = resp.contacts
        except SipSyntaxError:
            contacts = []
            mine = None
        for contact in contacts:
            try:
                same = mine is not None and same_uri(contact.uri, mine)
            except SipSyntaxError:
                continue
            if same:
                value = contact.params.get("expires")
                if value is not None and value.strip().isdigit():
                    return int(value)
                break
        try:
            header = resp.expires
        except SipSyntaxError:
            header = None
        return header if header is not None else self._pending_expires

    def _challenged(self, out: list[Action], resp: Response, now: float) -> None:
        status = resp.status
        header = "www-authenticate" if status == 401 else "proxy-authenticate"
        challenge = select_challenge(resp.headers.get_all(header))
        if challenge is None:
            self._refused(out, now, status, "the provider's challenge offers nothing we can answer")
            return
        realm = self.config.realm
        if realm and challenge.realm != realm:
            # never hand our credentials to a realm the operator did not name
            self._refused(out, now, status, f"challenged for realm {challenge.realm!r}, the line's realm "
                                            f"is {realm!r}", credentials=False)
            return
        if self._answered and not challenge.stale:
            self._refused(out, now, status, resp.reason or "Unauthorized")
            return
        name = "Authorization" if status == 401 else "Proxy-Authorization"
        self._challenge = (name, challenge)
        try:
            self._send_register(out, now, self._pending_expires, answer=True)
        except DigestError as exc:
            self._refused(out, now, status, f"cannot answer the challenge: {exc}")

    def _too_brief(self, out: list[Action], resp: Response, now: float) -> None:
        """423 Interval Too Brief (RFC 3261 10.2.8): ask again for Min-Expires, and keep asking for it."""
        value = (resp.headers.get("min-expires") or "").strip()
        minimum = int(value) if value.isdigit() else None
        if minimum is None or minimum <= self._pending_expires or minimum == self._raised_to:
            self._fail(out, now, 423, f"{resp.reason or 'Interval Too Brief'} (Min-Expires "
                                      f"{value or 'missing'}, we asked for {self._pending_expires})")
            return
        self._raised_to = minimum
        self.requested = minimum
        self._send_register(out, now, minimum)

    def _unregister_answer(self, out: list[Action], resp: Response, now: float) -> None:
        status = resp.status
        if status in (401, 407) and not self._answered:
            header = "www-authenticate" if status == 401 else "proxy-authenticate"
            challenge = select_challenge(resp.headers.get_all(header))
            realm_ok = challenge is not None and (not self.config.realm or challenge.realm == self.config.realm)
            if challenge is not None and realm_ok:
                self._challenge = ("Authorization" if status == 401 else "Proxy-Authorization", challenge)
                try:
                    self._send_register(out, now, 0, answer=True)
                    return
                except DigestError:
                    pass
        self._unregistered(out, status, resp.reason or "")

    # ---- outcomes --------------------------------------------------------------------------------
    def _refused(self, out: list[Action], now: float, code: int, reason: str, *, credentials: bool = True) -> None:
        """The provider refused our credentials (a 401/407 to an answer, or 403). Once may be a
        nonce that went stale without saying so; REJECT_AFTER times in a row is `rejected`."""
        self.refusals += 1
        self._challenge = None  # do not send credentials it refused again unasked
        if self.refusals < REJECT_AFTER and credentials:
            self._fail(out, now, code, reason)
            return
        self.failures += 1
        delay = REJECTED_RETRY * (1 + JITTER * (2 * self.rng() - 1))
        self._lose_grant_if_gone(now)
        self._move(out, S.REJECTED, code, reason)
        self._schedule(out, now + delay)
        out.append(Emit("line_register_failed", {
            "line": self.config.name, "code": code, "reason": reason, "retry_in": f"{delay:.0f}s",
            "state": S.REJECTED.value,
            "action": "check the line's username, password and realm; retrying slowly"}))

    def _fail(self, out: list[Action], now: float, code: int, reason: str, *, at_least: float | None = None) -> None:
        """An attempt failed: back off exponentially (with jitter), then try again."""
        self.failures += 1
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** min(self.failures - 1, 16))
        delay *= 1 + JITTER * (2 * self.rng() - 1)
        if at_least is not None:
            delay = max(delay, min(at_least, BACKOFF_MAX * 4))
        if self.expires_at is not None and now + delay > self.expires_at and self.failures == 1:
            # a failed refresh of a live grant: try once more before it lapses
            delay = max(MIN_REFRESH, min(delay, (self.expires_at - now) / 2))
        self._lose_grant_if_gone(now)
        target = S.EXPIRED if self.state is S.EXPIRED else S.FAILED_WAITING
        if target is not self.state:
            self._move(out, target, code, reason)
        else:
            self.code, self.reason = code, reason
        self._schedule(out, now + delay)
        out.append(Emit("line_register_failed", {"line": self.config.name, "code": code, "reason": reason,
                                                 "retry_in": f"{delay:.0f}s", "state": target.value}))

    def _lose_grant_if_gone(self, now: float) -> None:
        if self.expires_at is not None and now >= self.expires_at:
            self.expires_at = None

    def _unregistered(self, out: list[Action], code: int, reason: str) -> None:
        self.expires_at = None
        out.append(CancelTimer(GIVE_UP_TIMER))
        self._move(out, S.UNREGISTERED, code, reason)
        out.append(Emit("line_unregistered", {"line": self.config.name, "code": code, "reason": reason}))

    # ---- sending ---------------------------------------------------------------------------------
    def _schedule(self, out: list[Action], at: float) -> None:
        self.retry_at = at
        out.append(SetTimer(REGISTER_TIMER, at))

    def _send_register(self, out: list[Action], now: float, expires: int, *, answer: bool = False) -> None:
        """A REGISTER for `expires` seconds (0: remove our binding). With `answer` it answers the
        challenge just received; otherwise it reuses the last challenge (RFC 3261 22.3 lets a UA
        send credentials pre-emptively), and a refusal of those counts as a fresh challenge."""
        request = self._register_request(expires)
        if self._challenge is not None:
            name, challenge = self._challenge
            try:
                request.headers.add(name, self.auth.authorize(challenge, "REGISTER", request.uri))
            except DigestError:
                if answer:
                    raise
                self._challenge = None  # the next challenge will say what to answer
        self._answered = answer
        self._pending = self.cseq
        self._pending_sent_at = now
        self._pending_expires = expires
        out.append(SendRequest(request, "register"))

    def _register_request(self, expires: int) -> Request:
        cfg = self.config
        assert self.local is not None
        self.cseq += 1
        host = cfg.server_host if ":" not in cfg.server_host else f"[{cfg.server_host}]"
        server = host if cfg.server_port == 5060 else f"{host}:{cfg.server_port}"
        aor = f"sip:{cfg.username}@{host}"
        h = Headers()
        h.add("Via", f"{self.local.via};branch={new_branch()}")
        h.add("Max-Forwards", "70")
        if cfg.outbound_proxy:
            h.add("Route", f"<sip:{cfg.outbound_proxy};lr>")
        name = f'"{_escape(cfg.display)}" ' if cfg.display else ""
        h.add("From", f"{name}<{aor}>;tag={self.from_tag}")
        h.add("To", f"{name}<{aor}>")
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{self.cseq} REGISTER")
        h.add("Contact", f"<{self.local.contact_uri}>")
        h.add("Expires", str(expires))
        if self.local.user_agent:
            h.add("User-Agent", self.local.user_agent)
        h.add("Content-Length", "0")
        transport = "" if cfg.transport == "udp" else f";transport={cfg.transport}"
        return Request("REGISTER", f"sip:{server}{transport}", h)

    def _send_keepalive(self, out: list[Action], now: float) -> None:
        cfg = self.config
        assert self.local is not None
        self.cseq += 1
        host = cfg.server_host if ":" not in cfg.server_host else f"[{cfg.server_host}]"
        server = host if cfg.server_port == 5060 else f"{host}:{cfg.server_port}"
        h = Headers()
        h.add("Via", f"{self.local.via};branch={new_branch()}")
        h.add("Max-Forwards", "70")
        if cfg.outbound_proxy:
            h.add("Route", f"<sip:{cfg.outbound_proxy};lr>")
        h.add("From", f"<sip:{cfg.username}@{host}>;tag={self.from_tag}")
        h.add("To", f"<sip:{server}>")
        h.add("Call-ID", f"ka-{self.call_id}")
        h.add("CSeq", f"{self.cseq} OPTIONS")
        if self.local.user_agent:
            h.add("User-Agent", self.local.user_agent)
        h.add("Content-Length", "0")
        self._keepalive = self.cseq
        self._keepalive_sent_at = now
        out.append(SendRequest(Request("OPTIONS", f"sip:{server}", h), "keepalive"))

    def _move(self, out: list[Action], to: LineState, code: int | None, reason: str, **extra: object) -> None:
        """Change state as the table allows, and say so."""
        previous = self.state
        if to is not previous and to not in TRANSITIONS[previous]:
            raise LineStateError(f"line {self.config.name}: {previous.value} -> {to.value} is not a transition "
                                 f"of the line state machine ({reason})")
        self.state = to
        self.code, self.reason = code, reason
        if previous is S.REGISTERED:
            out.append(CancelTimer(KEEPALIVE_TIMER))
        out.append(Emit("line_state", {"line": self.config.name, "state": to.value, "previous": previous.value,
                                       "code": code, "reason": reason, **extra}))


def _retry_after(resp: Response) -> float | None:
    value = (resp.headers.get("retry-after") or "").split(";", 1)[0].split("(", 1)[0].strip()
    return float(value) if value.isdigit() else None


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


__all__ = ["Action", "CancelTimer", "Emit", "LineConfig", "LineMachine", "LineState", "LineStateError",
           "LocalAddress", "SendRequest", "SetTimer", "TRANSITIONS", "refresh_delay", "same_uri"]
