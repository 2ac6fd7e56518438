"""SIP messages (RFC 3261 section 7): parse bytes into a Request or Response, and serialise them back.

Headers are kept as the (name, value) pairs that arrived, in order, together with the exact text of
each line, so a message we forward or answer keeps what we did not touch byte for byte; typed views
(Via, From/To, CSeq, Contact...) are parsed on demand and cached until the headers change. Nothing
here reads a socket or a clock.

Speed matters: every received request goes through `parse_message` and `validate()`, so both use
plain string operations on the common shapes and fall back to the general grammar only when needed.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from typing import Any, NamedTuple, TypeVar

from .errors import REASONS, SipSyntaxError
from .uri import NameAddr, SipUri, _check_ipv6, sip_uri_ok, split_params, split_quoted

MAX_MESSAGE_SIZE = 65535
MAX_HEADERS = 256

COMPACT = {
    "i": "call-id", "m": "contact", "e": "content-encoding", "l": "content-length",
    "c": "content-type", "f": "from", "s": "subject", "k": "supported", "t": "to",
    "v": "via", "o": "event", "r": "refer-to", "b": "referred-by", "x": "session-expires",
    "u": "allow-events", "y": "identity", "a": "accept-contact", "j": "reject-contact",
    "d": "request-disposition",
}
# Headers whose comma-separated values are separate entries (RFC 3261 7.3.1).
LIST_HEADERS = frozenset({
    "via", "route", "record-route", "contact", "allow", "supported", "require", "proxy-require",
    "unsupported", "accept", "accept-encoding", "accept-language", "content-encoding", "allow-events",
    "path", "service-route",
})
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
_FOLD_RE = re.compile(r"[ \t]*\r?\n[ \t]+")
_VIA_RE = re.compile(
    r"SIP[ \t]*/[ \t]*2\.0[ \t]*/[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]+(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._]+)"
    r"(?:[ \t]*:[ \t]*([0-9]{1,5}))?[ \t]*\Z",
    re.I,
)
_VIA_FAST_RE = re.compile(
    r"SIP/2\.0/([A-Za-z]+) ([A-Za-z0-9\-._]+)(?::([0-9]{1,5}))?"
    r"((?:;[A-Za-z0-9\-.!%*_+`'~]+(?:=[^;=\x00-\x20\x7f\"]+)?)*)\Z"
)
_HOSTPORT_RE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._]+)(?::([0-9]{1,5}))?\Z")
_DATE_RE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
    r" [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT\Z"
)
_ABS_URI_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[^\x00-\x20\x7f<>\"]+\Z")
_COMMON_METHODS = frozenset({
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY",
    "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE",
})
_TRANSPORTS = frozenset({"UDP", "TCP", "TLS", "WS", "WSS", "SCTP"})
_CL = sys.intern("content-length")
_key_cache: dict[str, str] = {}
# raw text before the colon of a header line -> (lookup key, header name as written)
_name_cache: dict[str, tuple[str, str]] = {}
# the same for names written without surrounding whitespace, which the fast path keeps as written
_key_of_name: dict[str, str] = {}
_COLON = repeat(":")
_first = itemgetter(0)
_ONCE = repeat(1)
_T = TypeVar("_T")


def header_key(name: str) -> str:
    """The canonical lookup key of a header name: lower case, compact forms expanded."""
    key = _key_cache.get(name)
    if key is None:
        low = name.strip().lower()
        key = sys.intern(COMPACT.get(low, low))
        if len(_key_cache) < 4096:
            _key_cache[name] = key
    return key


def _header_name(raw: str) -> tuple[str, str]:
    """Check a header name read off the wire (a token, RFC 3261 25.1) and give its key; cached."""
    known = _name_cache.get(raw)
    if known is not None:
        return known
    name = raw.rstrip(" \t")
    if not name or not _TOKEN_RE.match(name):
        raise SipSyntaxError(f"invalid header name {raw[:40]!r}")
    known = (header_key(name), name)
    if len(_name_cache) < 4096:
        _name_cache[raw] = known
        if raw == name:
            _key_of_name[name] = known[0]
    return known


@dataclass(slots=True)
class Via:
    transport: str
    host: str
    port: int | None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Via:
        """Read one via-parm; the common `SIP/2.0/UDP host:port;branch=...` shape is one regex match."""
        m = _VIA_FAST_RE.match(text)
        if m is not None:
            transport, host, port_text, ptext = m.groups()
            params: dict[str, str | None] = {}
            if ptext:
                for item in ptext[1:].split(";"):
                    name, eq, value = item.partition("=")
                    params[name.lower()] = value if eq else None
            port = int(port_text) if port_text else None
            if port is not None and port > 65535:
                raise SipSyntaxError(f"Via port {port} out of range")
            return cls(transport.upper(), host, port, params)
        if text.startswith("SIP/2.0/") and '"' not in text:
            sp = text.find(" ", 8)
            if sp > 8:
                rest = text[sp + 1 :]
                if "\t" not in rest and " " not in rest:
                    transport = text[8:sp]
                    sent_by, semi, ptext = rest.partition(";")
                    m = _HOSTPORT_RE.match(sent_by)
                    if m is not None and (transport in _TRANSPORTS or _TOKEN_RE.match(transport)):
                        params = {}
                        if semi:
                            for item in ptext.split(";"):
                                name, eq, value = item.partition("=")
                                if not name:
                                    raise SipSyntaxError(f"empty parameter in Via {text!r}")
                                params[name.lower()] = value if eq else None
                        return cls._make(transport.upper(), m.group(1), m.group(2), params, text)
        return cls._parse_general(text)

    @classmethod
    def _parse_general(cls, text: str) -> Via:
        sent, params = split_params(text, strict=True)
        m = _VIA_RE.match(sent)
        if m is None:
            raise SipSyntaxError(f"unreadable Via {text!r}")
        return cls._make(m.group(1).upper(), m.group(2), m.group(3), params, text)

    @classmethod
    def _make(cls, transport: str, host: str, port_text: str | None, params: dict[str, str | None],
              text: str) -> Via:
        port = int(port_text) if port_text else None
        if port is not None and port > 65535:
            raise SipSyntaxError(f"Via port {port} out of range")
        if host[0] == "[":
            _check_ipv6(host, text)
        return cls(transport, host, port, params)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    def __str__(self) -> str:
        out = f"SIP/2.0/{self.transport} {self.host}"
        if self.port is not None:
            out += f":{self.port}"
        for k, v in self.params.items():
            out += f";{k}" if v is None else f";{k}={v}"
        return out


class Headers:
    """Ordered header fields with case-insensitive, compact-form-aware lookup.

    A parsed message also keeps the entries as they arrived (`_src`) and the text of each line
    (`_lines`): an entry still present unchanged is written back exactly as it was received.
    """

    __slots__ = ("_items", "_cache", "_src", "_lines")

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        self._items: list[tuple[str, str, str]] = []
        self._cache: dict[str, Any] = {}
        self._src: list[tuple[str, str, str]] | None = None
        self._lines: list[str] | None = None
        if items:
            for name, value in items:
                self._items.append((header_key(name), name, value))

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for _, name, value in self._items:
            yield name, value

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: str) -> bool:
        key = header_key(name)
        for k, _, _ in self._items:
            if k == key:
                return True
        return False

    def get(self, name: str, default: str | None = None) -> str | None:
        key = header_key(name)
        for k, _, value in self._items:
            if k == key:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        """Every field of that name, as it arrived (one entry per header line)."""
        key = header_key(name)
        return [value for k, _, value in self._items if k == key]

    def values(self, name: str) -> list[str]:
        """Every value of a list header, comma-separated values split (RFC 3261 7.3.1)."""
        out: list[str] = []
        for value in self.get_all(name):
            if "," not in value:
                if value:
                    out.append(value)
                continue
            out.extend(v.strip(" \t") for v in split_quoted(value, ",") if v.strip(" \t"))
        return out

    def add(self, name: str, value: str, *, first: bool = False) -> None:
        entry = (header_key(name), name, value)
        if first:
            self._items.insert(0, entry)
        else:
            self._items.append(entry)
        self._cache.clear()

    def set(self, name: str, value: str) -> None:
        """Replace every field of that name with one, where the first one stood."""
        key = header_key(name)
        for i, (k, _, _) in enumerate(self._items):
            if k == key:
                self._items[i] = (key, name, value)
                self._items[i + 1 :] = [e for e in self._items[i + 1 :] if e[0] != key]
                break
        else:
            self._items.append((key, name, value))
        self._cache.clear()

    def remove(self, name: str) -> None:
        key = header_key(name)
        self._items = [e for e in self._items if e[0] != key]
        self._cache.clear()

    def pop_first_value(self, name: str) -> str | None:
        """Remove the first value of a list header (the top Via, the first Route)."""
        key = header_key(name)
        for i, (k, n, value) in enumerate(self._items):
            if k == key:
                parts = split_quoted(value, ",")
                if len(parts) > 1:
                    self._items[i] = (k, n, ",".join(parts[1:]).strip())
                else:
                    del self._items[i]
                self._cache.clear()
                return parts[0].strip()
        return None

    def copy(self) -> Headers:
        h = Headers()
        h._items = list(self._items)
        h._src = self._src
        h._lines = self._lines
        return h

    @property
    def untouched(self) -> bool:
        """True while the fields are exactly those parsed (so the received bytes are still right)."""
        return self._src is not None and self._items == self._src

    def _raw_map(self) -> dict[int, str]:
        """Received entry -> its line as received; built once per parsed message and shared with
        the responses made from it (the entries are the same objects)."""
        raw_of = self._cache.get("#raw")
        if raw_of is None:
            raw_of = {id(entry): line for entry, line in zip(self._src or (), self._lines or (), strict=False)}
            self._cache["#raw"] = raw_of
        return raw_of

    def encode_into(self, out: list[str]) -> None:
        src = self._src
        if src is None:
            for _, name, value in self._items:
                out.append(f"{name}: {value}\r\n")
            return
        raw_of = self._raw_map()
        for entry in self._items:
            line = raw_of.get(id(entry))
            if line is None:
                out.append(f"{entry[1]}: {entry[2]}\r\n")
            else:
                out.append(line + "\r\n")


class Message:
    """What requests and responses share: headers, body, and typed views of the common headers."""

    __slots__ = ("headers", "body", "_raw")

    def __init__(self, headers: Headers, body: bytes = b"") -> None:
        self.headers = headers
        self.body = body
        self._raw: tuple[bytes, str, bytes] | None = None

    # ---- typed views, cached until the headers change -------------------------------------
    def _cached(self, key: str, build: Callable[[], _T]) -> _T:
        cache = self.headers._cache
        value = cache.get(key)
        if value is None:
            value = build()
            cache[key] = value
        return value

    @property
    def call_id(self) -> str:
        value = self.headers.get("call-id")
        if not value:
            raise SipSyntaxError("missing Call-ID")
        return value

    @property
    def cseq(self) -> tuple[int, str]:
        return self._cached("#cseq", self._parse_cseq)

    def _parse_cseq(self) -> tuple[int, str]:
        values = self.headers.get_all("cseq")
        if len(values) != 1:
            raise SipSyntaxError("missing CSeq" if not values else "more than one CSeq")
        return _parse_cseq_value(values[0])

    @property
    def vias(self) -> list[Via]:
        def build() -> list[Via]:
            vias = [Via.parse(v) for v in self.headers.values("via")]
            top = self.headers._cache.get("#topvia")
            if top is not None and vias:
                vias[0] = top  # one object for the top Via, whichever view was asked first
            return vias
        return self._cached("#via", build)

    @property
    def top_via(self) -> Via:
        cache = self.headers._cache
        via = cache.get("#topvia")
        if via is None:
            vias = cache.get("#via")
            if vias is not None:
                if not vias:
                    raise SipSyntaxError("missing Via")
                via = vias[0]
            else:
                via = Via.parse(self._first_via_text())
            cache["#topvia"] = via
        return via

    def _first_via_text(self) -> str:
        for k, _, value in self.headers._items:
            if k == "via":
                if "," in value:
                    for part in split_quoted(value, ","):
                        if part.strip(" \t"):
                            return part.strip(" \t")
                    continue
                if value:
                    return value
        raise SipSyntaxError("missing Via")

    @property
    def from_(self) -> NameAddr:
        return self._cached("#from", lambda: _one_name_addr(self.headers, "from"))

    @property
    def to(self) -> NameAddr:
        return self._cached("#to", lambda: _one_name_addr(self.headers, "to"))

    @property
    def to_tag(self) -> str | None:
        """The To tag without building the whole name-addr: looked up on every request to find its
        dialog, so it stays cheap."""
        return tag_of(self.headers.get("to") or "")

    @property
    def from_tag(self) -> str | None:
        return tag_of(self.headers.get("from") or "")

    @property
    def contacts(self) -> list[NameAddr]:
        """Contact entries; `*` (unregister all) is returned as an empty list plus `contact_star`."""
        def build() -> list[NameAddr]:
            return [NameAddr.parse(v) for v in self.headers.values("contact") if v != "*"]
        return self._cached("#contact", build)

    @property
    def contact_star(self) -> bool:
        return any(v.strip() == "*" for v in self.headers.values("contact"))

    @property
    def routes(self) -> list[NameAddr]:
        """Route entries in order (RFC 3261 20.34)."""
        return self._cached("#route", lambda: [NameAddr.parse(v) for v in self.headers.values("route")])

    @property
    def record_routes(self) -> list[NameAddr]:
        """Record-Route entries in order (RFC 3261 20.30)."""
        return self._cached(
            "#rr", lambda: [NameAddr.parse(v) for v in self.headers.values("record-route")]
        )

    @property
    def content_type(self) -> str | None:
        value = self.headers.get("content-type")
        return value.split(";", 1)[0].strip().lower() if value else None

    @property
    def expires(self) -> int | None:
        value = self.headers.get("expires")
        if value is None:
            return None
        value = value.strip()
        if not (value.isascii() and value.isdigit()):
            raise SipSyntaxError(f"unreadable Expires {value!r}")
        digits = value.lstrip("0") or "0"
        return 2**32 - 1 if len(digits) > 10 else min(int(digits), 2**32 - 1)

    @property
    def max_forwards(self) -> int | None:
        """The Max-Forwards value (0-255), None when absent (RFC 2543 senders omit it)."""
        value = self.headers.get("max-forwards")
        if value is None:
            return None
        if not (value.isascii() and value.isdigit()) or len(value.lstrip("0")) > 3 or int(value) > 255:
            raise SipSyntaxError(f"unreadable Max-Forwards {value[:20]!r}")
        return int(value)

    def set_body(self, body: bytes, content_type: str | None = None) -> None:
        self.body = body
        if content_type:
            self.headers.set("Content-Type", content_type)
        elif not body:
            self.headers.remove("content-type")
        self.headers.set("Content-Length", str(len(body)))

    def validate(self) -> None:
        """Check the headers every transaction needs, so a bad message fails here, not deep in a call.

        The typed views it builds (CSeq, top Via, From, To, Contact) are cached for the transaction
        and dialog layers, so a valid message pays for each parse once.
        """
        self._validate_common()

    def _validate_common(self) -> list[str]:
        # One list of keys, searched in C (count/index), instead of a scan per header asked for.
        items = self.headers._items
        cache = self.headers._cache
        keys = cache.get("#keys")
        if keys is None:
            keys = [k for k, _, _ in items]
        if keys.count("call-id") != 1:
            raise SipSyntaxError("missing Call-ID" if "call-id" not in keys else "more than one Call-ID")
        if not items[keys.index("call-id")][2]:
            raise SipSyntaxError("empty Call-ID")
        if keys.count("from") != 1 or keys.count("to") != 1:
            raise SipSyntaxError("exactly one From and one To are required")
        if "#cseq" not in cache:
            if keys.count("cseq") != 1:
                raise SipSyntaxError("missing CSeq" if "cseq" not in keys else "more than one CSeq")
            cache["#cseq"] = _parse_cseq_value(items[keys.index("cseq")][2])
        if "#topvia" not in cache:
            # the usual single Via line read directly, anything else by the general view
            value = items[keys.index("via")][2] if "via" in keys else ","
            if "," in value or not value:
                self.top_via  # noqa: B018
            else:
                cache["#topvia"] = Via.parse(value)
        # From, To and Contact are read now (one regex each in the usual shape, the URI split only
        # when asked for), so a bad one fails here and the dialog layer finds them built.
        if "#from" not in cache:
            cache["#from"] = NameAddr.parse(items[keys.index("from")][2])
        if "#to" not in cache:
            cache["#to"] = NameAddr.parse(items[keys.index("to")][2])
        if "contact" in keys and "#contact" not in cache:
            value = items[keys.index("contact")][2]
            if keys.count("contact") == 1 and "," not in value and value != "*" and value:
                cache["#contact"] = [NameAddr.parse(value)]
            else:
                self.contacts  # noqa: B018
        if "date" in keys:
            date = items[keys.index("date")][2]
            if not _DATE_RE.match(date):
                raise SipSyntaxError(f"Date is not an RFC 1123 GMT date: {date[:60]!r}")
        return keys

    def encode_head(self, first_line: str) -> bytes:
        out = [first_line, "\r\n"]
        self.headers.encode_into(out)
        out.append("\r\n")
        return "".join(out).encode("utf-8", "surrogateescape")

    def _unchanged_bytes(self, first_line: str) -> bytes | None:
        """The received bytes, while nothing about the message has changed since it was parsed."""
        raw = self._raw
        if (raw is not None and raw[2] is self.body and raw[1] == first_line
                and self.headers._items == self.headers._src):
            return raw[0]
        return None


class Request(Message):
    __slots__ = ("method", "uri", "version", "_ruri")

    def __init__(self, method: str, uri: str, headers: Headers | None = None, body: bytes = b"",
                 version: str = "SIP/2.0") -> None:
        super().__init__(headers if headers is not None else Headers(), body)
        self.method = method
        self.uri = uri
        self.version = version
        self._ruri: SipUri | None = None

    @property
    def request_uri(self) -> SipUri:
        ruri = self._ruri
        if ruri is None:
            ruri = self._ruri = SipUri.parse(self.uri)
        return ruri

    def set_uri(self, uri: str) -> None:
        """Change the Request-URI (always through here, so the parsed view stays right)."""
        self.uri = uri
        self._ruri = None

    def validate(self) -> None:
        keys = self._validate_common()
        method = self.headers._cache["#cseq"][1]
        if method != self.method:
            raise SipSyntaxError(f"CSeq method {method} does not match request method {self.method}")
        mf = keys.count("max-forwards")
        if mf:
            if mf > 1:
                raise SipSyntaxError("more than one Max-Forwards")
            value = self.headers._items[keys.index("max-forwards")][2]
            if not (value.isascii() and value.isdigit() and len(value) <= 3 and int(value) <= 255):
                self.max_forwards  # noqa: B018  (raises with the general reading's message)
        uri = self.uri
        scheme = uri[:5].lower()
        if scheme.startswith("sip:") or scheme == "sips:":
            if not sip_uri_ok(uri) and self.request_uri.headers is not None:
                # RFC 3261 19.1.1: headers are not allowed in a Request-URI (RFC 4475 escruri: we refuse)
                raise SipSyntaxError(f"headers in the Request-URI {uri[:80]!r}")
        elif not _ABS_URI_RE.match(uri):
            raise SipSyntaxError(f"unreadable Request-URI {uri[:80]!r}")

    def __bytes__(self) -> bytes:
        first = f"{self.method} {self.uri} {self.version}"
        raw = self._unchanged_bytes(first)
        if raw is not None:
            return raw
        return self.encode_head(first) + self.body

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response(Message):
    __slots__ = ("status", "reason", "version")

    def __init__(self, status: int, reason: str, headers: Headers | None = None, body: bytes = b"",
                 version: str = "SIP/2.0") -> None:
        super().__init__(headers if headers is not None else Headers(), body)
        self.status = status
        self.reason = reason
        self.version = version

    def __bytes__(self) -> bytes:
        first = f"{self.version} {self.status} {self.reason}"
        raw = self._unchanged_bytes(first)
        if raw is None and self._raw is not None and not self.reason and self._raw[1] == first[:-1]:
            raw = self._unchanged_bytes(first[:-1])  # "SIP/2.0 100" arrived without the last space
        if raw is not None:
            return raw
        return self.encode_head(first) + self.body

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


def _parse_cseq_value(value: str) -> tuple[int, str]:
    """`CSeq: 314159 INVITE`: a number below 2**31 (RFC 3261 8.1.1.5) and a method token."""
    parts = value.split()
    if len(parts) != 2 or not (parts[0].isascii() and parts[0].isdigit()) or len(parts[0]) > 10:
        raise SipSyntaxError(f"unreadable CSeq {value[:60]!r}")
    if parts[1] not in _COMMON_METHODS and not _TOKEN_RE.match(parts[1]):
        raise SipSyntaxError(f"unreadable CSeq {value[:60]!r}")
    number = int(parts[0])
    if number >= 2**31:
        raise SipSyntaxError(f"CSeq number {number} too large")
    return number, parts[1]


def _one_name_addr(headers: Headers, name: str) -> NameAddr:
    value = headers.get(name)
    if value is None:
        raise SipSyntaxError(f"missing {name.title()}")
    return NameAddr.parse(value)


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


def create_response(request: Request, status: int, reason: str, *, to_tag: str | None = None,
                    headers: list[tuple[str, str]] | None = None, body: bytes = b"",
                    content_type: str | None = None) -> Response:
    """A response to `request` per RFC 3261 8.2.6: Via, From, To, Call-ID and CSeq copied (as received)."""
    items: list[tuple[str, str, str]] = []
    for entry in request.headers._items:
        key = entry[0]
        if key in ("via", "from", "call-id", "cseq"):
            items.append(entry)
        elif key == "to":
            if to_tag and status != 100 and tag_of(entry[2]) is None:
                entry = (key, entry[1], f"{entry[2]};tag={to_tag}")
            items.append(entry)
        elif key == "record-route" and 100 < status < 300:
            items.append(entry)
    h = Headers()
    h._items = items
    h._src = request.headers._src
    h._lines = request.headers._lines
    if headers:
        for name, value in headers:
            h.add(name, value)
    if body:
        if content_type:
            h.add("Content-Type", content_type)
    h.add("Content-Length", str(len(body)))
    if h._src is not None:
        h._cache["#raw"] = request.headers._raw_map()
    return Response(status, reason, h, body)


_TAG_RE = re.compile(r";[ \t]*tag[ \t]*=[ \t]*([^;, \t>]*)", re.I)


def tag_of(value: str) -> str | None:
    """The tag parameter of a From/To value: after the `>` of a name-addr, anywhere in an addr-spec
    (whose parameters are the header's, RFC 3261 20.10). An empty `tag=` is no tag."""
    gt = value.rfind(">")
    m = _TAG_RE.search(value, gt + 1 if gt >= 0 else 0)
    return m.group(1) or None if m else None


# ---- message-level acceptance (RFC 3261 8.2 and 16.3) -------------------------------------------

SUPPORTED_OPTIONS = frozenset({"replaces", "timer"})  # timer: session timers, RFC 4028 (runtime/calls)
URI_SCHEMES = frozenset({"sip", "sips"})
BODY_TYPES = ("application/sdp",)
# Methods this server always answers itself, so Max-Forwards: 0 does not stop them (a registrar is
# the final recipient of REGISTER). Add "OPTIONS" to answer OPTIONS at zero hops (RFC 3261 16.3 2).
FINAL_METHODS = frozenset({"REGISTER"})
_SESSION_METHODS = frozenset({"INVITE", "UPDATE"})


class Refusal(NamedTuple):
    """The response a well-formed but unacceptable request deserves, with the headers it must carry."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


def check_request(req: Request, *, supported: Collection[str] = SUPPORTED_OPTIONS,
                  schemes: Collection[str] = URI_SCHEMES, body_types: Collection[str] = BODY_TYPES,
                  final_methods: Collection[str] = FINAL_METHODS) -> Refusal | None:
    """What a UAS must refuse before any routing logic sees `req`, in RFC 3261 8.2 order; None if nothing.

    Syntax (400, via `validate`), Request-URI scheme (416), Max-Forwards 0 (483), Require with
    option-tags not in `supported` (420 + Unsupported), an INVITE/UPDATE body type not in `body_types`
    (415 + Accept), an INVITE whose Accept excludes every type we could answer with (406). Never
    raises: the server only has to send what comes back. An ACK gets None (it is never answered)
    unless it is unreadable, and then the caller drops it.
    """
    try:
        req.validate()
        return _refusal(req, supported, schemes, body_types, final_methods)
    except SipSyntaxError as exc:  # a list header with broken quoting, say: still only a 400
        return Refusal(exc.status, exc.reason)


def _refusal(req: Request, supported: Collection[str], schemes: Collection[str],
             body_types: Collection[str], final_methods: Collection[str]) -> Refusal | None:
    method = req.method
    if method == "ACK":
        return None
    scheme = req.uri.partition(":")[0].lower()
    if scheme not in schemes:
        return Refusal(416, f"Unsupported URI Scheme ({scheme[:40]})")
    if method == "CANCEL":
        return None
    if req.max_forwards == 0 and method not in final_methods:
        return Refusal(483, "Too Many Hops")
    required = req.headers.values("require")
    if required:
        known = {s.lower() for s in supported}
        unknown = [tag for tag in required if tag.lower() not in known]
        if unknown:
            return Refusal(420, REASONS[420], (("Unsupported", ", ".join(unknown)),))
    if method in _SESSION_METHODS:
        if req.body:
            ctype = req.content_type
            if ctype is not None and ctype not in body_types:
                return Refusal(415, REASONS[415], (("Accept", ", ".join(body_types)),))
        if method == "INVITE":
            accepted = req.headers.values("accept")
            if accepted and not any(_media_match(a, body_types) for a in accepted):
                return Refusal(406, "Not Acceptable", (("Accept", ", ".join(body_types)),))
    return None


def _media_match(accept: str, types: Collection[str]) -> bool:
    """Whether one Accept media-range (RFC 3261 20.1, wildcards allowed) covers one of `types`."""
    media, _, params = accept.partition(";")
    media = media.strip(" \t").lower()
    if "q=0" in params.replace(" ", "") and "q=0." not in params.replace(" ", ""):
        return False
    if media == "*/*":
        return True
    major, _, minor = media.partition("/")
    for t in types:
        t_major, _, t_minor = t.partition("/")
        if major == t_major and minor in ("*", t_minor):
            return True
    return False


# ---- stream framing (RFC 3261 18.3, RFC 5626 3.5.1) ------------------------------------------

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
