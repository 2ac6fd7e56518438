"""SIP URIs (RFC 3261 section 19.1, RFC 5118 for IPv6 references) and name-addr values.

Parsing is lenient where real phones are sloppy and strict where a wrong guess would route a call
somewhere else: a URI we cannot read raises `SipSyntaxError`, and the caller answers 400. The common
shapes are read with plain string operations (no regex per call): these run for every request.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from .errors import SipSyntaxError

_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*\Z")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9\-._]+\Z")
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
# Octets never allowed raw in a URI: controls, space, and the delimiters that end a URI in a header.
_BAD_URI_CHARS = re.compile(r'[\x00-\x20\x7f<>"]')
_PCT_RE = re.compile(r"%([0-9A-Fa-f]{2})")
_KNOWN_SCHEMES = frozenset({"sip", "sips", "tel"})
# The shape nearly every sip/sips URI has: one regex match instead of a dozen string operations.
# Groups: scheme, user, password, host, port, ;params.
_SIP_FAST = (
    r"(sips?):(?:([^@:;?\x00-\x20\x7f<>\"\[\]]+)(?::([^@;?\x00-\x20\x7f<>\"]*))?@)?"
    r"([A-Za-z0-9\-._]+)(?::([0-9]{1,5}))?((?:;[^;?@\x00-\x20\x7f<>\"]+)*)"
)
_SIP_FAST_RE = re.compile(_SIP_FAST + r"\Z")
# `[display] <sip-uri>[;params]` in one match, URI included, so checking or reading a From, To or
# Contact of the usual shape costs one regex. Groups: quoted display, token display, the six URI
# groups, header ;params.
_NAME_ADDR_FAST_RE = re.compile(
    r'(?:"([^"\\]*)"[ \t]*|([A-Za-z0-9\-.!%*_+`\'~]+(?:[ \t]+[A-Za-z0-9\-.!%*_+`\'~]+)*)[ \t]*)?'
    r"<" + _SIP_FAST + r">"
    r"((?:[ \t]*;[ \t]*[A-Za-z0-9\-.!%*_+`'~]+(?:[ \t]*=[ \t]*[^;\x00-\x20\x7f\"<>,]+)?)*)[ \t]*\Z"
)


def sip_uri_ok(text: str) -> bool:
    """True when `text` is a sip/sips URI of the common shape (no IPv6, no URI headers) that
    `SipUri.parse` would accept: a syntax check that builds nothing, for `validate()`."""
    m = _SIP_FAST_RE.match(text)
    return m is not None and (not m.group(5) or int(m.group(5)) <= 65535)


def _fast_params(ptext: str) -> dict[str, str | None]:
    """`;a=b;c` as matched by the fast URI regex (no spaces, no quotes): names lower-cased."""
    params: dict[str, str | None] = {}
    if ptext:
        for item in ptext[1:].split(";"):
            name, eq, value = item.partition("=")
            params[name.lower()] = value if eq else None
    return params


def unescape(text: str) -> str:
    """Undo %HH escapes (RFC 3261 19.1.2); the user part of a tel-like URI is compared unescaped."""
    if "%" not in text:
        return text
    return _PCT_RE.sub(lambda m: chr(int(m.group(1), 16)), text)


# RFC 3261 25.1: user = 1*( unreserved / escaped / user-unreserved ); anything else is %HH-escaped
_USER_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()&=+$,;?/")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def escape_user(text: str) -> str:
    """The user part of a SIP URI we build from `text` (an unescaped number or name), with every
    character outside RFC 3261 25.1 `user` written as %HH (UTF-8 bytes): whatever a caller put in a
    number, it cannot end the URI, the header or the message (CR LF stays `%0D%0A`)."""
    if all(c in _USER_SAFE for c in text):
        return text
    return "".join(c if c in _USER_SAFE else "".join(f"%{b:02X}" for b in c.encode("utf-8")) for c in text)


def has_control(text: str) -> bool:
    """True when `text` (already unescaped) holds a control character (C0 or DEL): a dialled
    number or caller id that does cannot be honest, and is refused rather than passed on."""
    return _CONTROL_RE.search(text) is not None


def _check_ipv6(host: str, text: str) -> None:
    """RFC 5118 4.10: `[2001:db8:::192.0.2.1]` slips through RFC 3261's ABNF but is no address."""
    try:
        ipaddress.IPv6Address(host[1:-1])
    except ValueError:
        raise SipSyntaxError(f"invalid IPv6 reference {host!r} in {text!r}") from None
    if "%" in host:
        raise SipSyntaxError(f"zone index in IPv6 reference {host!r}")


