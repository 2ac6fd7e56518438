"""asyncio adapters that pump bytes through the sans-IO transaction layer: UDP, TCP, TLS, WebSocket.

All the protocol lives in runtime.sip; this module only moves bytes, keeps one timer armed at the
layer's next deadline, and hands the layer's events to the engine. Everything leaves in the order
the layer queued it, so a dialog's messages never overtake each other.

Stream transports (RFC 3261 18.3): a response goes back on the connection its request came in on;
a request to an address we already have a connection with reuses it (RFC 5923's spirit), otherwise
a connection is opened and the message waits for it. Double-CRLF pings get a CRLF pong (RFC 5626).
WebSocket (RFC 7118) carries one SIP message per frame, sub-protocol "sip".

No client can exhaust the server's connections (``ConnectionLimits``, issue 9): stream and WebSocket
connections are capped per source address and in total (a connection over a cap is closed as soon
as it is accepted, so descriptors stay bounded under a flood); the TLS and WebSocket opening
handshakes are timed; a connection must bring a whole SIP message soon after it opens, must finish
a message it started (a slow-loris trickling a byte a minute is closed), and is closed when nothing
useful (a SIP message either way, or a keep-alive ping once it has carried one) passed for long.
What one connection can make us hold is one message of at most ``MAX_MESSAGE_SIZE`` octets.

Strangers cannot fill the total cap either (issue 9, attack 5): an inbound connection is *unproven*
until it carries a request we answer with a 2xx other than to OPTIONS (a REGISTER or an INVITE that
passed authentication; the engine may also call ``SipEndpoint.prove``). An unproven connection is
closed after ``unproven_idle_timeout`` of silence instead of ``idle_timeout``, and when the total
cap is reached the oldest unproven connection is closed to make room for the newcomer instead of
refusing it. A flood from many sources then churns among its own connections, while a phone's
proven connection is never evicted.

The package, one module per job (runtime/transport.py split; importers keep `from runtime.transport
import ...`):

- specs.py: ListenSpec, ConnectionLimits, the Observer hook
- udp.py: the UDP socket and protocol (ICMP errors)
- stream.py: TCP and TLS connections (framing, pings, limits)
- websocket.py: SIP over WebSocket (RFC 7118)
- endpoint.py: SipEndpoint, which owns the layer, the sockets, the connections and the timer
"""

from .endpoint import CONNECT_TIMEOUT, REFUSAL_LINES, REFUSAL_WINDOW, SWEEP_PERIOD, SipEndpoint
from .specs import IDLE_TIMEOUT, STREAM_TRANSPORTS, ConnectionLimits, Evictable, ListenSpec, Observer
from .stream import StreamConnection
from .udp import UDP_BUFFER, UdpProtocol
from .websocket import WS_MAX_QUEUE, WebSocketConnection

__all__ = ["CONNECT_TIMEOUT", "IDLE_TIMEOUT", "REFUSAL_LINES", "REFUSAL_WINDOW", "STREAM_TRANSPORTS", "SWEEP_PERIOD",
           "UDP_BUFFER", "WS_MAX_QUEUE", "ConnectionLimits", "Evictable", "ListenSpec", "Observer", "SipEndpoint",
           "StreamConnection", "UdpProtocol", "WebSocketConnection"]
