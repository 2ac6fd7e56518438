"""SIP header fields (RFC 3261 sections 7.3 and 20): names, the Headers multidict, typed values.

Names are looked up by a canonical key (lower case, compact forms expanded), learnt once per spelling
seen on the wire so the parser's fast path is a dict lookup. `Headers` keeps the fields in order with
the text they arrived as, so a forwarded or answered message keeps what we did not touch byte for
byte. The typed values every transaction reads (Via, CSeq, a From/To tag) are parsed here, with plain
string operations on the common shapes and the general grammar as the fallback. No I/O, no clock.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import SipSyntaxError
from .uri import _check_ipv6, split_params, split_quoted

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
_COMMON_METHODS = frozenset({
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY",
    "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE",
})
_TRANSPORTS = frozenset({"UDP", "TCP", "TLS", "WS", "WSS", "SCTP"})
_key_cache: dict[str, str] = {}
# raw text before the colon of a header line -> (lookup key, header name as written)
_name_cache: dict[str, tuple[str, str]] = {}
# the same for names written without surrounding whitespace, which the fast path keeps as written
_key_of_name: dict[str, str] = {}


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


_TAG_RE = re.compile(r";[ \t]*tag[ \t]*=[ \t]*([^;, \t>]*)", re.I)


def tag_of(value: str) -> str | None:
    """The tag parameter of a From/To value: after the `>` of a name-addr, anywhere in an addr-spec
    (whose parameters are the header's, RFC 3261 20.10). An empty `tag=` is no tag."""
    gt = value.rfind(">")
    m = _TAG_RE.search(value, gt + 1 if gt >= 0 else 0)
    return m.group(1) or None if m else None
