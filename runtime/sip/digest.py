"""SIP Digest authentication (RFC 3261 section 22, RFC 8760, RFC 7616, RFC 2617), sans-IO.

Works on header *values* (the text after ``WWW-Authenticate:`` and friends) so it does
not depend on the message parser, and never reads a clock: every time-dependent call
takes ``now`` so callers choose monotonic or wall time and tests need no mocking.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import secrets
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = [
    "SUPPORTED_ALGORITHMS",
    "AuthResult",
    "Challenge",
    "Credentials",
    "DigestClient",
    "DigestError",
    "DigestServer",
    "compute_response",
    "parse_challenge",
    "parse_credentials",
    "select_challenge",
    "uri_matches",
]


class DigestError(ValueError):
    """A header value that is not usable Digest; the message says what was wrong."""


def _hash_factory(name: str) -> Callable[[bytes], str] | None:
    try:
        hashlib.new(name)
    except ValueError:  # e.g. an OpenSSL build without SHA-512/256
        return None
    return lambda data: hashlib.new(name, data).hexdigest()


# Canonical algorithm name -> hex digest function. Unavailable hashes are left out so
# select_challenge() simply skips them.
_HASHES: dict[str, Callable[[bytes], str]] = {
    name: fn
    for name, fn in (
        ("SHA-512-256", _hash_factory("sha512_256")),
        ("SHA-256", _hash_factory("sha256")),
        ("MD5", _hash_factory("md5")),
    )
    if fn is not None
}
# Strongest first; plain before -sess for the same hash because it is more widely deployed.
SUPPORTED_ALGORITHMS: tuple[str, ...] = tuple(a for h in _HASHES for a in (h, h + "-sess"))
_PREFERENCE = {alg: rank for rank, alg in enumerate(SUPPORTED_ALGORITHMS)}
_CANONICAL = {alg.lower(): alg for alg in SUPPORTED_ALGORITHMS}

# One auth-param: name BWS "=" BWS (quoted-string / token), followed by a comma or the end.
# Unquoted values are accepted loosely (anything but whitespace, comma and quote) because
# deployed UAs send e.g. uri=sip:x@y unquoted. Compiled once; parsing is a match loop.
_PARAM_RE = re.compile(
    r"""[ \t\r\n]*([!#$%&'*+.^_`|~0-9A-Za-z-]+)[ \t\r\n]*=[ \t\r\n]*"""
    r"""(?:"([^"\\]*(?:\\.[^"\\]*)*)"|([^\s,"]+))[ \t\r\n]*(?:,|\Z)""",
    re.DOTALL,
)
_SEP_RE = re.compile(r"[ \t\r\n,]*")  # empty list elements are allowed (RFC 7230 #rule)
_SCHEME_RE = re.compile(r"[ \t\r\n]*([!#$%&'*+.^_`|~0-9A-Za-z-]+)(?:[ \t\r\n]+|\Z)")
_UNESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)
_NC_RE = re.compile(r"[0-9A-Fa-f]{1,8}")
_HEX_RE = re.compile(r"[0-9A-Fa-f]+")
_NONCE_RE = re.compile(r"[A-Za-z0-9_-]{43}")
_UNSAFE_RE = re.compile(r"[\r\n\x00]")


def _parse(value: str) -> tuple[str, dict[str, str]]:
    """Split ``Scheme k=v, k="v"`` into (scheme, {lowercased name: unescaped value})."""
    if not isinstance(value, str):
        raise DigestError(f"header value must be str, not {type(value).__name__}")
    m = _SCHEME_RE.match(value)
    if m is None:
        raise DigestError("missing authentication scheme")
    scheme = m.group(1)
    if scheme.lower() != "digest":
        raise DigestError(f"unsupported authentication scheme {scheme!r} (only Digest)")
    params: dict[str, str] = {}
    pos = _SEP_RE.match(value, m.end()).end()
    end = len(value)
    while pos < end:
        pm = _PARAM_RE.match(value, pos)
        if pm is None:
            raise DigestError(f"malformed parameter at offset {pos}: {value[pos : pos + 20]!r}")
        name = pm.group(1).lower()
        if name in params:
            raise DigestError(f"duplicate parameter {name!r}")
        quoted = pm.group(2)
        params[name] = _UNESCAPE_RE.sub(r"\1", quoted) if quoted is not None else pm.group(3)
        pos = _SEP_RE.match(value, pm.end()).end()
    return "Digest", params


