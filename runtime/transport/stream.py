"""TCP and TLS connections (RFC 3261 18.3): framed by Content-Length, answered double-CRLF pings
(RFC 5626), counted against the connection limits, and what proves an inbound one (a 2xx sent)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ..sip.errors import SipSyntaxError
from ..sip.message import StreamFramer
from ..sip.transaction import Address
from .specs import ConnectionLimits

if TYPE_CHECKING:
    from .endpoint import SipEndpoint

log = logging.getLogger("callflow.transport")


class StreamConnection(asyncio.Protocol):
    """One TCP or TLS connection, inbound or outbound, framed by Content-Length."""

    def __init__(self, endpoint: SipEndpoint, transport_name: str, inbound: bool = True) -> None:
        self.endpoint = endpoint
        self.name = transport_name
        self.inbound = inbound
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.peer: Address = ("", 0)
        self.counted = False
        self.opened = 0.0
        self.last_used = 0.0  # last whole SIP message in or out, or ping after one
        self.carried = not inbound  # has carried a SIP message (ours open with one)
        self.partial_since: float | None = None  # first octet of a message not yet whole

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = (peer[0], peer[1])
        self.opened = self.last_used = self.endpoint.now()
        if not self.endpoint.connection_opened(self.name, self.peer, self.inbound, self):
            transport.abort()  # over a limit: give the descriptor back at once
            return
        self.counted = True
        self.endpoint.connections[(self.name, self.peer)] = self

    def evict(self) -> None:
        """Close at once to make room under the total cap: uncounted now, the descriptor freed."""
        if self.counted:
            self.counted = False
            self.endpoint.connection_closed(self.peer, self.inbound, self.name)
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.framer.feed(data)
        except SipSyntaxError as exc:
            log.info("event=connection_closed transport=%s peer=%s:%s reason=%r", self.name, *self.peer, str(exc))
            if self.transport:
                self.transport.close()
            return
        pings = self.framer.take_pings()
        now = self.endpoint.now()
        if messages or (pings and self.carried):
            self.last_used = now  # a lone CRLF or a stray byte is not use: it keeps nothing open
        if messages:
            self.carried = True
            self.partial_since = now if self.framer.buffered else None
        elif not self.framer.buffered:
            self.partial_since = None
        elif self.partial_since is None:
            self.partial_since = now
        if pings and self.transport is not None:
            self.transport.write(b"\r\n" * pings)
        for message in messages:
            self.endpoint.message_received(message, self.peer, self.name)

    def send(self, data: bytes) -> None:
        self.last_used = self.endpoint.now()
        self.carried = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def expired(self, now: float, limits: ConnectionLimits) -> str | None:
        """Why this connection must be closed at ``now`` (seconds, loop clock), or None."""
        if not self.carried and now - self.opened > limits.first_message_timeout:
            return "no SIP message"
        if self.partial_since is not None and now - self.partial_since > limits.message_timeout:
            return "message never finished"
        if now - self.last_used > limits.idle_timeout:
            return "idle"
        return None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        key = (self.name, self.peer)
        if self.endpoint.connections.get(key) is self:
            del self.endpoint.connections[key]
        if self.counted:
            self.counted = False
            self.endpoint.connection_closed(self.peer, self.inbound, self.name)


def _accepts(data: bytes) -> bool:
    """Is ``data`` a 2xx response to a request other than OPTIONS (RFC 3261 7.2; the method is the
    CSeq's, 20.16, case-sensitive)? Such an answer proves the connection's peer (it registered or
    placed a call); an OPTIONS is answered 200 to anyone."""
    if not data.startswith(b"SIP/2.0 2"):
        return False
    end = data.find(b"\r\n\r\n")
    for line in data[: end if end >= 0 else len(data)].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"cseq":
            return value.split()[-1:] != [b"OPTIONS"]
    return False
