"""Fork building: the INVITEs that ring a call's target on channel ONE (CallEnv.build_forks).

A user's target gets one INVITE per registered contact (RFC 3261 16.6, parallel forking), a line's
one INVITE to its provider with the line's identity, codecs and credentials. The limits that refuse a
fork (a user's or a line's `max calls`) are checked here too, as is the number a new INVITE dials.
Sans-IO: it reads the host's users, lines, registrations and addresses, and returns legs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, Protocol

from ..events import logfmt_value
from ..sip.message import Headers, Request
from ..sip.sdp import SdpError, prefer_codecs
from ..sip.transaction import new_branch, new_tag
from ..sip.uri import escape_user, has_control, unescape
from .legs import Failure, Leg, Target

log = logging.getLogger("callflow.engine")

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, UPDATE, INFO, MESSAGE, NOTIFY, REFER"


class ForkHost(Protocol):
    """What fork building reads from the server (the engine): accounts, lines, registrations, limits
    and our own addresses. `users` maps a name to its account (`max_calls`, `caller_id`); `lines` a
    name to its LineClient (`config`, `address`, `carries_calls`, `auth`)."""

    users: Mapping[str, Any]
    lines: Mapping[str, Any]
    registrar: Any
    line_max_calls: Mapping[str, int | None]
    advertise: str
    user_agent: str | None

    def via(self, transport: str = "udp") -> str: ...

    def contact(self, transport: str = "udp") -> str: ...

    def calls_of_user(self, name: str, besides: Any = None) -> int: ...

    def calls_of_line(self, name: str, besides: Any = None) -> int: ...


class ForkBuilder:
    """Builds the forks of a call's target from what `host` holds now (users, lines, registrations)."""

    def __init__(self, host: ForkHost) -> None:
        self.host = host

    def dialled_number(self, invite: Request, peer_type: str, peer_name: str | None) -> str:
        """The number a new INVITE (or MESSAGE) dials, unescaped (RFC 3261 19.1.2): the Request-URI's
        user, except from a line, whose provider may address the contact we registered; then To's
        user, or the line's only number."""
        user = invite.request_uri.user or ""
        if peer_type == "LINE" and peer_name in self.host.lines:
            line = self.host.lines[peer_name]
            # a provider sends the call to the contact we registered; the number is in To, and when
            # To names the account too, a line with one number was called on that number
            if not user or user == line.config.username:
                to = unescape(invite.to.uri.user or user)
                if (not to or to == line.config.username) and len(line.config.numbers) == 1:
                    return line.config.numbers[0]
                return to
        return unescape(user)

    def build_forks(self, call: Any, target: Target, offer: bytes,
                    now: float) -> tuple[list[Leg], Failure | None]:
        """The INVITEs that ring `target` for `call` (CallEnv.build_forks)."""
        if target.kind == "USER":
            return self._forks_to_user(call, target, offer, now)
        return self._fork_to_line(call, target, offer)

    def _forks_to_user(self, call: Any, target: Target, offer: bytes,
                       now: float) -> tuple[list[Leg], Failure | None]:
        if target.name not in self.host.users:
            return [], Failure(404, f"Not Found (no user {target.name})")
        account = self.host.users[target.name]
        if account.max_calls is not None and self.host.calls_of_user(target.name, call) >= account.max_calls:
            return [], Failure(486, f"Busy Here ({target.name} has reached its call limit)")
        bindings = self.host.registrar.lookup(target.name, now)
        if not bindings:
            return [], Failure(480, f"Temporarily Unavailable ({target.name} is not registered)")
        caller = call.caller_id_override or call.caller_id
        display = call.caller_name
        legs = []
        for binding in bindings:
            destination, transport = binding.next_hop()  # the first Path hop (RFC 3327), else its source
            h = self._invite_headers(call, from_uri=f"sip:{escape_user(caller)}@{self.host.advertise}", display=display,
                                     to_uri=f"sip:{escape_user(target.number or target.name)}@{self.host.advertise}",
                                     transport=transport)
            for name, value in binding.route_headers():
                h.add(name, value)
            invite = Request("INVITE", binding.contact, h)
            if offer:
                invite.set_body(offer, "application/sdp")
            else:
                invite.headers.add("Content-Length", "0")
            legs.append(Leg.fork(target, destination, invite, None, transport))
        return legs, None

    def _fork_to_line(self, call: Any, target: Target, offer: bytes) -> tuple[list[Leg], Failure | None]:
        line = self.host.lines.get(target.name)
        if line is None:
            return [], Failure(404, f"Not Found (no line {target.name})")
        if line.address is None or not line.carries_calls:
            return [], Failure(503, f"Service Unavailable (line {target.name} is not registered)")
        limit = self.host.line_max_calls.get(target.name)
        if limit is not None and self.host.calls_of_line(target.name, call) >= limit:
            return [], Failure(503, f"Service Unavailable (line {target.name} call limit reached)")
        cfg = line.config
        number = escape_user(target.number or call.dialled)  # RFC 3261 25.1: never a raw CR LF in a URI
        host = cfg.server_host
        hostport = host if cfg.server_port == 5060 else f"{host}:{cfg.server_port}"
        # the number shown: the rule's `set caller-id`, the line's `caller-id`, the user's, else the
        # line's first number (a DID of ours the provider will accept as the caller)
        caller_id = call.caller_id_override or cfg.caller_id or (
            self.host.users[call.peer_name].caller_id if call.peer_type == "USER" and call.peer_name in self.host.users
            else None) or (cfg.numbers[0] if cfg.numbers else None)
        # From names the account at the provider (RFC 3261 8.1.1.3); a line with no username (one
        # that does not register: the provider knows us by address) shows the number above, else
        # `callflow`, the user our Contact carries then. Never `sip:@host`, which is no valid URI.
        from_user = cfg.username or caller_id or "callflow"
        h = self._invite_headers(call, from_uri=f"sip:{escape_user(from_user)}@{host}", display=cfg.display,
                                 to_uri=f"sip:{number}@{host}", transport=cfg.transport)
        if offer and cfg.codecs:
            try:
                narrowed = prefer_codecs(offer, cfg.codecs)
            except SdpError:
                narrowed = offer  # the caller's SDP was already anchored: our own rewrite reads it
            if narrowed is None:
                return [], Failure(488, f"Not Acceptable Here (the caller offers none of line {target.name}'s "
                                        f"codecs: {', '.join(cfg.codecs)})")
            offer = narrowed
        if caller_id:
            h.add("P-Asserted-Identity", f"<sip:{escape_user(caller_id)}@{host}>")
        if cfg.outbound_proxy:
            # the INVITE goes to the proxy (line.address) and names it as a loose route (RFC 3261
            # 8.1.2), the provider staying in the Request-URI, as the line's REGISTERs do
            h.add("Route", f"<sip:{cfg.outbound_proxy};lr>")
        ruri = f"sip:{number}@{hostport}" + ("" if cfg.transport == "udp" else f";transport={cfg.transport}")
        invite = Request("INVITE", ruri, h)
        if offer:
            invite.set_body(offer, "application/sdp")
        else:
            invite.headers.add("Content-Length", "0")
        auth = line.auth.__class__(cfg.auth_username or cfg.username, cfg.password)
        return [Leg.fork(target, line.address, invite, auth, cfg.transport)], None

    def _invite_headers(self, call: Any, *, from_uri: str, display: str | None, to_uri: str,
                        transport: str) -> Headers:
        h = Headers()
        h.add("Via", f"{self.host.via(transport)};branch={new_branch()}")
        mf = call.invite.headers.get("max-forwards")
        hops = int(mf) - 1 if mf and mf.strip().isdigit() else 70
        h.add("Max-Forwards", str(max(0, min(hops, 70))))
        name = f'"{_escape_display(display)}" ' if display else ""
        h.add("From", f"{name}<{from_uri}>;tag={new_tag()}")
        h.add("To", f"<{to_uri}>")
        h.add("Call-ID", f"{call.id}-{new_tag()}@callflow")
        h.add("CSeq", "1 INVITE")
        h.add("Contact", self.host.contact(transport))
        h.add("Allow", ALLOW)
        if self.host.user_agent:
            h.add("User-Agent", self.host.user_agent)
        for name_, value in call.extra_headers:
            if has_control(value):  # a rule's `set header` rendered from a caller's value: one line only
                log.warning("call %s: the value of header %s held control characters, sent as spaces: %s",
                            call.id, name_, _q(value))
                value = _CONTROL_RE.sub(" ", value)
            h.add(name_, value)
        return h


def _escape_display(text: str) -> str:
    """A quoted-string display name (RFC 3261 25.1): quotes and backslashes escaped, control
    characters (which no quoted-pair may carry across a line) replaced by spaces."""
    return _CONTROL_RE.sub(" ", text.replace("\\", "\\\\").replace('"', '\\"'))


_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def _q(text: str) -> str:
    return logfmt_value(text)
