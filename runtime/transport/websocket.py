"""SIP over WebSocket (RFC 7118) for browser phones: one SIP message per frame, sub-protocol "sip",
connections counted against the limits from the moment TCP accepts them (via the websockets package)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ..sip.transaction import Address
from .specs import ConnectionLimits, _ignore_result

if TYPE_CHECKING:
    from .endpoint import SipEndpoint

log = logging.getLogger("callflow.transport")

WS_MAX_QUEUE = 4         # WebSocket frames buffered ahead of our reader (websockets' default: 16)


class WebSocketConnection:
    """A browser phone's connection (RFC 7118): one SIP message per WebSocket message."""

    def __init__(self, endpoint: SipEndpoint, websocket, transport_name: str) -> None:  # type: ignore[no-untyped-def]
        self.endpoint = endpoint
        self.ws = websocket
        self.name = transport_name
        addr = websocket.remote_address
        self.peer: Address = (addr[0], addr[1])
        self.opened = self.last_used = endpoint.now()
        self.carried = False

    def send(self, data: bytes) -> None:
        self.last_used = self.endpoint.now()
        self.carried = True
        # text frames: SIP over WebSocket is UTF-8 text in every browser stack we know
        task = asyncio.ensure_future(self.ws.send(data.decode("utf-8", "replace")))
        task.add_done_callback(_ignore_result)

    async def serve(self) -> None:
        key = (self.name, self.peer)
        self.endpoint.connections[key] = self
        try:
            async for message in self.ws:
                data = message.encode("utf-8") if isinstance(message, str) else bytes(message)
                self.last_used = self.endpoint.now()
                self.carried = True
                self.endpoint.message_received(data, self.peer, self.name)
        except Exception as exc:  # a dropped browser is normal; log and forget it
            log.debug("websocket %s:%s closed: %r", *self.peer, exc)
        finally:
            if self.endpoint.connections.get(key) is self:
                del self.endpoint.connections[key]

    def expired(self, now: float, limits: ConnectionLimits) -> str | None:
        """Why this connection must be closed at ``now``, or None. A frame still arriving is not
        visible here: websockets bounds it (``max_size``), the idle timeout ends it."""
        if not self.carried and now - self.opened > limits.first_message_timeout:
            return "no SIP message"
        if now - self.last_used > limits.idle_timeout:
            return "idle"
        return None

    def close(self) -> None:
        self.ws.transport.abort()  # no closing handshake: a hostile peer would not finish it


def _limited_ws_connection(endpoint: SipEndpoint, name: str) -> type:
    """websockets' server connection, counted against the limits from the moment TCP accepts it
    (before the HTTP upgrade), and closed at once when over one."""
    from websockets.asyncio.server import ServerConnection

    class LimitedServerConnection(ServerConnection):
        counted = False

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            peer = transport.get_extra_info("peername")
            self.callflow_peer = (peer[0], peer[1])
            if endpoint.connection_opened(name, self.callflow_peer, True, self):
                self.counted = True
            else:
                transport.abort()

        def evict(self) -> None:
            """Close at once to make room under the total cap (see ``StreamConnection.evict``)."""
            if self.counted:
                self.counted = False
                endpoint.connection_closed(self.callflow_peer, True, name)
            self.transport.abort()

        def connection_lost(self, exc: Exception | None) -> None:
            super().connection_lost(exc)
            if self.counted:
                self.counted = False
                endpoint.connection_closed(self.callflow_peer, True, name)

    return LimitedServerConnection
