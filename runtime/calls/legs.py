"""A call's legs (one side's dialog and what is in flight on it), the dialplan's targets and
failures, and the narrow interface a call machine needs from its host (the engine)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..sip.dialog import Dialog
from ..sip.message import Request, Response
from ..sip.transaction import Address
from .session_timer import SessionTimer
from .states import ByeState, CancelState, Channel, ForkState, InviteState

if TYPE_CHECKING:
    from ..sip.digest import DigestClient


@dataclass(frozen=True, slots=True)
class Target:
    """Where AcceptCallSession sends a call: a user's phones or a line, with the number to dial."""

    kind: str          # "USER" | "LINE"
    name: str
    number: str | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    """Why an attempt did not connect: the SIP status and reason the caller would be given."""

    code: int
    reason: str


class Leg:
    """One side of a call. Channel ZERO's leg is the INVITE that came in; each INVITE we send on
    channel ONE (a fork) is a leg too, and the fork that answers first becomes the call's ONE.

    `address` is where the peer is reached when its dialog names no usable route (a phone's
    signalling source, a line's server); `peer_type` says which rule of RFC 3261 12.2.1.1 applies:
    a USER's phone (perhaps behind NAT) is reached at its source, a LINE at its Contact/route set.
    Holds no reference to its call: the machine finds legs by channel and index.
    """

    __slots__ = ("channel", "index", "peer_type", "peer", "address", "transport", "dialog", "invite_state",
                 "bye", "bye_auth_nonce", "final", "final_cseq", "final_to", "final_interval", "final_deadline",
                 "acks", "ack_waiting", "target", "invite", "auth", "state", "cancel", "sent_credentials",
                 "attempt", "extra_dialogs", "answer_sdp", "timer", "allow_update", "local_sdp", "refreshing",
                 "timer_retried", "timer_armed", "allow_info")

    def __init__(self, channel: Channel, peer_type: str, peer: str | None, address: Address, transport: str) -> None:
        self.channel = channel
        self.index = -1                 # position in the machine's forks (ONE), -1 for ZERO
        self.peer_type = peer_type      # "USER" | "LINE"
        self.peer = peer
        self.address = address
        self.transport = transport
        self.dialog: Dialog | None = None
        self.invite_state = InviteState.IDLE
        self.bye = ByeState.NONE
        self.bye_auth_nonce: str | None = None
        # our last 2xx to an INVITE on this leg, retransmitted until the ACK (RFC 3261 13.3.1.4)
        self.final: Response | None = None
        self.final_cseq = 0
        self.final_to: tuple[Address, str] | None = None
        self.final_interval = 0.0
        self.final_deadline = 0.0
        # ACKs we sent for 2xx on this leg, by the CSeq of the INVITE they answer (re-sent on a
        # retransmitted 2xx); ack_waiting: that INVITE's CSeq while its ACK waits for the answer
        # the other side's ACK will carry (late offer)
        self.acks: dict[int, Request] | None = None
        self.ack_waiting: int | None = None
        # forks only
        self.target: Target | None = None
        self.invite: Request | None = None
        self.auth: DigestClient | None = None
        self.state = ForkState.CALLING
        self.cancel = CancelState.NONE
        self.sent_credentials = False
        self.attempt = 0
        self.extra_dialogs: dict[str, Request] | None = None  # other forks' 2xx: their ACKs by To tag
        self.answer_sdp = b""  # the SDP answer this fork's 2xx carried, as sent (the status page's codec)
        # session timer (RFC 4028) of this leg's dialog with us, None when it has none
        self.timer: SessionTimer | None = None
        self.allow_update = False       # the peer lists UPDATE in Allow (else we answer refresh UPDATEs)
        self.local_sdp = b""            # the last SDP we sent on this leg (a refresh re-INVITE repeats it)
        self.refreshing = False         # a refresh of ours is in flight on this leg
        self.timer_retried = False      # a 422 was answered once with a larger Session-Expires
        self.timer_armed = False        # a se_refresh/se_expire timer may be set for this leg
        self.allow_info: bool | None = None  # the peer's Allow lists INFO; None: it sent no Allow (calls/dtmf.py)

    @classmethod
    def fork(cls, target: Target, destination: Address, invite: Request, auth: DigestClient | None,
             transport: str = "udp") -> Leg:
        """An INVITE to send on channel ONE (the engine builds it: see CallEnv.build_forks)."""
        leg = cls(Channel.ONE, target.kind, target.name, destination, transport)
        leg.target = target
        leg.invite = invite
        leg.auth = auth
        return leg

    @property
    def settled(self) -> bool:
        return self.state is ForkState.ANSWERED or self.state is ForkState.FAILED


class CallEnv(Protocol):
    """What a call machine needs from its host: addresses to write, and forks built for a target."""

    def via(self, transport: str = "udp") -> str:
        """Our sent-by for a Via header, e.g. "SIP/2.0/UDP 192.0.2.10:5060;rport" (no branch)."""
        ...

    def contact(self, transport: str = "udp") -> str:
        """Our Contact header value for that transport, e.g. "<sip:callflow@192.0.2.10:5060>"."""
        ...

    def build_forks(self, call: object, target: Target, offer: bytes, now: float) -> tuple[list[Leg], Failure | None]:
        """The INVITEs that ring `target` (one per registered contact of a user, one for a line),
        carrying `offer` as SDP when not empty; or why there are none."""
        ...

    def route_transfer(self, call: object, user: str, target: str) -> tuple[list[Target], Failure | None]:
        """Where a transfer asked by user `user`'s phone to `target` (a number or name) goes: the
        routing program decides it as a new call from that user to `target` (its rules and their
        security apply); the targets of its first accept, or why there are none (e.g. 404, 403)."""
        ...

    def take_over(self, call: object, user: str, call_id: str, local_tag: str,
                  remote_tag: str) -> tuple[Leg | None, Failure | None]:
        """An attended transfer: the other party of the call whose dialog (call_id, our local_tag,
        the phone's remote_tag) user `user`'s phone has with us, handed over by that call
        (CallMachine.hand_over), or why it cannot be (481 no such dialog, 403 not that user's)."""
        ...
