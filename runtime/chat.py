"""Chat: SIP MESSAGE outside a dialog (RFC 3428) between registered users and through lines.

A MESSAGE is relayed only for a peer that could place a call: a line recognised by its provider's
address, or a user who answered the digest challenge (the engine checks that before `receive`). So
Callflow is never an open relay, and a line's MESSAGE goes only to users (never back out through a
line). Where it goes is the router's decision (the dialplan: the targets of the rule a call to the
same number would take); by default, the user whose name is the number.

The relay is a B2BUA for one request: a new MESSAGE to every registered phone of each target user
(and out through each target line, answering its provider's 401/407 once with the line's
credentials), and one final answer to the sender: the first 2xx, else the lowest failure once every
copy has failed (RFC 3261 16.7 picks responses the same way). Then one `message` event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .calls import Failure, Target
from .sip.digest import DigestError, select_challenge
from .sip.message import Headers, Request, Response, create_response
from .sip.transaction import Address, ClientTransaction, ServerTransaction, new_branch, new_tag, token_hex

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("callflow.chat")

TEXT_LIMIT = 1000  # characters of a message's text the `message` event carries (the log line stays short)


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One MESSAGE as the router sees it: who sent it (peer_type "USER" or "LINE", the user or line
    name, `sender` the caller id it shows), the number or user it is for (`to`), and its content."""

    peer_type: str
    peer: str
    sender: str
    to: str
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def text(self) -> str:
        """The body as text (UTF-8) for a text/* type, else a note of its type and size."""
        if self.content_type.lower().startswith("text/"):
            return self.body.decode("utf-8", "replace")
        return f"[{self.content_type or 'no content type'}, {len(self.body)} bytes]"


ChatRouter = Callable[[ChatMessage], "list[Target] | Failure"]


def route_to_user_by_name(message: ChatMessage, users: object) -> list[Target] | Failure:
    """The default route: to the user whose name is the number; nobody else."""
    if message.to in users:  # type: ignore[operator]
        return [Target("USER", message.to)]
    return Failure(404, f"Not Found (no user {message.to})")


class ChatRelay:
    """Relays each MESSAGE the engine hands over (`receive`) and answers its sender once."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.router: ChatRouter = lambda message: route_to_user_by_name(message, engine.users)

    def receive(self, txn: ServerTransaction, peer_type: str, peer: str, sender: str) -> None:
        """A MESSAGE outside a dialog from an identified peer (the engine authenticated it)."""
        req = txn.request
        engine = self.engine
        message = ChatMessage(peer_type, peer, sender, engine.dialled_number(req, peer_type, peer),
                              (req.content_type or "").strip(), req.body, tuple(req.headers))
        try:
            route = self.router(message)
        except Exception:
            log.exception("message routing failed: the sender gets 500")
            route = Failure(500, "Server Internal Error (message routing)")
        if isinstance(route, Failure):
            self._answer(txn, message, route.code, route.reason, "")
            return
        if peer_type == "LINE":
            # a provider's message is for the office's users: never relayed back out (open relay)
            route = [t for t in route if t.kind == "USER"]
        target = " ".join(f"{t.kind.lower()} {t.name}" for t in route)
        self.send(message, route, lambda code, reason: self._answer(txn, message, code, reason, target))

    def send(self, message: ChatMessage, targets: list[Target], on_result: Callable[[int, str], None]) -> None:
        """Send `message` to every registered phone of each USER target and out through each LINE
        target; `on_result(code, reason)` once: the first 2xx, else the lowest failure once every
        copy has failed (404 / 480 / 503 at once when no copy could be sent at all)."""
        copies: list[_Copy] = []
        failure = Failure(404, "Not Found (no route)")
        delivery = _Delivery(on_result)
        for target in targets:
            made = self._copies(delivery, message, target)
            if isinstance(made, Failure):
                failure = made
            else:
                copies += made
        if not copies:
            on_result(failure.code, failure.reason)
            return
        delivery.waiting = len(copies)
        for copy in copies:
            copy.send()

    def _copies(self, delivery: _Delivery, message: ChatMessage, target: Target) -> list[_Copy] | Failure:
        engine = self.engine
        if target.kind == "USER":
            if target.name not in engine.users:
                return Failure(404, f"Not Found (no user {target.name})")
            bindings = engine.registrar.lookup(target.name, engine.now())
            if not bindings:
                return Failure(480, f"Temporarily Unavailable ({target.name} is not registered)")
            to = target.number or target.name
            copies = []
            for b in bindings:
                destination, transport = b.next_hop()  # the first Path hop (RFC 3327), else its source
                req = self._request(b.contact, f"sip:{message.sender}@{engine.advertise}", None,
                                    f"sip:{to}@{engine.advertise}", transport, message)
                for name, value in b.route_headers():
                    req.headers.add(name, value)
                copies.append(_Copy(self, delivery, req, destination, transport, None))
            return copies
        line = engine.lines.get(target.name)
        if line is None:
            return Failure(404, f"Not Found (no line {target.name})")
        if line.address is None or not line.carries_calls:
            return Failure(503, f"Service Unavailable (line {target.name} is not registered)")
        cfg = line.config
        number = target.number or message.to
        host = cfg.server_host
        hostport = host if cfg.server_port == 5060 else f"{host}:{cfg.server_port}"
        ruri = f"sip:{number}@{hostport}" + ("" if cfg.transport == "udp" else f";transport={cfg.transport}")
        req = self._request(ruri, f"sip:{cfg.username}@{host}", cfg.display, f"sip:{number}@{host}", cfg.transport,
                            message)
        caller_id = cfg.caller_id or (message.sender if message.peer_type == "USER" else None)
        if caller_id:
            req.headers.add("P-Asserted-Identity", f"<sip:{caller_id}@{host}>")
        auth = line.auth.__class__(cfg.auth_username or cfg.username, cfg.password)
        return [_Copy(self, delivery, req, line.address, cfg.transport, auth)]

    def _request(self, ruri: str, from_uri: str, display: str | None, to_uri: str, transport: str,
                 message: ChatMessage) -> Request:
        engine = self.engine
        h = Headers()
        h.add("Via", f"{engine.via(transport)};branch={new_branch()}")
        h.add("Max-Forwards", "70")
        name = f'"{display}" ' if display and '"' not in display else ""
        h.add("From", f"{name}<{from_uri}>;tag={new_tag()}")
        h.add("To", f"<{to_uri}>")
        h.add("Call-ID", f"{token_hex(8)}@callflow")
        h.add("CSeq", "1 MESSAGE")
        if engine.user_agent:
            h.add("User-Agent", engine.user_agent)
        req = Request("MESSAGE", ruri, h)
        req.set_body(message.body, message.content_type or "text/plain")
        return req

    def _answer(self, txn: ServerTransaction, message: ChatMessage, code: int, reason: str, target: str) -> None:
        """The sender's one final response, then the `message` event saying how it went."""
        self.engine.layer.respond(txn, create_response(txn.request, code, reason, to_tag=new_tag()),
                                  self.engine.now())
        fields: dict[str, object] = {"from": message.sender, "from_type": message.peer_type.lower(), "to": message.to,
                                     "text": message.text[:TEXT_LIMIT], "target": target, "code": code,
                                     "reason": reason}
        fields["user" if message.peer_type == "USER" else "line"] = message.peer
        self.engine.bus.emit("message", **fields)


