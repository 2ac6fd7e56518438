"""Which source a relay socket takes media from: the latching rule, sans-IO (no sockets, no clock).

Why a rule at all ("RTP bleed", Asterisk AST-2017-008): a relay that latches to whatever source
sends first lets anyone who sprays its ports while a phone rings receive the caller's audio and
inject their own, and lets a previous caller of a reused port into the next call. So a socket
takes media only from a source consistent with what the call negotiated, and only after a short
probation, then locks:

- **Acceptable sources.** The exact address (host and port) this leg's SDP names comes first: a
  valid packet from it locks the socket at once. Two weaker sources are taken only while nothing
  has come from that exact address: another port of the SDP's host (some peers send from another
  port than they receive on), and the signalling source host of that leg's phone (``expect``: a
  phone behind NAT names a private address in its SDP but sends from its public one). A lock taken
  on a weaker source is given up for the exact SDP address as soon as that one speaks within
  ``REPLACE_WINDOW`` seconds of the lock: 3 packets forged from the phone's host (any port) before
  the phone's first packet must not keep its leg (issue 9, attack 1c). A leg without an expected
  host (a provider's, LINE) is strict: only the exact SDP address, since any port of a provider's
  media server is anyone's to forge (attack 1e); unless that address is unusable (``0.0.0.0``, a
  private address: the peer is behind NAT), when the SDP's host on any port is taken as above.
  Every other source is a stranger: dropped and counted, never relayed, never latched. Before
  either is known (the callee still rings), every packet is a stranger's.
- **Probation** (weaker sources only; the exact SDP address needs none). ``probation``
  consecutive in-order packets (sequence + 1) of one SSRC from one source address lock the socket
  on that address. Beside a private SDP address (NAT) the packets are relayed meanwhile; beside a
  usable one the stream must also last ``WEAK_PROBATION`` seconds and is relayed only from its lock,
  and the other leg's packets still go to the SDP address (``dest``) until the exact address
  speaks: a forger who locked from the phone's host hears nothing. RTCP follows the same rule with
  the sender SSRC and no sequence numbers (it has none). The other leg's packets are sent to the
  SDP address until a lock.
- **Locked.** Only the locked address passes (whatever its SSRC: a phone may restart its stream);
  everyone else is a stranger. A new SDP address (re-INVITE: the phone moved) unlocks and starts a
  new probation; the same address again (session refresh, hold) changes nothing.
- **Former stream.** When a socket is handed to a new call, the stream it was locked on (source
  address and SSRC) is remembered: its packets are strangers for the whole new call, even from an
  acceptable host (the same provider's media server serves both calls). A new call's stream never
  reuses both (RFC 3550 8.1: a new SSRC per session).

States and moves (``LatchState``)::

    UNKNOWN   --set_sdp_remote / expect-->        PROBATION   (acceptable sources known)
    PROBATION --probation good packets-->         LOCKED      (a weaker source)
    PROBATION --a packet from the exact SDP addr-> LOCKED
    LOCKED    --the exact SDP addr, in window-->  LOCKED      (re-latch from a weaker source)
    PROBATION --set_sdp_remote / expect-->        PROBATION   (the acceptable sources change)
    LOCKED    --set_sdp_remote (a new address)--> PROBATION   (the phone moved)
    LOCKED    --expect-->                         LOCKED      (one more acceptable host; no relock)
    any       --reset-->                          UNKNOWN     (the socket rests or joins a new call)
"""

from __future__ import annotations

import ipaddress
import logging
from enum import Enum
from typing import Any

__all__ = ["Address", "LatchState", "Latch", "PROBATION", "REPLACE_WINDOW", "WEAK_PROBATION", "canonical_host"]

log = logging.getLogger("callflow.media")

Address = tuple[Any, ...]  # (host, port) for IPv4, (host, port, flowinfo, scope_id) for IPv6

# Consecutive in-order packets of one SSRC from one source before the socket locks: three 20 ms
# packets (60 ms; Asterisk's strictrtp learns over a similar few, rtp.conf `probation`). Packets
# from an acceptable host are relayed meanwhile, so probation costs no audio; it picks which of
# the acceptable sources' streams to lock on, and refuses what is not RTP.
PROBATION = 3

# Seconds after a lock on a weaker source (another port of the SDP's host, the NAT'd phone's
# signalling host) during which the exact SDP address, when it speaks, takes the lock over. Long
# enough for a phone's first packet after the answer to beat packets forged while it rang; short
# so that, mid-call, a packet forged from a NAT'd phone's private SDP address moves nothing.
REPLACE_WINDOW = 10.0

# Seconds a weaker source must stream in order, while the SDP names a usable address, before it is
# relayed and locks: packets forged from the phone's host while it rings then lock nothing unless
# sustained, and meanwhile the other leg's audio goes to the SDP address (RFC 3264 5.1), not to the
# forger. A phone behind NAT (private SDP address) is not delayed: its weaker source is all it has.
WEAK_PROBATION = 1.0


