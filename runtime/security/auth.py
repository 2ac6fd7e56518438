"""Who is calling: digest authentication of our users, with a guard against password guessing.

REGISTER is challenged with 401/WWW-Authenticate, everything else with 407/Proxy-Authenticate
(RFC 3261 22). Credentials are bound to the request they answer: the digest `uri` must be the
Request-URI, qop=auth is required unless the user is marked `legacy-digest`, and a nonce is good
only for the method and source address it was issued to (so an answer captured on the wire cannot
be replayed from another host, to another number, or for another method).

Guessing is counted per source *and* per account (GuessingGuard). Only a password actually compared
and found wrong counts: a nonce that is stale, foreign, replayed or reordered gets a fresh challenge
with stale=true and no password check, so a spoofed packet (which cannot carry a nonce issued to the
address it pretends to come from) never counts against anyone.

Guard states, per key (a source address, or an account):

    state    | on a counted failure                  | on time passing
    ---------+---------------------------------------+------------------------------------------
    open     | level += 1; at the limit -> held      | level leaks away (limit per window)
    held     | (not reachable: nothing is checked)   | until the delay ends -> open

While a key is held no password is checked for it: every answer is a fresh challenge, so a guesser
learns nothing, right or wrong. A source is held for a fixed time. An account is held for a delay
that doubles each time it trips again (up to a maximum) until its level has leaked to zero; the
addresses the account recently logged in from successfully stay exempt from the account's hold, so
someone guessing a user's password from elsewhere cannot lock that user's own phone out. A success
resets nothing: a guesser cannot clear its count by logging into an account of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from ..sip.digest import DigestError, DigestServer, parse_credentials
from ..sip.message import Request, Response, create_response
from ..sip.transaction import new_tag

MIN_NONCE_SECRET = 16  # bytes of a shared nonce secret (--nonce-secret): a short one could be guessed


class Hold(Enum):
    """Why no password may be checked for a request (GuessingGuard.held)."""

    SOURCE = "source blocked after repeated authentication failures"
    ACCOUNT = "account backed off after repeated authentication failures"


@dataclass(slots=True)
class _Bucket:
    level: float      # failures not yet leaked away
    stamp: float      # when level was last brought up to date
    until: float = 0.0  # held until then
    trips: int = 0    # holds since the level was last zero (accounts: the delay doubles per trip)


@dataclass(frozen=True, slots=True)
class Trip:
    """A key that has just been held: report it (an `attack_detected` event)."""

    kind: str       # "source" or "account"
    key: str        # the IP address or the user name
    seconds: float  # how long it is held


class GuessingGuard:
    """Counts authentication failures per source IP and per account, as leaky buckets: each
    failure adds one, `limit` leak away per `window`, and a failure that finds the bucket holding
    more than `limit - 1` holds the key (so `limit` failures in quick succession always do).

    Defaults: a source with 10 failures within about 60 s is held 300 s; an account with 10
    failures within about an hour (from any number of addresses) is held 60 s, then 120 s, 240 s...
    up to 3600 s for each further failure, until an hour passes with none. `trusted_for` seconds
    after a successful login, that (account, address) pair is exempt from the account's hold (at
    most `max_trusted` addresses per account). `max_sources` bounds the memory; an active hold is
    never evicted to make room.
    """

    def __init__(self, *, source_limit: int = 10, source_window: float = 60.0, source_block: float = 300.0,
                 account_limit: int = 10, account_window: float = 3600.0, account_delay: float = 60.0,
                 account_max_delay: float = 3600.0, trusted_for: float = 86400.0, max_trusted: int = 8,
                 max_sources: int = 100_000) -> None:
        if min(source_limit, account_limit, max_trusted, max_sources) < 1:
            raise ValueError("limits must be at least 1")
        self.source_limit, self.source_window, self.source_block = source_limit, source_window, source_block
        self.account_limit, self.account_window = account_limit, account_window
        self.account_delay, self.account_max_delay = account_delay, account_max_delay
        self.trusted_for, self.max_trusted = trusted_for, max_trusted
        self.max_sources = max_sources
        self._sources: dict[str, _Bucket] = {}
        self._accounts: dict[str, _Bucket] = {}
        self._trusted: dict[str, dict[str, float]] = {}  # user -> {ip: last successful login}

    def held(self, user: str, ip: str, now: float) -> Hold | None:
        """Why no password may be checked for `user` from `ip` now, or None when one may."""
        source = self._sources.get(ip)
        if source is not None and source.until > now:
            return Hold.SOURCE
        account = self._accounts.get(user)
        if account is not None and account.until > now and not self._is_trusted(user, ip, now):
            return Hold.ACCOUNT
        return None

    def failed(self, user: str | None, ip: str, now: float) -> list[Trip]:
        """Count a wrong password (for `user`, None when no such user exists) from `ip`.

        Returns the holds this failure started, for reporting. Unknown users are counted per
        source only, so made-up names cannot grow the account table.
        """
        trips: list[Trip] = []
        source = self._sources.get(ip)
        if source is None:
            if len(self._sources) >= self.max_sources:
                self._prune(now)
            if len(self._sources) < self.max_sources:
                source = self._sources[ip] = _Bucket(0.0, now)
        if source is not None:
            self._leak(source, now, self.source_limit / self.source_window)
            source.level += 1
            if source.level > self.source_limit - 1 and source.until <= now:
                source.until = now + self.source_block
                trips.append(Trip("source", ip, self.source_block))
        if user is not None:
            account = self._accounts.get(user)
            if account is None:
                account = self._accounts[user] = _Bucket(0.0, now)
            self._leak(account, now, self.account_limit / self.account_window)
            account.level += 1
            if account.level > self.account_limit - 1 and account.until <= now:
                account.trips += 1
                delay = min(self.account_max_delay, self.account_delay * 2 ** min(account.trips - 1, 32))
                account.until = now + delay
                trips.append(Trip("account", user, delay))
        return trips

    def succeeded(self, user: str, ip: str, now: float) -> None:
        """Remember that `user` logged in from `ip`; no count is reset (not even this account's: a
        guesser must not be able to clear it by making the real phone register)."""
        seen = self._trusted.setdefault(user, {})
        seen.pop(ip, None)
        seen[ip] = now
        while len(seen) > self.max_trusted:
            del seen[next(iter(seen))]  # the least recently seen address

    def forget_user(self, user: str) -> None:
        """A removed user's counts and trusted addresses go with it."""
        self._accounts.pop(user, None)
        self._trusted.pop(user, None)

    def _is_trusted(self, user: str, ip: str, now: float) -> bool:
        seen = self._trusted.get(user)
        last = seen.get(ip) if seen else None
        return last is not None and now - last <= self.trusted_for

    @staticmethod
    def _leak(bucket: _Bucket, now: float, rate: float) -> None:
        if now > bucket.stamp:
            bucket.level = max(0.0, bucket.level - (now - bucket.stamp) * rate)
            bucket.stamp = now
        if bucket.level == 0.0 and bucket.until <= now:
            bucket.trips = 0

    def _prune(self, now: float) -> None:
        """Drop sources whose count has leaked away; never one that is held."""
        rate = self.source_limit / self.source_window
        idle = [ip for ip, b in self._sources.items()
                if b.until <= now and b.level - (now - b.stamp) * rate <= 0.0]
        for ip in idle:
            del self._sources[ip]


