"""DTMF digits in RTP: RFC 4733 telephone-events, detected as the relay passes them on.

Sans-IO: `EventDetector.feed(packet)` takes one RTP packet of a telephone-event payload type and
returns (digit, duration in ms) when that packet ends an event, once per event. RFC 4733 2.5.1.4
has the sender repeat the end packet (usually three times) with the same timestamp: the repeats
are recognised by (SSRC, timestamp) and not reported again. An event whose end packets were all
lost is not reported (there is no end to measure).
"""

from __future__ import annotations

from runtime.sip.sdp import SessionDescription

__all__ = ["DIGITS", "EventDetector", "telephone_event_types"]

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
