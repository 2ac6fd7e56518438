"""A raw SIP OPTIONS ping over UDP, TCP or TLS: readiness probe for any SIP peer (Kamailio, Callflow)."""

from __future__ import annotations

import ipaddress
import re
import secrets
import socket
import ssl
import time
from pathlib import Path

_STATUS = re.compile(rb"^SIP/2\.0 (\d{3}) ")
_CONTENT_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*(\d+)", re.I | re.M)
TRANSPORTS = ("udp", "tcp", "tls")


def ensure_loopback(host: str) -> None:
    """Refuse anything but a loopback address: tests must never send traffic off this machine."""
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"refusing to send test traffic to non-loopback address {host!r}")


def client_tls_context(cafile: str | Path | None = None) -> ssl.SSLContext:
    """A TLS 1.2+ client context: verifies the peer against `cafile` (hostname = the IP literal), or
    verifies nothing when `cafile` is None (the rig's peers use throwaway certificates)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cafile is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(cafile=str(cafile))
    return ctx


def _request(host: str, port: int, transport: str, local_port: int) -> bytes:
    branch = "z9hG4bK" + secrets.token_hex(8)
    tag, call_id = secrets.token_hex(4), secrets.token_hex(8)
    param = "" if transport == "udp" else f";transport={transport}"
    return (
        f"OPTIONS sip:{host}:{port}{param} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport.upper()} {host}:{local_port};rport;branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:rig-probe@{host}>;tag={tag}\r\n"
        f"To: <sip:{host}:{port}>\r\n"
        f"Call-ID: {call_id}@{host}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        f"Contact: <sip:rig-probe@{host}:{local_port}{param}>\r\n"
        "Accept: application/sdp\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def options_ping(port: int, host: str = "127.0.0.1", timeout: float = 0.5, *, transport: str = "udp",
                 cafile: str | Path | None = None) -> int | None:
    """Send one OPTIONS to sip:host:port and return the response status code, or None on silence.

    transport is "udp" (default), "tcp" or "tls" (TLS 1.2+; the server certificate is checked
    against `cafile` when given, else not at all). Provisional (1xx) answers are skipped; nothing
    listening yet (ICMP port-unreachable, connection refused, a failed handshake) is reported as
    None, like silence, so callers can simply poll. `timeout` bounds the whole exchange.
    """
    ensure_loopback(host)
    if transport not in TRANSPORTS:
        raise ValueError(f"transport {transport!r}: use one of {TRANSPORTS}")
    if transport == "udp":
        return _ping_udp(port, host, timeout)
    return _ping_stream(port, host, timeout, transport, cafile)


def _ping_udp(port: int, host: str, timeout: float) -> int | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        request = _request(host, port, "udp", sock.getsockname()[1])
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


def _ping_stream(port: int, host: str, timeout: float, transport: str,
                 cafile: str | Path | None) -> int | None:
    deadline = time.monotonic() + timeout
    try:
        raw = socket.create_connection((host, port), timeout=timeout, source_address=(host, 0))
    except OSError:
        return None
    sock: socket.socket = raw
    try:
        if transport == "tls":
            sock = client_tls_context(cafile).wrap_socket(
                raw, server_hostname=host if cafile is not None else None)
        sock.sendall(_request(host, port, transport, sock.getsockname()[1]))
        buf = b""
        while True:
            # one stream may carry a 100 Trying before the final answer: split on the framing
            while b"\r\n\r\n" in buf:
                head, rest = buf.split(b"\r\n\r\n", 1)
                length = _CONTENT_LENGTH.search(head)
                body_len = int(length.group(1)) if length else 0
                if len(rest) < body_len:
                    break
                buf = rest[body_len:]
                match = _STATUS.match(head)
                if match and not head.startswith(b"SIP/2.0 1"):
                    return int(match.group(1))
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            sock.settimeout(left)
            chunk = sock.recv(65536)
            if not chunk:
                return None
            buf += chunk
    except (OSError, ssl.SSLError):  # TimeoutError, reset, handshake failure
        return None
    finally:
        sock.close()