def _require(params: Mapping[str, str], *names: str) -> None:
    missing = [n for n in names if n not in params]
    if missing:
        raise DigestError(f"missing required parameter(s): {', '.join(missing)}")


def _canonical_algorithm(raw: str | None) -> str:
    """Known algorithms are matched case-insensitively; unknown ones are kept verbatim."""
    if raw is None:
        return "MD5"  # RFC 7616 section 3.3: absent means MD5
    return _CANONICAL.get(raw.lower(), raw)


@dataclass(frozen=True)
class Challenge:
    """One parsed WWW-Authenticate / Proxy-Authenticate value."""

    scheme: str
    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False
    params: Mapping[str, str] = field(default_factory=dict, hash=False)

    @property
    def supported(self) -> bool:
        """Whether DigestClient can answer it (known algorithm and a usable qop)."""
        return self.algorithm in _PREFERENCE and (not self.qop or _choose_qop(self.qop) is not None)


def parse_challenge(value: str) -> Challenge:
    """Parse a challenge; unknown algorithms are kept so callers can see what was offered."""
    scheme, params = _parse(value)
    _require(params, "realm", "nonce")
    qop = tuple(q.strip().lower() for q in params["qop"].split(",") if q.strip()) if "qop" in params else ()
    return Challenge(
        scheme=scheme,
        realm=params["realm"],
        nonce=params["nonce"],
        algorithm=_canonical_algorithm(params.get("algorithm")),
        qop=qop,
        opaque=params.get("opaque"),
        stale=params.get("stale", "").strip().lower() == "true",
        params=MappingProxyType(params),
    )


def select_challenge(values: Iterable[str]) -> Challenge | None:
    """Pick the strongest challenge we can answer (RFC 8760 section 2.4), or None.

    Unparseable values, other schemes and unknown algorithms are skipped rather than
    raised, because a server may legitimately offer schemes we do not implement.
    """
    best: Challenge | None = None
    for value in values:
        try:
            ch = parse_challenge(value)
        except DigestError:
            continue
        if not ch.supported:
            continue
        if best is None or _PREFERENCE[ch.algorithm] < _PREFERENCE[best.algorithm]:
            best = ch  # ties keep the first, i.e. the server's own preference order
    return best


@dataclass(frozen=True)
class Credentials:
    """One parsed Authorization / Proxy-Authorization value."""

    scheme: str
    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    cnonce: str | None = None
    nc: int | None = None
    qop: str | None = None
    opaque: str | None = None
    params: Mapping[str, str] = field(default_factory=dict, hash=False)


def parse_credentials(value: str) -> Credentials:
    """Parse credentials, checking the syntax the digest computation relies on."""
    scheme, params = _parse(value)
    _require(params, "username", "realm", "nonce", "uri", "response")
    response = params["response"]
    if not _HEX_RE.fullmatch(response):
        raise DigestError("response is not a hex digest")
    nc: int | None = None
    if "nc" in params:
        if not _NC_RE.fullmatch(params["nc"]):
            raise DigestError(f"nc is not 1-8 hex digits: {params['nc']!r}")
        nc = int(params["nc"], 16)
    qop = params["qop"].strip().lower() if "qop" in params else None
    return Credentials(
        scheme=scheme,
        username=params["username"],
        realm=params["realm"],
        nonce=params["nonce"],
        uri=params["uri"],
        response=response,
        algorithm=_canonical_algorithm(params.get("algorithm")),
        cnonce=params.get("cnonce"),
        nc=nc,
        qop=qop,
        opaque=params.get("opaque"),
        params=MappingProxyType(params),
    )


