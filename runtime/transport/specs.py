"""What the transports are asked to do: where to listen (ListenSpec), what connections may hold
(ConnectionLimits, issue 9), the message observer hook, and small helpers the other modules share."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from ..sip.transaction import Address

STREAM_TRANSPORTS = ("tcp", "tls")
IDLE_TIMEOUT = 900.0     # close a stream connection nobody used for this long

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


class Evictable(Protocol):
    """An inbound connection the total cap may close to make room (``SipEndpoint._evict_oldest``)."""

    def evict(self) -> None: ...


def _ignore_result(task: asyncio.Future) -> None:  # type: ignore[type-arg]
    if not task.cancelled():
        task.exception()
