"""SDP (RFC 4566) parsing and the rewrite that anchors a call's media on us.

Pure functions over bytes: no sockets, no asyncio. The B2BUA parses each leg's SDP to learn where that
leg's phone wants RTP (``SessionDescription.endpoint``) and rewrites the SDP it forwards to the other leg
so every stream points at our relay (``rewrite_sdp``). The rewrite touches only the lines it must and
keeps every other line byte for byte, because phones and providers are picky about attributes we do not
understand (codecs, fmtp, crypto, direction for hold).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

__all__ = [
    "SdpError",
    "Origin",
    "MediaDescription",
    "SessionDescription",
    "parse_sdp",
    "rewrite_sdp",
    "address_type",
    "PLAYABLE",
    "AnswerChoice",
    "choose_playable",
    "build_answer",
    "build_offer",
    "keep_formats",
]

_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
# c= addresses meaning "do not send to me" (RFC 2543-style hold); they must survive a rewrite
_UNSPECIFIED = ("0.0.0.0", "::")
# the attribute lines of ICE (RFC 8839 5): they carry the peers' own addresses, which anchoring hides
_ICE_ATTRIBUTES = ("a=candidate:", "a=remote-candidates:", "a=end-of-candidates", "a=ice-")


class SdpError(ValueError):
    """The body is not SDP we can understand; the message says which line and why."""


@dataclass
class Origin:
    """The o= line: identifies the session and its version (bumped on every change of the offer)."""

    username: str
    session_id: str
    session_version: int
    nettype: str
    addrtype: str
    address: str


@dataclass
class MediaDescription:
    """One m= section: a stream the peer offers or answers."""

    kind: str
    port: int
    proto: str
    formats: list[str]
    connection: str | None = None
    attributes: list[str] = field(default_factory=list)
    port_count: int = 1
    connection_type: str | None = None

    @property
    def direction(self) -> str:
        """sendrecv / sendonly / recvonly / inactive; sendrecv when the section does not say."""
        for attr in self.attributes:
            if attr in _DIRECTIONS:
                return attr
        return "sendrecv"

    @property
    def rtcp_port(self) -> int | None:
        """The a=rtcp: port (RFC 3605) when the peer announced one; otherwise RTCP is port + 1."""
        for attr in self.attributes:
            if attr.startswith("rtcp:"):
                return int(attr[5:].split(None, 1)[0])
        return None


@dataclass
class SessionDescription:
    """A parsed SDP body: the session-level lines and the media sections, in order."""

    version: int
    origin: Origin
    name: str
    connection: str | None = None
    attributes: list[str] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    connection_type: str | None = None

    def endpoint(self, index: int = 0) -> tuple[str, int] | None:
        """Where stream ``index``'s RTP should be sent: (address, port), media-level c= winning.

        None when there is no such stream, the stream is rejected (port 0), it has no address, or the
        address is unspecified (0.0.0.0 / ::, the old way of putting a call on hold).
        """
        if not 0 <= index < len(self.media):
            return None
        m = self.media[index]
        address = m.connection if m.connection is not None else self.connection
        if m.port == 0 or address is None or address in _UNSPECIFIED:
            return None
        return address, m.port


@lru_cache(maxsize=64)
def address_type(address: str) -> str:
    """The address type (IP4 or IP6) of an address literal, as SDP's c= and o= lines spell it."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError as exc:
        raise SdpError(f"not an IP address: {address!r}") from exc
    return "IP6" if ip.version == 6 else "IP4"


def _split_lines(body: bytes) -> list[str]:
    """Decode and split on CRLF or bare LF (both occur in the wild); surrogateescape keeps bytes exact."""
    text = body.decode("utf-8", "surrogateescape")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _parse_connection(value: str, lineno: int) -> tuple[str, str]:
    """c=IN IP4 host[/ttl[/n]] -> (addrtype, host); the multicast suffix is dropped."""
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(f"line {lineno}: bad c= line {value!r} (want 'IN IP4|IP6 address')")
    return parts[1], parts[2].split("/", 1)[0]


def _parse_origin(value: str, lineno: int) -> Origin:
    parts = value.split()
    if len(parts) != 6:
        raise SdpError(f"line {lineno}: bad o= line {value!r} (want 6 fields)")
    try:
        version = int(parts[2])
    except ValueError as exc:
        raise SdpError(f"line {lineno}: o= session version {parts[2]!r} is not a number") from exc
    return Origin(parts[0], parts[1], version, parts[3], parts[4], parts[5])


