"""Line trust: which sources are a provider's, so their requests skip authentication and the flood guard.

A request is a line's when it comes from that provider's exact address (IP and port), from an
address:port the line's `trust` names (an edge's providers' socket), or from an address or network it
names (any port), over the transport the line is configured for. Every datagram is checked against
this index, so the check is a dict lookup (and a cached scan of the trusted networks), not a walk over
the lines. The engine rebuilds it (`index`) whenever lines
are added, removed or resolved to a new address. No asyncio, no socket, no clock.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from ..sip.transaction import Address
from .client import LineClient


def exact_address(text: str) -> tuple[str, int] | None:
    """A `trust` entry naming one socket, `203.0.113.7:5080` or `[2001:db8::7]:5080`, as (IP, port);
    None for an address or network (any port). The compiler has checked the entry already."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        return None
    if not port.isdigit():
        return None
    try:
        return str(ipaddress.ip_address(host)), int(port)
    except ValueError:
        return None


class LineTrust:
    """The provider-address index of the current lines (see the module's docstring)."""

    def __init__(self) -> None:
        self._line_by_address: dict[Address, LineClient] = {}
        self._trusted_networks: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, LineClient]] = []
        self._trusted_seen: dict[str, LineClient | None] = {}  # source IP -> its line by network, cached
        self._provider_ips: set[str] = set()
        self._line_by_ip: dict[str, LineClient] = {}

    def index(self, lines: Iterable[LineClient]) -> None:
        """Rebuild the provider-address index from `lines` (the server's lines, as they are now):
        every datagram is checked against it, so that check must be a dict lookup, not a scan of the
        lines."""
        lines = list(lines)
        self._line_by_address = {line.address: line for line in lines if line.address is not None}
        self._trusted_networks = []
        for line in lines:
            for text in line.config.trust:
                exact = exact_address(text)
                if exact is not None:  # IP:PORT: that socket only (an edge's providers' socket)
                    self._line_by_address.setdefault(exact, line)
                else:
                    self._trusted_networks.append((ipaddress.ip_network(text, strict=False), line))
        self._trusted_seen = {}
        providers = {line.address: line for line in lines if line.address is not None}
        self._provider_ips = {address[0] for address in providers}
        self._line_by_ip = {address[0]: line for address, line in providers.items()}

    def admits(self, ip: str, port: int | None, transport: str = "udp") -> bool:
        """Whether a packet from (ip, port) over `transport` is let through before the flood guard:
        a line's provider's exact address (a busy trunk is not a flood), the networks its `trust`
        names, and a stream connection from the provider's IP on the line's own transport (a TCP peer
        cannot spoof its address). A UDP packet from the provider's IP but another port is not: it
        may be spoofed. `port` is None where the transport does not tell it."""
        if port is not None and self.line_for_source((ip, port), transport) is not None:
            return True
        if transport != "udp" and ip in self._provider_ips:
            line = self._line_by_ip.get(ip)
            if line is not None and line.config.transport == transport:
                return True
        return False

    def line_for_source(self, source: Address, transport: str = "udp") -> LineClient | None:
        """A request is from a line when it comes from that provider's address, IP and port, or from
        an address the line's `trust` names (any port), over the transport the line is configured
        for (udp, tcp or tls).

        Matching the server's IP alone would let anything else on the provider's host (or a phone
        behind the same NAT) pass as the provider, skipping authentication: a toll-fraud hole. So
        other addresses count only where the operator listed them; and a TCP connection from the
        provider's address is not the provider unless the line is configured for TCP (issue 9).
        """
        line = self._line_by_address.get(source)
        if line is None:
            line = self._trusted_line(source[0])
        if line is not None and line.config.transport != transport.lower():
            return None
        return line

    def _trusted_line(self, ip: str) -> LineClient | None:
        """The line whose `trust` holds `ip` (an address is a network of one); cached, as the flood
        guard asks per datagram."""
        if not self._trusted_networks:
            return None
        seen = self._trusted_seen
        if ip in seen:
            return seen[ip]
        found = None
        try:
            address = ipaddress.ip_address(ip.partition("%")[0])
        except ValueError:
            address = None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if address is not None:
            for network, line in self._trusted_networks:
                if address.version == network.version and address in network:
                    found = line
                    break
        if len(seen) >= 4096:
            seen.clear()
        seen[ip] = found
        return found
