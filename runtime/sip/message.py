"""SIP messages (RFC 3261 section 7): parse bytes into a Request or Response, and serialise them back.

Headers are kept as the (name, value) pairs that arrived, in order, so a message we forward or answer
keeps what we did not touch; typed views (Via, From/To, CSeq, Contact...) are parsed on demand and
cached until the headers change. Nothing here reads a socket or a clock.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from .errors import SipSyntaxError
from .uri import NameAddr, SipUri, split_params, split_quoted

MAX_MESSAGE_SIZE = 65535

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
    r"SIP[ \t]*/[ \t]*2\.0[ \t]*/[ \t]*([A-Za-z]+)[ \t]+(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)"
    r"(?:[ \t]*:[ \t]*([0-9]{1,5}))?[ \t]*\Z",
    re.I,
)
_key_cache: dict[str, str] = {}


def header_key(name: str) -> str:
    """The canonical lookup key of a header name: lower case, compact forms expanded."""
    key = _key_cache.get(name)
    if key is None:
        low = name.strip().lower()
        key = COMPACT.get(low, low)
        if len(_key_cache) < 4096:
            _key_cache[name] = key
    return key


@dataclass(slots=True)
class Via:
    transport: str
    host: str
    port: int | None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Via:
        sent, params = split_params(text)
        m = _VIA_RE.match(sent)
        if m is None:
            raise SipSyntaxError(f"unreadable Via {text!r}")
        port = int(m.group(3)) if m.group(3) else None
        if port is not None and port > 65535:
            raise SipSyntaxError(f"Via port {port} out of range")
        return cls(m.group(1).upper(), m.group(2), port, params)

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
    """Ordered header fields with case-insensitive, compact-form-aware lookup."""

    __slots__ = ("_items", "_cache")

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        self._items: list[tuple[str, str, str]] = []
        self._cache: dict[str, object] = {}
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
        return any(k == key for k, _, _ in self._items)

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
            out.extend(v.strip() for v in split_quoted(value, ",") if v.strip())
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
        return h

    def encode_into(self, out: list[str]) -> None:
        for _, name, value in self._items:
            out.append(f"{name}: {value}\r\n")


class Message:
    """What requests and responses share: headers, body, and typed views of the common headers."""

    __slots__ = ("headers", "body")

    def __init__(self, headers: Headers, body: bytes = b"") -> None:
        self.headers = headers
        self.body = body

    # ---- typed views, cached until the headers change -------------------------------------
    def _cached(self, key: str, build):  # type: ignore[no-untyped-def]
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
        parts = values[0].split()
        if len(parts) != 2 or not parts[0].isdigit() or not _TOKEN_RE.match(parts[1]):
            raise SipSyntaxError(f"unreadable CSeq {values[0]!r}")
        number = int(parts[0])
        if number >= 2**31:
            raise SipSyntaxError(f"CSeq number {number} too large")
        return number, parts[1]

    @property
    def vias(self) -> list[Via]:
        return self._cached("#via", lambda: [Via.parse(v) for v in self.headers.values("via")])

    @property
    def top_via(self) -> Via:
        vias = self.vias
        if not vias:
            raise SipSyntaxError("missing Via")
        return vias[0]

    @property
    def from_(self) -> NameAddr:
        return self._cached("#from", lambda: _one_name_addr(self.headers, "from"))

    @property
    def to(self) -> NameAddr:
        return self._cached("#to", lambda: _one_name_addr(self.headers, "to"))

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
    def content_type(self) -> str | None:
        value = self.headers.get("content-type")
        return value.split(";", 1)[0].strip().lower() if value else None

    @property
    def expires(self) -> int | None:
        value = self.headers.get("expires")
        if value is None:
            return None
        value = value.strip()
        if not value.isdigit():
            raise SipSyntaxError(f"unreadable Expires {value!r}")
        return min(int(value), 2**32 - 1)

    def set_body(self, body: bytes, content_type: str | None = None) -> None:
        self.body = body
        if content_type:
            self.headers.set("Content-Type", content_type)
        elif not body:
            self.headers.remove("content-type")
        self.headers.set("Content-Length", str(len(body)))

    def validate(self) -> None:
        """Check the headers every transaction needs, so a bad message fails here, not deep in a call."""
        self.call_id  # noqa: B018
        self.cseq  # noqa: B018
        self.top_via  # noqa: B018
        self.from_  # noqa: B018
        self.to  # noqa: B018
        if len(self.headers.get_all("to")) != 1 or len(self.headers.get_all("from")) != 1:
            raise SipSyntaxError("exactly one From and one To are required")
        if len(self.headers.get_all("call-id")) != 1:
            raise SipSyntaxError("exactly one Call-ID is required")

    def encode_head(self, first_line: str) -> bytes:
        out = [first_line, "\r\n"]
        self.headers.encode_into(out)
        out.append("\r\n")
        return "".join(out).encode("utf-8", "surrogateescape")


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
        super().validate()
        number, method = self.cseq
        if method != self.method:
            raise SipSyntaxError(f"CSeq method {method} does not match request method {self.method}")
        mf = self.headers.get("max-forwards")
        if mf is not None and (not mf.strip().isdigit() or int(mf) > 255):
            raise SipSyntaxError(f"unreadable Max-Forwards {mf!r}")

    def __bytes__(self) -> bytes:
        return self.encode_head(f"{self.method} {self.uri} {self.version}") + self.body

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
        return self.encode_head(f"{self.version} {self.status} {self.reason}") + self.body

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


def _one_name_addr(headers: Headers, name: str) -> NameAddr:
    value = headers.get(name)
    if value is None:
        raise SipSyntaxError(f"missing {name.title()}")
    return NameAddr.parse(value)


def parse_message(data: bytes, *, stream: bool = False) -> Request | Response:
    """Parse one message. On datagram transports the body is what Content-Length says (extra octets
    are ignored, a short body is an error); raises SipSyntaxError for anything unreadable."""
    if len(data) > MAX_MESSAGE_SIZE:
        raise SipSyntaxError("message too large", 513)
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        head_bytes = data[:end]
        body = data[end + 4 :]
    else:
        end = data.find(b"\n\n")
        if end < 0:
            head_bytes = data.rstrip(b"\r\n")
            body = b""
        else:
            head_bytes = data[:end]
            body = data[end + 2 :]
    head = head_bytes.decode("utf-8", "surrogateescape")
    if head[:1] in ("\r", "\n"):
        head = head.lstrip("\r\n")  # RFC 3261 7.5: ignore CRLFs before the start line
    if "\n " in head or "\n\t" in head:
        head = _FOLD_RE.sub(" ", head)
    lines = head.split("\r\n") if "\r\n" in head else head.split("\n")
    first = lines[0]
    items: list[tuple[str, str, str]] = []
    key_of = header_key
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            if not line.strip():
                continue
            raise SipSyntaxError(f"header line without a colon: {line[:60]!r}")
        if name[-1:] in (" ", "\t"):
            name = name.rstrip()
        if not name or " " in name or "\t" in name:
            raise SipSyntaxError(f"invalid header name {name!r}")
        items.append((key_of(name), name, value.strip()))
    headers = Headers()
    headers._items = items

    if first.startswith("SIP/"):
        parts = first.split(" ", 2)
        if len(parts) < 2 or len(parts[1]) != 3 or not parts[1].isdigit():
            raise SipSyntaxError(f"unreadable status line {first[:80]!r}")
        status = int(parts[1])
        if not 100 <= status <= 699:
            raise SipSyntaxError(f"status code {status} out of range")
        if parts[0] != "SIP/2.0":
            raise SipSyntaxError(f"unsupported SIP version {parts[0]!r}", 505)
        msg: Request | Response = Response(status, parts[2] if len(parts) > 2 else "", headers)
    else:
        parts = first.split(" ")
        if len(parts) != 3:
            raise SipSyntaxError(f"request line needs METHOD URI VERSION: {first[:80]!r}")
        method, uri, version = parts
        if not _TOKEN_RE.match(method):
            raise SipSyntaxError(f"invalid method {method!r}")
        if version != "SIP/2.0":
            if version.upper().startswith("SIP/"):
                raise SipSyntaxError(f"unsupported SIP version {version!r}", 505)
            raise SipSyntaxError(f"unreadable request line {first[:80]!r}")
        msg = Request(method, uri, headers)

    cl = headers.get("content-length")
    if cl is not None:
        cl = cl.strip()
        if not cl.isdigit():
            raise SipSyntaxError(f"unreadable Content-Length {cl!r}")
        length = int(cl)
        if length > len(body):
            raise SipSyntaxError(f"Content-Length {length} exceeds the {len(body)} body octets")
        if length < len(body):
            body = body[:length]
    elif stream:
        raise SipSyntaxError("missing Content-Length on a stream transport")
    msg.body = body
    return msg


def create_response(request: Request, status: int, reason: str, *, to_tag: str | None = None,
                    headers: list[tuple[str, str]] | None = None, body: bytes = b"",
                    content_type: str | None = None) -> Response:
    """A response to `request` per RFC 3261 8.2.6: Via, From, To, Call-ID and CSeq copied."""
    items: list[tuple[str, str, str]] = []
    for key, name, value in request.headers._items:
        if key in ("via", "from", "call-id", "cseq"):
            items.append((key, name, value))
        elif key == "to":
            if to_tag and "tag=" not in value.replace(" ", "").lower() and status != 100:
                value = f"{value};tag={to_tag}"
            items.append((key, name, value))
        elif key == "record-route" and 100 < status < 300:
            items.append((key, name, value))
    h = Headers()
    h._items = items
    if headers:
        for name, value in headers:
            h.add(name, value)
    if body:
        if content_type:
            h.add("Content-Type", content_type)
    h.add("Content-Length", str(len(body)))
    return Response(status, reason, h, body)