def _split_hostport(hp: str, text: str, strict: bool) -> tuple[str, int | None]:
    """`host[:port]`, where an IPv6 reference keeps its colons inside the brackets (RFC 5118 4.3)."""
    if hp.startswith("["):
        close = hp.find("]")
        if close < 0:
            raise SipSyntaxError(f"unclosed IPv6 reference in {text!r}")
        host = hp[: close + 1]
        after = hp[close + 1 :]
        if strict:
            _check_ipv6(host, text)
        if not after:
            return host, None
        if after[0] != ":":
            raise SipSyntaxError(f"unexpected text after IPv6 reference in {text!r}")
        port_text = after[1:]
    else:
        host, sep, port_text = hp.partition(":")
        if not sep:
            if strict and not _HOSTNAME_RE.match(host):
                raise SipSyntaxError(f"invalid host {host!r} in URI {text!r}")
            return host, None
        if strict:
            if not _HOSTNAME_RE.match(host):
                # RFC 5118 4.2: an IPv6 address without brackets is not a host
                raise SipSyntaxError(f"invalid host {hp!r} in URI {text!r}")
        elif not (port_text.isascii() and port_text.isdigit()):
            return hp, None  # an opaque part of another scheme (urn:service:sos)
    if ":" in port_text:
        raise SipSyntaxError(f"IPv6 address without [] in URI {text!r} (RFC 5118 4.2)")
    if not (port_text.isascii() and port_text.isdigit()) or len(port_text) > 5:
        raise SipSyntaxError(f"invalid port {port_text!r} in URI {text!r}")
    port = int(port_text)
    if port > 65535:
        raise SipSyntaxError(f"port {port} out of range in URI {text!r}")
    return host, port


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
        """Read a URI; sip/sips hosts, ports and IPv6 references are checked, other schemes kept opaque."""
        m = _SIP_FAST_RE.match(text)
        if m is not None:
            return cls._from_fast(text, *m.groups())
        return cls._parse_general(text)

    @classmethod
    def _from_fast(cls, text: str, scheme: str, user: str | None, password: str | None, host: str,
                   port_text: str | None, ptext: str) -> SipUri:
        params = _fast_params(ptext)
        port = None
        if port_text:
            port = int(port_text)
            if port > 65535:
                raise SipSyntaxError(f"port {port} out of range in URI {text!r}")
        return cls(scheme, user, password, host, port, params, None)

    @classmethod
    def _parse_general(cls, text: str) -> SipUri:
        text = text.strip(" \t")
        colon = text.find(":")
        if colon <= 0 or _BAD_URI_CHARS.search(text):
            raise SipSyntaxError(f"unreadable URI {text!r}")
        scheme = text[:colon]
        low = scheme.lower()
        if low not in _KNOWN_SCHEMES and not _SCHEME_RE.match(scheme):
            raise SipSyntaxError(f"invalid URI scheme in {text!r}")
        rest = text[colon + 1 :]
        strict = low == "sip" or low == "sips"
        user = password = None
        at = rest.find("@")
        if at >= 0:
            userinfo = rest[:at]
            rest = rest[at + 1 :]
            user, sep, pw = userinfo.partition(":")
            password = pw if sep else None
        headers = None
        q = rest.find("?")
        if q >= 0:
            headers = rest[q + 1 :]
            rest = rest[:q]
        params: dict[str, str | None] = {}
        semi = rest.find(";")
        if semi >= 0:
            for item in rest[semi + 1 :].split(";"):
                if not item:
                    continue
                name, eq, value = item.partition("=")
                params[name.lower()] = value if eq else None
            rest = rest[:semi]
        if not rest:
            raise SipSyntaxError(f"URI without a host: {text!r}")
        host, port = _split_hostport(rest, text, strict)
        return cls(low, user, password, host, port, params, headers)

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


