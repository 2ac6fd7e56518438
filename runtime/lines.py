"""Lines: accounts at IP-telephony providers, registered by us and kept registered.

A line refreshes before the granted expiry, answers the provider's 401/407 once per new nonce (a
wrong password fails instead of looping), and after a failure retries with exponential backoff,
reporting each failure as an event. The Call-ID stays the same for the line's life, as RFC 3261
10.2.4 asks, so refreshes replace the binding instead of piling up new ones.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .sip.digest import DigestClient, DigestError, select_challenge
from .sip.message import Headers, Request, Response
from .sip.transaction import ClientTransaction, new_branch, new_tag

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("callflow.lines")

BACKOFF_FIRST = 2.0
BACKOFF_MAX = 300.0


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


class LineClient:
    def __init__(self, engine: Engine, config: LineConfig) -> None:
        self.engine = engine
        self.config = config
        self.state = "idle"         # idle -> registering -> registered | failed -> ... -> stopped
        self.address: tuple[str, int] | None = None
        self.call_id = f"{secrets.token_hex(8)}@callflow"
        self.from_tag = new_tag()
        self.cseq = 0
        self.auth = DigestClient(config.auth_username or config.username, config.password)
        self.sent_credentials = False
        self.expires_at = 0.0
        self.failures = 0
        self._timer: asyncio.TimerHandle | None = None
        self._txn: ClientTransaction | None = None
        self._unregistering = False

    @property
    def unregistering(self) -> bool:
        return self._unregistering

    @property
    def registered(self) -> bool:
        return self.state == "registered"

    async def start(self) -> None:
        await self.resolve()
        if self.config.register_every:
            self.register()
        else:
            self.state = "static"  # an IP-authenticated trunk: nothing to register

    async def resolve(self) -> None:
        host, port = self.config.server_host, self.config.server_port
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_DGRAM,
                                                                 family=socket.AF_INET)
            self.address = (infos[0][4][0], infos[0][4][1])
        except OSError as exc:
            self.address = None
            log.warning("line=%s cannot resolve %s: %s", self.config.name, host, exc)
        self.engine.index_lines()

    def register(self, expires: int | None = None) -> None:
        """Send a REGISTER (fresh or refresh); credentials are added when a challenge asks."""
        self._cancel_timer()
        if self.address is None:
            self._failed(0, "cannot resolve the provider's address")
            return
        if not self._unregistering:
            self.state = "registering" if self.state != "registered" else "registered"
        self.sent_credentials = False
        self._send(self._build(expires), None)

    def stop(self) -> None:
        """Unregister (Expires: 0) and stop refreshing."""
        self._cancel_timer()
        if self.state == "registered" and self.address is not None:
            self._unregistering = True
            self._send(self._build(0), None)
        self.state = "stopped"

    def _build(self, expires: int | None, authorization: tuple[str, str] | None = None) -> Request:
        cfg = self.config
        engine = self.engine
        self.cseq += 1
        server = cfg.server_host if cfg.server_port == 5060 else f"{cfg.server_host}:{cfg.server_port}"
        aor = f"sip:{cfg.username}@{cfg.server_host}"
        if expires is None:
            expires = cfg.register_every or 300
        h = Headers()
        h.add("Via", f"{engine.via(cfg.transport)};branch={new_branch()}")
        h.add("Max-Forwards", "70")
        h.add("From", f"<{aor}>;tag={self.from_tag}")
        h.add("To", f"<{aor}>")
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{self.cseq} REGISTER")
        h.add("Contact", f"<{engine.contact_uri(cfg.username, cfg.transport)}>")
        h.add("Expires", str(expires))
        if authorization:
            h.add(*authorization)
        if engine.user_agent:  # none by default: see Engine
            h.add("User-Agent", engine.user_agent)
        h.add("Content-Length", "0")
        self._last_expires = expires
        return Request("REGISTER", f"sip:{server}", h)

    def _send(self, req: Request, _: object) -> None:
        assert self.address is not None
        self._txn = self.engine.send_request(req, self.address, self, self.config.transport)
        self._last_request = req

    # ---- transaction results -------------------------------------------------------------------
    def on_response(self, resp: Response, txn: ClientTransaction | None) -> None:
        if txn is not self._txn or resp.status < 200:
            return
        status = resp.status
        if self._unregistering and status not in (401, 407):
            self._unregistering = False
            self.engine.bus.emit("line_unregistered", line=self.config.name, code=resp.status)
            return
        if status in (401, 407):
            header = "www-authenticate" if status == 401 else "proxy-authenticate"
            challenge = select_challenge(resp.headers.get_all(header))
            if challenge is not None and self.auth.should_retry(challenge,
                                                                 sent_credentials=self.sent_credentials):
                name = "Authorization" if status == 401 else "Proxy-Authorization"
                try:
                    value = self.auth.authorize(challenge, "REGISTER", self._last_request.uri)
                except DigestError as exc:
                    self._failed(status, f"cannot answer the challenge: {exc}")
                    return
                self.sent_credentials = True
                self._send(self._build(self._last_expires, (name, value)), None)
                return
            if self._unregistering:
                self._unregistering = False
                return
            self._failed(status, resp.reason or "Unauthorized")
            return
        if status == 423:
            min_expires = resp.headers.get("min-expires")
            if min_expires and min_expires.strip().isdigit():
                self.sent_credentials = False
                self._send(self._build(int(min_expires)), None)
                return
        if 200 <= status < 300:
            granted = self._granted_expires(resp)
            now = self.engine.now()
            self.expires_at = now + granted
            was = self.state
            self.state = "registered"
            self.failures = 0
            if was != "registered":
                self.engine.bus.emit("line_registered", line=self.config.name, code=status,
                                     reason=resp.reason, expires=granted)
            # refresh well before expiry: at 80 %, and never later than 30 s before it
            refresh = max(1.0, min(granted * 0.8, granted - 30)) if granted > 2 else 1.0
            self._schedule(refresh, self.register)
            return
        self._failed(status, resp.reason or "Failed")

    def on_timeout(self, txn: ClientTransaction) -> None:
        if txn is not self._txn:
            return
        if self._unregistering:
            self._unregistering = False
            return
        self._failed(408, "Request Timeout (the provider did not answer)")

    def _granted_expires(self, resp: Response) -> int:
        ours = f"@{self.engine.advertise}:{self.engine.port_for(self.config.transport)}"
        try:
            for c in resp.contacts:
                if ours in str(c.uri) or len(resp.contacts) == 1:
                    value = c.params.get("expires")
                    if value and value.isdigit():
                        return int(value)
            header = resp.expires
        except Exception:  # a provider's odd Contact must not cost us the registration
            header = None
        return header if header is not None else self._last_expires

    def _failed(self, code: int, reason: str) -> None:
        self.failures += 1
        self.state = "failed"
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** min(self.failures - 1, 10))
        delay *= random.uniform(0.8, 1.2)
        self.engine.bus.emit("line_register_failed", line=self.config.name, code=code, reason=reason,
                             retry_in=f"{delay:.0f}s")
        self._schedule(delay, self.register)

    def _schedule(self, delay: float, fn) -> None:  # type: ignore[no-untyped-def]
        self._cancel_timer()
        self._timer = asyncio.get_running_loop().call_later(delay, self._fire, fn)

    def _fire(self, fn) -> None:  # type: ignore[no-untyped-def]
        self._timer = None
        if self.state == "stopped":
            return
        fn()
        self.engine.endpoint.pump()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
