"""The call layer's states, and the moves allowed between them.

A newcomer reads the call's life from CALL_TRANSITIONS below; every move goes through
`CallMachine._move`, which refuses (logs, with the call id, and raises) a move not listed here.

    NEW --start--> ROUTING --accept--> DIALING --ONE answers--> CONNECTED --BYE--> ENDING --> CLOSED
                      |                  ^  |
                      +--play answered-->+  +--no answer/refused--> ROUTING or ANSWERED (the plan goes on)
                         (ANSWERED: we answered ZERO ourselves)
    any state but CLOSED --refused/cancelled/failed--> CLOSED

Originate (originate.py): Callflow dials channel ZERO itself, then bridges or plays to it.

    NEW --dial--> ORIGINATING --ZERO answers--> ANSWERED --accept--> DIALING --ONE answers--> CONNECTED
                      +--no answer/busy/hung up--> CLOSED
"""

from __future__ import annotations

from enum import Enum


class Channel(Enum):
    """The two sides of a call: ZERO is the leg the call came in on, ONE the leg we dialled."""

    ZERO = 0
    ONE = 1

    @property
    def other(self) -> Channel:
        return Channel.ONE if self is Channel.ZERO else Channel.ZERO


class CallState(Enum):
    NEW = "new"                # created on an INVITE, media not yet allocated
    ROUTING = "routing"        # the dialplan decides; it may play early media
    ORIGINATING = "originating"  # we dialled channel ZERO ourselves (originate); it has not answered yet
    ANSWERED = "answered"      # we answered ZERO ourselves (`play ... answered`), nothing dialled yet
    DIALING = "dialing"        # INVITEs out on channel ONE (one per fork)
    CONNECTED = "connected"    # ONE answered; both dialogs up, in-dialog requests relayed
    ENDING = "ending"          # BYEs sent (or waiting for an ACK before they may go)
    CLOSED = "closed"          # media released, `closed` emitted, out of every engine table


S = CallState
CALL_TRANSITIONS: dict[CallState, frozenset[CallState]] = {
    S.NEW: frozenset({S.ROUTING, S.ORIGINATING, S.CLOSED}),
    # originate: ZERO answered (then bridged, routed or played to, as ANSWERED), or it never did
    S.ORIGINATING: frozenset({S.ANSWERED, S.CLOSED}),
    S.ROUTING: frozenset({S.ANSWERED, S.DIALING, S.CLOSED}),
    S.ANSWERED: frozenset({S.DIALING, S.ENDING, S.CLOSED}),
    # an attempt that fails goes back to where the plan decides (ROUTING, or ANSWERED after our 200)
    S.DIALING: frozenset({S.DIALING, S.ROUTING, S.ANSWERED, S.CONNECTED, S.ENDING, S.CLOSED}),
    S.CONNECTED: frozenset({S.ENDING, S.CLOSED}),
    S.ENDING: frozenset({S.CLOSED}),
    S.CLOSED: frozenset(),
}
del S


class TransferState(Enum):
    """A transfer a user's phone asked for with REFER (RFC 3515), carried out by Callflow itself."""

    DIALING = "dialing"      # 202 sent, the Refer-To target routed and rung (NOTIFY 100, then 180)
    BRIDGING = "bridging"    # the new leg answered: the remaining party is being re-INVITEd to it
    DONE = "done"            # bridged; NOTIFY 200 sent and the transferor's leg ended
    FAILED = "failed"        # refused by the rules or no answer: NOTIFY with the failure


T = TransferState
TRANSFER_TRANSITIONS: dict[TransferState, frozenset[TransferState]] = {
    T.DIALING: frozenset({T.BRIDGING, T.FAILED}),
    T.BRIDGING: frozenset({T.DONE, T.FAILED}),
    T.DONE: frozenset(),
    T.FAILED: frozenset(),
}
del T


class InviteState(Enum):
    """The INVITE transaction within one leg's dialog (RFC 3261 13, 14): at most one each way."""

    IDLE = "idle"
    INVITE_SENT = "invite_sent"          # our (re-)INVITE awaits its final response
    INVITE_RECEIVED = "invite_received"  # the peer's (re-)INVITE awaits our final response
    WAITING_ACK = "waiting_ack"          # our 2xx is retransmitted until the peer's ACK (13.3.1.4)


class ForkState(Enum):
    """One INVITE we sent on channel ONE (a fork: one per registered contact, or the line)."""

    CALLING = "calling"      # sent, nothing but 100 back: a CANCEL must wait (RFC 3261 9.1)
    EARLY = "early"          # a provisional response came: CANCEL allowed
    ANSWERED = "answered"    # a 2xx came
    FAILED = "failed"        # a final failure or a timeout


class CancelState(Enum):
    NONE = "none"
    WANTED = "wanted"        # decided, but no provisional response yet (RFC 3261 9.1)
    SENT = "sent"            # one CANCEL per fork, whatever paths reach it


class ByeState(Enum):
    NONE = "none"
    WAITING_ACK = "waiting_ack"  # our 2xx on this leg still waits for its ACK (RFC 3261 15)
    SENT = "sent"
    DONE = "done"                # answered, timed out, or the peer ended the dialog itself


class IllegalMove(RuntimeError):
    """A state change CALL_TRANSITIONS (or TRANSFER_TRANSITIONS) does not allow: a bug in the machine,
    logged with the call id."""
