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
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from .sip.errors import SipSyntaxError
from .sip.message import MAX_MESSAGE_SIZE, StreamFramer
from .sip.transaction import Address, Event, TransactionLayer

log = logging.getLogger("callflow.transport")

STREAM_TRANSPORTS = ("tcp", "tls")
UDP_BUFFER = 4 * 1024 * 1024  # bursts queue in the kernel instead of being dropped (lost ACKs, BYEs)
IDLE_TIMEOUT = 900.0     # close a stream connection nobody used for this long
CONNECT_TIMEOUT = 5.0
SWEEP_PERIOD = 1.0       # how often connection deadlines are checked (seconds)
REFUSAL_WINDOW = 60      # refused connections are summed up in one log line per this many seconds
REFUSAL_LINES = 20       # sources whose first refusal in a window is logged at once (a flood's first)
WS_MAX_QUEUE = 4         # WebSocket frames buffered ahead of our reader (websockets' default: 16)
_SO_MEMINFO = getattr(socket, "SO_MEMINFO", 55)  # Linux: sk_meminfo, [0] = receive queue bytes
_IP_RECVERR = getattr(socket, "IP_RECVERR", 11)       # Linux <linux/in.h>
_IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)   # Linux <linux/in6.h>

# fn(direction, transport, address, data): every SIP message in or out, see SipEndpoint.add_observer
Observer = Callable[[Literal["in", "out"], str, Address, bytes], None]


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What stream (TCP, TLS) and WebSocket connections may hold; times in seconds.

    Defaults are sized for a PBX: 2,000 connections (each phone on TCP/TLS/WS keeps one, plus the
    providers), 50 from one address (an office's phones behind one NAT), well under a default
    descriptor limit. Connections we open count in the total but are never refused.
    """

    max_connections: int = 2000    # open at once, inbound and outbound
    max_per_source: int = 50       # inbound, from one IP address
    handshake_timeout: float = 10.0  # TLS and WebSocket opening handshakes
    first_message_timeout: float = 10.0  # accepted, but no whole SIP message yet: closed
    message_timeout: float = 20.0  # a message begun but not finished for this long: closed (slow loris)
    idle_timeout: float = IDLE_TIMEOUT  # no SIP message, nor a ping after one, either way: closed
    unproven_idle_timeout: float = 30.0  # the same for a connection no 2xx (but to OPTIONS) went out on


@dataclass(frozen=True, slots=True)
class ListenSpec:
    transport: str   # udp | tcp | tls | ws | wss
    host: str
    port: int


class UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, endpoint: SipEndpoint, sock: socket.socket | None = None) -> None:
        self.endpoint = endpoint
        self.transport: asyncio.DatagramTransport | None = None
        self.sock = sock  # the raw socket, for its error queue (asyncio's wrapper has no recvmsg)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[type-arg]
        self.endpoint.message_received(data, (addr[0], addr[1]), "udp")

    def error_received(self, exc: Exception) -> None:
        # ICMP port/host unreachable: with IP_RECVERR the kernel queues each one with the address we
        # had sent to, so the transactions towards it fail now (RFC 3261 8.1.3.1: as a 503), not
        # after 32 s of retransmissions into nothing
        for _ in range(64 if self.sock is not None else 0):  # bounded: the receive buffer bounds the queue
            try:
                _, _, _, dest = self.sock.recvmsg(1, 512, socket.MSG_ERRQUEUE)  # type: ignore[union-attr]
            except (OSError, ValueError):
                break
            self.endpoint.unreachable("udp", (dest[0], dest[1]))
        if log.isEnabledFor(logging.DEBUG):
            log.debug("udp error: %s", exc)


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


def _udp_socket(host: str, port: int) -> socket.socket:
    """The SIP UDP socket, with large kernel buffers: at a few hundred calls per second the default
    receive buffer overflows during bursts, and every lost ACK or BYE costs retransmissions."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, UDP_BUFFER)
            except OSError:
                pass  # the kernel caps it (net.core.rmem_max); what it grants is still an improvement
        sock.bind((host, port))
        if sys.platform.startswith("linux"):
            # report ICMP errors with their destination (read in UdpProtocol.error_received)
            if family == socket.AF_INET:
                sock.setsockopt(socket.IPPROTO_IP, _IP_RECVERR, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVERR, 1)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class Evictable(Protocol):
    """An inbound connection the total cap may close to make room (``SipEndpoint._evict_oldest``)."""

    def evict(self) -> None: ...


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


def _ignore_result(task: asyncio.Future) -> None:  # type: ignore[type-arg]
    if not task.cancelled():
        task.exception()


class SipEndpoint:
    """One transaction layer, its sockets and its timer; `on_event` is the engine's entry point."""

    def __init__(self, layer: TransactionLayer, on_event: Callable[[Event], None]) -> None:
        self.layer = layer
        self.on_event = on_event
        self.loop = asyncio.get_event_loop()
        self.udp: UdpProtocol | None = None
        self.local: dict[str, Address] = {}
        self.connections: dict[tuple[str, Address], StreamConnection | WebSocketConnection] = {}
        self._pending: dict[tuple[str, Address], list[bytes]] = {}
        self._servers: list[asyncio.AbstractServer] = []
        self._ws_servers: list[object] = []
        self._client_ssl: ssl.SSLContext | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._pumping = False
        self._sweeper: asyncio.TimerHandle | None = None
        # the engine's flood guard: (ip, data, now, port, transport) -> admitted
        self.admit: Callable[[str, bytes, float, int, str], bool] | None = None
        self._udp_sockets: list[socket.socket] = []
        self._observers: tuple[Observer, ...] = ()  # empty tuple: one falsy test per message, no call
        self.limits = ConnectionLimits()
        self._open_total = 0
        self._open_by_source: dict[str, int] = {}  # inbound stream/WebSocket connections per IP
        # inbound connections no 2xx has gone out on yet, oldest first: (transport, peer) -> connection
        self._unproven: dict[tuple[str, Address], Evictable] = {}
        self.evicted = 0  # unproven connections closed to make room under the total cap
        self._refusals: dict[str, int] = {}  # connections refused per IP in this log window
        self._refusals_since = 0.0  # start of the window (loop clock)

    def add_observer(self, fn: Observer) -> None:
        """Call `fn(direction, transport, address, data)` for every SIP message this endpoint receives
        ("in", before the flood guard, so a trace shows what arrived) or sends ("out": requests,
        responses, ACKs, stateless answers and every retransmission, as handed to the socket).

        `transport` is lower case (udp, tcp, tls, ws, wss); `address` is the peer's (ip, port);
        `data` is the whole message as bytes. Keep-alive CRLFs are not SIP messages and are not
        reported. The observer runs on the event loop: it must be quick and must not block; an
        exception it raises is logged and the message goes on as if nothing was registered.
        """
        self._observers = (*self._observers, fn)

    def remove_observer(self, fn: Observer) -> None:
        """Stop calling `fn`; raises ValueError if it was not added."""
        observers = list(self._observers)
        observers.remove(fn)
        self._observers = tuple(observers)

    def _observe(self, direction: Literal["in", "out"], transport: str, address: Address, data: bytes) -> None:
        for fn in self._observers:
            try:
                fn(direction, transport, address, data)
            except Exception:  # a tracer's bug must not cost a call
                log.exception("event=observer_failed direction=%s", direction)

    # ---- connection limits ------------------------------------------------------------------------
    def connection_opened(self, transport: str, peer: Address, inbound: bool, conn: Evictable | None = None) -> bool:
        """Count a stream or WebSocket connection just accepted (or opened by us); False when an
        inbound one is over ``limits`` (per source, or in total with no unproven connection to
        evict) and must be closed at once. An inbound ``conn`` starts unproven (module docstring):
        it may be evicted for a later newcomer until ``prove`` or a 2xx sent on it."""
        limits = self.limits
        if inbound:
            host = peer[0]
            held = self._open_by_source.get(host, 0)
            if held < limits.max_per_source and self._open_total >= limits.max_connections and self._unproven:
                self._evict_oldest(transport, host)
            if held >= limits.max_per_source or self._open_total >= limits.max_connections:
                refused = self._refusals.get(host, 0)
                if refused == 0 and len(self._refusals) < REFUSAL_LINES:
                    # the first refusal of a source in a window gets a line, not each of a flood's
                    log.warning("event=connection_refused transport=%s source=%s held=%d total=%d reason=%s",
                                transport, host, held, self._open_total,
                                "per_source_limit" if held >= limits.max_per_source else "total_limit")
                self._refusals[host] = refused + 1
                return False
            self._open_by_source[host] = held + 1
            if conn is not None:
                self._unproven[(transport, peer)] = conn
        self._open_total += 1
        return True

    def _evict_oldest(self, transport: str, newcomer: str) -> None:
        """Close the oldest unproven connection so that a newcomer from ``newcomer`` fits."""
        key, victim = next(iter(self._unproven.items()))
        del self._unproven[key]
        self.evicted += 1
        if self.evicted & (self.evicted - 1) == 0:  # the 1st, 2nd, 4th, 8th...: a flood gets a few lines
            log.warning("event=connection_closed transport=%s peer=%s:%s reason=%s", key[0], key[1][0], key[1][1],
                        f'"evicted for a newcomer from {newcomer}: total limit, unproven (evicted so far: '
                        f'{self.evicted})"')
        try:
            victim.evict()
        except Exception:  # a connection half gone: it is uncounted, or will be on connection_lost
            log.exception("internal error while evicting %s:%s", key[1][0], key[1][1])

    def prove(self, transport: str, peer: Address) -> None:
        """The connection from ``peer`` on ``transport`` (lower case) carried a request we accepted
        (an authenticated REGISTER or INVITE): it keeps the long idle timeout and is never evicted.
        Unknown connections are ignored."""
        self._unproven.pop((transport, peer), None)

    def connection_closed(self, peer: Address, inbound: bool, transport: str = "") -> None:
        """A connection counted by ``connection_opened`` is gone."""
        self._open_total -= 1
        self._unproven.pop((transport, peer), None)
        if inbound:
            host = peer[0]
            held = self._open_by_source.get(host, 0) - 1
            if held > 0:
                self._open_by_source[host] = held
            else:
                self._open_by_source.pop(host, None)

    @property
    def open_connections(self) -> int:
        """Stream and WebSocket connections open now (counted ones: refused ones close at once)."""
        return self._open_total

    def receive_backlog(self) -> int | None:
        """Bytes of datagrams the kernel holds for our UDP sockets, not yet read (Linux SO_MEMINFO):
        the direct measure of a server falling behind. None where the platform cannot say."""
        if not sys.platform.startswith("linux"):
            return None
        total = 0
        for sock in self._udp_sockets:
            try:
                total += struct.unpack_from("I", sock.getsockopt(socket.SOL_SOCKET, _SO_MEMINFO, 36))[0]
            except (OSError, ValueError, struct.error):
                return None
        return total if self._udp_sockets else None

    # ---- listening -------------------------------------------------------------------------------
    async def listen(self, spec: ListenSpec, ssl_context: ssl.SSLContext | None = None) -> Address:
        t = spec.transport
        if t == "udp":
            raw = _udp_socket(spec.host, spec.port)
            transport, protocol = await self.loop.create_datagram_endpoint(lambda: UdpProtocol(self, raw), sock=raw)
            self.udp = protocol
            self._udp_sockets.append(transport.get_extra_info("socket"))
            sock = transport.get_extra_info("sockname")
        elif t in STREAM_TRANSPORTS:
            if t == "tls" and ssl_context is None:
                raise ValueError("listening on TLS needs a certificate and key (tls cert / tls key)")
            tls_options = {"ssl": ssl_context, "ssl_handshake_timeout": self.limits.handshake_timeout} \
                if t == "tls" else {}
            server = await self.loop.create_server(lambda: StreamConnection(self, t), spec.host, spec.port,
                                                   **tls_options)  # type: ignore[arg-type]
            self._servers.append(server)
            sock = server.sockets[0].getsockname()
        elif t in ("ws", "wss"):
            from websockets.asyncio.server import serve

            if t == "wss" and ssl_context is None:
                raise ValueError("listening on WSS needs a certificate and key (tls cert / tls key)")

            async def handler(websocket) -> None:  # type: ignore[no-untyped-def]
                await WebSocketConnection(self, websocket, t).serve()

            # one SIP message per frame: nothing larger is ever useful (websockets' default is 1 MiB,
            # which 300 hostile connections turned into 300 MB), and few frames queued ahead of us.
            # No permessage-deflate: its two zlib contexts were most of an idle connection's memory,
            # and SIP messages of a few hundred octets gain little from it (RFC 7118 does not ask it)
            server = await serve(handler, spec.host, spec.port, subprotocols=["sip"],  # type: ignore[list-item]
                                 ssl=ssl_context if t == "wss" else None, compression=None,
                                 open_timeout=self.limits.handshake_timeout, max_size=MAX_MESSAGE_SIZE,
                                 max_queue=WS_MAX_QUEUE, create_connection=_limited_ws_connection(self, t))
            self._ws_servers.append(server)
            sock = next(iter(server.sockets)).getsockname()
        else:
            raise ValueError(f"unknown transport {t!r}: use udp, tcp, tls, ws or wss")
        self.local[t] = (sock[0], sock[1])
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(SWEEP_PERIOD, self._sweep)
        return self.local[t]

    async def listen_udp(self, host: str, port: int) -> Address:
        return await self.listen(ListenSpec("udp", host, port))

    def set_client_tls(self, context: ssl.SSLContext) -> None:
        self._client_ssl = context

    def now(self) -> float:
        return self.loop.time()

    # ---- input ---------------------------------------------------------------------------------
    def message_received(self, data: bytes, source: Address, transport: str) -> None:
        if self._observers:
            self._observe("in", transport, source, data)
        now = self.loop.time()
        if self.admit is not None and not self.admit(source[0], data, now, source[1], transport):
            return  # a flood or a scanner: not even parsed
        try:
            self.layer.receive(data, source, now, transport)
        except Exception:  # the layer promises not to raise; if it ever does, lose the message, not the server
            log.exception("internal error on a message from %s:%s", *source)
        self.pump()

    datagram_received = message_received

    # ---- output --------------------------------------------------------------------------------
    def pump(self) -> None:
        """Send what is queued, deliver events, re-arm the timer; re-entrant calls just return."""
        if self._pumping:
            return
        self._pumping = True
        try:
            layer = self.layer
            for _ in range(100_000):
                self._flush()
                event = layer.next_event()
                if event is None:
                    break
                try:
                    self.on_event(event)
                except Exception:
                    log.exception("internal error while handling %s", type(event).__name__)
            self._flush()
            self._arm()
        finally:
            self._pumping = False

    def _flush(self) -> None:
        out = self.layer.datagrams_to_send()
        if not out:
            return
        udp = self.udp.transport if self.udp else None
        observers = self._observers
        for transport, dest, data in out:
            if observers:
                self._observe("out", transport.lower(), dest, data)
            if transport == "udp" or transport == "UDP":
                if udp is not None:
                    try:
                        udp.sendto(data, dest)
                    except OSError as exc:
                        log.warning("event=send_failed dest=%s:%s error=%r", dest[0], dest[1], str(exc))
                continue
            name = transport.lower()
            conn = self.connections.get((name, dest))
            if conn is not None:
                if self._unproven and (name, dest) in self._unproven and _accepts(data):
                    del self._unproven[(name, dest)]
                conn.send(data)
            elif name in STREAM_TRANSPORTS:
                self._connect_and_send(name, dest, data)
            else:
                # a WebSocket phone that went away: nobody to send to; the transaction will time out
                log.info("event=send_failed transport=%s dest=%s:%s reason=%s", name, dest[0], dest[1],
                         '"no connection"')

    def _connect_and_send(self, name: str, dest: Address, data: bytes) -> None:
        key = (name, dest)
        queued = self._pending.get(key)
        if queued is not None:
            queued.append(data)  # a connection is on its way: keep the order
            return
        self._pending[key] = [data]
        task = self.loop.create_task(self._connect(name, dest))
        task.add_done_callback(_ignore_result)

    async def _connect(self, name: str, dest: Address) -> None:
        key = (name, dest)
        try:
            context = None
            if name == "tls":
                context = self._client_ssl or ssl.create_default_context()
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(lambda: StreamConnection(self, name, inbound=False), dest[0], dest[1],
                                            ssl=context),
                CONNECT_TIMEOUT)
            # connection_made registered it under the peer address, which is `dest`
            self.connections[key] = conn
            for data in self._pending.pop(key, []):
                conn.send(data)
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            dropped = self._pending.pop(key, [])
            log.warning("event=connect_failed transport=%s dest=%s:%s error=%r dropped=%d", name, dest[0],
                        dest[1], str(exc) or type(exc).__name__, len(dropped))
            self.layer.transport_failed(name, dest, self.loop.time())
            self.pump()

    def unreachable(self, transport: str, dest: Address) -> None:
        """ICMP says `dest` cannot be reached: its client transactions fail at once."""
        log.info("event=unreachable transport=%s dest=%s:%s", transport, dest[0], dest[1])
        self.layer.transport_failed(transport, dest, self.loop.time())
        self.pump()

    # ---- timers ---------------------------------------------------------------------------------
    def _arm(self) -> None:
        deadline = self.layer.get_timer()
        if deadline is None:
            if self._timer:
                self._timer.cancel()
                self._timer = None
                self._timer_at = None
            return
        if self._timer_at is not None and self._timer_at <= deadline:
            return
        if self._timer:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        try:
            self.layer.handle_timer(self.loop.time())
        except Exception:
            log.exception("internal error in the transaction timers")
        self.pump()

    def sweep(self, now: float) -> int:
        """Close the connections past a deadline of ``limits`` at ``now`` (loop clock, seconds):
        no SIP message soon after opening, a message never finished, idle (a phone re-connects
        when it next registers). Returns how many were closed."""
        closed = 0
        for conn in list(self.connections.values()):
            reason = conn.expired(now, self.limits)
            if (reason is None and (conn.name, conn.peer) in self._unproven
                    and now - conn.last_used > self.limits.unproven_idle_timeout):
                reason = "idle, unproven"
            if reason is not None:
                log.info("event=connection_closed transport=%s peer=%s:%s reason=%s", conn.name, conn.peer[0],
                         conn.peer[1], f'"{reason}"')
                conn.close()
                closed += 1
        if self._refusals and now - self._refusals_since >= REFUSAL_WINDOW:
            worst = max(self._refusals, key=self._refusals.__getitem__)
            log.warning("event=connections_refused window_s=%d sources=%d refused=%d worst=%s worst_refused=%d",
                        REFUSAL_WINDOW, len(self._refusals), sum(self._refusals.values()), worst,
                        self._refusals[worst])
            self._refusals.clear()
        if not self._refusals:
            self._refusals_since = now
        return closed

    def _sweep(self) -> None:
        try:
            self.sweep(self.now())
        except Exception:  # never lose the sweeper itself
            log.exception("internal error while sweeping connections")
        self._sweeper = self.loop.call_later(SWEEP_PERIOD, self._sweep)

    def close(self) -> None:
        if self._timer:
            self._timer.cancel()
        if self._sweeper:
            self._sweeper.cancel()
        if self.udp and self.udp.transport:
            self.udp.transport.close()
        for server in self._servers:
            server.close()
        for ws_server in self._ws_servers:
            ws_server.close()  # type: ignore[attr-defined]
        for conn in list(self.connections.values()):
            if isinstance(conn, StreamConnection):
                conn.close()
