"""One call's relayed media (``RelaySession``): two legs, their SDP, prompts played to a phone.

Shape of one call::

    caller phone <-> leg 0 (RTP p0, RTCP p0+1)  ==relay==  leg 1 (RTP p1, RTCP p1+1) <-> callee phone

A packet arriving on leg 0's RTP socket leaves from leg 1's RTP socket towards leg 1's remote, and
vice versa; RTCP likewise on the +1 sockets. Which sources a leg takes media from is the latching
rule of ``runtime.media.latch``: the SDP's host, or the phone's signalling source (``expect``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from runtime.media.base import MediaError, MediaSession
from runtime.media.dtmf import EventDetector, Negotiation, telephone_event_types
from runtime.media.dtmf_sender import MAX_DURATION, MIN_DURATION, DtmfSender, normalize_digits
from runtime.media.endpoint import MediaLeg
from runtime.media.latch import Address, canonical_host
from runtime.sip.sdp import (
    AnswerChoice,
    build_answer,
    build_offer,
    choose_playable,
    keep_formats,
    parse_sdp,
    rewrite_sdp,
)

if TYPE_CHECKING:
    from runtime.media.relay import MediaRelay

__all__ = ["RelaySession"]

log = logging.getLogger("callflow.media")

STREAM_WAIT = 0.06  # seconds send_dtmf waits for the stream it replaces (a packet comes every 20 ms)


def _session_id() -> str:
    """The o= session id of an SDP body of our own (RFC 4566: unique, a number)."""
    return str(int.from_bytes(os.urandom(4), "big"))


def _normalize(host: str, port: int, family: int) -> Address:
    """The address tuple the socket reports for a source, so the latch compare is a plain ==
    (an SDP may spell an IPv6 address otherwise than the kernel does)."""
    try:
        host = canonical_host(host)
    except ValueError:
        pass  # a name, not an address: it will match no packet's source, so nothing latches to it
    if family == socket.AF_INET6:
        return (host, port, 0, 0)
    return (host, port)


class RelaySession(MediaSession):
    """One call's relayed media: leg 0 faces the caller (channel ZERO), leg 1 the callee (channel ONE).

    Once closed, its legs belong to the relay again (a later call may be using them): the counters
    keep their final values, and ``set_remote``/``expect``/``anchor`` no longer touch the legs.
    """

    def __init__(self, relay: MediaRelay, call_id: str, legs: tuple[MediaLeg, MediaLeg]) -> None:
        self.call_id = call_id
        self.legs = legs
        self.closed = False
        self._relay = relay
        self._done: asyncio.Future[None] | None = None  # made only when someone waits
        self._pending = 0  # legs of this session whose sockets are closing
        self._final: tuple[tuple[int, int], ...] | None = None  # counters as they were at close
        self._answered: tuple[int, AnswerChoice] | None = None  # (stream, codec) we answered with
        self._dtmf: Callable[[int, str, int], None] | None = None
        self._event_types: dict[int, int] = {}  # telephone-event payload type -> clock rate, both SDPs
        self.negotiation = Negotiation()  # each leg's DTMF mode (RFC 4733 or SIP INFO), from its SDPs
        self._senders: list[DtmfSender | None] = [None, None]  # digits being sent into each leg
        self._dtmf_queue: list[list[str] | None] = [None, None]  # digits asked for before a sender started
        self._pumps: set[asyncio.Task[None]] = set()
        self._taps: tuple[list[Callable[[bytes], None]], list[Callable[[bytes], None]]] = ([], [])  # recordings
        self._played = [0, 0]  # RTP packets `play` sent into each leg (prompts, a voicemail's beep)

    def on_dtmf(self, callback: Callable[[int, str, int], None] | None) -> None:
        """Report RFC 4733 digits arriving on either leg: `callback(leg, digit, duration_ms)` once per
        event, at its end ("0"-"9", "*", "#", "A"-"D"; duration in milliseconds). The digits still
        reach the other leg as before. Only a telephone-event payload type one of the legs' SDPs
        names is looked at (both sides' numbers count for both legs: a B2BUA passes the SDPs on
        unchanged, and each phone sends with the numbers the other one gave). None stops it."""
        self._dtmf = callback
        self._arm_dtmf()

    def _learn_event_types(self, types: dict[int, int]) -> None:
        if types and not types.items() <= self._event_types.items():
            self._event_types.update(types)
            self._arm_dtmf()

    def _arm_dtmf(self) -> None:
        if self.closed:
            return
        for index, leg in enumerate(self.legs):
            endpoint = leg.rtp
            if self._dtmf is None or not self._event_types:
                endpoint.dtmf = endpoint.on_dtmf = None
                continue
            if endpoint.dtmf is None:
                endpoint.dtmf = EventDetector(dict(self._event_types))
            else:
                endpoint.dtmf.rates = dict(self._event_types)
            callback = self._dtmf
            endpoint.on_dtmf = lambda digit, duration, leg=index, report=callback: report(leg, digit, duration)

    def set_remote(self, leg: int, addr: tuple[str, int], rtcp: tuple[str, int] | None = None) -> None:
        """Where ``leg``'s phone wants media, from its SDP; RTCP defaults to the RTP port + 1.

        Until that phone's stream passes probation this is where we send; the stream's source may
        then differ in port (see ``runtime.media.latch``). Ignored once the session is closed.
        """
        if self.closed:
            return
        family = self._relay.family
        host, port = addr
        rhost, rport = rtcp if rtcp is not None else (host, port + 1)
        self.legs[leg].rtp.set_sdp_remote(_normalize(host, port, family))
        self.legs[leg].rtcp.set_sdp_remote(_normalize(rhost, rport, family))

    def expect(self, leg: int, host: str) -> None:
        """RTP and RTCP from ``host`` (any port) may be latched on ``leg`` besides its SDP's host: the
        signalling source of a phone's leg (a phone behind NAT names a private address in its SDP).
        Ignored once the session is closed, and (logged) when ``host`` is not an IP address."""
        if self.closed:
            return
        try:
            self.legs[leg].rtp.expect(host)
            self.legs[leg].rtcp.expect(host)
        except ValueError:
            log.warning("event=media_expect_ignored call=%s leg=%d host=%r reason=%s", self.call_id, leg, host,
                        '"not an IP address"')

    async def anchor(self, from_leg: int, sdp: bytes) -> bytes:
        """Learn ``from_leg``'s address from its SDP; return that SDP pointed at the other leg's ports.

        The first audio stream with a port is relayed; other streams (video, a second audio) are
        answered with port 0 for now, since a session relays one RTP/RTCP pair per leg. On a closed
        session every stream gets port 0: its ports may already carry another call.
        """
        desc = parse_sdp(sdp)
        media = desc.media
        ports = [0] * len(media)
        types = telephone_event_types(desc)
        self._learn_event_types(types)
        self.negotiation.sent_by(from_leg, types)
        self.negotiation.sent_to(1 - from_leg, types)  # the SDP goes on with its formats unchanged
        if not self.closed:
            for stream, m in enumerate(media):
                if m.kind == "audio" and m.port != 0:
                    endpoint = desc.endpoint(stream)
                    if endpoint is not None:  # None: hold by 0.0.0.0; keep sending where we were
                        rtcp_port = m.rtcp_port
                        self.set_remote(from_leg, endpoint, (endpoint[0], rtcp_port) if rtcp_port else None)
                    ports[stream] = self.legs[1 - from_leg].local_port
                    break
        return rewrite_sdp(sdp, self._relay.advertise, ports, parsed=desc)

    async def answer(self, leg: int, offer: bytes) -> tuple[bytes, int, str]:
        """Answer ``leg``'s offer with our own address on that leg's port (for playing to it).

        The codec is the first PCMU or PCMA the offer lists; telephone-event is kept when offered.
        Answering again returns the same choice, so early media and a later answer agree.
        """
        if self.closed:
            raise MediaError("the call's media is closed")
        desc = parse_sdp(offer)
        found = self._answered or choose_playable(desc)
        if found is None:
            raise MediaError("the offer has no codec we can play (PCMU or PCMA)")
        stream, choice = found
        endpoint = desc.endpoint(stream)
        if endpoint is not None:
            rtcp_port = desc.media[stream].rtcp_port
            self.set_remote(leg, endpoint, (endpoint[0], rtcp_port) if rtcp_port else None)
        self._answered = found
        if choice.telephone_event is not None:
            self._learn_event_types({choice.telephone_event: 8000})
        self.negotiation.sent_by(leg, telephone_event_types(desc))
        self.negotiation.sent_to(leg, {choice.telephone_event: 8000} if choice.telephone_event is not None else {})
        body = build_answer(desc, stream, choice, self._relay.advertise, self.legs[leg].local_port, _session_id())
        return body, choice.payload_type, choice.codec

    async def offer(self, leg: int) -> bytes:
        """Our offer to ``leg`` (PCMU, PCMA, telephone-event), or, once a codec is settled with the
        caller, that codec alone: what a late-offer caller and the leg dialled after it are sent."""
        if self.closed:
            raise MediaError("the call's media is closed")
        port = self.legs[leg].local_port
        if self._answered is not None:
            choice = self._answered[1]
            body = build_offer(self._relay.advertise, port, _session_id(), (choice.payload_type,),
                               choice.telephone_event)
        else:
            body = build_offer(self._relay.advertise, port, _session_id())
        self.negotiation.sent_to(leg, telephone_event_types(parse_sdp(body)))
        return body

    async def take_answer(self, leg: int, answer: bytes) -> tuple[int, str]:
        if self.closed:
            raise MediaError("the call's media is closed")
        desc = parse_sdp(answer)
        found = choose_playable(desc)
        if found is None:
            raise MediaError("the answer has no codec we can play (PCMU or PCMA)")
        stream, choice = found
        endpoint = desc.endpoint(stream)
        if endpoint is not None:
            rtcp_port = desc.media[stream].rtcp_port
            self.set_remote(leg, endpoint, (endpoint[0], rtcp_port) if rtcp_port else None)
        self._answered = (0, choice)  # our offers have one stream
        types = telephone_event_types(desc)
        self._learn_event_types(types)
        self.negotiation.sent_by(leg, types)
        return choice.payload_type, choice.codec

    def restrict_offer(self, sdp: bytes) -> bytes:
        if self._answered is None:
            return sdp
        stream, choice = self._answered
        keep = {choice.payload_type} | ({choice.telephone_event} if choice.telephone_event is not None else set())
        return keep_formats(sdp, stream, keep)

    async def play(self, leg: int, payloads: Sequence[bytes], payload_type: int) -> int:
        """RTP from ``leg``'s own socket to where that phone receives (its SDP address, or the source
        its packets latched), paced on the loop clock so a late wake-up does not stretch the prompt."""
        endpoint = self.legs[leg].rtp
        loop = asyncio.get_running_loop()
        ssrc, seq, stamp = struct.unpack("!IHI", os.urandom(10))
        start = loop.time()
        sent = 0
        for i, payload in enumerate(payloads):
            if self.closed:
                break
            transport, dest = endpoint.transport, endpoint.dest
            if transport is not None and dest is not None:
                marker = 0x80 if i == 0 else 0
                header = struct.pack("!BBHII", 0x80, marker | payload_type, (seq + i) & 0xFFFF,
                                     (stamp + i * 160) & 0xFFFFFFFF, ssrc)
                transport.sendto(header + payload, dest)
                sent += 1
                self._played[leg] += 1
            delay = start + (i + 1) * 0.02 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        return sent

    def dtmf_mode(self, leg: int) -> str:
        """``leg``'s DTMF mode: runtime.media.dtmf.Negotiation.mode."""
        return self.negotiation.mode(leg)

    def send_dtmf(self, leg: int, digits: str, duration: float = 0.1) -> None:
        """Send ``digits`` to ``leg``'s phone as RFC 4733 telephone-events (runtime.media.dtmf_sender),
        from that leg's socket, in the payload type its SDP gave; returns at once, a task paces the
        packets on the loop clock. Digits asked for while earlier ones are still being sent follow
        them (at the first request's ``duration``). Raises MediaError when the session is closed
        or telephone-event was not negotiated on that leg, ValueError for bad digits or duration.

        The events take the place of the other phone's stream for their time: its packets towards
        ``leg`` are held back while digits are sent (and for the gap after the last), and the events
        carry its SSRC, continue its sequence numbers and follow its timestamps (RFC 4733 2.1: the
        events are part of the audio stream). A phone that saw two SSRCs interleaved would reset its
        jitter buffer on every packet and lose the events (baresip does).
        """
        if self.closed:
            raise MediaError("the call's media is closed")
        found = self.negotiation.send_type(leg)
        if found is None:
            raise MediaError(f"telephone-event was not negotiated on leg {leg}: its phone takes DTMF as SIP INFO")
        digits = normalize_digits(digits)
        if not MIN_DURATION <= duration <= MAX_DURATION:
            raise ValueError(f"duration {duration!r} s: between {MIN_DURATION} and {MAX_DURATION} s")
        loop = asyncio.get_running_loop()
        queued = self._dtmf_queue[leg]
        if queued is not None:  # a pump runs for this leg: its digits come first
            sender = self._senders[leg]
            if sender is not None:
                sender.extend(digits, loop.time())
            else:
                queued.append(digits)
            return
        self._dtmf_queue[leg] = [digits]
        task = loop.create_task(self._pump_dtmf(leg, found[0], found[1], duration))
        self._pumps.add(task)
        task.add_done_callback(self._pumps.discard)

    async def _pump_dtmf(self, leg: int, payload_type: int, rate: int, duration: float) -> None:
        """Hold the other phone's stream back, then hand the sender's packets to the socket when due
        (bounded: a digit takes a few dozen packets)."""
        endpoint = self.legs[leg].rtp
        source = self.legs[1 - leg].rtp  # what arrives there is relayed to `leg`'s phone
        loop = asyncio.get_running_loop()
        first: asyncio.Future[bytes] = loop.create_future()

        def hold(data: bytes) -> None:
            if not first.done() and len(data) >= 12 and data[0] >> 6 == 2:
                first.set_result(data)

        source.hold = hold
        try:
            try:  # the stream's next packet: its SSRC, sequence number and timestamp are ours now
                taken: bytes | None = await asyncio.wait_for(asyncio.shield(first), STREAM_WAIT)
            except TimeoutError:
                taken = None  # no stream towards that phone (on hold, silence suppression): our own
            stream = {}
            if taken is not None:
                seq, stamp, ssrc = struct.unpack("!HII", taken[2:12])
                stream = {"ssrc": ssrc, "seq": seq, "timestamp": stamp}
            digits = "".join(self._dtmf_queue[leg] or ())
            sender = DtmfSender(digits, payload_type, loop.time(), duration=duration, rate=rate, **stream)
            self._senders[leg] = sender
            for _ in range(100_000):
                if self.closed:
                    return
                for packet in sender.due(loop.time()):
                    transport, dest = endpoint.transport, endpoint.dest
                    if transport is not None and dest is not None:
                        transport.sendto(packet, dest)
                at = sender.next_at
                if at is None:  # quiet for the gap, so the stream's own numbers have passed ours
                    at = sender.quiet_at
                    if loop.time() >= at:
                        return
                await asyncio.sleep(max(0.0, at - loop.time()))
        finally:
            if source.hold is hold:
                source.hold = None
            self._senders[leg] = None
            self._dtmf_queue[leg] = None

    def tap(self, leg: int, listener: Callable[[bytes], None]) -> None:
        """Hand every RTP packet arriving on ``leg`` (from that leg's phone, admitted by the latch,
        relayed or not) to ``listener(packet)`` as well: a recording (a voicemail and a call
        recording may listen at once). Ignored once the session is closed (its legs may carry
        another call)."""
        if not self.closed:
            self._taps[leg].append(listener)
            self._arm_tap(leg)

    def untap(self, leg: int, listener: Callable[[bytes], None]) -> None:
        """Stop handing ``leg``'s packets to ``listener`` (no error when it was not listening)."""
        taps = self._taps[leg]
        if listener in taps:
            taps.remove(listener)
        if not self.closed:
            self._arm_tap(leg)

    def _arm_tap(self, leg: int) -> None:
        taps = tuple(self._taps[leg])
        if not taps:
            self.legs[leg].rtp.tap = None
        elif len(taps) == 1:
            self.legs[leg].rtp.tap = taps[0]
        else:
            def fan_out(data: bytes, taps: tuple[Callable[[bytes], None], ...] = taps) -> None:
                for listener in taps:
                    listener(data)
            self.legs[leg].rtp.tap = fan_out

    @property
    def answered_codec(self) -> tuple[int, str] | None:
        """(payload type, codec) we answered the caller with (``answer``/``take_answer``), or None."""
        if self._answered is None:
            return None
        choice = self._answered[1]
        return choice.payload_type, choice.codec

    @property
    def event_types(self) -> dict[int, int]:
        """The telephone-event payload types either leg's SDP named, with their clock rates."""
        return dict(self._event_types)

    # Counters, per direction: index 0 is caller -> callee (arrived on leg 0), index 1 the reverse.
    @property
    def packets(self) -> tuple[int, int]:
        """RTP packets per direction: (from the caller, towards the caller). From the caller: what
        arrived on leg 0, relayed to leg 1 or heard by Callflow alone (no far leg: a voicemail, a
        menu), plus what `play` sent into leg 1; towards the caller: what arrived on leg 1 plus what
        `play` sent into leg 0 (a prompt, a beep). The call's `closed` rtp_in/rtp_out and its RTP
        inactivity check read these; ``relayed`` counts only what went through."""
        if self._final is not None:
            return self._final[0]
        legs, played = self.legs, self._played
        return (legs[0].rtp.packets + legs[0].rtp.heard + played[1],
                legs[1].rtp.packets + legs[1].rtp.heard + played[0])

    @property
    def relayed(self) -> tuple[int, int]:
        """RTP packets relayed from one leg to the other: (leg 0 -> leg 1, leg 1 -> leg 0)."""
        if self._final is not None:
            return self._final[5]
        return self.legs[0].rtp.packets, self.legs[1].rtp.packets

    @property
    def bytes(self) -> tuple[int, int]:
        if self._final is not None:
            return self._final[1]
        return self.legs[0].rtp.bytes, self.legs[1].rtp.bytes

    @property
    def rtcp_packets(self) -> tuple[int, int]:
        if self._final is not None:
            return self._final[2]
        return self.legs[0].rtcp.packets, self.legs[1].rtcp.packets

    @property
    def dropped(self) -> tuple[int, int]:
        """Packets arriving on each leg not relayed: the far leg's remote was unknown, or they came
        from a stranger (``strangers``)."""
        if self._final is not None:
            return self._final[3]
        return tuple(  # type: ignore[return-value]
            leg.rtp.dropped + leg.rtp.strangers + leg.rtcp.dropped + leg.rtcp.strangers for leg in self.legs
        )

    @property
    def strangers(self) -> tuple[int, int]:
        """Packets arriving on each leg (RTP and RTCP) refused by the latching rule: from a host the
        call did not negotiate, not RTP, the previous call's stream, or not the locked source."""
        if self._final is not None:
            return self._final[4]
        return tuple(leg.rtp.strangers + leg.rtcp.strangers for leg in self.legs)  # type: ignore[return-value]

    def close(self) -> None:
        """Stop relaying and give the legs back to the relay (kept bound for reuse, or closed)."""
        if self.closed:
            return
        self._final = (self.packets, self.bytes, self.rtcp_packets, self.dropped, self.strangers, self.relayed)
        if any(self._final[4]):
            # someone sprayed the call's ports (or a peer's media came from elsewhere than it said)
            log.info("event=media_strangers call=%s leg0=%d leg1=%d", self.call_id, *self._final[4])
        self.closed = True
        for task in self._pumps:
            task.cancel()
        for leg, taps in zip(self.legs, self._taps, strict=True):
            leg.rtp.tap = None
            taps.clear()
        self._relay._session_closed(self)
        if self._pending == 0 and self._done is not None and not self._done.done():
            self._done.set_result(None)

    async def wait_closed(self) -> None:
        """Until the session is closed and both its ports are reusable (kept bound, or closed for good)."""
        if self.closed and self._pending == 0:
            return
        if self._done is None:
            self._done = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._done)

    def _leg_released(self) -> None:
        self._pending -= 1
        if self._pending == 0 and self.closed and self._done is not None and not self._done.done():
            self._done.set_result(None)

    def __repr__(self) -> str:
        return f"RelaySession({self.call_id!r}, legs={self.legs!r}, closed={self.closed})"