def _b(text: str) -> bytes:
    """UTF-8, but round-trip surrogate-escaped bytes so odd input hashes instead of raising."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def compute_response(
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    *,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The request-digest of RFC 7616 section 3.4.1 (RFC 2617 3.2.2 when qop is None).

    ``nc`` is the 8-hex-digit string exactly as sent on the wire, since that is what
    is hashed.
    """
    sess = algorithm.endswith("-sess")
    h = _HASHES.get(algorithm[:-5] if sess else algorithm)
    if h is None:
        raise DigestError(f"unsupported algorithm {algorithm!r}")
    ha1 = h(_b(f"{username}:{realm}:{password}"))
    if sess:
        if cnonce is None:
            raise DigestError(f"{algorithm} needs a cnonce")
        ha1 = h(_b(f"{ha1}:{nonce}:{cnonce}"))
    if qop == "auth-int":
        ha2 = h(_b(f"{method}:{uri}:") + h(body).encode())
    elif qop in (None, "auth"):
        ha2 = h(_b(f"{method}:{uri}"))
    else:
        raise DigestError(f"unsupported qop {qop!r}")
    if qop is None:
        return h(_b(f"{ha1}:{nonce}:{ha2}"))
    if nc is None or cnonce is None:
        raise DigestError("qop needs nc and cnonce")
    return h(_b(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}"))


def _choose_qop(offered: tuple[str, ...]) -> str | None:
    if "auth" in offered:
        return "auth"
    if "auth-int" in offered:
        return "auth-int"
    return None


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class DigestClient:
    """Answers a provider's 401/407 for one account; remembers the nonce for nc counting.

    Not thread-safe: it is meant to be owned by one event loop.
    """

    _MEMORY = 16  # recently answered nonces kept for the retry loop guard

    def __init__(
        self, username: str, password: str, *, cnonce_factory: Callable[[], str] | None = None
    ) -> None:
        if _UNSAFE_RE.search(username):
            raise DigestError("username contains CR, LF or NUL")
        self.username = username
        self._password = password
        self._cnonce = cnonce_factory or (lambda: secrets.token_hex(8))
        self._nonce: str | None = None
        self._nc = 0
        self._sess_cnonce: str | None = None
        self._seen: OrderedDict[str, None] = OrderedDict()

    def __repr__(self) -> str:  # keep the password out of logs
        return f"DigestClient(username={self.username!r})"

    def _remember(self, nonce: str) -> None:
        self._seen[nonce] = None
        self._seen.move_to_end(nonce)
        while len(self._seen) > self._MEMORY:
            self._seen.popitem(last=False)

    def authorize(self, challenge: Challenge, method: str, uri: str, body: bytes = b"") -> str:
        """Header value answering ``challenge``; reusing a nonce increments nc (RFC 7616 3.4)."""
        if challenge.algorithm not in _PREFERENCE:
            raise DigestError(f"unsupported algorithm {challenge.algorithm!r}")
        if _UNSAFE_RE.search(uri) or _UNSAFE_RE.search(method):
            raise DigestError("method or uri contains CR, LF or NUL")
        qop = _choose_qop(challenge.qop)
        if challenge.qop and qop is None:
            raise DigestError(f"no supported qop among {challenge.qop!r}")
        if challenge.nonce != self._nonce:
            self._nonce, self._nc, self._sess_cnonce = challenge.nonce, 0, None
        self._nc += 1
        self._remember(challenge.nonce)
        sess = challenge.algorithm.endswith("-sess")
        cnonce: str | None = None
        if qop is not None or sess:
            # -sess keys the session on the first cnonce, so keep it for the nonce's lifetime.
            if sess:
                self._sess_cnonce = self._sess_cnonce or self._cnonce()
                cnonce = self._sess_cnonce
            else:
                cnonce = self._cnonce()
        nc = f"{self._nc:08x}" if qop is not None else None
        response = compute_response(
            challenge.algorithm,
            self.username,
            challenge.realm,
            self._password,
            method,
            uri,
            challenge.nonce,
            qop=qop,
            nc=nc,
            cnonce=cnonce,
            body=body,
        )
        parts = [
            f"username={_quote(self.username)}",
            f"realm={_quote(challenge.realm)}",
            f"nonce={_quote(challenge.nonce)}",
            f"uri={_quote(uri)}",
            f"response={_quote(response)}",
        ]
        if challenge.algorithm != "MD5" or "algorithm" in challenge.params:
            # Plain MD5 is echoed only if the server named it: some old servers choke on it.
            parts.append(f"algorithm={challenge.algorithm}")
        if cnonce is not None:
            parts.append(f"cnonce={_quote(cnonce)}")
        if challenge.opaque is not None:
            parts.append(f"opaque={_quote(challenge.opaque)}")
        if qop is not None:
            parts.append(f"qop={qop}, nc={nc}")
        return "Digest " + ", ".join(parts)

    def should_retry(self, challenge: Challenge, *, sent_credentials: bool | None = None) -> bool:
        """Loop guard: answer each nonce at most once, so a wrong password fails fast.

        RFC 3261 22.2: credentials that were rejected must not be re-sent unless the
        nonce was stale. Servers that mint a fresh nonce on every 401 (Asterisk,
        Kamailio) look like "a new nonce" each time, so callers that know whether the
        rejected request carried our credentials should say so via ``sent_credentials``:
        True -> retry only on stale=true; False -> always retry (first challenge).
        """
        if not challenge.supported:
            return False
        if sent_credentials is False:
            verdict = True
        elif challenge.nonce in self._seen:
            verdict = False  # the same nonce challenged again: our answer was wrong
        elif sent_credentials:
            verdict = challenge.stale
        else:
            verdict = True
        if verdict:
            self._remember(challenge.nonce)
        return verdict


@dataclass(frozen=True)
class AuthResult:
    """Outcome of DigestServer.verify; ``reason`` is for logs, never for the wire.

    ``stale``: answer with a fresh challenge carrying stale=true (the nonce, not the password, was
    the problem; no password was checked). ``guess``: a password was compared and was wrong (or the
    user is unknown), the only failure that is evidence of guessing. ``held``: the ``hold`` callback
    said no password may be checked for this user now; answer with a plain fresh challenge.
    """

    ok: bool
    username: str | None = None
    stale: bool = False
    reason: str = ""
    guess: bool = False
    held: bool = False


_NONCE_OK, _NONCE_EXPIRED, _NONCE_FORGED = "ok", "nonce expired", "unknown nonce"


def _never(_user: str) -> bool:
    return False


def uri_matches(digest_uri: str, request_uri: str) -> bool:
    """Whether a credentials' ``uri`` names the request's Request-URI (RFC 3261 22.4, RFC 7616
    3.4.6): equal as text, or equal but for the case of the scheme and host, which RFC 3261 19.1.4
    says do not matter. Anything looser would let credentials computed for one number be used to
    call another."""
    if digest_uri == request_uri:
        return True
    a, b = digest_uri.partition("@"), request_uri.partition("@")
    if a[1] != b[1]:
        return False
    if a[1]:  # scheme:user@host...: the user part is case-sensitive, scheme and host are not
        sa, _, ua = a[0].partition(":")
        sb, _, ub = b[0].partition(":")
        return sa.lower() == sb.lower() and ua == ub and _host_part_equal(a[2], b[2])
    sa, _, ra = digest_uri.partition(":")
    sb, _, rb = request_uri.partition(":")
    return sa.lower() == sb.lower() and _host_part_equal(ra, rb)


def _host_part_equal(a: str, b: str) -> bool:
    ha, sep_a, pa = a.partition(";")
    hb, sep_b, pb = b.partition(";")
    return ha.lower() == hb.lower() and sep_a == sep_b and pa == pb


class DigestServer:
    """Challenges our phones.

    Nonces are stateless HMAC(secret, timestamp|salt|realm|scope), so restarts and many
    outstanding nonces cost no memory. ``scope`` is what the nonce was issued for (the
    authenticator passes the challenged method and the source address): a nonce is good
    only for the same scope, so credentials captured on the wire cannot be replayed from
    another host or for another method. Only nonces actually used enter a bounded nc
    table for replay rejection. Not thread-safe (one event loop owns it).
    """

    def __init__(
        self,
        realm: str,
        *,
        secret: bytes | None = None,
        nonce_lifetime: float = 300.0,
        algorithms: Iterable[str] = ("SHA-256", "MD5"),
        max_tracked_nonces: int = 100_000,
        clock_skew: float = 5.0,
    ) -> None:
        if _UNSAFE_RE.search(realm):
            raise ValueError("realm contains CR, LF or NUL")
        algs = tuple(_canonical_algorithm(a) for a in algorithms)
        unknown = [a for a in algs if a not in _PREFERENCE]
        if unknown or not algs:
            raise ValueError(f"unsupported algorithms {unknown!r}; choose from {SUPPORTED_ALGORITHMS}")
        if max_tracked_nonces < 1:
            raise ValueError("max_tracked_nonces must be positive")
        self.realm = realm
        self.algorithms = algs
        self.nonce_lifetime = nonce_lifetime
        self.clock_skew = clock_skew
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        self._realm_bytes = _b(realm)
        self._max = max_tracked_nonces
        self._nc: OrderedDict[str, int] = OrderedDict()  # nonce -> highest nc seen, first-use order
        # Issue time of the newest nonce ever evicted from _nc: anything issued at or
        # before it that is not in the table might have been used already, so it is
        # treated as stale instead of silently accepting nc=1 again.
        self._evicted_upto = -math.inf

    def __repr__(self) -> str:  # keep the secret out of logs
        return f"DigestServer(realm={self.realm!r}, algorithms={self.algorithms!r})"

    def _mac(self, stamp: bytes, scope: str) -> bytes:
        data = stamp + b"|" + self._realm_bytes + b"|" + _b(scope)
        return hmac.new(self._secret, data, hashlib.sha256).digest()[:16]

    def make_nonce(self, now: float, scope: str = "") -> str:
        """A fresh authenticated nonce: 8-byte time, 8 random bytes, 16-byte MAC, base64url.

        ``scope`` (free text, e.g. "INVITE|192.0.2.7") is bound into the MAC, not carried in
        the nonce: verify() must be given the same scope for the nonce to be accepted.
        """
        stamp = struct.pack(">d", now) + secrets.token_bytes(8)
        return base64.urlsafe_b64encode(stamp + self._mac(stamp, scope)).rstrip(b"=").decode("ascii")

    def _check_nonce(self, nonce: str, now: float, scope: str = "") -> tuple[str, float]:
        if not _NONCE_RE.fullmatch(nonce):
            return _NONCE_FORGED, 0.0
        raw = base64.urlsafe_b64decode(nonce + "=")
        stamp, mac = raw[:16], raw[16:]
        if not hmac.compare_digest(mac, self._mac(stamp, scope)):
            return _NONCE_FORGED, 0.0
        issued = struct.unpack(">d", stamp[:8])[0]
        age = now - issued
        # "not (a <= x <= b)" also catches NaN from a nonsense ``now``.
        if not (-self.clock_skew <= age <= self.nonce_lifetime):
            return _NONCE_EXPIRED, issued
        return _NONCE_OK, issued

    def challenge(self, now: float, *, stale: bool = False, scope: str = "") -> list[str]:
        """One WWW-/Proxy-Authenticate value per algorithm, most preferred first (RFC 8760 2.4).

        The nonce is good only for ``scope`` (see make_nonce) and for ``nonce_lifetime`` seconds.
        """
        nonce = self.make_nonce(now, scope)
        tail = ', qop="auth"' + (", stale=true" if stale else "")
        return [
            f"Digest realm={_quote(self.realm)}, nonce={_quote(nonce)}, algorithm={alg}{tail}"
            for alg in self.algorithms
        ]

    def verify(
        self,
        value: str,
        method: str,
        password_for: Callable[[str], str | None],
        now: float,
        body: bytes = b"",
        *,
        scope: str = "",
        request_uri: str | None = None,
        legacy: Callable[[str], bool] = _never,
        hold: Callable[[str], bool] = _never,
    ) -> AuthResult:
        """Check an Authorization/Proxy-Authorization value; never raises on bad input.

        In order, and a password is compared only if everything before it holds:
        the syntax, realm and algorithm; qop=auth/auth-int (RFC 7616 3.4), which may be
        absent only for a user ``legacy(user)`` admits (RFC 2069 phones); the ``uri``
        parameter must name ``request_uri`` when given (RFC 3261 22.4, RFC 7616 3.4.6);
        the nonce must be ours, unexpired and issued for ``scope``, and its nonce-count
        higher than any seen (a legacy nonce is good once) -- else ``stale``, without
        looking at the password, so an old, foreign or reordered nonce neither tells an
        attacker whether a password is right nor counts as a guess; ``hold(user)`` may
        then forbid checking a password at all (a backed-off account: ``held``). Only
        then is the password compared (``guess`` when it is wrong or the user unknown).

        Exceptions raised by ``password_for`` itself (say, a database outage) propagate:
        turning them into "unknown user" would hide real failures.
        """
        try:
            creds = parse_credentials(value)
        except DigestError as exc:
            return AuthResult(False, None, False, f"malformed credentials: {exc}")
        user = creds.username
        if creds.realm != self.realm:
            return AuthResult(False, user, False, "realm mismatch")
        if creds.algorithm not in self.algorithms:
            return AuthResult(False, user, False, f"unsupported algorithm {creds.algorithm!r}")
        if creds.qop is not None:
            if creds.qop not in ("auth", "auth-int"):
                return AuthResult(False, user, False, f"malformed credentials: unsupported qop {creds.qop!r}")
            if creds.nc is None or creds.cnonce is None:
                return AuthResult(False, user, False, "malformed credentials: qop without nc and cnonce")
        elif "nc" in creds.params or "cnonce" in creds.params:
            return AuthResult(False, user, False, "malformed credentials: nc/cnonce without qop")
        elif not legacy(user):
            # without qop there is no nonce-count and no cnonce: a captured answer could be
            # replayed for the nonce's lifetime, so only users marked legacy may answer so
            return AuthResult(False, user, False, "qop=auth required (the user is not marked legacy-digest)")
        if creds.algorithm.endswith("-sess") and creds.cnonce is None:
            return AuthResult(False, user, False, f"malformed credentials: {creds.algorithm} without cnonce")
        if request_uri is not None and not uri_matches(creds.uri, request_uri):
            return AuthResult(False, user, False, "digest uri does not match the Request-URI")

        status, issued = self._check_nonce(creds.nonce, now, scope)
        if status != _NONCE_OK:
            return AuthResult(False, user, True, status)
        nc = creds.nc if creds.nc is not None else 1  # a legacy nonce is good for one request
        last = self._nc.get(creds.nonce)
        if last is None and issued <= self._evicted_upto:
            return AuthResult(False, user, True, "nonce evicted from replay table")
        if last is not None and nc <= last:
            return AuthResult(False, user, True, "nonce count out of order or replayed")
        if hold(user):
            return AuthResult(False, user, False, "held: no password is checked for this user now", held=True)

        password = password_for(user)
        if password is None:
            return AuthResult(False, user, False, "unknown user", guess=True)
        try:
            expected = compute_response(
                creds.algorithm,
                user,
                creds.realm,
                password,
                method,
                creds.uri,
                creds.nonce,
                qop=creds.qop,
                nc=creds.params.get("nc"),
                cnonce=creds.cnonce,
                body=body,
            )
        except DigestError as exc:  # unreachable after the checks above; belt and braces
            return AuthResult(False, user, False, f"malformed credentials: {exc}")
        if not hmac.compare_digest(expected.encode("ascii"), creds.response.lower().encode("ascii")):
            return AuthResult(False, user, False, "wrong password", guess=True)
        return self._count(creds.nonce, nc, user)

    def _count(self, nonce: str, nc: int, user: str) -> AuthResult:
        """Record the highest nonce-count accepted (checked to be higher by verify())."""
        self._nc[nonce] = nc  # insertion order ~ issue order, so eviction drops the oldest
        while len(self._nc) > self._max:
            old, _ = self._nc.popitem(last=False)
            old_issued = struct.unpack(">d", base64.urlsafe_b64decode(old + "=")[:8])[0]
            self._evicted_upto = max(self._evicted_upto, old_issued)
        return AuthResult(True, user, False, "ok")
