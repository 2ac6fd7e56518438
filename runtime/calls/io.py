"""What goes into a call machine (inputs, each carrying `now`) and what comes out (actions).

Inputs and actions are plain slotted records. Transaction objects from runtime/sip/transaction.py
pass through as data: the machine reads their state, the runner hands them to the layer. Tags on
requests are opaque to the runner: it routes the responses to a request back with the tag it was
sent with. `now` is the event loop's monotonic clock, in seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..sip.message import Request, Response
from ..sip.transaction import Address, ServerTransaction
from .states import Channel

# ---- inputs ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Start:
    now: float


@dataclass(slots=True)
class RequestIn:
    """An in-dialog request (not ACK, not CANCEL) from `channel`, with its server transaction."""

    now: float
    channel: Channel
    txn: ServerTransaction


@dataclass(slots=True)
class AckIn:
    """An ACK for a 2xx we sent on `channel` (it has no transaction of its own)."""

    now: float
    channel: Channel
    request: Request


@dataclass(slots=True)
class CancelIn:
    """A CANCEL for channel ZERO's INVITE, with the CANCEL's own server transaction."""

    now: float
    txn: ServerTransaction


@dataclass(slots=True)
class ResponseIn:
    """A response to a request we sent with `tag`; `response` None means the transaction timed out
    (or its transport failed): act as on 408."""

    now: float
    tag: Any
    response: Response | None


@dataclass(slots=True)
class StrayResponseIn:
    """A 2xx to one of our INVITEs outside its transaction: a retransmission, or another fork's."""

    now: float
    response: Response


@dataclass(slots=True)
class TimerFired:
    now: float
    name: str


@dataclass(slots=True)
class MediaDone:
    """The media backend's result for the MediaCall with `token`: `value`, or `error`."""

    now: float
    token: int
    value: Any = None
    error: BaseException | None = None


@dataclass(slots=True)
class PlayDone:
    now: float
    error: Exception | None = None


@dataclass(slots=True)
class AcceptIn:
    """The dialplan's accept: ring every target at once; `on_result(None)` once connected,
    `on_result(failure)` when none answered."""

    now: float
    targets: list[Any]
    timeout: float | None
    on_result: Callable[[Any], None]


@dataclass(slots=True)
class RejectIn:
    now: float
    code: int
    reason: str


@dataclass(slots=True)
class HangupIn:
    """The dialplan's (or a shutdown's) hangup: BYE, CANCEL or a final response as the state needs."""

    now: float


@dataclass(slots=True)
class PlayIn:
    now: float
    path: str
    answered: bool
    on_done: Callable[[], None]


@dataclass(slots=True)
class GatherIn:
    """The dialplan's `gather` (calls/gather.py): answer, play `prompt` (None: none), collect digits.

    Seconds for `timeout` (the whole entry, from the prompt's end) and `digit_timeout` (between
    digits). `keys`: the entries a branch takes (None: any entry); nothing, or an entry not among
    them, replays the prompt while `retries` last. `prompt_done()` is the runner's callback that feeds
    GatherPromptDone back; `on_done(digits, outcome)` is the dialplan's, once, unless the call ends."""

    now: float
    prompt: str | None
    max_digits: int
    terminator: str | None
    timeout: float
    digit_timeout: float
    retries: int
    keys: frozenset[str] | None
    prompt_done: Callable[[], None]
    on_done: Callable[[str, str], None]


@dataclass(slots=True)
class GatherPromptDone:
    """The gather's prompt has played (or could not be played): collecting starts."""

    now: float


@dataclass(slots=True)
class DigitIn:
    """An RFC 4733 digit the media backend saw arrive on `channel` (once, at the event's end)."""

    now: float
    channel: Channel
    digit: str
    duration: int  # ms


@dataclass(slots=True)
class SendDtmfIn:
    """The program's send_dtmf: `digits` into `channel`'s phone, each held `duration` seconds."""

    now: float
    channel: Channel
    digits: str
    duration: float