class LatchState(Enum):
    UNKNOWN = "unknown"      # no acceptable source known yet: every packet is a stranger's
    PROBATION = "probation"  # acceptable sources known; counting good packets of one stream
    LOCKED = "locked"        # the remote is fixed: only it passes


_MOVES: dict[tuple[LatchState, str], frozenset[LatchState]] = {
    (LatchState.UNKNOWN, "learn"): frozenset({LatchState.PROBATION}),
    (LatchState.PROBATION, "learn"): frozenset({LatchState.PROBATION}),
    (LatchState.LOCKED, "learn"): frozenset({LatchState.PROBATION, LatchState.LOCKED}),
    (LatchState.PROBATION, "lock"): frozenset({LatchState.LOCKED}),
    (LatchState.LOCKED, "relatch"): frozenset({LatchState.LOCKED}),
}


# Addresses a peer behind NAT names in its SDP: RFC 1918, shared (RFC 6598), link-local, ULA (RFC 4193)
_NATTED = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16", "fc00::/7", "fe80::/10"))


def _usable(host: str) -> bool:
    """Can media be expected from exactly this SDP host? Not from an unspecified address (RFC 3264
    hold) nor from a private one (``_NATTED``: the peer is behind NAT; its packets come from elsewhere)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return True  # a name matches no source anyway
    return not ip.is_unspecified and not any(ip in net for net in _NATTED if net.version == ip.version)


def canonical_host(host: str) -> str:
    """The host as a socket reports a packet's source (``::1`` not ``0:0::1``); raises ValueError
    when ``host`` is not an IP address literal."""
    return str(ipaddress.ip_address(host))


def _rtp_stream(data: bytes) -> tuple[int, int] | None:
    """(SSRC, sequence number) of an RTP packet (RFC 3550 5.1), None if ``data`` is not RTP v2.
    RTCP multiplexed on the RTP port (RFC 5761 4: second byte 192-223) is not RTP either."""
    if len(data) < 12 or data[0] & 0xC0 != 0x80 or 192 <= data[1] <= 223:
        return None
    return int.from_bytes(data[8:12], "big"), int.from_bytes(data[2:4], "big")


def _rtcp_sender(data: bytes) -> int | None:
    """The sender SSRC of an RTCP packet (RFC 3550 6.4: SR, RR, SDES, BYE, APP, and the feedback
    and XR types above them), None if ``data`` is not RTCP v2."""
    if len(data) < 8 or data[0] & 0xC0 != 0x80 or not 200 <= data[1] <= 207:
        return None
    return int.from_bytes(data[4:8], "big")


class Latch:
    """The rule's state for one socket (a leg's RTP or its RTCP). ``remote`` is the locked source
    (else the SDP address, else None), ``dest`` where the other leg's packets are sent (``remote``,
    but the SDP address while locked on a weaker source beside a usable one: ``_aim``), and
    ``locked`` mirrors ``state is LOCKED``, all read on the hot path without a call."""

    __slots__ = (
        "rtcp", "probation", "state", "locked", "remote", "sdp_remote", "hosts", "expected",
        "_candidate", "_count", "_last_seq", "locked_ssrc", "former", "strangers", "locked_at", "exact",
        "dest", "sdp_usable", "_candidate_since",
    )  # fmt: skip

    def __init__(self, rtcp: bool = False, probation: int = PROBATION) -> None:
        if probation < 1:
            raise ValueError("probation must be at least one packet")
        self.rtcp = rtcp
        self.probation = probation
        self.former: tuple[Address, int] | None = None
        self.locked = False
        self.remote: Address | None = None
        self.locked_ssrc: int | None = None
        self.reset_latch()

    def reset_latch(self) -> None:
        """Forget the call (the socket rests or joins a new one): UNKNOWN, no remote, no counters.
        The stream it was locked on becomes ``former``: refused for the next call (a call that never
        locked leaves the one before it as ``former``)."""
        if self.locked and self.remote is not None and self.locked_ssrc is not None:
            self.former = (self.remote, self.locked_ssrc)
        self.state = LatchState.UNKNOWN
        self.locked = False
        self.remote = None
        self.sdp_remote: Address | None = None
        self.expected: str | None = None
        self.hosts: tuple[str, ...] = ()
        self._candidate: tuple[Address, int] | None = None
        self._count = 0
        self._last_seq = -1
        self.locked_ssrc: int | None = None
        self.strangers = 0
        self.locked_at = 0.0  # ``now`` of the lock (seconds, the caller's clock)
        self.exact = False  # locked on the exact SDP address: nothing takes it over
        self.dest: Address | None = None  # where the other leg's packets go (``_aim``)
        self.sdp_usable = False  # the SDP names an address media can come from (``_usable``)
        self._candidate_since = 0.0

    # ---- what the signalling says ---------------------------------------------------------------
    def set_sdp_remote(self, addr: Address) -> None:
        """The address this leg's SDP names for this socket. A new one restarts probation there; the
        same one changes nothing; the first one after a lock taken from the signalling source keeps
        that lock (early media already showed where the phone really is)."""
        if addr == self.sdp_remote:
            return
        keep_lock = self.sdp_remote is None and self.locked
        self.sdp_remote = addr
        self._refresh_hosts()
        if keep_lock:
            self._move("learn", LatchState.LOCKED)
            self._aim()
            return
        self.remote = addr
        self.exact = False
        self._candidate, self._count = None, 0
        self._move("learn", LatchState.PROBATION)
        self._aim()

    def expect(self, host: str) -> None:
        """Packets from ``host`` (any port) are acceptable too: the signalling source of a phone's
        leg. A lock already taken stays. Raises ValueError if ``host`` is not an IP literal."""
        self.expected = canonical_host(host)
        self._refresh_hosts()
        self._move("learn", LatchState.LOCKED if self.locked else LatchState.PROBATION)
        self._aim()

    def _refresh_hosts(self) -> None:
        """The hosts a weaker source may come from (any port): the SDP's host unless the leg is
        strict (no expected host and a usable SDP address), and the expected host."""
        hosts = []
        self.sdp_usable = self.sdp_remote is not None and _usable(self.sdp_remote[0])
        if self.sdp_remote is not None and (self.expected is not None or not self.sdp_usable):
            hosts.append(self.sdp_remote[0])
        if self.expected is not None and self.expected not in hosts:
            hosts.append(self.expected)
        self.hosts = tuple(hosts)

    def _aim(self) -> None:
        """Where the other leg's packets go: the locked source, unless that is a weaker source and
        the SDP names a usable address (the peer receives there, RFC 3264 5.1; a forger who locked
        from the phone's host must not get the far end's audio); else the SDP address."""
        if self.locked and not self.exact and self.sdp_usable:
            self.dest = self.sdp_remote
        else:
            self.dest = self.remote

    def _move(self, trigger: str, to: LatchState) -> None:
        allowed = _MOVES.get((self.state, trigger), frozenset())
        if to not in allowed:  # a bug in this module; refuse rather than relay from a wrong source
            raise RuntimeError(f"latch: no move {self.state.name} --{trigger}--> {to.name}")
        self.state = to
        self.locked = to is LatchState.LOCKED

    # ---- what arrives -----------------------------------------------------------------------------
    def admit(self, addr: Address, data: bytes, now: float = 0.0) -> bool:
        """May a packet from ``addr`` be relayed? Called for every packet unless it comes from the
        locked remote; ``now`` in seconds on any monotonic clock (the re-latch window). Counts a
        refused packet in ``strangers``; may lock or re-latch (module docstring)."""
        exact = addr == self.sdp_remote
        if not exact and (self.locked or addr[0] not in self.hosts):
            self.strangers += 1
            return False
        if exact and self.locked and self.exact:
            return True  # the locked remote itself
        if exact and self.locked and now - self.locked_at > REPLACE_WINDOW:
            self.strangers += 1  # too late to take a weaker lock over: mid-call, it may be forged
            return False
        stream = _rtcp_sender(data) if self.rtcp else _rtp_stream(data)
        if stream is None:
            if not self.rtcp and _rtcp_sender(data) is not None:
                return True  # RTCP multiplexed on the RTP port from an acceptable host: pass, learn nothing
            self.strangers += 1
            return False
        if self.rtcp:
            ssrc, seq = stream, -1
        else:
            ssrc, seq = stream  # type: ignore[misc]
        if self.former is not None and self.former == (addr, ssrc):
            self.strangers += 1  # the previous call's stream, still arriving
            return False
        if exact:  # the address the call negotiated: no probation, and it takes a weaker lock over
            self.remote, self.locked_ssrc, self.exact = addr, ssrc, True
            self.locked_at = now
            self._move("relatch" if self.locked else "lock", LatchState.LOCKED)
            self._aim()
            return True
        candidate = (addr, ssrc)
        in_order = self.rtcp or seq == (self._last_seq + 1) & 0xFFFF
        if candidate == self._candidate and in_order:
            self._count += 1
        else:
            self._candidate, self._count, self._candidate_since = candidate, 1, now
        self._last_seq = seq
        held = self.sdp_usable  # a weaker source beside a usable SDP address: proven over time first
        if self._count >= self.probation and (not held or now - self._candidate_since >= WEAK_PROBATION):
            self.remote = addr
            self.locked_ssrc = ssrc
            self.locked_at = now
            self._move("lock", LatchState.LOCKED)
            self._aim()
            return True
        if held:
            self.strangers += 1  # not relayed until it has proven itself
            return False
        return True
