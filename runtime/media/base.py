"""The media seam: what the B2BUA asks of whatever anchors a call's media.

The in-process Python relay (``runtime.media.relay``) is the first backend; rtpengine (media offloaded
to another box over its ng protocol) and aiortc (play, record, WebRTC) will sit behind the same two
classes. The seam is SDP in, SDP out, because that is also rtpengine's offer/answer shape: the B2BUA
never needs to know ports or sockets.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

__all__ = ["MediaError", "MediaBackend", "MediaSession", "CALLER", "CALLEE"]

CALLER = 0  # leg 0 faces the caller (channel ZERO)
CALLEE = 1  # leg 1 faces the dialled party (channel ONE)


class MediaError(RuntimeError):
    """Media could not be anchored: no free ports, a socket would not bind, the backend is closed."""


class MediaSession(ABC):
    """One call's media, anchored between leg 0 (the caller) and leg 1 (the callee)."""

    call_id: str

    @abstractmethod
    async def anchor(self, from_leg: int, sdp: bytes) -> bytes:
        """Learn ``from_leg``'s media address from the SDP it sent; return the SDP for the other leg.

        Called for every offer and answer, in either direction (re-INVITEs and hold included).
        Raises ``runtime.sip.sdp.SdpError`` on a malformed body.
        """

    async def answer(self, leg: int, offer: bytes) -> tuple[bytes, int, str]:
        """Answer ``leg``'s offer ourselves (the dialplan plays to that phone): the SDP answer, the
        payload type and codec name settled on. Raises MediaError when this backend cannot, or
        when the offer has no codec we can play."""
        raise MediaError("this media backend cannot answer calls itself")

    async def play(self, leg: int, payloads: Sequence[bytes], payload_type: int) -> int:
        """Send ``payloads`` to ``leg``'s phone as RTP, one every 20 ms; returns the packets sent.
        Cancelling the awaiting task stops the playback."""
        raise MediaError("this media backend cannot play audio")

    async def offer(self, leg: int) -> bytes:
        """Our own offer to ``leg``'s phone (its INVITE had none): the codecs we can play, on that
        leg's port. The phone's answer comes back through ``take_answer``."""
        raise MediaError("this media backend cannot make offers itself")

    async def take_answer(self, leg: int, answer: bytes) -> tuple[int, str]:
        """Learn ``leg``'s address and codec from its answer to ``offer``: (payload type, codec)."""
        raise MediaError("this media backend cannot make offers itself")

    def expect(self, leg: int, host: str) -> None:
        """Tell the backend the signalling source address of ``leg``'s peer (a registered phone,
        perhaps behind NAT): besides the address its SDP names, RTP from ``host`` may be latched on
        that leg. Call sessions call this for phones (USER peers), never for providers, whose media
        may come from elsewhere but then must match the SDP. The default ignores it."""
        return None  # a backend that cannot check sources (rtpengine does its own) has nothing to do

    @property
    def packets(self) -> tuple[int, int]:
        """RTP packets received so far, (on leg 0, on leg 1); a call whose counters stop moving has
        no media. Backends that cannot count return (0, 0)."""
        return (0, 0)

    def dtmf_mode(self, leg: int) -> str:
        """How ``leg``'s phone takes DTMF: `rfc4733` (telephone-event settled in that leg's
        offer/answer: ``send_dtmf`` works), `info` (both SDPs seen, no telephone-event: SIP INFO,
        sent by the call layer) or `unknown` (not both SDPs yet; a backend that does not follow
        the SDPs always says so: the call layer then uses INFO)."""
        return "unknown"

    def send_dtmf(self, leg: int, digits: str, duration: float = 0.1) -> None:
        """Send ``digits`` ("0"-"9", "*", "#", "A"-"D") to ``leg``'s phone as RFC 4733 telephone-events,
        each held ``duration`` seconds; returns at once (the backend paces them). Raises MediaError
        when this backend cannot, or telephone-event was not negotiated on that leg."""
        raise MediaError("this media backend cannot send DTMF")

    def restrict_offer(self, sdp: bytes) -> bytes:
        """After ``answer``: the offer for the other leg cut down to the codec the caller was given."""
        return sdp

    @abstractmethod
    def close(self) -> None:
        """Stop relaying and give the resources back. Idempotent."""


class MediaBackend(ABC):
    """Allocates a MediaSession per call."""

    # dtmf_listener(call_id, leg, digit, duration_ms): RFC 4733 digits the backend sees in any call's
    # RTP, once per event end (the engine's `dtmf` event). A backend that does not look at RTP
    # (rtpengine reports digits itself, over ng) leaves it uncalled.
    dtmf_listener: Callable[[str, int, str, int], None] | None = None

    @abstractmethod
    async def allocate(self, call_id: str) -> MediaSession:
        """Reserve media for a new call; raises MediaError when that is not possible."""

    @abstractmethod
    async def close(self) -> None:
        """End every session and release everything (server shutdown)."""
