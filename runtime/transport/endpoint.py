"""SipEndpoint: one transaction layer, its sockets and its timer. It pumps bytes through the sans-IO
layer (runtime.sip), keeps one timer armed at the layer's next deadline, hands the layer's events to
the engine, opens and reuses stream connections, enforces the connection limits and sweeps them."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import struct
import sys
from collections.abc import Callable
from typing import Literal

from ..sip.message import MAX_MESSAGE_SIZE
from ..sip.transaction import Address, Event, TransactionLayer
from .specs import STREAM_TRANSPORTS, ConnectionLimits, Evictable, ListenSpec, Observer, _ignore_result
from .stream import StreamConnection, _accepts
from .udp import UdpProtocol, _udp_socket
from .websocket import WS_MAX_QUEUE, WebSocketConnection, _limited_ws_connection

log = logging.getLogger("callflow.transport")

CONNECT_TIMEOUT = 5.0
SWEEP_PERIOD = 1.0       # how often connection deadlines are checked (seconds)
REFUSAL_WINDOW = 60      # refused connections are summed up in one log line per this many seconds
REFUSAL_LINES = 20       # sources whose first refusal in a window is logged at once (a flood's first)
_SO_MEMINFO = getattr(socket, "SO_MEMINFO", 55)  # Linux: sk_meminfo, [0] = receive queue bytes


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
