"""Parse one SIP message from the octets of a datagram or of a framed stream message (RFC 3261 7).

The fast path takes the common shape in C-level loops (every header name seen before and a token,
no folding, CRLF line ends); anything unusual falls back to checking each line, unfolding and
learning names. Either way the result keeps each received line, so it can be written back as is.
Raises SipSyntaxError for anything unreadable, with the status a response to it should carry.
"""

from __future__ import annotations

import re
import sys
from itertools import repeat
from operator import itemgetter

from .errors import SipSyntaxError
from .headers import _COMMON_METHODS, _TOKEN_RE, Headers, _header_name, _key_of_name
from .model import Request, Response

MAX_MESSAGE_SIZE = 65535
MAX_HEADERS = 256
_FOLD_RE = re.compile(r"[ \t]*\r?\n[ \t]+")
_CL = sys.intern("content-length")
_COLON = repeat(":")
_first = itemgetter(0)
_ONCE = repeat(1)


def parse_message(data: bytes, *, stream: bool = False) -> Request | Response:
    """Parse one message. On datagram transports the body is what Content-Length says (extra octets
    are ignored, a short body is an error); raises SipSyntaxError for anything unreadable."""
    if type(data) is not bytes:
        data = bytes(data)
    size = len(data)
    is_resp = data[:4] == b"SIP/"
    if size > MAX_MESSAGE_SIZE:
        raise SipSyntaxError("message too large", 513, is_response=is_resp)
    start = 0
    if data[:1] in (b"\r", b"\n"):  # RFC 3261 7.5: ignore CRLFs before the start line
        while start < size and data[start] in (10, 13):
            start += 1
        is_resp = data[start : start + 4] == b"SIP/"
    end = data.find(b"\r\n\r\n", start)
    if end >= 0:
        nl = "\r\n"
        body_start = end + 4
    else:
        end = data.find(b"\n\n", start)
        if end < 0:
            if start >= size:
                raise SipSyntaxError("empty message")
            raise SipSyntaxError("no empty line after the header fields", is_response=is_resp)
        nl = "\n"
        body_start = end + 2
    head = data[start:end].decode("utf-8", "surrogateescape")
    try:
        msg, first = _parse_head(head, nl)
    except SipSyntaxError as exc:
        if is_resp:
            exc.is_response = True
        raise
    items = msg.headers._items
    keys = list(map(_first, items))  # searched in C here and again by validate()
    msg.headers._cache["#keys"] = keys
    lengths = keys.count(_CL)
    if lengths:
        cl = items[keys.index(_CL)][2]
        if lengths > 1:
            raise SipSyntaxError("more than one Content-Length", is_response=is_resp)
        if not (cl.isascii() and cl.isdigit()) or len(cl) > 9:
            raise SipSyntaxError(f"unreadable Content-Length {cl[:20]!r}", is_response=is_resp)
        length = int(cl)
        stop = body_start + length
        if stop > size:
            raise SipSyntaxError(f"Content-Length {length} exceeds the {size - body_start} body octets",
                                 is_response=is_resp)
    elif stream:
        raise SipSyntaxError("missing Content-Length on a stream transport", is_response=is_resp)
    else:
        stop = size
    body = data[body_start:stop]
    msg.body = body
    raw = data if start == 0 and stop == size else data[start:stop]
    msg._raw = (raw, first, body)
    return msg


def _parse_head(head: str, nl: str) -> tuple[Request | Response, str]:
    """The start line and header fields; the caller frames the body."""
    lines = head.split(nl)
    n = len(lines) - 1
    if n > MAX_HEADERS:
        raise SipSyntaxError(f"more than {MAX_HEADERS} header fields", 513)
    first = lines[0]
    del lines[0]
    # Every CR and LF must be part of a line end: with them split off, none is left (memchr, not a
    # count over the whole header).
    joined = "".join(lines)
    if "\r" in joined or "\n" in joined:
        raise SipSyntaxError("bare CR or LF inside the header" if nl == "\r\n" else "mixed line ends in the header")
    raw_lines = lines
    try:
        # The common case in C-level loops: every name seen before and a token, no folding. A
        # colon-less line fails the unpacking, anything else unusual misses the cache.
        keys = _key_of_name
        items = [(keys[name], name, value.strip(" \t")) for name, value in map(str.split, lines, _COLON, _ONCE)]
    except (KeyError, ValueError):
        if lines and lines[0][:1] in (" ", "\t"):
            raise SipSyntaxError("continuation line before the first header") from None
        if any(line[:1] in (" ", "\t") for line in lines):
            lines, raw_lines = _unfold(head, nl)
            del lines[0]
            del raw_lines[0]
        items = _read_items(lines)
    headers = Headers.__new__(Headers)
    headers._items = items
    headers._cache = {}
    headers._src = items.copy()
    headers._lines = raw_lines

    msg: Request | Response
    if first[:4] == "SIP/":
        parts = first.split(" ", 2)
        if len(parts) < 2 or len(parts[1]) != 3 or not (parts[1].isascii() and parts[1].isdigit()):
            raise SipSyntaxError(f"unreadable status line {first[:80]!r}", is_response=True)
        status = int(parts[1])
        if not 100 <= status <= 699:
            raise SipSyntaxError(f"status code {status} out of range", is_response=True)
        if parts[0] != "SIP/2.0":
            raise SipSyntaxError(f"unsupported SIP version {parts[0]!r}", 505, is_response=True)
        resp = Response.__new__(Response)
        resp.status = status
        resp.reason = parts[2] if len(parts) > 2 else ""
        resp.version = "SIP/2.0"
        msg = resp
    else:
        parts = first.split(" ")
        if len(parts) != 3:
            raise SipSyntaxError(f"request line needs METHOD SP URI SP VERSION: {first[:80]!r}")
        method, uri, version = parts
        if method not in _COMMON_METHODS and not _TOKEN_RE.match(method):
            raise SipSyntaxError(f"invalid method {method[:40]!r}")
        if version != "SIP/2.0":
            if version.upper().startswith("SIP/"):
                raise SipSyntaxError(f"unsupported SIP version {version!r}", 505)
            raise SipSyntaxError(f"unreadable request line {first[:80]!r}")
        if not uri:
            raise SipSyntaxError("empty Request-URI")
        req = Request.__new__(Request)
        req.method = method
        req.uri = uri
        req.version = "SIP/2.0"
        req._ruri = None
        msg = req
    msg.headers = headers
    return msg, first


def _read_items(lines: list[str]) -> list[tuple[str, str, str]]:
    """Header lines the fast path could not take: names checked one by one, and learnt."""
    items = []
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon:
            raise SipSyntaxError(f"header line without a colon: {name[:60]!r}")
        key, written = _header_name(name)
        items.append((key, written, value.strip(" \t")))
    return items


def _unfold(head: str, nl: str) -> tuple[list[str], list[str]]:
    """Logical header lines with folding (RFC 3261 7.3.1) replaced by one space, and their raw text."""
    physical = head.split(nl)
    raw: list[str] = [physical[0]]
    for line in physical[1:]:
        if line[:1] in (" ", "\t") and len(raw) > 1:
            raw[-1] = raw[-1] + nl + line
        elif line[:1] in (" ", "\t"):
            raise SipSyntaxError("continuation line before the first header")
        else:
            raw.append(line)
    logical = [_FOLD_RE.sub(" ", r) if nl in r else r for r in raw]
    return logical, raw
