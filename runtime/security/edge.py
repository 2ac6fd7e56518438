"""Behind an edge proxy: whose request is it, the phone's or the edge's?

Behind a Kamailio edge (deploy/kamailio-edge.cfg) every request a node receives comes from the edge's
address, so the flood guard and the password-guessing guard would count every phone as one source,
and one guesser would get the edge (all phones) held. A node told which addresses are edges
(`--edge HOST[:PORT]`) keys its guards by the address the edge saw the request come from, which the
edge writes into the Via it received (RFC 3261 18.2.1 `received`, RFC 3581 `rport`): the Via just
below the edge's own. An edge itself is never held or ignored.

That Via is trusted from a configured edge only: anyone else could write any address there. The edge
must overwrite what a phone wrote (Kamailio replaces `received`/`rport` on the Via it receives, and
the shipped cfg forces `rport`), so a phone cannot pass for another one through it either.

Sans-IO, no clock: the engine asks `client_ip` with what it received.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from ..sip.errors import SipError
from ..sip.headers import Via
from ..sip.message import Request
from ..sip.uri import split_quoted

__all__ = ["EdgeTrust", "parse_edge", "EDGE_HEADER_BYTES"]

EDGE_HEADER_BYTES = 4096  # of a datagram read for its Vias before parsing (they come first in practice)
# a Via header line: "Via:" or its compact form "v:", any case, at the start of a line
_VIA_LINE = re.compile(rb"\r\n(?:via|v)[ \t]*:[ \t]*([^\r\n]*)", re.I)


def parse_edge(text: str) -> tuple[str, int | None]:
    """`--edge` value: an IP address, optionally with a port (`192.0.2.1`, `192.0.2.1:5060`,
    `[2001:db8::1]:5060`), as (canonical IP, port or None). Raises ValueError with a usable message."""
    host, port = text.strip(), None
    if host.startswith("["):
        inner, _, rest = host[1:].partition("]")
        host = inner
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                raise ValueError(f"expected an edge as IP or IP:PORT, got {text!r}")
            port = int(rest[1:])
    elif host.count(":") == 1:
        host, _, port_text = host.partition(":")
        if not port_text.isdigit():
            raise ValueError(f"expected an edge as IP or IP:PORT, got {text!r}")
        port = int(port_text)
    try:
        ip = str(ipaddress.ip_address(host))
    except ValueError:
        raise ValueError(f"expected an edge as IP or IP:PORT (an address, not a name), got {text!r}") from None
    if port is not None and not 0 < port <= 65535:
        raise ValueError(f"edge port out of range in {text!r}")
    return ip, port


class EdgeTrust:
    """The configured edges (`--edge`): an edge is an IP (any port) or an exact IP and port.

    `client_ip` and `client_ip_in` say which address a request counts as for the guards: the phone's
    address the edge reports for a request from an edge, the request's source for anyone else.
    """

    def __init__(self, edges: Iterable[str] = ()) -> None:
        self._ips: set[str] = set()
        self._exact: set[tuple[str, int]] = set()
        for text in edges:
            ip, port = parse_edge(text)
            if port is None:
                self._ips.add(ip)
            else:
                self._exact.add((ip, port))
        self._edge_ips = self._ips | {ip for ip, _ in self._exact}

    def __bool__(self) -> bool:
        return bool(self._edge_ips)

    def describe(self) -> str:
        """The edges as configured, for a log line: `192.0.2.1,192.0.2.2:5060`."""
        return ",".join(sorted(self._ips) + sorted(f"{ip}:{port}" for ip, port in self._exact))

    def is_edge(self, ip: str, port: int | None) -> bool:
        """Whether a message from (ip, port) comes from a configured edge."""
        if ip not in self._edge_ips:
            return False
        return ip in self._ips or (port is not None and (ip, port) in self._exact)

    def client_ip(self, ip: str, port: int | None, request: Request) -> str:
        """The address to judge `request` by (guards, the digest nonce's scope): from an edge, the
        phone's address the edge wrote into the Via below its own; else, or when that Via is absent
        or unreadable, `ip` itself."""
        return self.client_address(ip, port or 0, request)[0]

    def client_address(self, ip: str, port: int, request: Request) -> tuple[str, int]:
        """(IP, port) of the phone that sent `request`, for what a user reads (events, logs): from an
        edge, the Via below the edge's (`received` else its host; `rport` else its port, 5060 by
        default); else, or when that Via is unusable, (ip, port) itself."""
        if not self._edge_ips or not self.is_edge(ip, port):
            return ip, port
        try:
            vias = request.headers.values("via")
        except SipError:
            return ip, port
        return _reported_address(vias) or (ip, port)

    def client_ip_in(self, ip: str, port: int | None, data: bytes) -> str | None:
        """For the flood guard, before the datagram is parsed: the phone's address an edge reports in
        `data` (its first EDGE_HEADER_BYTES), None when `data` is from an edge but names no such
        address (a response to us, the edge's own probe: never counted), `ip` when not from an edge."""
        if not self._edge_ips or not self.is_edge(ip, port):
            return ip
        head = data[:EDGE_HEADER_BYTES]
        end = head.find(b"\r\n\r\n")
        if end >= 0:
            head = head[:end]
        values: list[str] = []
        for m in _VIA_LINE.finditer(head):
            values.extend(v.strip() for v in split_quoted(m.group(1).decode("utf-8", "replace"), ",") if v.strip())
            if len(values) >= 2:
                break
        found = _reported_address(values)
        return found[0] if found is not None else None


def _reported_address(vias: list[str]) -> tuple[str, int] | None:
    """The address in the second Via (the one the edge received): its `received`, else its host,
    and its `rport`, else its port (5060 when none); None when there is no readable second Via or it
    names no IP address."""
    if len(vias) < 2:
        return None
    try:
        via = Via.parse(vias[1])
    except (SipError, ValueError):
        return None
    received = via.params.get("received")
    host = received if received else via.host
    try:
        ip = str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None
    rport = via.params.get("rport")
    port = int(rport) if rport and rport.isdigit() and 0 < int(rport) <= 65535 else via.port or 5060
    return ip, port