def _parse_media(value: str, lineno: int) -> MediaDescription:
    parts = value.split()
    if len(parts) < 3:
        raise SdpError(f"line {lineno}: bad m= line {value!r} (want 'kind port proto formats...')")
    port_text, _, count_text = parts[1].partition("/")
    try:
        port = int(port_text)
        count = int(count_text) if count_text else 1
    except ValueError as exc:
        raise SdpError(f"line {lineno}: m= port {parts[1]!r} is not a number") from exc
    if not 0 <= port <= 65535:
        raise SdpError(f"line {lineno}: m= port {port} out of range")
    return MediaDescription(parts[0], port, parts[2], parts[3:], port_count=count)


def parse_sdp(body: bytes) -> SessionDescription:
    """Parse an SDP body; raise SdpError saying which line is wrong.

    Lenient where peers are sloppy (bare LF line ends, missing t=, unknown line types) and strict where a
    mistake would send media to the wrong place (c=, o=, m= and the a=rtcp: port).
    """
    return _parse_lines(_split_lines(body))


def _parse_lines(lines: list[str]) -> SessionDescription:
    if not lines:
        raise SdpError("empty SDP body")
    session: SessionDescription | None = None
    version: int | None = None
    current: MediaDescription | None = None
    for lineno, line in enumerate(lines, 1):
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
            raise SdpError(f"line {lineno}: not a 'x=value' line: {line!r}")
        kind, value = line[0], line[2:]
        if lineno == 1:
            if kind != "v":
                raise SdpError("line 1: SDP must start with v=")
            if value.strip() != "0":
                raise SdpError(f"line 1: unsupported SDP version {value!r}")
            version = 0
            continue
        if kind == "v":
            raise SdpError(f"line {lineno}: second v= line")
        if session is None:
            if kind != "o":
                raise SdpError(f"line {lineno}: o= must follow v=, found {kind}=")
            assert version is not None
            session = SessionDescription(version, _parse_origin(value, lineno), "")
            continue
        if kind == "o":
            raise SdpError(f"line {lineno}: second o= line")
        if kind == "m":
            current = _parse_media(value, lineno)
            session.media.append(current)
        elif kind == "c":
            addrtype, address = _parse_connection(value, lineno)
            if current is None:
                session.connection, session.connection_type = address, addrtype
            else:
                current.connection, current.connection_type = address, addrtype
        elif kind == "a":
            if value.startswith("rtcp:"):
                port_text = value[5:].split(None, 1)[0] if value[5:].strip() else ""
                if not port_text.isdigit() or int(port_text) > 65535:
                    raise SdpError(f"line {lineno}: bad a=rtcp: port in {line!r}")
            (current.attributes if current is not None else session.attributes).append(value)
        elif kind == "s" and current is None:
            session.name = value
    if session is None:
        raise SdpError("SDP has no o= line")
    return session


def _rewrite_rtcp(value: str, rtcp_port: int, address: str, addrtype: str) -> str:
    """a=rtcp:PORT [IN IP4 addr] -> our RTCP port (and address, when the line names one)."""
    parts = value[5:].split()
    if len(parts) >= 4:
        return f"rtcp:{rtcp_port} IN {addrtype} {address}"
    return f"rtcp:{rtcp_port}"