@dataclass(frozen=True, slots=True)
class AuthOutcome:
    user: str | None           # the authenticated user, or None
    response: Response | None  # what to answer instead of going on (challenge, 403), when user is None
    reason: str = ""
    trips: tuple[Trip, ...] = ()  # holds this failure started: report them

    @property
    def attack(self) -> bool:
        return bool(self.trips)


class Authenticator:
    def __init__(self, realm: str, password_for: Callable[[str], str | None],
                 guard: GuessingGuard | None = None, nonce_lifetime: float = 300.0,
                 algorithms: tuple[str, ...] = ("MD5",),
                 legacy_for: Callable[[str], bool] = lambda user: False) -> None:
        # MD5 alone by default: phones built on libre (baresip 1.0) abort on a response that also
        # offers SHA-256 ("Function not implemented"), as seen in tests/integration. Offer
        # ("SHA-256", "MD5") where every phone is known to cope (RFC 8760).
        self.realm = realm
        self.password_for = password_for
        self.legacy_for = legacy_for
        self.guard = guard or GuessingGuard()
        self.digest = DigestServer(realm, nonce_lifetime=nonce_lifetime, algorithms=algorithms)
        # added to `now` for the nonces' time stamps: 0 with a per-process secret (the engine's clock
        # will do), the wall clock's lead on it with a shared one (share_nonces)
        self.nonce_clock_offset = 0.0

    def share_nonces(self, secret: bytes, wall_offset: float) -> None:
        """Sign nonces with `secret` (bytes, at least MIN_NONCE_SECRET long), shared by every node
        behind an edge, instead of this process's random one: a challenge from one node may then be
        answered on another (RFC 3261 22, RFC 7616 3.3). `wall_offset` is the wall clock minus the
        `now` this authenticator is given (seconds), so the nonces' time stamps mean the same on every
        node (their clocks kept within the digest's clock skew, 5 s, by NTP). Nonces issued before
        are no longer accepted (their phones get a stale=true challenge). Raises ValueError when the
        secret is too short."""
        if len(secret) < MIN_NONCE_SECRET:
            raise ValueError(f"the nonce secret must be at least {MIN_NONCE_SECRET} bytes long")
        old = self.digest
        self.digest = DigestServer(old.realm, secret=secret, nonce_lifetime=old.nonce_lifetime,
                                   algorithms=old.algorithms)
        self.nonce_clock_offset = wall_offset

    def authenticate(self, req: Request, source_ip: str, now: float) -> AuthOutcome:
        """Who sent `req` from `source_ip` (RFC 3261 22.3 for REGISTER, 22.3/22.4 as a proxy
        would for the rest), or the response to send instead: a challenge (401/407, stale=true
        when only the nonce was at fault, plain while the guard holds the source or account) or a
        403 for credentials that are wrong. Never raises on what a peer sent."""
        register = req.method == "REGISTER"
        header = "authorization" if register else "proxy-authorization"
        scope = f"{req.method}|{source_ip}"
        clock = now + self.nonce_clock_offset  # the nonces' time (shared with other nodes, or ours)
        values = [v for v in req.headers.get_all(header) if self._for_us(v)]
        if not values:
            return AuthOutcome(None, self._challenge(req, clock, scope, stale=False), "no credentials")
        guard = self.guard
        hold: list[Hold] = []

        def held(user: str) -> bool:
            why = guard.held(user, source_ip, now)
            if why is not None:
                hold.append(why)
            return why is not None

        result = self.digest.verify(values[0], req.method, self.password_for, clock, body=req.body, scope=scope,
                                    request_uri=req.uri, legacy=self.legacy_for, hold=held)
        if result.ok:
            guard.succeeded(result.username or "", source_ip, now)
            return AuthOutcome(result.username, None)
        if result.stale:
            return AuthOutcome(None, self._challenge(req, clock, scope, stale=True), f"stale nonce ({result.reason})")
        if result.held:
            return AuthOutcome(None, self._challenge(req, clock, scope, stale=False), hold[0].value)
        trips: tuple[Trip, ...] = ()
        if result.guess:
            known = result.username if result.reason != "unknown user" else None
            trips = tuple(guard.failed(known, source_ip, now))
        return AuthOutcome(None, create_response(req, 403, "Forbidden", to_tag=new_tag()),
                           result.reason or "authentication failed", trips)

    def _for_us(self, value: str) -> bool:
        try:
            creds = parse_credentials(value)
        except DigestError:
            return True  # let verify() name what is wrong with it
        return creds.realm == self.realm

    def _challenge(self, req: Request, now: float, scope: str, *, stale: bool) -> Response:
        register = req.method == "REGISTER"
        name = "WWW-Authenticate" if register else "Proxy-Authenticate"
        code, reason = (401, "Unauthorized") if register else (407, "Proxy Authentication Required")
        return create_response(req, code, reason, to_tag=new_tag(),
                               headers=[(name, v) for v in self.digest.challenge(now, stale=stale, scope=scope)])
