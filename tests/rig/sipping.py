"""A raw SIP OPTIONS ping over UDP: readiness probe for any SIP peer (Kamailio, Callflow itself)."""

from __future__ import annotations

import ipaddress
import re
import secrets
import socket

_STATUS = re.compile(rb"^SIP/2\.0 (\d{3}) ")


def ensure_loopback(host: str) -> None:
    """Refuse anything but a loopback address: tests must never send traffic off this machine."""
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"refusing to send test traffic to non-loopback address {host!r}")


def options_ping(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> int | None:
    """Send one OPTIONS to sip:host:port and return the response status code, or None on silence.

    Provisional (1xx) answers are skipped; an ICMP port-unreachable (nothing listening yet) is
    reported as None, like silence, so callers can simply poll.
    """
    ensure_loopback(host)
    branch = "z9hG4bK" + secrets.token_hex(8)
    tag, call_id = secrets.token_hex(4), secrets.token_hex(8)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        local_port = sock.getsockname()[1]
        request = (
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{local_port};rport;branch={branch}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:rig-probe@{host}>;tag={tag}\r\n"
            f"To: <sip:{host}:{port}>\r\n"
            f"Call-ID: {call_id}@{host}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            f"Contact: <sip:rig-probe@{host}:{local_port}>\r\n"
            "Accept: application/sdp\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        sock.settimeout(timeout)
        try:
            sock.sendto(request, (host, port))
            while True:
                data, _ = sock.recvfrom(65535)
                match = _STATUS.match(data)
                if match and not data.startswith(b"SIP/2.0 1"):
                    return int(match.group(1))
        except (TimeoutError, ConnectionRefusedError):
            return None
