"""asyncio adapters that pump datagrams through the sans-IO transaction layer.

All the protocol lives in runtime.sip; this module only moves bytes, keeps one timer armed at the
layer's next deadline, and hands the layer's events to the engine. Everything leaves in the order
the layer queued it, so a dialog's messages never overtake each other.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .sip.transaction import Address, Event, TransactionLayer

log = logging.getLogger("callflow.transport")


class UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, endpoint: SipEndpoint) -> None:
        self.endpoint = endpoint
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[type-arg]
        self.endpoint.datagram_received(data, (addr[0], addr[1]), "udp")

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and friends: the transaction timers will notice; nothing to crash over
        if log.isEnabledFor(logging.DEBUG):
            log.debug("udp error: %s", exc)


class SipEndpoint:
    """One transaction layer, its sockets and its timer; `on_event` is the engine's entry point."""

    def __init__(self, layer: TransactionLayer, on_event: Callable[[Event], None]) -> None:
        self.layer = layer
        self.on_event = on_event
        self.loop = asyncio.get_event_loop()
        self.udp: UdpProtocol | None = None
        self.local: Address = ("127.0.0.1", 5060)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._pumping = False

    async def listen_udp(self, host: str, port: int) -> Address:
        transport, protocol = await self.loop.create_datagram_endpoint(
            lambda: UdpProtocol(self), local_addr=(host, port))
        self.udp = protocol
        sock = transport.get_extra_info("sockname")
        self.local = (sock[0], sock[1])
        return self.local

    def now(self) -> float:
        return self.loop.time()

    def datagram_received(self, data: bytes, source: Address, transport: str) -> None:
        try:
            self.layer.receive(data, source, self.loop.time(), transport)
        except Exception:  # the layer promises not to raise; if it ever does, lose the message, not the server
            log.exception("internal error on a message from %s:%s", *source)
        self.pump()

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
        for transport, dest, data in out:
            if udp is not None and transport in ("udp", "UDP"):
                try:
                    udp.sendto(data, dest)
                except OSError as exc:
                    log.warning("event=send_failed dest=%s:%s error=%r", dest[0], dest[1], str(exc))

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

    def close(self) -> None:
        if self._timer:
            self._timer.cancel()
        if self.udp and self.udp.transport:
            self.udp.transport.close()