@dataclass(slots=True)
class DialIn:
    """Originate: ring `targets` on channel ZERO ourselves (all at once; the first answer wins) for
    at most `timeout` seconds; `on_answered()` once ZERO answered (then the call is ANSWERED: accept,
    play, route or hang up as for a call we answered), `on_failed(failure)` when it never did."""

    now: float
    targets: list[Any]
    timeout: float
    on_answered: Callable[[], None]
    on_failed: Callable[[Any], None]


@dataclass(slots=True)
class TransferIn:
    """A blind transfer asked by the program (the SDK's transfer_call_session), not by a phone: the
    party on `channel` leaves, the other one is bridged to `targets` once one answers (as a REFER's
    transfer is carried out, without NOTIFYs); `transfer` events report each step."""

    now: float
    channel: Channel
    targets: list[Any]
    label: str


@dataclass(slots=True)
class ActionFailed:
    """The runner could not carry out an action (a bug, or the layer refused a message)."""

    now: float
    error: BaseException


Input = (Start | RequestIn | AckIn | CancelIn | ResponseIn | StrayResponseIn | TimerFired | MediaDone | PlayDone
         | AcceptIn | RejectIn | HangupIn | PlayIn | DigitIn | SendDtmfIn | ActionFailed | GatherIn
         | GatherPromptDone | DialIn | TransferIn)

# ---- actions ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Respond:
    txn: ServerTransaction
    response: Response


@dataclass(slots=True)
class SendRequest:
    """Start a client transaction; its responses and timeout come back as ResponseIn(tag)."""

    request: Request
    destination: Address
    transport: str
    tag: Any


@dataclass(slots=True)
class SendStateless:
    """An ACK for a 2xx, or a 2xx retransmission: outside any transaction."""

    message: Request | Response
    destination: Address
    transport: str


@dataclass(slots=True)
class SetTimer:
    """Fire TimerFired(name) at `at` (absolute, loop clock); replaces a timer of the same name."""

    name: str
    at: float


@dataclass(slots=True)
class CancelTimer:
    name: str


@dataclass(slots=True)
class MediaCall:
    """Ask the media backend; the result comes back as MediaDone(token).

    ops: allocate(), anchor(leg, sdp) -> sdp, answer(leg, offer) -> (sdp, pt, codec),
    offer(leg) -> sdp, take_answer(leg, sdp) -> (pt, codec), restrict_offer(sdp) -> sdp,
    prompt(path, codec) -> payloads, dtmf_mode(leg) -> "rfc4733"|"info",
    send_dtmf(leg, digits, seconds) -> None. Legs are the backend's ints (Channel.value)."""

    token: int
    op: str
    args: tuple[Any, ...]


@dataclass(slots=True)
class MediaExpect:
    """Tell the media backend the signalling source of a phone's leg (no result)."""

    leg: int
    host: str


@dataclass(slots=True)
class StartPlaying:
    """Send `payloads` to channel ZERO's phone as RTP; PlayDone when finished."""

    payloads: list[bytes]
    payload_type: int


@dataclass(slots=True)
class StopPlaying:
    pass


@dataclass(slots=True)
class Emit:
    name: str
    fields: dict[str, object]


@dataclass(slots=True)
class Route:
    """Hand the call to the dialplan (which answers with AcceptIn/RejectIn/HangupIn/PlayIn)."""


@dataclass(slots=True)
class Notify:
    """Call back the dialplan: `callback(*args)`."""

    callback: Callable[..., None]
    args: tuple[Any, ...]


@dataclass(slots=True)
class IndexDialog:
    """In-dialog requests and ACKs with this (Call-ID, our tag) belong to this call's `channel`."""

    call_id: str
    local_tag: str
    channel: Channel


@dataclass(slots=True)
class Closed:
    """The call is over: release media, emit `closed`, drop it from the engine's tables."""

    reason: str


@dataclass(slots=True)
class Released:
    """Nothing of the call is outstanding any more (cancelled forks settled): forget the machine."""


Action = (Respond | SendRequest | SendStateless | SetTimer | CancelTimer | MediaCall | MediaExpect | StartPlaying
          | StopPlaying | Emit | Route | Notify | IndexDialog | Closed | Released)
