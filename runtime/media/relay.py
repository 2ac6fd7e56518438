"""The in-process RTP relay: every call's media passes through two pairs of our own sockets.

Why anchor at all: phones behind NAT cannot reach each other directly, providers only accept media
from the address that signalled, and CDRs, recording and DTMF later need to see the packets.

Shape of one call (a ``RelaySession``)::

    caller phone <-> leg 0 (RTP p0, RTCP p0+1)  ==relay==  leg 1 (RTP p1, RTCP p1+1) <-> callee phone

A packet arriving on leg 0's RTP socket leaves from leg 1's RTP socket towards leg 1's remote, and
vice versa; RTCP likewise on the +1 sockets. Each socket is a ``DatagramProtocol`` whose
``datagram_received`` is the whole hot path: one tuple compare, one attribute hop to the peer socket,
one ``sendto``, two integer bumps. No dicts, no logging, no per-packet objects of our own.

Symmetric RTP latching (the NAT rule), per socket, so RTP and RTCP latch independently:

- Before any packet arrives, the remote is the address from that leg's SDP (``set_remote``); without
  SDP it is unknown and packets towards that leg are dropped and counted.
- The latch window is the first ``latch_window`` packets (16 by default, ~320 ms of 20 ms audio) that
  arrive on the socket after the SDP address was set or changed. Within it, a packet from a new source
  moves the remote to that source (so a phone behind NAT is reached at its public address even though
  its SDP names a private one; a stray early packet is corrected by the phone's own next packets).
- After the window the remote is fixed: packets from any other source are dropped and counted in
  ``foreign``; they are neither relayed nor allowed to steal the stream. A new SDP address (re-INVITE:
  the phone moved) resets the remote to it and reopens the window; the same address again (session
  refresh, hold) changes nothing.

Sockets outlive calls. Binding a call's four sockets and wrapping them in the loop's transports
cost more CPU than the rest of its setup (bench/rtp_relay.py: about 4,000 allocate + close per CPU
second that way, 70,000 with reuse), so a leg (its RTP and RTCP socket, protocol and transport)
that a closed call gives back stays bound on the relay's free list, and a later call takes it
instead of binding anew. The free list hands out the leg released longest ago, and, while the
pool still has ports no leg holds, only once it has rested ``reuse_after`` seconds: the last
packets of the call that had it die there instead of reaching (and latching) the new call. A
resting leg relays nothing; whatever arrives on it is dropped. A leg taken from the list starts
like a freshly bound one: no remote, an open latch window, zeroed counters, no peer. The list
holds at most ``max_idle_legs`` legs; a leg beyond that, a leg that lost a socket, and every leg
when the relay closes are really closed. Ports stay the ``PortPool``'s: a resting leg's port is
parked, free for the next call (``ports_free``, ``ports_idle``) without being bound again.

Cost (bench/rtp_relay.py, uvloop, loopback): 12-18 us of CPU per relayed packet, so about 550-600
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
import os
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from runtime.media.base import MediaBackend, MediaError, MediaSession
from runtime.sip.sdp import (
    AnswerChoice,
    build_answer,
    build_offer,
    choose_playable,
    keep_formats,
    parse_sdp,
    rewrite_sdp,
)

__all__ = ["LATCH_WINDOW", "MediaError", "MediaLeg", "MediaRelay", "PortPool", "RelaySession", "RelayStats"]

Address = tuple[Any, ...]  # (host, port) for IPv4, (host, port, flowinfo, scope_id) for IPv6

LATCH_WINDOW = 16
# legs kept bound for reuse after their call ended (at most, and at most 1/8 of the process's file
# descriptor limit, since each holds two), and how long one rests before a new call gets it
MAX_IDLE_LEGS = 1024
REUSE_AFTER = 1.0
_MAX_DATAGRAM = 65535
# bind attempts per leg before giving up when other programs hold ports in our range
_MAX_BIND_ATTEMPTS = 32
_BIND_CONFLICTS = (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL)

# MediaLeg.state
_ACTIVE = "active"  # in a session (or being wrapped for one)
_IDLE = "idle"  # bound, on the relay's free list, relaying nothing
_CLOSING = "closing"  # sockets closing; the port is released when the loop has closed both
_CLOSED = "closed"


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


class PortPool:
    """Even RTP ports in [lo, hi]; RTCP is the odd port above, so both must fit in the range.

    Free ports are handed out oldest-released first, so a port just given back is reused last and late
    packets of the call that had it do not land in a new call. A port is never handed out twice: the
    pool tracks which ports are out and refuses to release one it did not hand out.

    A port can also be parked: its call ended but its sockets stay bound, waiting on the relay's free
    list for the next call. A parked port counts as free (a new call can have it) but ``allocate``
    does not hand it out; the relay takes it back with ``unpark``, or closes its sockets and
    ``release``s it.
    """

    def __init__(self, lo: int, hi: int) -> None:
        if not 0 < lo <= hi <= 65535:
            raise ValueError(f"bad port range {lo}-{hi}")
        first = lo + (lo & 1)
        self._ports = range(first, hi, 2)  # p + 1 <= hi
        if not self._ports:
            raise ValueError(f"port range {lo}-{hi} holds no even RTP port with its RTCP port")
        self._range = f"{lo}-{hi}"
        self._free: deque[int] = deque(self._ports)
        self._in_use: set[int] = set()
        self._parked: set[int] = set()

    def allocate(self) -> int:
        """An even RTP port nobody holds or has parked; raises MediaError when there is none."""
        if not self._free:
            if self._parked:
                raise MediaError(f"no unbound RTP port left in {self._range}: {len(self._parked)} are parked")
            raise MediaError(f"RTP port pool exhausted: all {len(self._ports)} pairs in {self._range} are in use")
        port = self._free.popleft()
        self._in_use.add(port)
        return port

    def release(self, port: int) -> None:
        """Give a port back (in use or parked); releasing one that is not out is a bug: MediaError."""
        if port in self._in_use:
            self._in_use.remove(port)
        elif port in self._parked:
            self._parked.remove(port)
        else:
            raise MediaError(f"port {port} released but not allocated")
        self._free.append(port)

    def park(self, port: int) -> None:
        """A port in use whose sockets stay bound for the next call: free, but not for ``allocate``."""
        if port not in self._in_use:
            raise MediaError(f"port {port} parked but not in use")
        self._in_use.remove(port)
        self._parked.add(port)

    def unpark(self, port: int) -> None:
        """A parked port goes back into use (a new call took its bound sockets)."""
        if port not in self._parked:
            raise MediaError(f"port {port} unparked but not parked")
        self._parked.remove(port)
        self._in_use.add(port)

    @property
    def capacity(self) -> int:
        return len(self._ports)

    @property
    def free(self) -> int:
        """Ports a new call can have: never bound or given back, plus parked ones."""
        return len(self._free) + len(self._parked)

    @property
    def unbound(self) -> int:
        """Free ports with no socket bound on them: what ``allocate`` can hand out."""
        return len(self._free)

    @property
    def parked(self) -> int:
        return len(self._parked)

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    def __contains__(self, port: object) -> bool:
        return port in self._in_use


class _Endpoint(asyncio.DatagramProtocol):
    """One bound socket: a leg's RTP or its RTCP. What arrives here leaves from ``peer``'s socket.

    Without a peer (the leg rests on the relay's free list) it relays nothing: every packet is dropped.
    """

    __slots__ = (
        "transport", "peer", "remote", "sdp_remote", "latched", "window", "latch_window",
        "packets", "bytes", "dropped", "foreign", "errors", "_on_lost",
    )  # fmt: skip

    def __init__(self, latch_window: int, on_lost: Callable[[], None]) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.latch_window = latch_window
        self._on_lost = on_lost
        self.reset()

    def reset(self) -> None:
        """Forget everything about a call: as if the socket had just been bound."""
        self.peer: _Endpoint | None = None
        self.remote: Address | None = None
        self.sdp_remote: Address | None = None
        self.latched = False
        self.window = self.latch_window
        self.packets = 0  # received here and relayed
        self.bytes = 0
        self.dropped = 0  # received here while the other leg's remote was unknown (or while resting)
        self.foreign = 0  # from a source that is not the latched peer, after the window
        self.errors = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if hasattr(transport, "max_size"):
            # asyncio's own loop reads each datagram into a fresh 256 KiB buffer: mmap, mremap and
            # munmap per packet, which tripled its per-packet cost. The largest UDP payload is enough.
            transport.max_size = _MAX_DATAGRAM  # type: ignore[attr-defined]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        # The hot path. Keep it this short: it runs 50 times a second per direction per call.
        # A resting endpoint has no remote, so every packet takes the _admit branch, which drops it.
        if addr != self.remote or self.window:
            if not self._admit(addr):
                return
        peer = self.peer
        dest = peer.remote  # type: ignore[union-attr]
        if dest is None:
            self.dropped += 1
            return
        peer.transport.sendto(data, dest)  # type: ignore[union-attr]
        self.packets += 1
        self.bytes += len(data)

    def _admit(self, addr: Address) -> bool:
        """The latching rule (module docstring): may a packet from ``addr`` pass, and does it latch?"""
        if self.peer is None:  # resting on the free list (or never linked): relay nothing, learn nothing
            self.dropped += 1
            return False
        if self.window:
            self.window -= 1
        elif self.remote is not None:
            self.foreign += 1
            return False
        if addr != self.remote:
            self.remote = addr
            self.latched = True
        return True

    def set_sdp_remote(self, addr: Address) -> None:
        if addr == self.sdp_remote:
            return
        early_latch = self.sdp_remote is None and self.latched
        self.sdp_remote = addr
        if early_latch:
            return  # early media already showed the real source; keep it
        self.remote = addr
        self.latched = False
        self.window = self.latch_window

    def error_received(self, exc: Exception) -> None:
        self.errors += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.remote = None  # the peer socket now drops instead of sending through a closed transport
        self._on_lost()


class MediaLeg:
    """One side of a call: an RTP socket on ``local_port`` and its RTCP socket on ``local_port + 1``.

    A leg outlives its call: the relay keeps it bound on its free list and hands it to a later call.
    ``release`` is called once, when the loop has closed both sockets (the port may be bound again).
    """

    __slots__ = ("index", "local_port", "rtp", "rtcp", "session", "state", "idle_since", "_open", "_release")

    def __init__(self, index: int, local_port: int, latch_window: int, release: Callable[[MediaLeg], None]):
        self.index = index
        self.local_port = local_port
        self.rtp = _Endpoint(latch_window, self._socket_lost)
        self.rtcp = _Endpoint(latch_window, self._socket_lost)
        self.session: RelaySession | None = None
        self.state = _ACTIVE
        self.idle_since = 0.0
        self._open = 2
        self._release = release

    @property
    def local_rtcp_port(self) -> int:
        return self.local_port + 1

    @property
    def remote(self) -> Address | None:
        """Where this leg's RTP is sent: the latched source, else the SDP address, else None."""
        return self.rtp.remote

    @property
    def rtcp_remote(self) -> Address | None:
        return self.rtcp.remote

    @property
    def latched(self) -> bool:
        """True once the RTP remote was taken from a packet's source rather than from SDP."""
        return self.rtp.latched

    @property
    def bound(self) -> bool:
        """Both sockets open and not closing: the leg can carry (another) call."""
        return self.state in (_ACTIVE, _IDLE) and self.rtp.transport is not None and self.rtcp.transport is not None

    def reset(self) -> None:
        self.rtp.reset()
        self.rtcp.reset()

    def close(self) -> None:
        """Close both sockets; ``release`` follows once the loop has closed them."""
        self.state = _CLOSING
        for endpoint in (self.rtp, self.rtcp):
            endpoint.peer = endpoint.remote = None  # until the loop stops reading, drop what arrives
            if endpoint.transport is not None:
                endpoint.transport.close()

    def _socket_lost(self) -> None:
        """A socket closed by the loop: once both are, the port is truly free to bind again."""
        self._open -= 1
        if self._open == 0:
            self._release(self)

    def __repr__(self) -> str:
        return f"MediaLeg({self.index}, port={self.local_port}, remote={self.remote}, latched={self.latched})"


def _session_id() -> str:
    """The o= session id of an SDP body of our own (RFC 4566: unique, a number)."""
    return str(int.from_bytes(os.urandom(4), "big"))


def _normalize(host: str, port: int, family: int) -> Address:
    """The address tuple the socket reports for a source, so the latch compare is a plain ==."""
    if family == socket.AF_INET6:
        return (host, port, 0, 0)
    return (host, port)


class RelaySession(MediaSession):
    """One call's relayed media: leg 0 faces the caller (channel ZERO), leg 1 the callee (channel ONE).

    Once closed, its legs belong to the relay again (a later call may be using them): the counters
    keep their final values, and ``set_remote``/``anchor`` no longer touch the legs.
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

    def set_remote(self, leg: int, addr: tuple[str, int], rtcp: tuple[str, int] | None = None) -> None:
        """Where ``leg``'s phone wants media, from its SDP; RTCP defaults to the RTP port + 1.

        Until that phone's packets arrive this is where we send; their source may then override it
        (see the latching rule in the module docstring). Ignored once the session is closed.
        """
        if self.closed:
            return
        family = self._relay.family
        host, port = addr
        rhost, rport = rtcp if rtcp is not None else (host, port + 1)
        self.legs[leg].rtp.set_sdp_remote(_normalize(host, port, family))
        self.legs[leg].rtcp.set_sdp_remote(_normalize(rhost, rport, family))

    async def anchor(self, from_leg: int, sdp: bytes) -> bytes:
        """Learn ``from_leg``'s address from its SDP; return that SDP pointed at the other leg's ports.

        The first audio stream with a port is relayed; other streams (video, a second audio) are
        answered with port 0 for now, since a session relays one RTP/RTCP pair per leg. On a closed
        session every stream gets port 0: its ports may already carry another call.
        """
        desc = parse_sdp(sdp)
        media = desc.media
        ports = [0] * len(media)
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
            return build_offer(self._relay.advertise, port, _session_id(), (choice.payload_type,),
                               choice.telephone_event)
        return build_offer(self._relay.advertise, port, _session_id())

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
            transport, dest = endpoint.transport, endpoint.remote
            if transport is not None and dest is not None:
                marker = 0x80 if i == 0 else 0
                header = struct.pack("!BBHII", 0x80, marker | payload_type, (seq + i) & 0xFFFF,
                                     (stamp + i * 160) & 0xFFFFFFFF, ssrc)
                transport.sendto(header + payload, dest)
                sent += 1
            delay = start + (i + 1) * 0.02 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        return sent

    # Counters, per direction: index 0 is caller -> callee (arrived on leg 0), index 1 the reverse.
    @property
    def packets(self) -> tuple[int, int]:
        if self._final is not None:
            return self._final[0]
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
        """Packets not relayed: the far leg's remote was unknown, or the source was foreign."""
        if self._final is not None:
            return self._final[3]
        return tuple(  # type: ignore[return-value]
            leg.rtp.dropped + leg.rtp.foreign + leg.rtcp.dropped + leg.rtcp.foreign for leg in self.legs
        )

    def close(self) -> None:
        """Stop relaying and give the legs back to the relay (kept bound for reuse, or closed)."""
        if self.closed:
            return
        self._final = (self.packets, self.bytes, self.rtcp_packets, self.dropped)
        self.closed = True
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


class MediaRelay(MediaBackend):
    """Allocates RelaySessions on ``host`` from ``port_range``; SDP names ``advertise`` (default: host).

    ``max_idle_legs`` bounds how many legs (RTP + RTCP socket pairs) stay bound for reuse after
    their call (0: close them at once; default ``MAX_IDLE_LEGS``, less when the file descriptor
    limit is low); ``reuse_after`` is how long one rests before a new call gets it, while the pool
    still has unbound ports.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port_range: tuple[int, int] = (20000, 29999),
        advertise: str | None = None,
        *,
        latch_window: int = LATCH_WINDOW,
        max_idle_legs: int | None = None,
        reuse_after: float = REUSE_AFTER,
    ) -> None:
        ip = ipaddress.ip_address(host)
        if advertise is None and ip.is_unspecified:
            raise ValueError(f"listening on {host}: say which address to advertise in SDP")
        if max_idle_legs is None:
            max_idle_legs = _default_idle_legs()
        if max_idle_legs < 0 or reuse_after < 0:
            raise ValueError("max_idle_legs and reuse_after must not be negative")
        self.host = host
        self.advertise = advertise or host
        self.family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        self.pool = PortPool(*port_range)
        self.latch_window = latch_window
        self.max_idle_legs = max_idle_legs
        self.reuse_after = reuse_after
        self._sessions: set[RelaySession] = set()
        self._idle: deque[MediaLeg] = deque()  # resting legs, released longest ago first
        self._closing: set[MediaLeg] = set()  # legs whose sockets the loop is closing
        self._all_closed: asyncio.Future[None] | None = None
        self._closed = False
        self._totals = [0, 0, 0]  # packets, bytes, dropped of closed sessions

    @property
    def sessions(self) -> int:
        """How many sessions are relaying now."""
        return len(self._sessions)

    @property
    def idle_legs(self) -> int:
        """How many legs rest bound on the free list."""
        return len(self._idle)

    def stats(self) -> RelayStats:
        packets, nbytes, dropped = self._totals
        for s in self._sessions:
            packets += sum(s.packets) + sum(s.rtcp_packets)
            nbytes += sum(s.bytes)
            dropped += sum(s.dropped)
        pool = self.pool
        return RelayStats(len(self._sessions), pool.in_use, pool.free, packets, nbytes, dropped, pool.parked)

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
            leg.state = _ACTIVE
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
        leg = MediaLeg(0, port, self.latch_window, self._leg_released)
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
            if leg.state == _ACTIVE:  # lost a socket during the call: close the other one
                leg.close()
                self._closing.add(leg)
            return
        if self._closed or len(self._idle) >= self.max_idle_legs:
            leg.close()
            self._closing.add(leg)
            return
        leg.reset()  # no peer: whatever arrives now is dropped
        leg.session = None
        leg.state = _IDLE
        leg.idle_since = time.monotonic()
        self.pool.park(leg.local_port)
        self._idle.append(leg)

    def _session_closed(self, session: RelaySession) -> None:
        if session in self._sessions:
            self._sessions.remove(session)
            self._totals[0] += sum(session.packets) + sum(session.rtcp_packets)
            self._totals[1] += sum(session.bytes)
            self._totals[2] += sum(session.dropped)
        for leg in session.legs:
            if leg.session is not session:
                continue  # both its sockets died during the call; it is gone already
            self._give_back(leg)
            if leg.state == _CLOSING:
                session._pending += 1  # its ports are reusable once the loop has closed the sockets

    def _leg_released(self, leg: MediaLeg) -> None:
        """Both of ``leg``'s sockets are closed: its port goes back to the pool."""
        if leg.state == _IDLE:
            self._idle.remove(leg)  # both sockets died while resting (rare)
        leg.state = _CLOSED
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
