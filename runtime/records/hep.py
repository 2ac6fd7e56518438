"""HEP v3 (Homer Encapsulation Protocol), the capture format Homer and sngrep collect SIP in.

There is no RFC; the format is sipcapture's "HEP3 Network Protocol Specification". A packet is the
ASCII id "HEP3", its total length (uint16, network order), then chunks, each:

    vendor id (uint16, 0 = generic)  chunk type (uint16)  chunk length (uint16, header included)  value

Generic chunk types written here:

    0x0001 IP family (uint8: 2 = IPv4, 10 = IPv6)     0x0002 IP protocol (uint8: 17 = UDP, 6 = TCP)
    0x0003/0x0004 IPv4 source/destination (4 bytes)   0x0005/0x0006 IPv6 source/destination (16 bytes)
    0x0007/0x0008 source/destination port (uint16)    0x0009/0x000a time: seconds, microseconds (uint32)
    0x000b protocol type (uint8: 1 = SIP)             0x000c capture agent id (uint32)
    0x000f payload (the SIP message as sent)          0x0011 correlation id (the Call-ID)

`encode_hep3` is a pure function; `HepSender` sends the packets over UDP from a non-blocking socket
(a collector that is down costs a failed sendto, logged once, never a wait).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import struct

log = logging.getLogger("callflow.trace")

FAMILY_IPV4, FAMILY_IPV6 = 2, 10
PROTO_UDP, PROTO_TCP = 17, 6
PROTOCOL_SIP = 1
_STREAM = frozenset({"tcp", "tls", "ws", "wss"})


def _chunk(kind: int, value: bytes) -> bytes:
    return struct.pack("!HHH", 0, kind, 6 + len(value)) + value


def encode_hep3(*, source: tuple[str, int], destination: tuple[str, int], transport: str, payload: bytes,
                timestamp: float, capture_id: int = 2001, correlation_id: str | None = None) -> bytes:
    """One HEP v3 packet carrying one SIP message.

    `source`/`destination` are (ip, port) of the message's sender and receiver, both IPv4 or both
    IPv6 (an IPv4 address beside an IPv6 one is written IPv4-mapped); `transport` udp|tcp|tls|ws|wss
    (stream transports are IP protocol TCP); `timestamp` wall-clock seconds since the epoch.
    Raises ValueError for an address that is not an IP address.
    """
    src = ipaddress.ip_address(source[0].partition("%")[0])
    dst = ipaddress.ip_address(destination[0].partition("%")[0])
    if src.version != dst.version:
        src = _as_v6(src)
        dst = _as_v6(dst)
    v4 = src.version == 4
    seconds = int(timestamp)
    micros = int(round((timestamp - seconds) * 1_000_000)) % 1_000_000
    chunks = [
        _chunk(0x0001, bytes([FAMILY_IPV4 if v4 else FAMILY_IPV6])),
        _chunk(0x0002, bytes([PROTO_TCP if transport.lower() in _STREAM else PROTO_UDP])),
        _chunk(0x0003 if v4 else 0x0005, src.packed),
        _chunk(0x0004 if v4 else 0x0006, dst.packed),
        _chunk(0x0007, struct.pack("!H", source[1] & 0xFFFF)),
        _chunk(0x0008, struct.pack("!H", destination[1] & 0xFFFF)),
        _chunk(0x0009, struct.pack("!I", seconds & 0xFFFFFFFF)),
        _chunk(0x000A, struct.pack("!I", micros)),
        _chunk(0x000B, bytes([PROTOCOL_SIP])),
        _chunk(0x000C, struct.pack("!I", capture_id & 0xFFFFFFFF)),
    ]
    if correlation_id:
        chunks.append(_chunk(0x0011, correlation_id.encode("utf-8", "replace")))
    chunks.append(_chunk(0x000F, payload))
    body = b"".join(chunks)
    total = 6 + len(body)
    if total > 0xFFFF:
        raise ValueError(f"a HEP packet holds at most 65535 bytes; this SIP message makes {total}")
    return b"HEP3" + struct.pack("!H", total) + body


def decode_hep3(packet: bytes) -> dict[int, bytes]:
    """Chunk type -> value of a HEP v3 packet (generic vendor chunks only); for tests and tools.
    Raises ValueError when it is not one."""
    if packet[:4] != b"HEP3" or len(packet) < 6:
        raise ValueError("not a HEP3 packet")
    (total,) = struct.unpack_from("!H", packet, 4)
    if total != len(packet):
        raise ValueError(f"HEP3 length says {total} bytes, the packet has {len(packet)}")
    out: dict[int, bytes] = {}
    offset = 6
    for _ in range(1000):
        if offset >= total:
            break
        vendor, kind, length = struct.unpack_from("!HHH", packet, offset)
        if length < 6 or offset + length > total:
            raise ValueError(f"bad HEP3 chunk length {length} at offset {offset}")
        if vendor == 0:
            out[kind] = packet[offset + 6:offset + length]
        offset += length
    return out


def _as_v6(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv6Address:
    if isinstance(address, ipaddress.IPv6Address):
        return address
    return ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + address.packed)


class HepError(Exception):
    """The collector address cannot be used: the message says which and why."""


class HepSender:
    """Sends HEP packets to one collector over UDP. `send` never blocks and never raises."""

    def __init__(self, host: str, port: int) -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except socket.gaierror as exc:
            raise HepError(f"--hep {host}:{port}: cannot resolve {host!r}: {exc.strerror}") from None
        family, _, _, _, address = infos[0]
        self.address = address[:2]
        self.name = f"{host}:{port}"
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sent = 0
        self.failed = 0

    def send(self, packet: bytes) -> None:
        try:
            self.sock.sendto(packet, self.address)
            self.sent += 1
        except OSError as exc:
            self.failed += 1
            if self.failed == 1 or self.failed % 1000 == 0:
                log.warning("event=hep_error collector=%s failed=%d error=%r", self.name, self.failed, str(exc))

    def close(self) -> None:
        self.sock.close()