def split_params(text: str, *, strict: bool = False) -> tuple[str, dict[str, str | None]]:
    """Split `value;a=b;c` into the value and its parameters, respecting quoted strings.

    Names are lower-cased; values keep their case and quotes. `strict` refuses empty parameters
    (`;;`, a trailing `;`), which RFC 4475 badinv01 shows are a sign of a broken sender.
    """
    if ";" not in text:
        return text.strip(" \t"), {}
    parts = split_quoted(text, ";") if '"' in text else text.split(";")
    params: dict[str, str | None] = {}
    for item in parts[1:]:
        name, eq, value = item.partition("=")
        name = name.strip(" \t").lower()
        if not name:
            if strict:
                raise SipSyntaxError(f"empty parameter in {text!r}")
            continue
        params[name] = value.strip(" \t") if eq else None
    return parts[0].strip(" \t"), params


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


def _quoted_end(text: str, start: int) -> int:
    """Index just past the quoted-string opening at `start` (quoted-pairs honoured)."""
    j = start + 1
    while True:
        q = text.find('"', j)
        if q < 0:
            raise SipSyntaxError(f"unbalanced quotes in {text!r}")
        b = q - 1
        slashes = 0
        while b > start and text[b] == "\\":
            slashes += 1
            b -= 1
        if not slashes & 1:
            return q + 1
        j = q + 1


