"""Media offloaded to rtpengine, driven over its ng control protocol (``--media rtpengine:HOST:PORT``).

rtpengine (Sipwise; Debian's ``rtpengine-daemon``) relays the RTP itself; Callflow only tells it, for
each SDP that crosses the B2BUA, whether it is an offer or an answer, and forwards the SDP rtpengine
returns (its own address and ports in place of the peer's). The seam is the same SDP-in/SDP-out
``anchor`` the Python relay implements (``runtime.media.base``).

The ng protocol (rtpengine's docs, "ng control protocol"): one UDP datagram per request,
``COOKIE SP bencode-dictionary``; the reply carries the same cookie. rtpengine keeps the replies of
recent cookies, so a retransmission with the same cookie is answered, not executed twice: we
retransmit a request unanswered after 0.5 s, 1 s and 2 s (bounded: 3.5 s in all, within the call
runner's 10 s media step budget) and then fail it with MediaError.

Mapping one Callflow call onto one rtpengine call::

    ng call-id  = PREFIX-CALLID          (PREFIX random per process: two nodes can share an rtpengine)
    leg 0 (channel ZERO, the caller) -> tag "zero";  leg 1 (channel ONE, the callee) -> tag "one"

    SDP from leg X, no offer outstanding          -> offer   from-tag=tag(X) [to-tag=tag(1-X) once known]
    SDP from leg Y, leg X's offer outstanding     -> answer  from-tag=tag(X)  to-tag=tag(Y)
    SDP from leg X, its own offer outstanding     -> offer again (the same INVITE sent to the next fork)
    SDP from the leg that answered last, same o=  -> answer again (183 then 200, RFC 3264 section 8:
                                                     a new offer must change the o= version)

Offers and answers carry ICE=remove (the phones' candidates name addresses rtpengine does not relay) and
replace origin and session-connection, so the far side never sees the other leg's addresses.

Playing a prompt (the dialplan's ``play``, to the caller): ``answer`` makes the caller's offer an ng
``offer`` and answers it for a stand-in callee (tag ``one``, G.711, receiving on rtpengine's own address
at the discard port), so rtpengine's answer for the caller is what the caller is sent; ``play`` then sends
``play media`` to tag ``zero`` with the prompt as a G.711 WAV ``blob`` (rtpengine, built with transcoding
as Debian's 10.5 is, paces and encodes it) and waits for the ``duration`` it reports; cancelling sends
``stop media``. A caller's INVITE without SDP (``play ... answered`` with a late offer) is not supported
through rtpengine: MediaError, logged as ``play_failed``.

Counters: ``packets`` is synchronous, and a query is a round trip, so the session answers from the last
``query`` (or ``delete``) reply and starts a new query when that is older than ``STATS_MAX_AGE``; the
backend also refreshes a call's counters when its ``hangup`` event passes on the bus (``watch``), so the
``closed`` event and the call record carry the figures as of the hang-up.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import struct
from collections.abc import Callable, Sequence
from typing import Any

import bencodepy

from runtime.media.base import CALLEE, CALLER, MediaBackend, MediaError, MediaSession
from runtime.media.dtmf import Negotiation, telephone_event_types
from runtime.media.dtmf_sender import normalize_digits
from runtime.sip.sdp import Origin, build_answer, choose_playable, parse_sdp

__all__ = ["RtpengineBackend", "RtpengineSession", "NgClient", "MEDIA_OPTIONS", "RETRANSMIT", "STATS_MAX_AGE",
           "parse_address", "parse_spec"]

log = logging.getLogger("callflow.media")

RETRANSMIT = (0.5, 1.0, 2.0)  # seconds waited after each send; the request fails after the last
STATS_MAX_AGE = 1.0  # seconds: an older counter snapshot is refreshed when `packets` is read
TAGS = ("zero", "one")  # rtpengine's from-tag/to-tag for leg 0 (channel ZERO) and leg 1 (channel ONE)
OFFER_FLAGS: dict[str, Any] = {"ICE": "remove", "replace": ["origin", "session-connection"]}
# asks rtpengine to decode and re-encode each flow so that `play DTMF` can put digits into it (without
# it rtpengine refuses "No SSRC context present for DTMF injection"); the price is userspace media
# (no in-kernel forwarding) and a G.711 transcode per flow. So it is the operator's choice, off by default
# (`--media rtpengine:HOST:PORT,inject-dtmf` turns it on): without it digits the engine must generate
# (send_dtmf, a SIP INFO digit for a leg that speaks RFC 4733) reach phones as SIP INFO instead, and
# RFC 4733 digits between two legs that both negotiated it are still relayed as they are
INJECT_DTMF: dict[str, Any] = {"flags": ["inject DTMF"]}
# `play` through rtpengine: the prompt goes as a WAV `blob` in one ng datagram (UDP: at most 64 KiB, so
# about 7.5 s of G.711); a longer prompt is refused with a message rather than truncated
MAX_BLOB = 60_000
WAV_FORMATS = {0: 7, 8: 6}  # RTP payload type -> WAVE format tag: PCMU is mu-law (7), PCMA A-law (6)
DISCARD_PORT = 9  # where the stand-in callee of a played-to call "receives": nothing (RFC 863's port)
# why keys pressed in a call go unheard until Callflow takes rtpengine's DTMF reports (rtpengine_dtmf.py)
KEYS_UNHEARD = ("rtpengine does not report keys to this node: a gather hears nothing and on dtmf sees no "
                "RFC 4733 digit (SIP INFO digits still arrive); start Callflow with --rtpengine-dtmf HOST:PORT "
                "and rtpengine with --dtmf-log-dest=HOST:PORT (docs/scaling.md)")


MEDIA_OPTIONS = ("inject-dtmf",)  # what may follow `rtpengine:HOST:PORT,` on the command line


def parse_spec(text: str) -> tuple[str, int, frozenset[str]]:
    """``HOST:PORT[,OPTION...]`` (after ``--media rtpengine:``) -> (host, port, options); the options
    are MEDIA_OPTIONS (``inject-dtmf``: ask rtpengine for DTMF injection, see INJECT_DTMF). Raises
    ValueError naming an unknown option or a bad address."""
    address, *options = text.split(",")
    unknown = [o for o in options if o.strip() not in MEDIA_OPTIONS]
    if unknown:
        raise ValueError(f"rtpengine option {unknown[0]!r}: the options are {', '.join(MEDIA_OPTIONS)} "
                         f"(e.g. rtpengine:127.0.0.1:2223,inject-dtmf)")
    host, port = parse_address(address)
    return host, port, frozenset(o.strip() for o in options)


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 in brackets) of rtpengine's ng listener -> (host, port).
    Raises ValueError saying what was expected."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"expected rtpengine:HOST:PORT (its --listen-ng address), e.g. "
                         f"rtpengine:127.0.0.1:2223, got {text!r}")
    return host.strip("[]"), int(port)


def _text(value: object) -> str:
    """A bencoded string as text (rtpengine's strings are bytes)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


class NgClient(asyncio.DatagramProtocol):
    """One UDP socket to one rtpengine's ng listener; requests matched to replies by cookie.

    ``request(command)`` -> the reply dictionary (keys and strings as bytes) when ``result`` is
    ``ok`` or ``pong``; raises MediaError with rtpengine's ``error-reason`` for ``error``, or when no
    reply came after the retransmissions. Datagrams that answer nothing of ours are logged and dropped.
    """

    def __init__(self, address: tuple[str, int], retransmit: tuple[float, ...] = RETRANSMIT) -> None:
        self.address = address
        self.retransmit = retransmit
        self.prefix = os.urandom(4).hex()
        self.transport: asyncio.DatagramTransport | None = None
        self.last_error: str | None = None  # e.g. "Connection refused": nobody listens there (ICMP)
        self.stray = 0  # datagrams that answered nothing of ours
        self._numbers = itertools.count(1)
        self._pending: dict[bytes, tuple[asyncio.Future[dict[bytes, Any]], bytes, str, int]] = {}
        self._timers: dict[bytes, asyncio.TimerHandle] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    async def open(self) -> None:
        """Bind a socket connected to rtpengine (so only its datagrams reach us). Raises MediaError."""
        if self.transport is not None:
            return
        loop = asyncio.get_running_loop()
        self._loop = loop
        try:
            await loop.create_datagram_endpoint(lambda: self, remote_addr=self.address)
        except OSError as exc:
            raise MediaError(f"cannot open a socket to rtpengine at {self._where}: {exc.strerror or exc}") from exc

    @property
    def _where(self) -> str:
        host, port = self.address
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    # ---- asyncio.DatagramProtocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail_all(MediaError(f"the socket to rtpengine at {self._where} closed"))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: kept for the timeout's message; the retransmissions go on,
        # since rtpengine may be restarting
        self.last_error = getattr(exc, "strerror", None) or str(exc)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        cookie, sep, body = data.partition(b" ")
        entry = self._pending.pop(cookie, None) if sep else None
        if entry is None:
            self.stray += 1
            log.warning("event=rtpengine_stray address=%s size=%d reason=%s", self._where, len(data),
                        '"no request of ours has this cookie"' if sep else '"no cookie"')
            return
        timer = self._timers.pop(cookie, None)
        if timer is not None:
            timer.cancel()
        future, _raw, command, _tries = entry
        if future.done():
            return
        try:
            reply = bencodepy.decode(body)
        except bencodepy.BencodeDecodeError as exc:
            future.set_exception(MediaError(f"rtpengine at {self._where} answered {command} with something "
                                            f"that is not bencode ({exc}): {body[:60]!r}"))
            return
        if not isinstance(reply, dict):
            future.set_exception(MediaError(f"rtpengine at {self._where} answered {command} with a "
                                            f"{type(reply).__name__}, not a dictionary"))
            return
        result = _text(reply.get(b"result", b""))
        if result == "error":
            reason = _text(reply.get(b"error-reason", b"no reason given"))
            future.set_exception(MediaError(f"rtpengine refused {command}: {reason}"))
            return
        if result not in ("ok", "pong"):
            future.set_exception(MediaError(f"rtpengine at {self._where} answered {command} with result "
                                            f"{result!r}"))
            return
        if b"warning" in reply:
            log.warning("event=rtpengine_warning address=%s command=%s warning=%s", self._where, command,
                        _logfmt(_text(reply[b"warning"])))
        future.set_result(reply)

    # ---- requests ----------------------------------------------------------------------------------
    def send(self, command: dict[str, Any]) -> asyncio.Future[dict[bytes, Any]]:
        """Send ``command`` (a dictionary with at least ``command``) and return the future of its reply;
        retransmitted until answered or failed with MediaError after ``retransmit``'s last wait.
        Cancelling the future stops the retransmissions."""
        loop = self._loop or asyncio.get_running_loop()
        future: asyncio.Future[dict[bytes, Any]] = loop.create_future()
        name = str(command.get("command", "?"))
        if self.transport is None:
            future.set_exception(MediaError(f"no socket to rtpengine at {self._where} (backend closed)"))
            return future
        cookie = f"{self.prefix}_{next(self._numbers)}".encode()
        raw = cookie + b" " + bencodepy.encode(command)
        self._pending[cookie] = (future, raw, name, 0)
        future.add_done_callback(lambda _f: self._forget(cookie))
        self._transmit(cookie)
        return future

    async def request(self, command: dict[str, Any]) -> dict[bytes, Any]:
        """``send`` and wait for the reply (see the class docstring for what raises)."""
        return await self.send(command)

    def _transmit(self, cookie: bytes) -> None:
        entry = self._pending.get(cookie)
        if entry is None:
            return
        future, raw, name, tries = entry
        if tries >= len(self.retransmit):
            self._pending.pop(cookie, None)
            waited = sum(self.retransmit)
            why = f" (last error: {self.last_error})" if self.last_error else ""
            if not future.done():
                future.set_exception(MediaError(f"rtpengine at {self._where} did not answer {name} in "
                                                f"{waited:g} s ({tries} tries){why}"))
            return
        if self.transport is not None:
            self.transport.sendto(raw)
        self._pending[cookie] = (future, raw, name, tries + 1)
        loop = self._loop or asyncio.get_running_loop()
        self._timers[cookie] = loop.call_later(self.retransmit[tries], self._transmit, cookie)

    def _forget(self, cookie: bytes) -> None:
        self._pending.pop(cookie, None)
        timer = self._timers.pop(cookie, None)
        if timer is not None:
            timer.cancel()

    def _fail_all(self, error: MediaError) -> None:
        for cookie, (future, _raw, _name, _tries) in list(self._pending.items()):
            self._forget(cookie)
            if not future.done():
                future.set_exception(error)

    def close(self) -> None:
        """Fail what is pending and close the socket. Idempotent."""
        self._fail_all(MediaError(f"the client of rtpengine at {self._where} was closed"))
        if self.transport is not None:
            self.transport.close()
            self.transport = None


def wav_blob(payloads: Sequence[bytes], payload_type: int) -> bytes:
    """A WAV file of G.711 ``payloads`` (payload type 0: mu-law, 8: A-law; 8 kHz mono, 8 bits a
    sample), for rtpengine's ``play media`` ``blob``. Raises MediaError for another payload type or
    when the file would exceed MAX_BLOB bytes."""
    fmt = WAV_FORMATS.get(payload_type)
    if fmt is None:
        raise MediaError(f"rtpengine plays prompts in PCMU or PCMA, not payload type {payload_type}")
    data = b"".join(payloads)
    if len(data) + 58 > MAX_BLOB:
        raise MediaError(f"the prompt is {len(data) / 8000:.1f} s; through rtpengine at most "
                         f"{(MAX_BLOB - 58) / 8000:.1f} s (one ng datagram)")
    # fmt chunk of 18 bytes (cbSize 0) and a fact chunk, as non-PCM WAVE formats have them
    fmt_chunk = b"fmt " + struct.pack("<IHHIIHHH", 18, fmt, 1, 8000, 8000, 1, 8, 0)
    fact = b"fact" + struct.pack("<II", 4, len(data))
    body = b"WAVE" + fmt_chunk + fact + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _ignore(future: asyncio.Future[Any]) -> None:
    """A fire-and-forget request's outcome, read so asyncio does not report it as never retrieved."""
    if not future.cancelled():
        future.exception()


def _logfmt(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


def leg_packets(reply: dict[bytes, Any], tag: str) -> int | None:
    """RTP packets rtpengine received from the party ``tag`` (its RTP streams' stats, RTCP left out),
    from a ``query`` or ``delete`` reply; None when the reply has no such tag yet."""
    tags = reply.get(b"tags")
    if not isinstance(tags, dict):
        return None
    party = tags.get(tag.encode())
    if not isinstance(party, dict):
        return None
    total = 0
    for media in party.get(b"medias", ()) or ():
        if not isinstance(media, dict):
            continue
        for stream in media.get(b"streams", ()) or ():
            if not isinstance(stream, dict) or b"RTCP" in (stream.get(b"flags") or ()):
                continue
            stats = stream.get(b"stats")
            if isinstance(stats, dict) and isinstance(stats.get(b"packets"), int):
                total += stats[b"packets"]
    return total


class RtpengineSession(MediaSession):
    """One call's media in rtpengine: leg 0 (tag ``zero``) faces the caller, leg 1 (``one``) the callee.

    ``anchor`` sends offers and answers (see the module docstring for which is which); ``close`` sends
    ``delete`` without waiting (its reply's counters become the final ``packets``).
    """

    def __init__(self, backend: RtpengineBackend, call_id: str) -> None:
        self.call_id = call_id
        self.ng_call_id = f"{backend.client.prefix}-{call_id}"
        self.closed = False
        self._backend = backend
        self._offer_from: int | None = None        # the leg whose offer awaits its answer
        self._answered: tuple[int, Origin] | None = None  # the leg that answered last, and its o= line
        self._seen = [False, False]                # whether rtpengine knows each leg's tag
        self._packets = (0, 0)
        self._stats_at = -math.inf                 # loop time of the counters' snapshot
        self._querying = False
        self.negotiation = Negotiation()  # each leg's DTMF mode, from the SDPs passed both ways
        self._played: tuple[bytes, tuple[bytes, int, str]] | None = None  # answer(): the offer and our reply

    def _kind(self, from_leg: int, origin: Origin) -> str:
        """``offer`` or ``answer`` for an SDP from ``from_leg`` (the module docstring's table)."""
        if self._offer_from is None:
            if self._answered is not None and self._answered == (from_leg, origin):
                return "answer"
            return "offer"
        return "offer" if self._offer_from == from_leg else "answer"

    async def anchor(self, from_leg: int, sdp: bytes) -> bytes:
        """rtpengine's SDP for the other leg, from ``from_leg``'s offer or answer (ng ``offer``/``answer``).
        Raises SdpError on a malformed body, MediaError when rtpengine refuses, does not answer, or the
        session is closed."""
        if from_leg not in (CALLER, CALLEE):
            raise MediaError(f"no leg {from_leg} in a call (0 or 1)")
        if self.closed:
            raise MediaError("the call's media is closed")
        parsed = parse_sdp(sdp)
        origin = parsed.origin
        kind = self._kind(from_leg, origin)
        offerer = from_leg if kind == "offer" else (
            self._offer_from if self._offer_from is not None else 1 - from_leg)
        other = 1 - offerer
        command: dict[str, Any] = {"command": kind, "call-id": self.ng_call_id, "from-tag": TAGS[offerer],
                                   "sdp": sdp, **OFFER_FLAGS, **(INJECT_DTMF if self._backend.inject_dtmf else {})}
        if kind == "answer" or self._seen[other]:
            command["to-tag"] = TAGS[other]
        reply = await self._backend.client.request(command)
        body = reply.get(b"sdp")
        if not isinstance(body, bytes) or not body:
            raise MediaError(f"rtpengine's reply to {kind} has no SDP")
        self._seen[from_leg] = True
        self.negotiation.sent_by(from_leg, telephone_event_types(parsed))
        try:
            self.negotiation.sent_to(1 - from_leg, telephone_event_types(parse_sdp(body)))
        except ValueError:  # rtpengine's own SDP unreadable to us: the leg's DTMF mode stays unknown
            pass
        if kind == "offer":
            self._offer_from = from_leg
        else:
            self._offer_from, self._answered = None, (from_leg, origin)
        return body

    def dtmf_mode(self, leg: int) -> str:
        """``leg``'s DTMF mode: runtime.media.dtmf.Negotiation.mode."""
        return self.negotiation.mode(leg)

    def send_dtmf(self, leg: int, digits: str, duration: float = 0.1) -> None:
        """ng ``play DTMF``, one command per digit (rtpengine queues them): the other leg's party is
        named as the one generating the event, so the tones reach ``leg``'s phone. Not awaited; a
        refusal (rtpengine built without transcoding) is logged. Raises MediaError when the session
        is closed or telephone-event was not negotiated on that leg, ValueError for bad digits."""
        if self.closed:
            raise MediaError("the call's media is closed")
        if not self.negotiation.negotiated(leg):
            raise MediaError(f"telephone-event was not negotiated on leg {leg}: its phone takes DTMF as SIP INFO")
        if not self._backend.inject_dtmf:
            raise MediaError("rtpengine was not asked to make DTMF injection possible (start with --media "
                             "rtpengine:HOST:PORT,inject-dtmf): sent as SIP INFO instead")
        for digit in normalize_digits(digits):
            future = self._backend.client.send({"command": "play DTMF", "call-id": self.ng_call_id,
                                                "from-tag": TAGS[1 - leg], "code": digit,
                                                "duration": max(40, min(8000, round(duration * 1000)))})
            future.add_done_callback(self._dtmf_played)

    def _dtmf_played(self, future: asyncio.Future[dict[bytes, Any]]) -> None:
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            log.warning("event=rtpengine_dtmf_failed call=%s reason=%s", self.call_id, _logfmt(str(error)))
    async def answer(self, leg: int, offer: bytes) -> tuple[bytes, int, str]:
        """Answer ``leg``'s offer for a prompt (see the module docstring): rtpengine's SDP answer for
        that phone, the payload type and codec (the first PCMU or PCMA the phone offers). Raises
        SdpError on a malformed offer, MediaError when it offers neither codec or rtpengine refuses."""
        if leg != CALLER:
            raise MediaError("rtpengine plays to the caller (channel ZERO) only")
        if self._played is not None and self._played[0] == offer:
            return self._played[1]  # early media then an answer: the same SDP both times
        if choose_playable(parse_sdp(offer)) is None:
            raise MediaError("the offer has no codec rtpengine can play a prompt in (PCMU or PCMA)")
        towards_callee = parse_sdp(await self.anchor(leg, offer))
        found = choose_playable(towards_callee)
        endpoint = towards_callee.endpoint(found[0]) if found is not None else None
        if found is None or endpoint is None:
            raise MediaError("rtpengine's offer keeps no G.711 codec to play a prompt in")
        stream, choice = found
        standin = build_answer(towards_callee, stream, choice, endpoint[0], DISCARD_PORT, os.urandom(4).hex())
        body = await self.anchor(1 - leg, standin)
        self._played = (offer, (body, choice.payload_type, choice.codec))
        return body, choice.payload_type, choice.codec

    async def play(self, leg: int, payloads: Sequence[bytes], payload_type: int) -> int:
        """``play media`` to ``leg`` (after ``answer``): the 20 ms G.711 ``payloads`` as a WAV blob;
        returns once rtpengine's reported duration has passed, with the number of payloads. Raises
        MediaError for another codec, a prompt over MAX_BLOB bytes, or rtpengine's refusal (one built
        without media playback says so in its error-reason). Cancelling sends ``stop media``."""
        if self.closed:
            raise MediaError("the call's media is closed")
        blob = wav_blob(payloads, payload_type)
        command: dict[str, Any] = {"command": "play media", "call-id": self.ng_call_id, "from-tag": TAGS[leg],
                                   "blob": blob}
        reply = await self._backend.client.request(command)
        duration = reply.get(b"duration")
        seconds = duration / 1000 if isinstance(duration, int) and duration > 0 else len(payloads) * 0.02
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            if not self.closed:
                self._backend.client.send({"command": "stop media", "call-id": self.ng_call_id,
                                           "from-tag": TAGS[leg]}).add_done_callback(_ignore)
            raise
        return len(payloads)

    @property
    def packets(self) -> tuple[int, int]:
        """RTP packets rtpengine received from (leg 0, leg 1), as of the last query (at most about
        ``STATS_MAX_AGE`` old while the call is read often; reading starts a refresh)."""
        if not self.closed and self._backend.now() - self._stats_at > STATS_MAX_AGE:
            self.refresh()
        return self._packets

    def refresh(self) -> None:
        """Ask rtpengine for this call's counters (``query``) without waiting; ``packets`` has them
        when the reply comes. One query at a time; a failed one is logged at debug level only."""
        if self.closed or self._querying or not any(self._seen):
            return
        self._querying = True
        future = self._backend.client.send({"command": "query", "call-id": self.ng_call_id})
        future.add_done_callback(self._take_stats)

    def _take_stats(self, future: asyncio.Future[dict[bytes, Any]]) -> None:
        self._querying = False
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            log.debug("call=%s rtpengine counters not read: %s", self.call_id, error)
            return
        reply = future.result()
        counts = [leg_packets(reply, tag) for tag in TAGS]
        self._packets = tuple(  # type: ignore[assignment]
            new if new is not None else old for new, old in zip(counts, self._packets, strict=True))
        self._stats_at = self._backend.now()

    def close(self) -> None:
        """``delete`` the call in rtpengine (not awaited; retransmitted like any request). Idempotent."""
        if self.closed:
            return
        self.closed = True
        self._backend._session_closed(self)
        if not any(self._seen):
            return  # rtpengine never heard of this call
        future = self._backend.client.send({"command": "delete", "call-id": self.ng_call_id})
        future.add_done_callback(self._deleted)

    def _deleted(self, future: asyncio.Future[dict[bytes, Any]]) -> None:
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:  # rtpengine ends the call itself after its --timeout without media
            log.warning("event=rtpengine_delete_failed call=%s reason=%s", self.call_id, _logfmt(str(error)))
            return
        self._querying = False
        self._take_stats(future)

    def __repr__(self) -> str:
        return f"RtpengineSession({self.call_id!r}, ng_call_id={self.ng_call_id!r}, closed={self.closed})"


class RtpengineBackend(MediaBackend):
    """Media of every call in one rtpengine, reached at ``address`` (its ``--listen-ng``)."""

    def __init__(self, address: tuple[str, int], retransmit: tuple[float, ...] = RETRANSMIT, *,
                 inject_dtmf: bool = False) -> None:
        self.client = NgClient(address, retransmit)
        self.inject_dtmf = inject_dtmf  # send_dtmf possible (see INJECT_DTMF for its price)
        self.sessions: dict[str, RtpengineSession] = {}
        self._now: Callable[[], float] | None = None

    # runtime/media/rtpengine_dtmf.DtmfReports once rtpengine's DTMF reports reach us (`--rtpengine-dtmf`)
    dtmf_reports: Any = None

    @property
    def keys_unheard(self) -> str | None:
        """Why RFC 4733 keys pressed in calls cannot reach a gather or `on dtmf` (None: they can)."""
        return None if self.dtmf_reports is not None else KEYS_UNHEARD

    def now(self) -> float:
        """The event loop's clock (seconds), for the counters' age."""
        if self._now is None:
            self._now = asyncio.get_running_loop().time
        return self._now()

    async def start(self) -> bool:
        """Open the socket and ``ping`` rtpengine: True when it answered. Not answering is logged
        (``rtpengine_unreachable``), not fatal: calls fail with MediaError until it is back.
        Raises MediaError when no socket can be opened."""
        await self.client.open()
        self._now = asyncio.get_running_loop().time
        try:
            await self.client.request({"command": "ping"})
        except MediaError as exc:
            log.warning("event=rtpengine_unreachable address=%s reason=%s", self.client._where, _logfmt(str(exc)))
            return False
        log.info("event=rtpengine_ready address=%s", self.client._where)
        return True

    async def allocate(self, call_id: str) -> RtpengineSession:
        """A session for the call; rtpengine learns of it at its first offer. Raises MediaError when
        the backend is closed."""
        if self.client.transport is None:
            await self.client.open()
        session = RtpengineSession(self, call_id)
        self.sessions[call_id] = session
        return session

    def watch(self, subscribe: Callable[[Callable[[Any], None]], None]) -> None:
        """Refresh a call's counters when its ``hangup`` event passes (``subscribe`` is the engine
        bus's), so ``closed`` and the call record carry them as of the hang-up."""
        def on_event(event: Any) -> None:
            if event.name == "hangup":
                session = self.sessions.get(str(event.fields.get("call")))
                if session is not None:
                    session._stats_at = -math.inf
                    session.refresh()
        subscribe(on_event)

    def _session_closed(self, session: RtpengineSession) -> None:
        if self.sessions.get(session.call_id) is session:
            del self.sessions[session.call_id]

    async def close(self) -> None:
        """Delete every call still here, wait (bounded by the retransmissions) for the deletes, close."""
        for session in list(self.sessions.values()):
            session.close()
        futures = [entry[0] for entry in self.client._pending.values()]
        if futures:
            await asyncio.wait(futures, timeout=sum(self.client.retransmit) + 0.5)
        self.client.close()
        if self.dtmf_reports is not None:
            self.dtmf_reports.close()
