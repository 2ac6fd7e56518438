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
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runtime.media.base import MediaBackend, MediaError, MediaSession
from runtime.sip.sdp import parse_sdp, rewrite_sdp

__all__ = ["LATCH_WINDOW", "MediaError", "MediaLeg", "MediaRelay", "PortPool", "RelaySession", "RelayStats"]

Address = tuple[Any, ...]  # (host, port) for IPv4, (host, port, flowinfo, scope_id) for IPv6

LATCH_WINDOW = 16
_MAX_DATAGRAM = 65535
# bind attempts per leg before giving up when other programs hold ports in our range
_MAX_BIND_ATTEMPTS = 32
_BIND_CONFLICTS = (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL)


class PortPool:
    """Even RTP ports in [lo, hi]; RTCP is the odd port above, so both must fit in the range.

    Free ports are handed out oldest-released first, so a port just given back is reused last and late
    packets of the call that had it do not land in a new call. A port is never handed out twice: the
    pool tracks which ports are out and refuses to release one it did not hand out.
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

    def allocate(self) -> int:
        """An even RTP port nobody holds; raises MediaError when all are out."""
        if not self._free:
            raise MediaError(f"RTP port pool exhausted: all {len(self._ports)} pairs in {self._range} are in use")
        port = self._free.popleft()
        self._in_use.add(port)
        return port

    def release(self, port: int) -> None:
        """Give a port back; releasing one that is not out is a bug and raises MediaError."""
        if port not in self._in_use:
            raise MediaError(f"port {port} released but not allocated")
        self._in_use.remove(port)
        self._free.append(port)

    @property
    def capacity(self) -> int:
        return len(self._ports)

    @property
    def free(self) -> int:
        return len(self._free)

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    def __contains__(self, port: object) -> bool:
        return port in self._in_use


class _Endpoint(asyncio.DatagramProtocol):
    """One bound socket: a leg's RTP or its RTCP. What arrives here leaves from ``peer``'s socket."""

    __slots__ = (
        "transport", "peer", "remote", "sdp_remote", "latched", "window", "latch_window",
        "packets", "bytes", "dropped", "foreign", "errors", "_on_lost",
    )  # fmt: skip

    def __init__(self, latch_window: int, on_lost: Callable[[], None]) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.peer: _Endpoint | None = None
        self.remote: Address | None = None
        self.sdp_remote: Address | None = None
        self.latched = False
        self.latch_window = latch_window
        self.window = latch_window
        self.packets = 0  # received here and relayed
        self.bytes = 0
        self.dropped = 0  # received here while the other leg's remote was unknown
        self.foreign = 0  # from a source that is not the latched peer, after the window
        self.errors = 0
        self._on_lost = on_lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if hasattr(transport, "max_size"):
            # asyncio's own loop reads each datagram into a fresh 256 KiB buffer: mmap, mremap and
            # munmap per packet, which tripled its per-packet cost. The largest UDP payload is enough.
            transport.max_size = _MAX_DATAGRAM  # type: ignore[attr-defined]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        # The hot path. Keep it this short: it runs 50 times a second per direction per call.
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
    """One side of a call: an RTP socket on ``local_port`` and its RTCP socket on ``local_port + 1``."""

    __slots__ = ("index", "local_port", "rtp", "rtcp", "_open", "_release")

    def __init__(self, index: int, local_port: int, latch_window: int, release: Callable[[MediaLeg], None]):
        self.index = index
        self.local_port = local_port
        self.rtp = _Endpoint(latch_window, self._socket_lost)
        self.rtcp = _Endpoint(latch_window, self._socket_lost)
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

    def _socket_lost(self) -> None:
        """Both sockets closed by the loop: only now is the port truly free to bind again."""
        self._open -= 1
        if self._open == 0:
            self._release(self)

    def __repr__(self) -> str:
        return f"MediaLeg({self.index}, port={self.local_port}, remote={self.remote}, latched={self.latched})"


def _normalize(host: str, port: int, family: int) -> Address:
    """The address tuple the socket reports for a source, so the latch compare is a plain ==."""
    if family == socket.AF_INET6:
        return (host, port, 0, 0)
    return (host, port)


class RelaySession(MediaSession):
    """One call's relayed media: leg 0 faces the caller (channel ZERO), leg 1 the callee (channel ONE)."""

    def __init__(self, relay: MediaRelay, call_id: str, legs: tuple[MediaLeg, MediaLeg]) -> None:
        self.call_id = call_id
        self.legs = legs
        self.closed = False
        self._relay = relay
        self._done = asyncio.get_running_loop().create_future()
        self._pending = 2

    def set_remote(self, leg: int, addr: tuple[str, int], rtcp: tuple[str, int] | None = None) -> None:
        """Where ``leg``'s phone wants media, from its SDP; RTCP defaults to the RTP port + 1.

        Until that phone's packets arrive this is where we send; their source may then override it
        (see the latching rule in the module docstring).
        """
        family = self._relay.family
        host, port = addr
        rhost, rport = rtcp if rtcp is not None else (host, port + 1)
        self.legs[leg].rtp.set_sdp_remote(_normalize(host, port, family))
        self.legs[leg].rtcp.set_sdp_remote(_normalize(rhost, rport, family))

    async def anchor(self, from_leg: int, sdp: bytes) -> bytes:
        """Learn ``from_leg``'s address from its SDP; return that SDP pointed at the other leg's ports.

        The first audio stream with a port is relayed; other streams (video, a second audio) are
        answered with port 0 for now, since a session relays one RTP/RTCP pair per leg.
        """
        desc = parse_sdp(sdp)
        stream = next(
            (i for i, m in enumerate(desc.media) if m.kind == "audio" and m.port != 0),
            None,
        )
        ports = [0] * len(desc.media)
        if stream is not None:
            endpoint = desc.endpoint(stream)
            if endpoint is not None:  # None: hold by 0.0.0.0; keep sending where we were
                rtcp_port = desc.media[stream].rtcp_port
                self.set_remote(from_leg, endpoint, (endpoint[0], rtcp_port) if rtcp_port else None)
            ports[stream] = self.legs[1 - from_leg].local_port
        return rewrite_sdp(sdp, self._relay.advertise, ports)

    # Counters, per direction: index 0 is caller -> callee (arrived on leg 0), index 1 the reverse.
    @property
    def packets(self) -> tuple[int, int]:
        return self.legs[0].rtp.packets, self.legs[1].rtp.packets

    @property
    def bytes(self) -> tuple[int, int]:
        return self.legs[0].rtp.bytes, self.legs[1].rtp.bytes

    @property
    def rtcp_packets(self) -> tuple[int, int]:
        return self.legs[0].rtcp.packets, self.legs[1].rtcp.packets

    @property
    def dropped(self) -> tuple[int, int]:
        """Packets not relayed: the far leg's remote was unknown, or the source was foreign."""
        return tuple(  # type: ignore[return-value]
            leg.rtp.dropped + leg.rtp.foreign + leg.rtcp.dropped + leg.rtcp.foreign for leg in self.legs
        )

    def close(self) -> None:
        """Stop relaying; the ports go back to the pool once the loop has closed the sockets."""
        if self.closed:
            return
        self.closed = True
        for leg in self.legs:
            for endpoint in (leg.rtp, leg.rtcp):
                if endpoint.transport is not None:
                    endpoint.transport.close()
        self._relay._session_closed(self)

    async def wait_closed(self) -> None:
        """Until every socket is closed and both ports are back in the pool."""
        await self._done

    def _leg_released(self) -> None:
        self._pending -= 1
        if self._pending == 0 and not self._done.done():
            self._done.set_result(None)

    def __repr__(self) -> str:
        return f"RelaySession({self.call_id!r}, legs={self.legs!r}, closed={self.closed})"


