"""A relay leg's sockets: what arrives on one leaves from its peer socket, if the latch admits it.

One ``RelayEndpoint`` is one bound UDP socket (a leg's RTP or its RTCP) and the latching rule's
state for it (``runtime.media.latch.Latch``); a ``MediaLeg`` is the pair, on an even port and the
odd one above. ``datagram_received`` is the whole hot path: one tuple compare and one boolean for
a packet from the locked source, one attribute hop to the peer socket, one ``sendto``, two integer
bumps. No dicts, no logging, no per-packet objects of our own; everything else (probation,
strangers, resting legs) takes the ``_admit`` branch.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from runtime.media.dtmf import EventDetector
from runtime.media.latch import PROBATION, Address, Latch

if TYPE_CHECKING:
    from runtime.media.session import RelaySession

__all__ = ["ACTIVE", "IDLE", "CLOSING", "CLOSED", "MAX_DATAGRAM", "MediaLeg", "RelayEndpoint"]

log = logging.getLogger("callflow.media")

MAX_DATAGRAM = 65535

# MediaLeg.state
ACTIVE = "active"  # in a session (or being wrapped for one)
IDLE = "idle"  # bound, on the relay's free list, relaying nothing
CLOSING = "closing"  # sockets closing; the port is released when the loop has closed both
CLOSED = "closed"


class RelayEndpoint(Latch, asyncio.DatagramProtocol):
    """One bound socket: a leg's RTP or its RTCP. What arrives here leaves from ``peer``'s socket.

    Without a peer (the leg rests on the relay's free list) it relays nothing: every packet is
    dropped and counted in ``dropped``.
    """

    __slots__ = ("transport", "peer", "packets", "bytes", "dropped", "heard", "errors", "dtmf", "on_dtmf", "hold",
                 "tap", "_on_lost")

    def __init__(self, rtcp: bool, probation: int, on_lost: Callable[[], None]) -> None:
        Latch.__init__(self, rtcp, probation)
        self.transport: asyncio.DatagramTransport | None = None
        self._on_lost = on_lost
        self.reset()

    def reset(self) -> None:
        """Forget everything about a call: as if the socket had just been bound (but for the
        ``former`` stream, which the next call refuses)."""
        self.reset_latch()
        self.peer: RelayEndpoint | None = None
        self.packets = 0  # received here and relayed
        self.bytes = 0
        self.dropped = 0  # received here while the other leg's remote was unknown (or while resting)
        # of those, received during a call (the other leg's remote unknown: no far leg yet, or none at
        # all as in a voicemail or a menu): not relayed, but the phone's media reached us (and a tap)
        self.heard = 0
        self.errors = 0
        # RFC 4733 digits in what arrives here (set by the session when someone listens): the
        # detector, and on_dtmf(digit, duration_ms) once per event end
        self.dtmf: EventDetector | None = None
        self.on_dtmf: Callable[[str, int], None] | None = None
        # while we send digits into the other leg (RelaySession.send_dtmf): what arrives here is
        # handed to hold(data) instead of being relayed, so our telephone-events take the stream's place
        self.hold: Callable[[bytes], None] | None = None
        # a recording's listener (runtime/media/recorder_live.py): every admitted packet, relayed or not
        self.tap: Callable[[bytes], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if hasattr(transport, "max_size"):
            # asyncio's own loop reads each datagram into a fresh 256 KiB buffer: mmap, mremap and
            # munmap per packet, which tripled its per-packet cost. The largest UDP payload is enough.
            transport.max_size = MAX_DATAGRAM  # type: ignore[attr-defined]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        # The hot path. Keep it this short: it runs 50 times a second per direction per call.
        if addr != self.remote or not self.locked:
            if not self._admit(addr, data):
                return
        peer = self.peer
        dest = peer.dest  # type: ignore[union-attr]
        if dest is None:
            self.dropped += 1
            self.heard += 1
        else:
            hold = self.hold
            if hold is None:
                peer.transport.sendto(data, dest)  # type: ignore[union-attr]
            else:
                hold(data)
            self.packets += 1
            self.bytes += len(data)
        dtmf = self.dtmf
        if dtmf is not None and len(data) >= 16 and (data[1] & 0x7F) in dtmf.rates:
            self._telephone_event(dtmf, data)
        if self.tap is not None:
            self._tapped(data)

    def _tapped(self, data: bytes) -> None:
        try:
            self.tap(data)  # type: ignore[misc]
        except Exception:  # a recorder's bug must not stop the relay
            self.tap = None
            log.exception("event=listener_failed name=recording")

    def _telephone_event(self, dtmf: EventDetector, data: bytes) -> None:
        """A telephone-event packet (relayed already): report its digit once, at the event's end."""
        found = dtmf.feed(data)
        if found is not None and self.on_dtmf is not None:
            try:
                self.on_dtmf(*found)
            except Exception:  # a listener's bug must not stop the relay
                log.exception("event=listener_failed name=dtmf")

    def _admit(self, addr: Address, data: bytes) -> bool:
        if self.peer is None:  # resting on the free list (or never linked): relay nothing, learn nothing
            self.dropped += 1
            return False
        return self.admit(addr, data, time.monotonic())

    def error_received(self, exc: Exception) -> None:
        self.errors += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.remote = self.dest = None  # the peer socket now drops instead of sending through a closed transport
        self._on_lost()


class MediaLeg:
    """One side of a call: an RTP socket on ``local_port`` and its RTCP socket on ``local_port + 1``.

    A leg outlives its call: the relay keeps it bound on its free list and hands it to a later call.
    ``release`` is called once, when the loop has closed both sockets (the port may be bound again).
    """

    __slots__ = ("index", "local_port", "rtp", "rtcp", "session", "state", "idle_since", "_open", "_release",
                 "__weakref__")

    def __init__(self, index: int, local_port: int, release: Callable[[MediaLeg], None],
                 probation: int = PROBATION) -> None:
        self.index = index
        self.local_port = local_port
        # the sockets reach back to their leg through a weak reference: a bound method would make
        # leg -> endpoint -> leg a reference cycle, freed only by the collector (issue 8). Every leg
        # whose sockets may still close is held elsewhere (its session, the relay's idle or closing set).
        lost = _lost_callback(self)
        self.rtp = RelayEndpoint(False, probation, lost)
        self.rtcp = RelayEndpoint(True, probation, lost)
        self.session: RelaySession | None = None
        self.state = ACTIVE
        self.idle_since = 0.0
        self._open = 2
        self._release = release

    @property
    def local_rtcp_port(self) -> int:
        return self.local_port + 1

    @property
    def remote(self) -> Address | None:
        """Where this leg's RTP is sent: the locked source, else the SDP address, else None."""
        return self.rtp.remote

    @property
    def rtcp_remote(self) -> Address | None:
        return self.rtcp.remote

    @property
    def locked(self) -> bool:
        """True once the RTP socket locked on a source that passed probation."""
        return self.rtp.locked

    @property
    def bound(self) -> bool:
        """Both sockets open and not closing: the leg can carry (another) call."""
        return self.state in (ACTIVE, IDLE) and self.rtp.transport is not None and self.rtcp.transport is not None

    def reset(self) -> None:
        self.rtp.reset()
        self.rtcp.reset()

    def close(self) -> None:
        """Close both sockets; ``release`` follows once the loop has closed them."""
        self.state = CLOSING
        for endpoint in (self.rtp, self.rtcp):
            endpoint.peer = endpoint.remote = endpoint.dest = None  # until the loop stops reading, drop what arrives
            if endpoint.transport is not None:
                endpoint.transport.close()

    def _socket_lost(self) -> None:
        """A socket closed by the loop: once both are, the port is truly free to bind again."""
        self._open -= 1
        if self._open == 0:
            self._release(self)

    def __repr__(self) -> str:
        return f"MediaLeg({self.index}, port={self.local_port}, remote={self.remote}, locked={self.locked})"


def _lost_callback(leg: MediaLeg) -> Callable[[], None]:
    """``leg._socket_lost`` without a strong reference to ``leg`` (no cycle through its endpoints)."""
    ref = weakref.ref(leg)

    def lost() -> None:
        target = ref()
        if target is not None:
            target._socket_lost()

    return lost