class NameAddr:
    """`"Display" <uri>;params` or a bare addr-spec (From, To, Contact, Route...).

    Read from the common shape, the URI is split only when `uri` is first asked for: the checks
    that found the shape already proved it readable, and most messages only need a tag.
    """

    __slots__ = ("display", "params", "raw_uri", "_uri", "_uri_parts")

    def __init__(self, display: str | None, uri: SipUri | None, params: dict[str, str | None],
                 raw_uri: str = "") -> None:
        self.display = display
        self.params = params
        self.raw_uri = raw_uri
        self._uri = uri
        self._uri_parts: tuple[str | None, ...] | None = None

    @property
    def uri(self) -> SipUri:
        uri = self._uri
        if uri is None:
            scheme, user, password, host, port_text, ptext = self._uri_parts  # type: ignore[misc]
            uri = self._uri = SipUri._from_fast(self.raw_uri, scheme, user, password, host, port_text, ptext)
        return uri

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NameAddr):
            return NotImplemented
        return (self.display, self.uri, self.params) == (other.display, other.uri, other.params)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"NameAddr(display={self.display!r}, uri={self.raw_uri!r}, params={self.params!r})"

    @classmethod
    def parse_common(cls, text: str) -> NameAddr | None:
        """The usual `[display] <sip-uri>[;params]` in one regex match, or None for anything else
        (which `parse` reads with the general grammar, raising if it is bad)."""
        m = _NAME_ADDR_FAST_RE.match(text)
        if m is None:
            return cls._bare_common(text)
        quoted, tokens, scheme, user, password, host, port_text, uri_ptext, ptext = m.groups()
        if port_text and int(port_text) > 65535:
            return None
        params: dict[str, str | None] = {}
        if ptext:
            for item in ptext.split(";")[1:]:
                name, eq, value = item.partition("=")
                params[name.strip(" \t").lower()] = value.strip(" \t") if eq else None
        return cls._lazy(quoted if quoted is not None else tokens, params, text[m.start(3) : m.end(8)],
                         (scheme, user, password, host, port_text, uri_ptext))

    @classmethod
    def _bare_common(cls, text: str) -> NameAddr | None:
        """A bare addr-spec (`Contact: sip:a@host:5060;expires=60`) of the usual shape: parameters
        after a bare URI belong to the header (RFC 3261 20.10)."""
        if text[:4] != "sip:" or "," in text:
            return None
        m = _SIP_FAST_RE.match(text)
        if m is None:
            return None
        scheme, user, password, host, port_text, ptext = m.groups()
        if port_text and int(port_text) > 65535:
            return None
        return cls._lazy(None, _fast_params(ptext), text[: m.start(6)], (scheme, user, password, host, port_text, ""))

    @classmethod
    def _lazy(cls, display: str | None, params: dict[str, str | None], raw_uri: str,
              uri_parts: tuple[str | None, ...]) -> NameAddr:
        """A NameAddr whose URI (already matched by a fast regex) is built on first use."""
        na = cls.__new__(cls)
        na.display = display
        na.params = params
        na.raw_uri = raw_uri
        na._uri = None
        na._uri_parts = uri_parts
        return na

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        """Read name-addr or addr-spec (RFC 3261 20.10); header parameters after the URI go to `params`."""
        na = cls.parse_common(text)
        if na is not None:
            return na
        text = text.strip(" \t")
        if not text:
            raise SipSyntaxError("empty address")
        c0 = text[0]
        display: str | None = None
        if c0 == "<":
            lt = 0
        elif c0 == '"':
            end = _quoted_end(text, 0)
            display = _unquote(text[:end])
            lt = end
            while lt < len(text) and text[lt] in " \t":
                lt += 1
            if lt >= len(text) or text[lt] != "<":
                raise SipSyntaxError(f"quoted display name not followed by <uri> in {text!r}")
        else:
            lt = text.find("<")
            if lt < 0:
                return cls._addr_spec(text)
            display_text = text[:lt].strip(" \t")
            for word in display_text.split():
                if not _TOKEN_RE.match(word):
                    raise SipSyntaxError(f"invalid display name in {text!r}")
            display = display_text or None
        gt = text.find(">", lt)
        if gt < 0:
            raise SipSyntaxError(f"missing '>' in {text!r}")
        raw_uri = text[lt + 1 : gt]
        if not raw_uri or raw_uri[0] in " \t" or raw_uri[-1] in " \t":
            raise SipSyntaxError(f"whitespace or nothing inside <> in {text!r}")
        rest = text[gt + 1 :]
        params = {}
        if rest:
            rest = rest.strip(" \t")
            if rest:
                if rest[0] != ";":
                    raise SipSyntaxError(f"unexpected text after '>' in {text!r}")
                _, params = split_params(rest, strict=True)
        return cls(display, SipUri.parse(raw_uri), params, raw_uri)

    @classmethod
    def _addr_spec(cls, text: str) -> NameAddr:
        # RFC 3261 20.10: parameters after a bare URI belong to the header, and a URI with a comma,
        # question mark or semicolon of its own must be in <> (RFC 4475 regbadct).
        uri_text, params = split_params(text, strict=True)
        if "?" in uri_text or "," in uri_text:
            raise SipSyntaxError(f"a URI with '?' or ',' must be enclosed in <>: {text!r}")
        if " " in uri_text or "\t" in uri_text:
            raise SipSyntaxError(f"whitespace in a bare URI {text!r}")
        return cls(None, SipUri.parse(uri_text), params, uri_text)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @property
    def expires(self) -> int | None:
        """The Contact `expires` parameter in seconds, clamped to 2**32-1 (RFC 4475 scalar02)."""
        value = self.params.get("expires")
        if value is None:
            return None
        if not (value.isascii() and value.isdigit()):
            raise SipSyntaxError(f"unreadable expires parameter {value!r}")
        digits = value.lstrip("0") or "0"
        return 2**32 - 1 if len(digits) > 10 else min(int(digits), 2**32 - 1)

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
