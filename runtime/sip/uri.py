"""SIP URIs (RFC 3261 section 19.1, RFC 5118 for IPv6 references) and name-addr values.

Parsing is lenient where real phones are sloppy and strict where a wrong guess would route a call
somewhere else: a URI we cannot read raises `SipSyntaxError`, and the caller answers 400.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import SipSyntaxError

_URI_RE = re.compile(
    r"""
    (?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*):
    (?:(?P<userinfo>[^@]*)@)?
    (?P<host>\[[0-9A-Fa-f:.]+\]|[^:;?\[\]]+)
    (?::(?P<port>[0-9]*))?
    (?P<params>;[^?]*)?
    (?:\?(?P<headers>.*))?
    \Z""",
    re.X | re.S,
)
_HOST_RE = re.compile(r"\[[0-9A-Fa-f:.]+\]\Z|[A-Za-z0-9\-.]+\Z")
_PCT_RE = re.compile(r"%([0-9A-Fa-f]{2})")


def unescape(text: str) -> str:
    """Undo %HH escapes (RFC 3261 19.1.2); the user part of a tel-like URI is compared unescaped."""
    if "%" not in text:
        return text
    return _PCT_RE.sub(lambda m: chr(int(m.group(1), 16)), text)


@dataclass(slots=True)
class SipUri:
    """A sip:, sips: or other-scheme URI split into the parts routing needs."""

    scheme: str
    user: str | None
    password: str | None
    host: str
    port: int | None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str | None = None

    @classmethod
    def parse(cls, text: str) -> SipUri:
        m = _URI_RE.match(text.strip())
        if m is None:
            raise SipSyntaxError(f"unreadable URI {text!r}")
        scheme = m.group("scheme").lower()
        userinfo = m.group("userinfo")
        user = password = None
        if userinfo is not None:
            if any(c in userinfo for c in " \t<>\""):
                raise SipSyntaxError(f"invalid characters in the user part of {text!r}")
            user, sep, pw = userinfo.partition(":")
            password = pw if sep else None
        host = m.group("host")
        if scheme in ("sip", "sips") and not _HOST_RE.match(host):
            raise SipSyntaxError(f"invalid host {host!r} in URI {text!r}")
        port_text = m.group("port")
        port = None
        if port_text:
            port = int(port_text)
            if port > 65535:
                raise SipSyntaxError(f"port {port} out of range in URI {text!r}")
        params: dict[str, str | None] = {}
        if m.group("params"):
            for item in m.group("params")[1:].split(";"):
                if not item:
                    continue
                name, eq, value = item.partition("=")
                params[name.strip().lower()] = value.strip() if eq else None
        return cls(scheme, user, password, host, port, params, m.group("headers"))

    @property
    def host_port(self) -> tuple[str, int | None]:
        return self.host, self.port

    @property
    def transport(self) -> str:
        value = self.params.get("transport")
        if value:
            return value.lower()
        return "tls" if self.scheme == "sips" else "udp"

    @property
    def bare_host(self) -> str:
        """The host without IPv6 brackets, as sockets want it."""
        h = self.host
        return h[1:-1] if h.startswith("[") else h

    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":" + self.password)
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        for k, v in self.params.items():
            out.append(f";{k}" if v is None else f";{k}={v}")
        if self.headers is not None:
            out.append("?" + self.headers)
        return "".join(out)


def split_params(text: str) -> tuple[str, dict[str, str | None]]:
    """Split `value;a=b;c` into the value and its parameters, respecting quoted strings."""
    if ";" not in text:
        return text.strip(), {}
    parts = split_quoted(text, ";")
    params: dict[str, str | None] = {}
    for item in parts[1:]:
        name, eq, value = item.partition("=")
        name = name.strip().lower()
        if not name:
            continue
        params[name] = value.strip() if eq else None
    return parts[0].strip(), params


def split_quoted(text: str, sep: str) -> list[str]:
    """Split on `sep` outside quoted strings and angle brackets (comma-separated header values)."""
    if '"' not in text and "<" not in text:
        return text.split(sep)
    out: list[str] = []
    start = 0
    quoted = False
    angle = False
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == "<":
            angle = True
        elif c == ">":
            angle = False
        elif c == sep and not angle:
            out.append(text[start:i])
            start = i + 1
        i += 1
    if quoted:
        raise SipSyntaxError(f"unbalanced quotes in {text!r}")
    out.append(text[start:])
    return out


@dataclass(slots=True)
class NameAddr:
    """`"Display" <uri>;params` or a bare addr-spec (From, To, Contact, Route...)."""

    display: str | None
    uri: SipUri
    params: dict[str, str | None]
    raw_uri: str = ""

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        text = text.strip()
        lt = text.find("<")
        if lt >= 0:
            gt = text.find(">", lt)
            if gt < 0:
                raise SipSyntaxError(f"missing '>' in {text!r}")
            display_text = text[:lt].strip()
            display: str | None = None
            if display_text:
                if display_text.startswith('"'):
                    if len(display_text) < 2 or not display_text.endswith('"'):
                        raise SipSyntaxError(f"unbalanced quotes in display name of {text!r}")
                    display = _unquote(display_text)
                else:
                    if '"' in display_text or any(c in display_text for c in "<>@"):
                        raise SipSyntaxError(f"invalid display name in {text!r}")
                    display = display_text
            raw_uri = text[lt + 1 : gt]
            if not raw_uri or raw_uri != raw_uri.strip():
                raise SipSyntaxError(f"whitespace or nothing inside <> in {text!r}")
            rest = text[gt + 1 :].strip()
            if rest and not rest.startswith(";"):
                raise SipSyntaxError(f"unexpected text after '>' in {text!r}")
            _, params = split_params(rest) if rest else ("", {})
            return cls(display, SipUri.parse(raw_uri), params, raw_uri)
        # addr-spec: parameters after the URI belong to the header, not the URI (RFC 3261 20.10)
        if " " in text or "\t" in text:
            raise SipSyntaxError(f"whitespace in a bare URI {text!r}")
        uri_text, params = split_params(text)
        return cls(None, SipUri.parse(uri_text), params, uri_text)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        out = f'"{self.display}" <{self.uri}>' if self.display else f"<{self.uri}>"
        for k, v in self.params.items():
            out += f";{k}" if v is None else f";{k}={v}"
        return out


def _unquote(text: str) -> str:
    inner = text[1:-1]
    if "\\" not in inner:
        return inner
    out = []
    i = 0
    while i < len(inner):
        c = inner[i]
        if c == "\\" and i + 1 < len(inner):
            i += 1
            c = inner[i]
        out.append(c)
        i += 1
    return "".join(out)