@dataclass(frozen=True)
class RelayStats:
    """A snapshot for status and metrics; packet totals include sessions already closed."""

    sessions: int
    ports_in_use: int
    ports_free: int
    packets: int
    bytes: int
    dropped: int


class MediaRelay(MediaBackend):
    """Allocates RelaySessions on ``host`` from ``port_range``; SDP names ``advertise`` (default: host)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port_range: tuple[int, int] = (20000, 29999),
        advertise: str | None = None,
        *,
        latch_window: int = LATCH_WINDOW,
    ) -> None:
        ip = ipaddress.ip_address(host)
        if advertise is None and ip.is_unspecified:
            raise ValueError(f"listening on {host}: say which address to advertise in SDP")
        self.host = host
        self.advertise = advertise or host
        self.family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        self.pool = PortPool(*port_range)
        self.latch_window = latch_window
        self._sessions: set[RelaySession] = set()
        self._closing: set[RelaySession] = set()
        self._closed = False
        self._totals = [0, 0, 0]  # packets, bytes, dropped of closed sessions

    @property
    def sessions(self) -> int:
        """How many sessions are relaying now."""
        return len(self._sessions)

    def stats(self) -> RelayStats:
        packets, nbytes, dropped = self._totals
        for s in self._sessions:
            packets += sum(s.packets) + sum(s.rtcp_packets)
            nbytes += sum(s.bytes)
            dropped += sum(s.dropped)
        return RelayStats(len(self._sessions), self.pool.in_use, self.pool.free, packets, nbytes, dropped)

    async def allocate(self, call_id: str) -> RelaySession:
        """Bind two legs x (RTP, RTCP) sockets; raises MediaError when no ports are left or bindable."""
        if self._closed:
            raise MediaError("media relay is closed")
        loop = asyncio.get_running_loop()
        bound: list[tuple[int, socket.socket, socket.socket]] = []
        try:
            for _ in range(2):
                bound.append(self._bind_pair())
        except BaseException:
            for port, rtp, rtcp in bound:
                rtp.close()
                rtcp.close()
                self.pool.release(port)
            raise
        session: RelaySession | None = None
        legs = tuple(
            MediaLeg(i, port, self.latch_window, lambda leg: self._leg_released(session, leg))
            for i, (port, _, _) in enumerate(bound)
        )
        session = RelaySession(self, call_id, legs)  # type: ignore[arg-type]
        legs[0].rtp.peer, legs[1].rtp.peer = legs[1].rtp, legs[0].rtp
        legs[0].rtcp.peer, legs[1].rtcp.peer = legs[1].rtcp, legs[0].rtcp
        socks = [(leg.rtp, bound[leg.index][1]) for leg in legs]
        socks += [(leg.rtcp, bound[leg.index][2]) for leg in legs]
        wrapped = 0
        try:
            for endpoint, sock in socks:
                await loop.create_datagram_endpoint(lambda e=endpoint: e, sock=sock)
                wrapped += 1
        except BaseException:
            # sockets the loop owns are closed through their transport (ports come back on
            # connection_lost); the rest are still ours to close, so their legs count them lost here
            for endpoint, sock in socks[wrapped:]:
                sock.close()
                endpoint._on_lost()
            for endpoint, _ in socks[:wrapped]:
                if endpoint.transport is not None:
                    endpoint.transport.close()
            session.closed = True
            self._closing.add(session)
            raise
        self._sessions.add(session)
        return session

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

    def _session_closed(self, session: RelaySession) -> None:
        if session in self._sessions:
            self._sessions.remove(session)
            self._totals[0] += sum(session.packets) + sum(session.rtcp_packets)
            self._totals[1] += sum(session.bytes)
            self._totals[2] += sum(session.dropped)
        self._closing.add(session)

    def _leg_released(self, session: RelaySession | None, leg: MediaLeg) -> None:
        self.pool.release(leg.local_port)
        if session is not None:
            session._leg_released()
            if session._pending == 0:
                self._closing.discard(session)

    async def close(self) -> None:
        """Close every session and wait (bounded) until their sockets are closed and ports released."""
        self._closed = True
        for session in list(self._sessions):
            session.close()
        waiting = [s.wait_closed() for s in self._closing]
        if waiting:
            await asyncio.wait_for(asyncio.gather(*waiting), timeout=5.0)
