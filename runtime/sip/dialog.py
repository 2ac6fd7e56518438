"""Dialogs (RFC 3261 section 12): the state two user agents share after an INVITE is answered.

A B2BUA holds two of them per call, one per leg. This module builds the in-dialog requests (BYE,
re-INVITE, ACK) with the right Request-URI, Route set and CSeq, and checks which dialog an incoming
request belongs to. Pure: no sockets, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .message import Headers, Request, Response
from .transaction import new_branch
from .uri import NameAddr, SipUri


@dataclass(slots=True)
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str | None
    local_uri: str          # our From/To value without the tag, as sent
    remote_uri: str         # the peer's From/To value without the tag
    remote_target: str      # the peer's Contact URI: where in-dialog requests go
    route_set: list[str] = field(default_factory=list)
    local_cseq: int = 1
    remote_cseq: int | None = None

    @classmethod
    def as_uas(cls, invite: Request, local_tag: str) -> Dialog:
        """We answered `invite`: the peer's Contact is the target; Record-Route is kept in order."""
        contacts = invite.contacts
        target = str(contacts[0].uri) if contacts else invite.from_.uri.__str__()
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=invite.from_tag,
            local_uri=_strip_tag(invite.headers.get("to") or ""),
            remote_uri=_strip_tag(invite.headers.get("from") or ""),
            remote_target=target,
            route_set=invite.headers.values("record-route"),
            local_cseq=0,
            remote_cseq=invite.cseq[0],
        )

    @classmethod
    def as_uac(cls, invite: Request, response: Response) -> Dialog:
        """Our `invite` got a response with a To tag: Record-Route is reversed (RFC 3261 12.1.2)."""
        contacts = response.contacts
        target = str(contacts[0].uri) if contacts else invite.uri
        return cls(
            call_id=invite.call_id,
            local_tag=invite.from_tag or "",
            remote_tag=response.to_tag,
            local_uri=_strip_tag(invite.headers.get("from") or ""),
            remote_uri=_strip_tag(response.headers.get("to") or ""),
            remote_target=target,
            route_set=list(reversed(response.headers.values("record-route"))),
            local_cseq=invite.cseq[0],
        )

    def update_target(self, msg: Request | Response) -> None:
        """A target refresh (re-INVITE, UPDATE, or their 2xx) may move the peer's Contact."""
        contacts = msg.contacts
        if contacts:
            self.remote_target = str(contacts[0].uri)

    def next_hop(self) -> SipUri:
        """Where the request physically goes: the first loose route, else the remote target."""
        if self.route_set:
            return NameAddr.parse(self.route_set[0]).uri
        return SipUri.parse(self.remote_target)

    def create_request(self, method: str, via: str, *, contact: str | None = None,
                       cseq: int | None = None, body: bytes = b"", content_type: str | None = None,
                       extra: list[tuple[str, str]] | None = None) -> Request:
        """An in-dialog request; `via` is our sent-by (e.g. "SIP/2.0/UDP 127.0.0.1:5060;rport")."""
        if cseq is None:
            if method not in ("ACK", "CANCEL"):
                self.local_cseq += 1
            cseq = self.local_cseq
        h = Headers()
        h.add("Via", f"{via};branch={new_branch()}")
        h.add("Max-Forwards", "70")
        for route in self._routes():
            h.add("Route", route)
        h.add("From", f"{self.local_uri};tag={self.local_tag}")
        h.add("To", f"{self.remote_uri};tag={self.remote_tag}" if self.remote_tag else self.remote_uri)
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{cseq} {method}")
        if contact:
            h.add("Contact", contact)
        for name, value in extra or ():
            h.add(name, value)
        if body:
            h.add("Content-Type", content_type or "application/sdp")
        h.add("Content-Length", str(len(body)))
        return Request(method, self._request_uri(), h, body)

    def _routes(self) -> list[str]:
        if self.route_set and ";lr" not in self.route_set[0]:
            # strict router (RFC 2543): it goes in the Request-URI, the target at the end of the routes
            return self.route_set[1:] + [f"<{self.remote_target}>"]
        return list(self.route_set)

    def _request_uri(self) -> str:
        if self.route_set and ";lr" not in self.route_set[0]:
            return str(NameAddr.parse(self.route_set[0]).uri)
        return self.remote_target

    def accepts(self, request: Request) -> bool:
        """Whether an in-dialog request's CSeq is new (RFC 3261 12.2.2: lower ones get 500)."""
        number = request.cseq[0]
        if request.method in ("ACK", "CANCEL"):
            return True
        if self.remote_cseq is not None and number <= self.remote_cseq:
            return False
        self.remote_cseq = number
        return True


def _strip_tag(value: str) -> str:
    """A From/To value without its tag parameter (the rest is kept as the peer wrote it)."""
    low = value.lower()
    i = low.find(";tag=")
    if i < 0:
        return value
    j = value.find(";", i + 1)
    return value[:i] + (value[j:] if j >= 0 else "")
