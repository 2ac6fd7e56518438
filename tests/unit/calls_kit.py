"""A fake-clock bench for call machine specs: one CallMachine driven directly, its actions carried
out on a real (pure) TransactionLayer so transaction states are true, the media backend answered at
once by a fake, and the two peers scripted from their own side of each dialog.

    call = Call()                 # a provider's INVITE (with SDP) came in on line `itsp1`: channel ZERO
    call.start()                  # the plan accepts to line `far` (channel ONE)
    call.one_answers()            # 180 then 200 from ONE, ACK from ZERO: CONNECTED
    call.bye_from(ONE)
    assert call.sent("BYE", to=ZERO_ADDR)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from runtime.calls import CallMachine, Channel, Failure, Leg, Target, io
from runtime.sip.dialog import Dialog
from runtime.sip.digest import DigestClient
from runtime.sip.message import Request, Response, create_response, parse_message
from runtime.sip.transaction import (
    Address,
    RequestReceived,
    ServerTransaction,
    TransactionLayer,
    new_branch,
    new_tag,
)

ZERO, ONE = Channel.ZERO, Channel.ONE
ZERO_ADDR: Address = ("198.51.100.1", 5060)    # where channel ZERO's INVITE came from
FAR_ADDR: Address = ("203.0.113.7", 5060)      # the line `far` we dial on channel ONE
XFER_ADDR: Address = ("203.0.113.9", 5060)     # the line `xfer`, where the rules send a transfer's target
US = "192.0.2.1:5060"
SDP_ZERO = b"v=0\r\no=a 1 1 IN IP4 198.51.100.1\r\ns=-\r\nc=IN IP4 198.51.100.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
SDP_ONE = b"v=0\r\no=b 1 1 IN IP4 203.0.113.7\r\ns=-\r\nc=IN IP4 203.0.113.7\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n"


def anchored(sdp: bytes) -> bytes:
    """What the fake media backend turns an SDP body into (so specs can see it was anchored)."""
    return b"anchored:" + sdp


class FakeEnv:
    def __init__(self, destinations: dict[str, list[Address]], auth: DigestClient | None = None) -> None:
        self.destinations = destinations
        self.auth = auth
        self.refused: dict[str, Any] = {}   # transfer target -> the Failure the rules give it
        self.transfers_routed: list[tuple[str, str]] = []  # (transferring user, target) asked
        self.others: list[Call] = []        # other calls an attended transfer may take a party from

    def via(self, transport: str = "udp") -> str:
        return f"SIP/2.0/{transport.upper()} {US};rport"

    def contact(self, transport: str = "udp") -> str:
        return f"<sip:callflow@{US}>"

    def route_transfer(self, call: object, user: str, target: str) -> tuple[list[Target], Any]:
        """A transfer to `target` goes to line `xfer` with that number, unless `refused` names it."""
        self.transfers_routed.append((user, target))
        if target in self.refused:
            return [], self.refused[target]
        return [Target("LINE", "xfer", target)], None

    def take_over(self, call: object, user: str, call_id: str, local_tag: str,
                  remote_tag: str) -> tuple[Leg | None, Any]:
        """The other call (of `others`) holding that dialog hands its other party over."""
        for other in self.others:
            m = other.machine
            for leg in (m.zero, m.one):
                if leg is not None and leg.dialog is not None and leg.dialog.call_id == call_id \
                        and leg.dialog.local_tag == local_tag:
                    result = m.hand_over(other.now, leg.channel, user, remote_tag)
                    other.drain()
                    return result
        return None, Failure(481, "Call/Transaction Does Not Exist")

    def build_forks(self, call: object, target: Target, offer: bytes, now: float) -> tuple[list[Leg], Any]:
        legs = []
        for address in self.destinations[target.name]:
            h = [f"Via: {self.via()};branch={new_branch()}", "Max-Forwards: 70",
                 f"From: <sip:callflow@{US}>;tag={new_tag()}", f"To: <sip:{target.number or 'x'}@{address[0]}>",
                 f"Call-ID: {new_tag()}@callflow", "CSeq: 1 INVITE", f"Contact: <sip:callflow@{US}>"]
            invite = Request("INVITE", f"sip:{target.number or 'x'}@{address[0]}:{address[1]}", _headers(h), b"")
            if offer:
                invite.set_body(offer, "application/sdp")
            else:
                invite.headers.add("Content-Length", "0")
            legs.append(Leg.fork(target, address, invite, self.auth if target.kind == "LINE" else None))
        return legs, None


def _headers(lines: list[str]):  # type: ignore[no-untyped-def]
    return parse_message(("OPTIONS sip:x@x SIP/2.0\r\n" + "\r\n".join(lines) + "\r\n\r\n").encode()).headers


@dataclass
class Out:
    kind: str                  # "response" | "request" | "stateless"
    message: Request | Response
    destination: Address | None = None
    tag: Any = None


@dataclass
class Call:
    """One call under test. `route` decides what the dialplan does (default: accept to line far)."""

    peer_type: str = "LINE"
    offer: bytes = SDP_ZERO
    contact: str = f"<sip:gw@{ZERO_ADDR[0]}:{ZERO_ADDR[1]}>"
    destinations: dict[str, list[Address]] = field(default_factory=lambda: {"far": [FAR_ADDR],
                                                                                    "xfer": [XFER_ADDR]})
    auth: DigestClient | None = None
    max_duration: float | None = None
    rtp_timeout: float | None = None
    hold_media: bool = False        # leave media steps unanswered (see answer_media)
    invite_headers: list[str] = field(default_factory=list)  # extra header lines of ZERO's INVITE
    call_id: str = "zero-1"         # the Call-ID of ZERO's INVITE
    # each leg's DTMF mode as the fake media backend reports it (runtime/calls/dtmf.py)
    dtmf_modes: dict[Channel, str] = field(default_factory=lambda: {Channel.ZERO: "rfc4733", Channel.ONE: "rfc4733"})
    now: float = 0.0

    def __post_init__(self) -> None:
        self.layer = TransactionLayer()
        self.out: list[Out] = []
        self.events: list[tuple[str, dict[str, object]]] = []
        self.timers: dict[str, float] = {}
        self.results: list[Any] = []
        self.closed: str | None = None
        self.released = False
        self.media_pending: list[io.MediaCall] = []
        self.media_ops: list[str] = []     # every media step asked, in order
        self.packets = (0, 0)
        self.dtmf_sent: list[tuple[Channel, str, float]] = []  # send_dtmf asked of the media backend
        self.route = lambda call: call.feed(io.AcceptIn(call.now, [Target("LINE", "far")], None, call.results.append))
        ct = "Content-Type: application/sdp\r\n" if self.offer else ""
        data = (f"INVITE sip:+15551230000@{US} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {ZERO_ADDR[0]}:{ZERO_ADDR[1]};branch=z9hG4bKzero1\r\nMax-Forwards: 70\r\n"
                f"From: <sip:+15557654321@{ZERO_ADDR[0]}>;tag=z1\r\nTo: <sip:+15551230000@{US}>\r\n"
                f"Call-ID: {self.call_id}\r\nCSeq: 1 INVITE\r\nContact: {self.contact}\r\n{ct}"
                + "".join(line + "\r\n" for line in self.invite_headers) +
                f"Content-Length: {len(self.offer)}\r\n\r\n").encode() + self.offer
        self.layer.receive(data, ZERO_ADDR, self.now)
        event = self.layer.next_event()
        assert isinstance(event, RequestReceived) and event.transaction is not None
        self.txn: ServerTransaction = event.transaction
        self.machine = CallMachine(FakeEnv(self.destinations, self.auth), "c1", self.txn, peer_type=self.peer_type,
                                   peer_name="itsp1", caller_id="+15557654321", dialled="+15551230000", now=self.now,
                                   max_duration=self.max_duration, rtp_timeout=self.rtp_timeout)
        self.cseq = {ZERO: 1, ONE: 0}

    # ---- driving the machine ---------------------------------------------------------------------
    def feed(self, inp: Any) -> None:
        self.machine.handle(inp)
        self.drain()

    def drain(self) -> None:
        """Carry out every action the machine has produced."""
        for _ in range(1000):
            actions = self.machine.take_actions()
            if not actions:
                return
            for action in actions:
                self._execute(action)

    def _execute(self, a: Any) -> None:
        if isinstance(a, io.Respond):
            self.layer.respond(a.txn, a.response, self.now)
            self.out.append(Out("response", a.response, a.txn.peer))
        elif isinstance(a, io.SendRequest):
            self.out.append(Out("request", a.request, a.destination, a.tag))
        elif isinstance(a, io.SendStateless):
            self.out.append(Out("stateless", a.message, a.destination))
        elif isinstance(a, io.SetTimer):
            self.timers[a.name] = a.at
        elif isinstance(a, io.CancelTimer):
            self.timers.pop(a.name, None)
        elif isinstance(a, io.MediaCall):
            self.media_ops.append(a.op)
            self.media_pending.append(a)
            if not self.hold_media:
                self.answer_media()
        elif isinstance(a, io.Emit):
            self.events.append((a.name, a.fields))
        elif isinstance(a, io.Route):
            self.route(self)
        elif isinstance(a, io.Notify):
            a.callback(*a.args)
        elif isinstance(a, io.Closed):
            self.closed = a.reason
            self.timers.clear()
        elif isinstance(a, io.Released):
            self.released = True

    def answer_media(self, error: BaseException | None = None) -> None:
        """Answer the oldest media step: anchored SDP, our own offer, PCMU, a one-packet prompt."""
        a = self.media_pending.pop(0)
        values = {"allocate": None, "anchor": lambda: anchored(a.args[1]), "offer": lambda: b"our-offer",
                  "answer": lambda: (b"our-answer", 0, "PCMU"), "take_answer": lambda: (0, "PCMU"),
                  "prompt": lambda: [b"\xff" * 160], "restrict_offer": lambda: a.args[0],
                  "packets": lambda: self.packets,
                  "dtmf_mode": lambda: self.dtmf_modes[Channel(a.args[0])],
                  "send_dtmf": lambda: self.dtmf_sent.append((Channel(a.args[0]), a.args[1], a.args[2]))}
        maker = values[a.op]
        self.feed(io.MediaDone(self.now, a.token, None if error or maker is None else maker(), error))

    def advance(self, seconds: float) -> None:
        """Let `seconds` pass, firing the machine's timers in order."""
        end = self.now + seconds
        for _ in range(1000):
            due = [(at, name) for name, at in self.timers.items() if at <= end]
            if not due:
                break
            at, name = min(due)
            del self.timers[name]
            self.now = max(self.now, at)
            self.feed(io.TimerFired(self.now, name))
        self.now = end

    # ---- scripted peers --------------------------------------------------------------------------
    def start(self) -> None:
        self.feed(io.Start(self.now))

    def invite_to_one(self, index: int = -1) -> Out:
        """The INVITE we sent to a fork of channel ONE (the last one by default)."""
        return [o for o in self.out if o.kind == "request" and o.message.method == "INVITE"
                and type(o.tag) is int][index]  # forks, not re-INVITEs

    def one_responds(self, status: int, *, to_tag: str = "b1", body: bytes = b"", out: Out | None = None,
                     headers: list[tuple[str, str]] | None = None, stray: bool = False) -> Response:
        """Channel ONE answers our INVITE (the last one, or `out`)."""
        sent = out or self.invite_to_one()
        h = list(headers or [])
        if not any(name == "Contact" for name, _ in h):
            h.insert(0, ("Contact", f"<sip:far@{FAR_ADDR[0]}:{FAR_ADDR[1]}>"))
        resp = create_response(sent.message, status, "OK" if status == 200 else "Whatever", to_tag=to_tag,
                               headers=h, body=body, content_type="application/sdp" if body else None)
        resp = parse_message(bytes(resp))
        self.feed(io.StrayResponseIn(self.now, resp) if stray else io.ResponseIn(self.now, sent.tag, resp))
        return resp

    def respond_to(self, out: Out, status: int, headers: list[tuple[str, str]] | None = None,
                   body: bytes = b"") -> Response:
        """A peer's response to a request we sent (`out`)."""
        resp = parse_message(bytes(create_response(out.message, status, "Whatever", headers=headers, body=body,
                                                   content_type="application/sdp" if body else None)))
        self.feed(io.ResponseIn(self.now, out.tag, resp))
        return resp

    def connect(self) -> None:
        """start, 180 and 200 from ONE, the caller's ACK: CONNECTED."""
        self.start()
        self.one_responds(180)
        self.one_responds(200, body=SDP_ONE)
        self.ack_from(ZERO)

    def zero_dialog(self) -> Dialog:
        """Channel ZERO's dialog as its peer sees it (our 200 answered its INVITE)."""
        ok = next(o.message for o in self.out if o.kind == "response" and o.message.status == 200
                  and o.message.cseq[1] == "INVITE")
        d = Dialog.as_uac(self.txn.request, ok)  # type: ignore[arg-type]
        d.local_cseq = self.cseq[ZERO]
        return d

    def one_dialog(self) -> Dialog:
        """Channel ONE's dialog as the far end sees it (it answered our INVITE with tag b1)."""
        d = Dialog.as_uas(self.invite_to_one().message, "b1")  # type: ignore[arg-type]
        d.local_cseq = self.cseq[ONE]
        return d

    def request_from(self, channel: Channel, method: str, body: bytes = b"",
                     headers: list[tuple[str, str]] | None = None) -> ServerTransaction | None:
        """The peer on `channel` sends an in-dialog request; returns its server transaction."""
        d = self.zero_dialog() if channel is ZERO else self.one_dialog()
        source = ZERO_ADDR if channel is ZERO else FAR_ADDR
        req = d.create_request(method, f"SIP/2.0/UDP {source[0]}:{source[1]}", body=body, extra=headers,
                               cseq=self.cseq[channel] if method == "ACK" else None)
        if method != "ACK":
            self.cseq[channel] = d.local_cseq
        self.layer.receive(bytes(req), source, self.now)
        event = self.layer.next_event()
        assert isinstance(event, RequestReceived)
        if event.transaction is None:
            self.feed(io.AckIn(self.now, channel, event.request))
        else:
            self.feed(io.RequestIn(self.now, channel, event.transaction))
        return event.transaction

    def ack_from(self, channel: Channel, body: bytes = b"") -> None:
        self.request_from(channel, "ACK", body=body)

    def bye_from(self, channel: Channel) -> ServerTransaction | None:
        return self.request_from(channel, "BYE")

    # ---- what was observed -----------------------------------------------------------------------
    def sent(self, method: str, *, to: Address | None = None) -> list[Out]:
        """Requests (in and outside transactions) we sent with `method`, optionally to `to`."""
        return [o for o in self.out if o.kind in ("request", "stateless") and isinstance(o.message, Request)
                and o.message.method == method and (to is None or o.destination == to)]

    def responses(self, status: int, method: str = "INVITE") -> list[Response]:
        return [o.message for o in self.out if isinstance(o.message, Response) and o.message.status == status
                and o.message.cseq[1] == method]

    def event(self, name: str) -> dict[str, object] | None:
        return next((fields for n, fields in self.events if n == name), None)