class _Delivery:
    """One MESSAGE and its copies: the first 2xx is the result, else the lowest failure once every
    copy has failed."""

    def __init__(self, on_result: Callable[[int, str], None]) -> None:
        self.on_result = on_result
        self.waiting = 0
        self.answered = False
        self.best: tuple[int, str] | None = None

    def done(self, code: int, reason: str) -> None:
        if self.answered:
            return
        if 200 <= code < 300:
            self.answered = True
            self.on_result(code, reason)
            return
        if self.best is None or code < self.best[0]:
            self.best = (code, reason)
        self.waiting -= 1
        if self.waiting <= 0:
            self.answered = True
            self.on_result(*self.best)


class _Copy:
    """One MESSAGE we send (the client transaction's owner: on_response / on_timeout)."""

    def __init__(self, relay: ChatRelay, delivery: _Delivery, request: Request, destination: Address,
                 transport: str, auth: object | None) -> None:
        self.relay = relay
        self.delivery = delivery
        self.request = request
        self.destination = destination
        self.transport = transport
        self.auth = auth
        self.answered_nonce: str | None = None

    def send(self) -> None:
        engine = self.relay.engine
        engine.send_request(self.request, self.destination, self, self.transport)
        engine.pump()

    def on_response(self, resp: Response, txn: ClientTransaction | None) -> None:
        if resp.status < 200:
            return
        if resp.status in (401, 407) and self._with_credentials(resp):
            self.send()
            return
        self.delivery.done(resp.status, resp.reason)

    def on_timeout(self, txn: ClientTransaction) -> None:
        self.delivery.done(408, "Request Timeout")

    def _with_credentials(self, resp: Response) -> bool:
        """A line's provider challenged the copy: send it again (new branch, next CSeq) with the
        line's credentials, once per nonce (RFC 3261 22.2)."""
        if self.auth is None:
            return False
        header = "www-authenticate" if resp.status == 401 else "proxy-authenticate"
        challenge = select_challenge(resp.headers.get_all(header))
        if challenge is None or challenge.nonce == self.answered_nonce:
            return False
        self.answered_nonce = challenge.nonce
        sent = self.request
        try:
            value = self.auth.authorize(challenge, "MESSAGE", sent.uri, sent.body)  # type: ignore[attr-defined]
        except DigestError:
            return False
        h = sent.headers.copy()
        h.set("Via", f"{self.relay.engine.via(self.transport)};branch={new_branch()}")
        h.set("CSeq", f"{sent.cseq[0] + 1} MESSAGE")
        h.set("Authorization" if resp.status == 401 else "Proxy-Authorization", value)
        self.request = Request("MESSAGE", sent.uri, h, sent.body)
        return True
