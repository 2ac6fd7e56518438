"""SIP requests and responses (RFC 3261 section 7): what they share, their typed views, and how a
response is made from a request (8.2.6) and how either is written back to bytes.

Typed views (Via, From/To, CSeq, Contact...) are parsed on demand and cached in the headers until
they change; `validate()` builds the ones every received request needs at once, so a bad message
fails before a transaction exists. A message that has not changed since it was parsed serialises to
the octets it arrived as. No I/O, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

from .errors import SipSyntaxError
from .headers import Headers, Via, _parse_cseq_value, tag_of
from .uri import NameAddr, SipUri, sip_uri_ok, split_quoted

_DATE_RE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
    r" [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT\Z"
)
_ABS_URI_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[^\x00-\x20\x7f<>\"]+\Z")
_T = TypeVar("_T")


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


def _one_name_addr(headers: Headers, name: str) -> NameAddr:
    value = headers.get(name)
    if value is None:
        raise SipSyntaxError(f"missing {name.title()}")
    return NameAddr.parse(value)


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
