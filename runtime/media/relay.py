"""The in-process RTP relay backend: every call's media passes through two pairs of our own sockets.

Why anchor at all: phones behind NAT cannot reach each other directly, providers only accept media
from the address that signalled, and CDRs, recording and DTMF later need to see the packets.

The parts, by job:

- ``runtime.media.ports``: ``PortPool``, which even port (RTP; RTCP on the odd one above) a leg binds.
- ``runtime.media.latch``: the latching rule, sans-IO: which source a socket takes media from
  (the negotiated hosts only, probation on SSRC and sequence, then locked; strangers dropped).
- ``runtime.media.endpoint``: a leg's two sockets and the hot path.
- ``runtime.media.session``: ``RelaySession``, one call: SDP in, SDP out, prompts.
- this module: ``MediaRelay``, which binds, hands out, rests and closes legs.

Sockets outlive calls. Binding a call's four sockets and wrapping them in the loop's transports
cost more CPU than the rest of its setup (bench/rtp_relay.py: about 10,000 allocate + close per CPU
second that way, 180,000 with reuse), so a leg (its RTP and RTCP socket, protocol and transport)
that a closed call gives back stays bound on the relay's free list, and a later call takes it
instead of binding anew.

Quarantine. The free list hands out the leg released longest ago, and, while the pool still has
ports no leg holds, only once it has rested ``reuse_after`` seconds (``QUARANTINE``, 4 s): long
enough that the previous peers' streams have stopped. A peer stops sending when our BYE (or our
answer to its own) reaches it; over UDP a lost BYE is resent after 0.5 s, then 1 s, then 2 s
(RFC 3261 17.1.2.2, Timer E from T1 = 500 ms), so 4 s covers two lost BYEs in a row plus the
network and a jitter buffer's tail. A resting leg relays nothing and learns nothing; whatever
arrives on it is dropped. When the pool has no unbound port left a leg is reused sooner; the
latching rule still holds then: the previous call's stream (its source address and SSRC) is
refused for the whole new call, and any other source is a stranger unless the new call's
signalling names its host. A leg taken from the list starts like a freshly bound one: no
remote, unlocked, zeroed counters, no peer. The list holds at most ``max_idle_legs`` legs; a leg
beyond that, a leg that lost a socket, and every leg when the relay closes are really closed (the
stream it was locked on is remembered by port, for the next leg bound there). Ports stay the
``PortPool``'s: a resting leg's port is parked, free for the next call (``ports_free``,
``ports_idle``) without being bound again.

Cost (bench/rtp_relay.py, uvloop, loopback): 9-12 us of CPU per relayed packet, so about 850-1,100
G.711 calls (100 packets/s in, 100 out) per core. perf puts about two thirds of it in the kernel
(recvmsg, the EAGAIN probe libuv makes after each datagram, epoll, sendmsg including loopback
delivery), a quarter in uvloop, libc and the interpreter's call machinery, and about a tenth in
``datagram_received`` itself; going faster needs fewer syscalls per packet (recvmmsg, or rtpengine's
in-kernel forwarding behind the same seam), not leaner Python.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
import time
from collections import deque
from dataclasses import dataclass

from runtime.media.base import MediaBackend, MediaError
from runtime.media.endpoint import ACTIVE, CLOSED, CLOSING, IDLE, MediaLeg
from runtime.media.latch import PROBATION, Address
from runtime.media.ports import PortPool
from runtime.media.session import RelaySession

__all__ = [
    "PROBATION", "QUARANTINE", "MediaError", "MediaLeg", "MediaRelay", "PortPool", "RelaySession", "RelayStats",
]  # fmt: skip

# legs kept bound for reuse after their call ended (at most, and at most 1/8 of the process's file
# descriptor limit, since each holds two), and how long one rests before a new call gets it
MAX_IDLE_LEGS = 1024
QUARANTINE = 4.0  # seconds; why this figure: the module docstring
# bind attempts per leg before giving up when other programs hold ports in our range
_MAX_BIND_ATTEMPTS = 32
_BIND_CONFLICTS = (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL)


def _default_idle_legs() -> int:
    """MAX_IDLE_LEGS, or fewer so that resting sockets take at most a quarter of the fd limit."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Unix
        return MAX_IDLE_LEGS
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft < 0:
        return MAX_IDLE_LEGS
    return max(0, min(MAX_IDLE_LEGS, soft // 8))


@dataclass(frozen=True)
class RelayStats:
    """A snapshot for status and metrics; packet totals include sessions already closed.

    ``ports_free`` counts the ports a new call can have, ``ports_idle`` those of them whose sockets
    are still bound, resting on the relay's free list.
    """

    sessions: int
    ports_in_use: int
    ports_free: int
    packets: int
    bytes: int
    dropped: int
    ports_idle: int = 0
    strangers: int = 0  # of ``dropped``: refused by the latching rule (runtime.media.latch)


class MediaRelay(MediaBackend):
    """Allocates RelaySessions on ``host`` from ``port_range``; SDP names ``advertise`` (default: host).

    ``max_idle_legs`` bounds how many legs (RTP + RTCP socket pairs) stay bound for reuse after
    their call (0: close them at once; default ``MAX_IDLE_LEGS``, less when the file descriptor
    limit is low); ``reuse_after`` is how long one rests (quarantine) before a new call gets it,
    while the pool still has unbound ports; ``probation`` is how many good packets lock a socket
    (``runtime.media.latch``).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port_range: tuple[int, int] = (20000, 29999),
        advertise: str | None = None,
        *,
        probation: int = PROBATION,
        max_idle_legs: int | None = None,
        reuse_after: float = QUARANTINE,
    ) -> None:
        ip = ipaddress.ip_address(host)
        if advertise is None and ip.is_unspecified:
            raise ValueError(f"listening on {host}: say which address to advertise in SDP")
        if max_idle_legs is None:
            max_idle_legs = _default_idle_legs()
        if max_idle_legs < 0 or reuse_after < 0:
            raise ValueError("max_idle_legs and reuse_after must not be negative")
        if probation < 1:
            raise ValueError("probation must be at least one packet")
        self.host = host
        self.advertise = advertise or host
        self.family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        self.pool = PortPool(*port_range)
        self.probation = probation
        self.max_idle_legs = max_idle_legs
        self.reuse_after = reuse_after
        self._sessions: set[RelaySession] = set()
        self._idle: deque[MediaLeg] = deque()  # resting legs, released longest ago first
        self._closing: set[MediaLeg] = set()  # legs whose sockets the loop is closing
        self._all_closed: asyncio.Future[None] | None = None
        self._closed = False
        self._totals = [0, 0, 0, 0]  # packets, bytes, dropped, strangers of closed sessions
        # port -> the (RTP, RTCP) streams a leg closed there was locked on; at most one per port
        self._formers: dict[int, tuple[tuple[Address, int] | None, tuple[Address, int] | None]] = {}

    @property
    def sessions(self) -> int:
        """How many sessions are relaying now."""
        return len(self._sessions)

    @property
    def idle_legs(self) -> int:
        """How many legs rest bound on the free list."""
        return len(self._idle)

    def stats(self) -> RelayStats:
        packets, nbytes, dropped, strangers = self._totals
        for s in self._sessions:
            packets += sum(s.relayed) + sum(s.rtcp_packets)
            nbytes += sum(s.bytes)
            dropped += sum(s.dropped)
            strangers += sum(s.strangers)
        pool = self.pool
        return RelayStats(len(self._sessions), pool.in_use, pool.free, packets, nbytes, dropped, pool.parked,
                          strangers)

    async def allocate(self, call_id: str) -> RelaySession:
        """Two legs x (RTP, RTCP) sockets, reused or newly bound; MediaError when no ports are left."""
        if self._closed:
            raise MediaError("media relay is closed")
        legs: list[MediaLeg] = []
        try:
            while len(legs) < 2:
                legs.append(self._take_idle(force=False) or await self._bind_leg())
            if self._closed:  # closed while we were binding
                raise MediaError("media relay is closed")
        except BaseException:
            for leg in legs:
                self._give_back(leg)
            raise
        leg0, leg1 = legs
        leg0.index, leg1.index = 0, 1
        session = RelaySession(self, call_id, (leg0, leg1))
        leg0.session = leg1.session = session
        leg0.rtp.peer, leg1.rtp.peer = leg1.rtp, leg0.rtp
        leg0.rtcp.peer, leg1.rtcp.peer = leg1.rtcp, leg0.rtcp
        self._sessions.add(session)
        listener = self.dtmf_listener
        if listener is not None:
            session.on_dtmf(lambda leg, digit, duration: listener(call_id, leg, digit, duration))
        return session

    def _take_idle(self, force: bool) -> MediaLeg | None:
        """The leg that has rested longest, reset; None when there is none or it has not rested enough.

        Unless ``force``d, a leg that has not rested ``reuse_after`` seconds is left alone while the
        pool still has unbound ports (binding one costs more, but a late packet of the leg's last
        call cannot reach the new one).
        """
        idle = self._idle
        while idle:
            leg = idle[0]
            if not force and self.pool.unbound and time.monotonic() - leg.idle_since < self.reuse_after:
                return None
            idle.popleft()
            self.pool.unpark(leg.local_port)
            if not leg.bound:  # lost a socket while resting
                leg.close()
                self._closing.add(leg)
                continue
            leg.state = ACTIVE
            leg.reset()
            return leg
        return None

    async def _bind_leg(self) -> MediaLeg:
        """A newly bound leg; a resting one when no port can be bound (pool empty, ports held, no fds)."""
        try:
            port, rtp_sock, rtcp_sock = self._bind_pair()
        except MediaError:
            leg = self._take_idle(force=True)
            if leg is None:
                raise
            return leg
        leg = MediaLeg(0, port, self._leg_released, self.probation)
        former = self._formers.pop(port, None)
        if former is not None:  # the stream a closed leg on this port was locked on: refused here too
            leg.rtp.former, leg.rtcp.former = former
        loop = asyncio.get_running_loop()
        pending = [(leg.rtp, rtp_sock), (leg.rtcp, rtcp_sock)]
        try:
            while pending:
                endpoint, sock = pending[0]
                await loop.create_datagram_endpoint(lambda e=endpoint: e, sock=sock)  # type: ignore[misc]
                pending.pop(0)
        except BaseException:
            # sockets the loop owns are closed through their transport (the port comes back on
            # connection_lost); the rest are still ours to close, so the leg counts them lost here
            leg.close()
            self._closing.add(leg)
            for endpoint, sock in pending:
                sock.close()
                endpoint._on_lost()
            raise
        return leg

    def _bind_pair(self) -> tuple[int, socket.socket, socket.socket]:
        """A pool port whose RTP and RTCP sockets both bind; ports other programs hold are skipped."""
        for _ in range(min(self.pool.capacity, _MAX_BIND_ATTEMPTS)):
            port = self.pool.allocate()
            socks: list[socket.socket] = []
            try:
                for p in (port, port + 1):
                    sock = socket.socket(self.family, socket.SOCK_DGRAM)
                    socks.append(sock)
                    sock.setblocking(False)
                    sock.bind((self.host, p))
            except OSError as exc:
                for sock in socks:
                    sock.close()
                self.pool.release(port)  # back at the tail: retried last
                if exc.errno in _BIND_CONFLICTS:
                    continue
                raise MediaError(f"cannot bind RTP port {port} on {self.host}: {exc}") from exc
            return port, socks[0], socks[1]
        raise MediaError(f"no bindable RTP port pair on {self.host} after {_MAX_BIND_ATTEMPTS} attempts")

    def _give_back(self, leg: MediaLeg) -> None:
        """A leg leaves its call: rest it on the free list, or close it (full list, lost socket, closing)."""
        if not leg.bound:
            if leg.state == ACTIVE:  # lost a socket during the call: close the other one
                leg.close()
                self._closing.add(leg)
            return
        if self._closed or len(self._idle) >= self.max_idle_legs:
            if not self._closed:
                leg.reset()  # learns the streams it was locked on: the next leg bound here refuses them
                if leg.rtp.former is not None or leg.rtcp.former is not None:
                    self._formers[leg.local_port] = (leg.rtp.former, leg.rtcp.former)
            leg.close()
            self._closing.add(leg)
            return
        leg.reset()  # no peer: whatever arrives now is dropped
        leg.session = None
        leg.state = IDLE
        leg.idle_since = time.monotonic()
        self.pool.park(leg.local_port)
        self._idle.append(leg)

    def _session_closed(self, session: RelaySession) -> None:
        if session in self._sessions:
            self._sessions.remove(session)
            self._totals[0] += sum(session.relayed) + sum(session.rtcp_packets)
            self._totals[1] += sum(session.bytes)
            self._totals[2] += sum(session.dropped)
            self._totals[3] += sum(session.strangers)
        for leg in session.legs:
            if leg.session is not session:
                continue  # both its sockets died during the call; it is gone already
            self._give_back(leg)
            if leg.state == CLOSING:
                session._pending += 1  # its ports are reusable once the loop has closed the sockets

    def _leg_released(self, leg: MediaLeg) -> None:
        """Both of ``leg``'s sockets are closed: its port goes back to the pool."""
        if leg.state == IDLE:
            self._idle.remove(leg)  # both sockets died while resting (rare)
        leg.state = CLOSED
        self._closing.discard(leg)
        self.pool.release(leg.local_port)
        session, leg.session = leg.session, None
        if session is not None and session.closed:
            session._leg_released()
        if not self._closing and self._all_closed is not None and not self._all_closed.done():
            self._all_closed.set_result(None)

    async def close(self) -> None:
        """Close every session and every resting leg; wait (bounded) until the sockets are closed."""
        self._closed = True
        for session in list(self._sessions):
            session.close()
        while self._idle:
            leg = self._idle.popleft()
            self.pool.unpark(leg.local_port)
            leg.close()
            self._closing.add(leg)
        if self._closing:
            if self._all_closed is None or self._all_closed.done():
                self._all_closed = asyncio.get_running_loop().create_future()
            await asyncio.wait_for(asyncio.shield(self._all_closed), timeout=5.0)
