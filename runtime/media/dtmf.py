"""DTMF digits in RTP: RFC 4733 telephone-events, detected as the relay passes them on.

Sans-IO: `EventDetector.feed(packet)` takes one RTP packet of a telephone-event payload type and
returns (digit, duration in ms) when that packet ends an event, once per event. RFC 4733 2.5.1.4
has the sender repeat the end packet (usually three times) with the same timestamp: the repeats
are recognised by (SSRC, timestamp) and not reported again. An event whose end packets were all
lost is not reported (there is no end to measure).
"""

from __future__ import annotations

from runtime.sip.sdp import SessionDescription

__all__ = ["DIGITS", "EventDetector", "Negotiation", "telephone_event_types"]

DIGITS = "0123456789*#ABCD"  # RFC 4733 3.2: events 0-15 are the DTMF digits


def telephone_event_types(desc: SessionDescription) -> dict[int, int]:
    """The telephone-event payload types of the first audio stream with a port, each with its clock
    rate in Hz ({101: 8000}); empty when the SDP offers none (then no digit can be detected)."""
    for m in desc.media:
        if m.kind != "audio" or m.port == 0:
            continue
        found: dict[int, int] = {}
        for attr in m.attributes:
            if not attr.lower().startswith("rtpmap:"):
                continue
            pt, _, rest = attr[7:].partition(" ")
            name, _, rate = rest.strip().partition("/")
            if pt.isdigit() and name.lower() == "telephone-event" and pt in m.formats:
                clock = rate.partition("/")[0]
                found[int(pt)] = int(clock) if clock.isdigit() and int(clock) > 0 else 8000
        return found
    return {}


class EventDetector:
    """The telephone-events of one stream direction. `rates`: payload type -> clock rate (Hz)."""

    __slots__ = ("rates", "_last")

    def __init__(self, rates: dict[int, int]) -> None:
        self.rates = rates
        self._last: tuple[bytes, bytes] | None = None  # (SSRC, timestamp) of the last event reported

    def feed(self, data: bytes) -> tuple[str, int] | None:
        """(digit, duration in ms) when `data` is the first end packet of a DTMF event, else None
        (not an end, a repeated end, an event other than a digit, a packet too short)."""
        if len(data) < 16 or data[0] >> 6 != 2:
            return None
        rate = self.rates.get(data[1] & 0x7F)
        if rate is None:
            return None
        offset = 12 + 4 * (data[0] & 0x0F)  # CSRCs
        if data[0] & 0x10:  # a header extension: 4 bytes, then its length in 32-bit words
            if len(data) < offset + 4:
                return None
            offset += 4 + 4 * int.from_bytes(data[offset + 2:offset + 4], "big")
        if len(data) < offset + 4:
            return None
        event, flags = data[offset], data[offset + 1]
        if not flags & 0x80:  # the E bit: only the end carries the event's whole duration
            return None
        key = (data[8:12], data[4:8])
        if key == self._last:
            return None
        self._last = key
        if event >= len(DIGITS):
            return None  # a tone or line event (RFC 4733 3.2), not a digit
        duration = int.from_bytes(data[offset + 2:offset + 4], "big")
        return DIGITS[event], round(duration * 1000 / rate)


class Negotiation:
    """Which legs of a call settled telephone-event in their offer/answer (each leg's DTMF mode).

    Per leg, the telephone-event types of the last SDP that leg's phone sent us (what it can
    receive, with its numbers) and of the last SDP we sent it. RFC 4733 is that leg's mode only
    when both name telephone-event; otherwise digits reach that phone as SIP INFO. Backends call
    `sent_by`/`sent_to` for every SDP they pass (an anchor, our own answer or offer).
    """

    __slots__ = ("_from_phone", "_to_phone")

    def __init__(self) -> None:
        self._from_phone: list[dict[int, int] | None] = [None, None]
        self._to_phone: list[dict[int, int] | None] = [None, None]

    def sent_by(self, leg: int, types: dict[int, int]) -> None:
        """`leg`'s phone sent an SDP naming these telephone-event types (payload type -> Hz)."""
        self._from_phone[leg] = dict(types)

    def sent_to(self, leg: int, types: dict[int, int]) -> None:
        """We sent `leg`'s phone an SDP naming these telephone-event types."""
        self._to_phone[leg] = dict(types)

    def negotiated(self, leg: int) -> bool:
        """Both SDPs of `leg`'s offer/answer name telephone-event."""
        return bool(self._from_phone[leg]) and bool(self._to_phone[leg])

    def known(self, leg: int) -> bool:
        """Both SDPs of `leg` have been seen (before that, "not negotiated" means "not yet")."""
        return self._from_phone[leg] is not None and self._to_phone[leg] is not None

    def mode(self, leg: int) -> str:
        """`rfc4733` when negotiated on `leg`, `info` when both its SDPs were seen without it, else
        `unknown` (an SDP is still to come)."""
        if self.negotiated(leg):
            return "rfc4733"
        return "info" if self.known(leg) else "unknown"

    def send_type(self, leg: int) -> tuple[int, int] | None:
        """(payload type, clock rate) to send RFC 4733 to `leg`'s phone with: the number its own SDP
        gave (8000 Hz preferred, then the lowest number); None unless negotiated on that leg."""
        types = self._from_phone[leg]
        if not types or not self.negotiated(leg):
            return None
        pt = min(types, key=lambda t: (types[t] != 8000, t))
        return pt, types[pt]
