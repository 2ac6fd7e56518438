"""Cut a TCP/TLS byte stream into whole SIP messages (RFC 3261 18.3, RFC 5626 3.5.1 keep-alives)."""

from __future__ import annotations

from .errors import SipSyntaxError
from .parser import MAX_MESSAGE_SIZE


class StreamFramer:
    """Cut a TCP/TLS byte stream into whole SIP messages using Content-Length.

    `feed(data)` returns the complete messages now available (bytes, one message each). CRLF
    keep-alives between messages are not messages: a double CRLF "ping" (RFC 5626) is counted in
    `pings` so the transport answers each with a single CRLF "pong"; a lone CRLF is skipped.
    A header section or message over `max_size`, or a missing or unreadable Content-Length, makes
    the stream unusable: `feed` raises SipSyntaxError (after first returning any messages framed
    before the fault; call `feed(b"")` to surface it) and keeps raising; close the connection.
    """

    __slots__ = ("_buf", "_error", "max_size", "pings")

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self._buf = bytearray()
        self._error: SipSyntaxError | None = None
        self.max_size = max_size
        self.pings = 0

    def take_pings(self) -> int:
        """The pings seen since the last call (each wants one CRLF pong)."""
        n, self.pings = self.pings, 0
        return n

    @property
    def buffered(self) -> int:
        """Octets received that are not yet a whole message."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        if self._error is not None:
            raise self._error
        buf = self._buf
        buf += data
        out: list[bytes] = []
        try:
            while buf:
                if buf[0] == 13 or buf[0] == 10:
                    if buf[:4] == b"\r\n\r\n":
                        self.pings += 1
                        del buf[:4]
                    elif len(buf) < 4 and b"\r\n\r\n".startswith(buf):
                        break  # maybe the start of a ping: wait for the rest
                    elif buf[:2] == b"\r\n":
                        del buf[:2]  # a lone CRLF: keep-alive or pong
                    else:
                        del buf[:1]  # a stray CR or LF before a start line (RFC 3261 7.5)
                    continue
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > self.max_size:
                        raise SipSyntaxError(f"header section over {self.max_size} octets", 513)
                    break
                total = end + 4 + _stream_content_length(bytes(buf[:end]))
                if total > self.max_size:
                    raise SipSyntaxError(f"message of {total} octets over the {self.max_size} limit", 513)
                if len(buf) < total:
                    break
                out.append(bytes(buf[:total]))
                del buf[:total]
        except SipSyntaxError as exc:
            self._error = exc
            buf.clear()
            if not out:
                raise
        return out


def _stream_content_length(head: bytes) -> int:
    """The Content-Length of a header section: required on streams (RFC 3261 18.3), exactly one."""
    found: list[bytes] = []
    lines = head.split(b"\r\n")
    for i, line in enumerate(lines[1:], 1):
        name, colon, value = line.partition(b":")
        if not colon or name[:1] in (b" ", b"\t"):
            continue
        name = name.strip(b" \t").lower()
        if name == b"content-length" or name == b"l":
            j = i + 1
            while j < len(lines) and lines[j][:1] in (b" ", b"\t"):
                value += b" " + lines[j]
                j += 1
            found.append(value.strip(b" \t\r\n"))
    if not found:
        raise SipSyntaxError("missing Content-Length on a stream transport")
    if len(found) > 1:
        raise SipSyntaxError("more than one Content-Length on a stream transport")
    value = found[0]
    if not value.isdigit() or len(value) > 9:
        raise SipSyntaxError(f"unreadable Content-Length {value[:20]!r} on a stream transport")
    return int(value)
