"""UDP: the SIP socket with large kernel buffers, and its protocol, which hands datagrams to the
endpoint and turns ICMP errors (IP_RECVERR) into failed transactions at once (RFC 3261 8.1.3.1)."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .endpoint import SipEndpoint

log = logging.getLogger("callflow.transport")

UDP_BUFFER = 4 * 1024 * 1024  # bursts queue in the kernel instead of being dropped (lost ACKs, BYEs)
_IP_RECVERR = getattr(socket, "IP_RECVERR", 11)       # Linux <linux/in.h>
_IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)   # Linux <linux/in6.h>


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