def rewrite_sdp(
    body: bytes,
    address: str,
    ports: Sequence[int],
    *,
    session_version: int | None = None,
    parsed: SessionDescription | None = None,
) -> bytes:
    """Point every stream of ``body`` at ``address``: the SDP we forward to the other leg.

    - o= and every c= (session and media level) get ``address`` (IN IP4 or IN IP6, by the address);
      a c= of 0.0.0.0 or :: (hold, RFC 2543 style) is kept so that the hold passes through.
    - the i-th m= line's port becomes ``ports[i]``; a port 0 (rejected stream) stays 0, and a
      ``port/count`` becomes one port (we relay one RTP/RTCP pair per stream).
    - a=rtcp: becomes our RTCP port, ``ports[i] + 1``; it is dropped from a rejected stream.
    - ``session_version``, when given, replaces the o= version (the caller bumps it when the SDP it
      sends on a dialog changes, RFC 3264 section 8); otherwise the peer's version is kept.
    - ICE (RFC 8839) is removed, session and media level: a=candidate, a=remote-candidates,
      a=end-of-candidates and every a=ice-* line. We anchor the media, so the peers must not be
      told each other's addresses (nor try to reach them around us), and the relay answers no
      connectivity checks.
    - every other line is kept byte for byte and in order (direction attributes, codecs, crypto);
      line ends become CRLF.

    ``parsed`` is what ``parse_sdp(body)`` already returned for this very body, when the caller has it
    (the relay reads the offer before rewriting it): the body is then not parsed a second time. Without
    it the body is parsed first, so that a malformed body raises SdpError and is never half rewritten.
    """
    lines = _split_lines(body)
    if parsed is None:
        parsed = _parse_lines(lines)  # validate first: never half-rewrite a malformed body
    addrtype = address_type(address)
    media_count = len(parsed.media)
    if len(ports) < media_count:
        raise SdpError(f"SDP has {media_count} m= lines but only {len(ports)} ports were given")
    out: list[str] = []
    index = -1
    port = 0
    for line in lines:
        kind = line[0]
        if kind == "o":
            user, sess_id, version, nettype, _, _ = line[2:].split()
            if session_version is not None:
                version = str(session_version)
            out.append(f"o={user} {sess_id} {version} {nettype} {addrtype} {address}")
        elif kind == "c":
            _, current = _parse_connection(line[2:], 0)
            out.append(line if current in _UNSPECIFIED else f"c=IN {addrtype} {address}")
        elif kind == "m":
            index += 1
            fields = line[2:].split()
            offered = int(fields[1].partition("/")[0])
            port = 0 if offered == 0 else int(ports[index])
            if not 0 <= port <= 65535:
                raise SdpError(f"port {port} out of range for m= line {index}")
            fields[1] = str(port)
            out.append("m=" + " ".join(fields))
        elif kind == "a" and line.startswith(_ICE_ATTRIBUTES):
            continue
        elif kind == "a" and line.startswith("a=rtcp:"):
            if index < 0:
                out.append(line)  # session-level a=rtcp: is not meaningful; leave it alone
            elif port != 0:
                out.append("a=" + _rewrite_rtcp(line[2:], port + 1, address, addrtype))
        else:
            out.append(line)
    return ("\r\n".join(out) + "\r\n").encode("utf-8", "surrogateescape")


# ---- our own answer, for media the server plays itself -------------------------------------------

# what the server can encode itself: G.711, static payload types (RFC 3551)
PLAYABLE = {0: "PCMU", 8: "PCMA"}


@dataclass(frozen=True)
class AnswerChoice:
    """The codec an answer of ours settled on, and the telephone-event type kept beside it."""

    payload_type: int
    codec: str
    telephone_event: int | None


def choose_playable(offer: SessionDescription) -> tuple[int, AnswerChoice] | None:
    """The first audio stream of ``offer`` with a codec we can play, in the offer's preference order:
    (stream index, choice); None when no stream offers PCMU or PCMA."""
    for index, m in enumerate(offer.media):
        if m.kind != "audio" or m.port == 0:
            continue
        names = _rtpmap_names(m)
        chosen = None
        event = None
        for fmt in m.formats:
            if not fmt.isdigit():
                continue
            pt = int(fmt)
            name = names.get(pt, PLAYABLE.get(pt, "")).upper()
            if chosen is None and pt in PLAYABLE and name in ("", PLAYABLE[pt]):
                chosen = pt
            elif name == "TELEPHONE-EVENT" and event is None:
                event = pt
        if chosen is not None:
            return index, AnswerChoice(chosen, PLAYABLE[chosen], event)
    return None


def build_answer(offer: SessionDescription, stream: int, choice: AnswerChoice, address: str, port: int,
                 session_id: str) -> bytes:
    """An answer (RFC 3264) accepting ``stream`` at ``address``:``port`` with one codec (plus
    telephone-event when offered); every other stream is rejected with port 0, as section 6 asks."""
    addrtype = address_type(address)
    lines = ["v=0", f"o=callflow {session_id} 1 IN {addrtype} {address}", "s=callflow",
             f"c=IN {addrtype} {address}", "t=0 0"]
    for index, m in enumerate(offer.media):
        if index != stream:
            lines.append(f"m={m.kind} 0 {m.proto} {' '.join(m.formats[:1]) or '0'}")
            continue
        formats = [str(choice.payload_type)]
        if choice.telephone_event is not None:
            formats.append(str(choice.telephone_event))
        lines.append(f"m=audio {port} {m.proto} {' '.join(formats)}")
        lines.append(f"a=rtpmap:{choice.payload_type} {choice.codec}/8000")
        if choice.telephone_event is not None:
            lines.append(f"a=rtpmap:{choice.telephone_event} telephone-event/8000")
            lines.append(f"a=fmtp:{choice.telephone_event} 0-15")
        lines.append("a=ptime:20")
        lines.append("a=sendrecv")
    return ("\r\n".join(lines) + "\r\n").encode()


