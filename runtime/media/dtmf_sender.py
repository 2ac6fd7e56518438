"""Sending DTMF digits as RFC 4733 telephone-events, sans-IO.

`DtmfSender` turns digits into the RTP packets a phone expects, and says when each is due; it
never sleeps nor sends. The media backend's pump (RelaySession.send_dtmf) asks `due(now)` for the
packets whose time has come, sends them, and waits until `next_at`.

One digit, as RFC 4733 2.5 has it (20 ms packets, a 100 ms key at 8000 Hz):

    t (ms)   0     20    40    60    80    100   120   140     then a gap, then the next digit
    M bit    1     0     0     0     0     0     0     0
    E bit    0     0     0     0     1     1     1     1       the end, sent three times more
    duration 160   320   480   640   800   800   800   800     samples since the event began

Every packet of an event carries the event's start as its timestamp (2.5.1.1); the first has the
marker bit (2.5.1.3); the end packet is retransmitted, same timestamp and duration, new sequence
numbers (2.5.1.4), so one lost packet does not lose the key's release. A digit starts at least
`gap` after the previous digit's last packet, on a timestamp that has advanced with the clock.
"""

from __future__ import annotations

import os
import struct
from collections import deque

from runtime.media.dtmf import DIGITS

__all__ = ["DtmfSender", "normalize_digits", "INTERVAL", "END_PACKETS", "GAP", "MIN_DURATION", "MAX_DURATION",
           "MAX_DIGITS"]

INTERVAL = 0.02      # seconds between packets of one event (the phones' 20 ms packetization)
END_PACKETS = 3      # end packets after the first one (RFC 4733 2.5.1.4: "three" is the common choice)
GAP = 0.1            # seconds of silence between two digits, so a receiver sees two key presses
MIN_DURATION = 0.04  # seconds: shorter keys are missed by many receivers (ITU-T Q.24: 40 ms)
MAX_DURATION = 8.0   # seconds: the duration field is 16 bits (65535 samples = 8.19 s at 8000 Hz)
MAX_DIGITS = 64      # digits queued on one leg at a time; more is a caller's bug, not a dial string
VOLUME = 10          # -10 dBm0, the level RFC 4733 examples and common phones use


def normalize_digits(digits: str) -> str:
    """`digits` as RFC 4733 DTMF events know them ("0"-"9", "*", "#", "A"-"D"; lowercase a-d
    accepted). Raises ValueError naming the first character that is not a digit, and for an empty
    string or one longer than MAX_DIGITS."""
    if not digits:
        raise ValueError("no digits to send")
    if len(digits) > MAX_DIGITS:
        raise ValueError(f"{len(digits)} digits: at most {MAX_DIGITS} at a time")
    out = digits.upper()
    for ch in out:
        if ch not in DIGITS:
            raise ValueError(f"{ch!r} is not a DTMF digit (0-9, *, #, A-D)")
    return out


class DtmfSender:
    """The telephone-event packets of queued digits, each due at a time on the caller's clock.

    payload_type: the telephone-event type the receiving phone's SDP gave (96-127 usually);
    rate: its clock rate in Hz; duration: seconds each key is held (MIN_DURATION-MAX_DURATION);
    now: the clock reading the first digit starts at (seconds, any monotonic clock the pump uses).
    ssrc/seq/timestamp: the RTP stream's start values (random when None, RFC 3550 5.1).
    Raises ValueError for bad digits, a duration out of bounds, or a payload type not in 0-127.
    """

    def __init__(self, digits: str, payload_type: int, now: float, *, duration: float = 0.1, rate: int = 8000,
                 ssrc: int | None = None, seq: int | None = None, timestamp: int | None = None) -> None:
        if not 0 <= payload_type <= 127:
            raise ValueError(f"payload type {payload_type}: RTP has 0-127")
        if not MIN_DURATION <= duration <= MAX_DURATION:
            raise ValueError(f"duration {duration!r} s: between {MIN_DURATION} and {MAX_DURATION} s")
        if rate <= 0 or duration * rate > 0xFFFF:
            raise ValueError(f"duration {duration!r} s does not fit the 16-bit field at {rate} Hz")
        rnd_ssrc, rnd_seq, rnd_ts = struct.unpack("!IHI", os.urandom(10))
        self.payload_type = payload_type
        self.rate = rate
        self.duration = duration
        self.ssrc = rnd_ssrc if ssrc is None else ssrc & 0xFFFFFFFF
        self._seq = (rnd_seq if seq is None else seq) & 0xFFFF
        self._ts0 = (rnd_ts if timestamp is None else timestamp) & 0xFFFFFFFF
        self._t0 = now                       # the clock reading of timestamp _ts0
        self._queue: deque[str] = deque()
        self._plan: deque[tuple[float, bytes]] = deque()  # the current digit's packets not sent yet
        self._free_at = now                  # when the next digit may start
        self.sent = 0                        # packets handed out so far
        self.extend(digits)

    def extend(self, digits: str, now: float | None = None) -> None:
        """Queue more digits after those not sent yet (ValueError as for the constructor's). `now`:
        a sender that had finished starts the first of them then (or after the gap), not in the past."""
        digits = normalize_digits(digits)
        if len(self._queue) + len(digits) > MAX_DIGITS:
            raise ValueError(f"more than {MAX_DIGITS} digits waiting to be sent on this leg")
        if now is not None and self.done:
            self._free_at = max(self._free_at, now)
        self._queue.extend(digits)

    @property
    def quiet_at(self) -> float:
        """When the gap after the last digit planned ends (clock seconds)."""
        return self._free_at

    @property
    def done(self) -> bool:
        """Every queued digit has been handed out, end packets included."""
        return not self._plan and not self._queue

    @property
    def next_at(self) -> float | None:
        """When the next packet is due (clock seconds); None when done."""
        if self._plan:
            return self._plan[0][0]
        if self._queue:
            return self._free_at
        return None

    def due(self, now: float) -> list[bytes]:
        """The packets due at or before `now`, in sending order (RTP packets, header and payload).
        A pump that woke late gets every overdue packet at once: their timestamps are those of
        the schedule, so the receiver still measures the right duration."""
        out: list[bytes] = []
        for _ in range(MAX_DIGITS + 1):  # bounded: one digit planned per turn
            while self._plan and self._plan[0][0] <= now:
                out.append(self._plan.popleft()[1])
            if self._plan or not self._queue or self._free_at > now:
                break
            self._plan_digit(self._queue.popleft(), self._free_at)
        self.sent += len(out)
        return out

    def _plan_digit(self, digit: str, start: float) -> None:
        """Every packet of one digit starting at `start`, queued with its due time."""
        event = DIGITS.index(digit)
        rate = self.rate
        timestamp = (self._ts0 + round((start - self._t0) * rate)) & 0xFFFFFFFF
        total = round(self.duration * rate)
        step = round(INTERVAL * rate)
        updates = max(1, -(-total // step))  # packets until the key's release, the last one the end
        at = start
        for k in range(updates + END_PACKETS):
            end = k >= updates - 1
            length = total if end else (k + 1) * step
            at = start + k * INTERVAL
            self._plan.append((at, self._packet(event, k == 0, end, length, timestamp)))
        self._free_at = at + GAP

    def _packet(self, event: int, marker: bool, end: bool, length: int, timestamp: int) -> bytes:
        seq, self._seq = self._seq, (self._seq + 1) & 0xFFFF
        header = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | self.payload_type, seq, timestamp, self.ssrc)
        payload = struct.pack("!BBH", event, (0x80 if end else 0) | VOLUME, length)
        return header + payload