def build_offer(address: str, port: int, session_id: str, payload_types: Sequence[int] = (0, 8),
                telephone_event: int | None = 101) -> bytes:
    """An offer of one audio stream with the codecs we can play (for a caller who sent no offer)."""
    addrtype = address_type(address)
    formats = [str(pt) for pt in payload_types] + ([str(telephone_event)] if telephone_event is not None else [])
    lines = ["v=0", f"o=callflow {session_id} 1 IN {addrtype} {address}", "s=callflow",
             f"c=IN {addrtype} {address}", "t=0 0", f"m=audio {port} RTP/AVP {' '.join(formats)}"]
    lines += [f"a=rtpmap:{pt} {PLAYABLE[pt]}/8000" for pt in payload_types]
    if telephone_event is not None:
        lines += [f"a=rtpmap:{telephone_event} telephone-event/8000", f"a=fmtp:{telephone_event} 0-15"]
    lines += ["a=ptime:20", "a=sendrecv"]
    return ("\r\n".join(lines) + "\r\n").encode()


def keep_formats(body: bytes, stream: int, keep: set[int]) -> bytes:
    """``body`` with stream ``stream`` offering only the payload types in ``keep`` (their rtpmap and
    fmtp lines too): after we answered the caller ourselves, the leg we dial must not pick a codec
    the caller was not told about."""
    def decide(index: int, formats: list[str]) -> tuple[list[str], set[int]] | None:
        if index != stream:
            return None
        return [f for f in formats if f.isdigit() and int(f) in keep] or formats, keep

    return _narrow_streams(body, decide)


def _narrow_streams(body: bytes,
                    decide: Callable[[int, list[str]], tuple[list[str], set[int]] | None]) -> bytes:
    """``body`` with each m= line's formats replaced as ``decide(stream index, formats)`` says, and
    that stream's rtpmap and fmtp lines kept only for the payload types it allows; None leaves a
    stream as it is. The lines are rewritten in place, so whatever else the SDP says is kept."""
    out: list[str] = []
    index = -1
    allowed: set[int] | None = None
    for line in _split_lines(body):
        if line.startswith("m="):
            index += 1
            fields = line[2:].split()
            decided = decide(index, fields[3:])
            allowed = None
            if decided is not None:
                formats, allowed = decided
                line = "m=" + " ".join(fields[:3] + formats)
        elif allowed is not None and (line.startswith("a=rtpmap:") or line.startswith("a=fmtp:")):
            pt = line.partition(":")[2].split(None, 1)[0]
            if pt.isdigit() and int(pt) not in allowed:
                continue
        out.append(line)
    return ("\r\n".join(out) + "\r\n").encode("utf-8", "surrogateescape")


# RFC 3551 static audio payload types, for offers that list them without an rtpmap
STATIC_AUDIO = {0: "PCMU", 3: "GSM", 4: "G723", 8: "PCMA", 9: "G722", 18: "G729"}


def prefer_codecs(body: bytes, names: Sequence[str]) -> bytes | None:
    """``body`` (an offer) with every audio stream cut down to the codecs in ``names``, in that
    order of preference (RFC 3264 5.1: the m= line's order is the offerer's preference), their rtpmap
    and fmtp lines kept; telephone-event (RFC 4733) is always kept. Names compare case-insensitively
    with the rtpmap encoding name, or the RFC 3551 name of a static payload type.

    Returns None when an audio stream would be left with no codec at all: the offer cannot go to a
    peer that takes only ``names``. Raises SdpError when ``body`` is not SDP."""
    wanted = [n.lower() for n in names]
    sdp = parse_sdp(body)
    keep: dict[int, list[int]] = {}
    for index, m in enumerate(sdp.media):
        if m.kind != "audio":
            continue
        rtpmap = _rtpmap_names(m)
        codecs: list[tuple[int, int]] = []
        events: list[int] = []
        for f in m.formats:
            if not f.isdigit():
                continue
            pt = int(f)
            name = (rtpmap.get(pt) or STATIC_AUDIO.get(pt, "")).lower()
            if name == "telephone-event":
                events.append(pt)
            elif name in wanted:
                codecs.append((wanted.index(name), pt))
        if not codecs:
            return None
        keep[index] = [pt for _, pt in sorted(codecs)] + events
    def decide(index: int, formats: list[str]) -> tuple[list[str], set[int]] | None:
        if index not in keep:
            return None
        return [str(pt) for pt in keep[index]], set(keep[index])

    return _narrow_streams(body, decide)


def _rtpmap_names(m: MediaDescription) -> dict[int, str]:
    names: dict[int, str] = {}
    for attr in m.attributes:
        if attr.startswith("rtpmap:"):
            pt, _, rest = attr[7:].partition(" ")
            if pt.isdigit():
                names[int(pt)] = rest.partition("/")[0]
    return names
