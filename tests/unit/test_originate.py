"""Fake-clock specifications of originate (issue 12, the SDK's DialCallSession): Callflow dials
channel ZERO itself (a user's phone, here the line `home` standing for it), and once it answers,
dials channel ONE (line `far`) and bridges the two; each test one behaviour a peer or the operator
observes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from calls_kit import FAR_ADDR, ONE, SDP_ONE, SDP_ZERO, US, XFER_ADDR, ZERO, ZERO_ADDR, Call, FakeEnv, Out

from runtime.calls import CallMachine, CallState, Failure, IllegalMove, Target, io
from runtime.sip.message import Request, Response, create_response, parse_message
from runtime.sip.transaction import TransactionLayer

HOME_ADDR = ("198.51.100.20", 5060)   # the phone we ring first: channel ZERO


def stands_for(number: str) -> Request:
    """The INVITE an originated call stands for (From the user, To the number, no body)."""
    return parse_message((f"INVITE sip:{number}@{US} SIP/2.0\r\nVia: SIP/2.0/UDP {US};branch=z9hG4bKorig\r\n"
                          f"Max-Forwards: 70\r\nFrom: <sip:alice@{US}>;tag=o1\r\nTo: <sip:{number}@{US}>\r\n"
                          f"Call-ID: c1-originate@callflow\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n").encode())


@dataclass
class Dialled(Call):
    """An originated call: dial() rings channel ZERO (line `home`), `then` decides what follows its
    answer (default: dial ONE, line `far`, and bridge)."""

    ring_for: float = 30.0

    def __post_init__(self) -> None:
        self.layer = TransactionLayer()
        self.out: list[Out] = []
        self.events: list[tuple[str, dict[str, object]]] = []
        self.timers: dict[str, float] = {}
        self.results: list[Any] = []
        self.failures: list[Failure] = []
        self.closed: str | None = None
        self.released = False
        self.media_pending: list[io.MediaCall] = []
        self.media_ops: list[str] = []
        self.packets = (0, 0)
        self.destinations.setdefault("home", [HOME_ADDR])
        self.machine = CallMachine(FakeEnv(self.destinations, self.auth), "c1", None, peer_type="USER",
                                   peer_name="alice", caller_id="alice", dialled="+15551230000", now=self.now,
                                   invite=stands_for("+15551230000"))
        self.then = lambda: self.feed(io.AcceptIn(self.now, [Target("LINE", "far")], 60, self.results.append))
        self.route = lambda call: None
        self.cseq = {ZERO: 0, ONE: 0}

    def dial(self) -> None:
        self.feed(io.DialIn(self.now, [Target("LINE", "home")], self.ring_for, lambda: self.then(),
                            self.failures.append))

    def invite_to_zero(self, index: int = -1) -> Out:
        return [o for o in self.out if o.kind == "request" and o.tag and o.tag[0] == "originate"][index]

    def zero_responds(self, status: int, body: bytes = b"", to_tag: str = "h1") -> Response:
        sent = self.invite_to_zero()
        resp = create_response(sent.message, status, "OK" if status == 200 else "Whatever", to_tag=to_tag,
                               headers=[("Contact", f"<sip:alice@{HOME_ADDR[0]}:{HOME_ADDR[1]}>")], body=body,
                               content_type="application/sdp" if body else None)
        resp = parse_message(bytes(resp))
        self.feed(io.ResponseIn(self.now, sent.tag, resp))
        return resp

    def zero_dialog(self):  # type: ignore[no-untyped-def]
        """Channel ZERO's dialog as its phone sees it (it answered our INVITE with tag h1)."""
        from runtime.sip.dialog import Dialog
        d = Dialog.as_uas(self.invite_to_zero().message, "h1")  # type: ignore[arg-type]
        d.local_cseq = self.cseq[ZERO]
        return d

    def bye_from_zero(self) -> None:
        d = self.zero_dialog()
        req = d.create_request("BYE", f"SIP/2.0/UDP {HOME_ADDR[0]}:{HOME_ADDR[1]}")
        self.cseq[ZERO] = d.local_cseq
        self.layer.receive(bytes(req), HOME_ADDR, self.now)
        self.feed(io.RequestIn(self.now, ZERO, self.layer.next_event().transaction))

    def names(self) -> list[str]:
        return [n for n, _ in self.events]


def test_zero_is_offered_the_relays_own_sdp_and_rings_first() -> None:
    call = Dialled()
    call.dial()
    invite = call.invite_to_zero()
    assert invite.destination == HOME_ADDR and invite.message.body == b"our-offer"
    assert call.machine.state is CallState.ORIGINATING and call.machine.zero.address == HOME_ADDR
    assert call.event("created") == {"call": "c1", "peer_type": "USER", "peer": "alice", "caller": "alice",
                                     "to": "+15551230000", "origin": "originated"}
    call.zero_responds(180)
    assert call.event("connecting") == {"call": "c1", "channel": "ZERO"}
    assert not call.sent("INVITE", to=FAR_ADDR)   # ONE waits for ZERO's answer


def test_zero_answers_then_one_is_dialled_with_zeros_codec_and_bridged() -> None:
    call = Dialled()
    call.dial()
    call.zero_responds(180)
    call.zero_responds(200, body=SDP_ZERO)
    assert call.sent("ACK", to=HOME_ADDR)
    assert call.event("originated") == {"call": "c1", "peer_type": "LINE", "peer": "home"}
    invite = call.invite_to_one()
    assert invite.destination == FAR_ADDR and invite.message.body == b"our-offer"  # offer(ONE): ZERO's codec
    assert call.media_ops[:3] == ["allocate", "offer", "take_answer"]
    call.one_responds(180)
    call.one_responds(200, body=SDP_ONE)
    assert call.machine.state is CallState.CONNECTED and call.results == [None]
    assert call.event("connected") == {"call": "c1", "peer_type": "LINE", "peer": "far"}
    assert call.sent("ACK", to=FAR_ADDR)
    assert not call.sent("INVITE", to=HOME_ADDR)[1:]  # ZERO is never re-INVITEd
    assert call.names() == ["created", "connecting", "originated", "connecting", "connected"]


def test_a_bridged_originated_call_ends_with_bye_to_the_other_leg() -> None:
    call = Dialled()
    call.dial()
    call.zero_responds(200, body=SDP_ZERO)
    call.one_responds(200, body=SDP_ONE)
    call.bye_from_zero()
    assert call.event("hangup") == {"call": "c1", "channel": "ZERO"}
    bye = call.sent("BYE", to=FAR_ADDR)[0]
    call.respond_to(bye, 200)
    assert call.closed == "hangup" and call.released


def test_zero_not_answering_is_cancelled_once_and_the_call_fails_with_480() -> None:
    call = Dialled(ring_for=30)
    call.dial()
    call.zero_responds(180)
    call.advance(31)
    cancels = call.sent("CANCEL", to=HOME_ADDR)
    assert len(cancels) == 1
    assert call.event("failed") == {"call": "c1", "code": 480,
                                    "reason": "Temporarily Unavailable (channel ZERO did not answer)"}
    assert call.failures and call.failures[0].code == 480 and not call.sent("INVITE", to=FAR_ADDR)
    assert call.closed == "480 Temporarily Unavailable (channel ZERO did not answer)" and not call.released
    call.zero_responds(487)        # the INVITE's answer to the CANCEL
    call.advance(60)
    assert len(call.sent("CANCEL", to=HOME_ADDR)) == 1 and call.released


def test_zero_not_even_ringing_gets_its_cancel_once_it_rings() -> None:
    call = Dialled(ring_for=10)
    call.dial()
    call.advance(11)
    assert not call.sent("CANCEL") and call.closed    # RFC 3261 9.1: no CANCEL before a provisional
    call.zero_responds(180)
    assert len(call.sent("CANCEL", to=HOME_ADDR)) == 1


def test_zero_busy_fails_the_call_with_486_and_dials_nothing() -> None:
    call = Dialled()
    call.dial()
    call.zero_responds(486)
    assert call.event("failed") == {"call": "c1", "code": 486, "reason": "Whatever"}
    assert call.closed and call.released and not call.sent("INVITE", to=FAR_ADDR)
    assert "originated" not in call.names()


def test_one_failing_ends_zero_with_a_bye_and_a_hangup_that_says_why() -> None:
    call = Dialled()
    call.then = lambda: call.feed(io.AcceptIn(call.now, [Target("LINE", "far")], 60,
                                              lambda f: f and call.feed(io.RejectIn(call.now, f.code, f.reason))))
    call.dial()
    call.zero_responds(200, body=SDP_ZERO)
    call.one_responds(180)
    call.one_responds(486)
    assert call.event("hangup") == {"call": "c1", "channel": "ONE", "reason": "486 Whatever"}
    bye = call.sent("BYE", to=HOME_ADDR)
    assert len(bye) == 1
    call.respond_to(bye[0], 200)
    assert call.closed == "hangup"


def test_zero_hanging_up_while_one_rings_cancels_one() -> None:
    call = Dialled()
    call.dial()
    call.zero_responds(200, body=SDP_ZERO)
    call.one_responds(180)
    call.bye_from_zero()
    assert call.event("hangup") == {"call": "c1", "channel": "ZERO"}
    assert len(call.sent("CANCEL", to=FAR_ADDR)) == 1
    assert call.closed == "hangup" and not call.sent("BYE")


def test_hanging_up_before_zero_answers_cancels_it() -> None:
    call = Dialled()
    call.dial()
    call.zero_responds(180)
    call.feed(io.HangupIn(call.now))
    assert len(call.sent("CANCEL", to=HOME_ADDR)) == 1
    assert call.event("failed")["code"] == 487 and call.closed  # type: ignore[index]


def test_a_late_answer_from_zero_after_giving_up_is_acked_and_ended() -> None:
    call = Dialled(ring_for=10)
    call.dial()
    call.zero_responds(180)
    call.advance(11)
    call.zero_responds(200, body=SDP_ZERO)
    assert call.sent("ACK", to=HOME_ADDR) and call.sent("BYE", to=HOME_ADDR)
    assert "originated" not in call.names()


def test_zero_can_be_played_to_instead_of_bridged() -> None:
    call = Dialled()
    done: list[bool] = []
    call.then = lambda: call.feed(io.PlayIn(call.now, "hello.wav", True, lambda: done.append(True)))
    call.dial()
    call.zero_responds(200, body=SDP_ZERO)
    assert call.media_ops[-1] == "prompt"
    assert call.machine.playing is not None and not call.sent("INVITE", to=FAR_ADDR)
    call.feed(io.PlayDone(call.now))
    assert done == [True]


def test_dialling_a_call_twice_is_ignored_and_an_illegal_move_raises() -> None:
    call = Dialled()
    call.dial()
    call.dial()
    assert len([o for o in call.out if o.tag and o.tag[0] == "originate"]) == 1
    with pytest.raises(IllegalMove):
        call.machine._move(CallState.CONNECTED)


# ---- the program's blind transfer (transfer_call_session) ----------------------------------------------
def test_a_program_transfer_bridges_the_remaining_party_to_the_new_leg_and_ends_the_leaving_one() -> None:
    call = Call()
    call.connect()
    call.feed(io.TransferIn(call.now, ONE, [Target("LINE", "xfer", "+15550001111")], "+15550001111"))
    new = [o for o in call.out if o.kind == "request" and o.tag and o.tag[0] == "transfer"][-1]
    assert new.destination == XFER_ADDR and new.message.method == "INVITE"
    call.respond_to(new, 180)
    ok = parse_message(bytes(create_response(new.message, 200, "OK", to_tag="x1", body=SDP_ONE,
                                             content_type="application/sdp",
                                             headers=[("Contact", f"<sip:x@{XFER_ADDR[0]}:{XFER_ADDR[1]}>")])))
    call.feed(io.ResponseIn(call.now, new.tag, ok))
    assert call.sent("ACK", to=XFER_ADDR) and call.sent("BYE", to=FAR_ADDR)       # the leaving party ended
    assert call.sent("INVITE", to=ZERO_ADDR)                                      # the remaining one moved
    outcomes = [f["outcome"] for n, f in call.events if n == "transfer"]
    assert outcomes == ["trying", "ringing", "connected"] and not call.sent("NOTIFY")
    assert call.machine.state is CallState.CONNECTED


def test_a_program_transfer_that_fails_leaves_the_call_as_it_was() -> None:
    call = Call()
    call.connect()
    call.feed(io.TransferIn(call.now, ONE, [Target("LINE", "xfer", "+15550001111")], "+15550001111"))
    new = [o for o in call.out if o.kind == "request" and o.tag and o.tag[0] == "transfer"][-1]
    call.respond_to(new, 486)
    failed = [f for n, f in call.events if n == "transfer" and f["outcome"] == "failed"]
    assert failed and failed[0]["reason"] == "486 Whatever"
    assert call.machine.state is CallState.CONNECTED and not call.sent("BYE")


def test_a_program_transfer_of_a_call_not_connected_says_why() -> None:
    call = Call()
    call.start()
    call.feed(io.TransferIn(call.now, ONE, [Target("LINE", "xfer", "1")], "1"))
    failed = [f for n, f in call.events if n == "transfer"]
    assert failed and failed[0]["outcome"] == "failed" and failed[0]["reason"].startswith("481")


def test_a_retransmitted_2xx_from_zero_gets_the_same_ack_again() -> None:
    call = Dialled()
    call.dial()
    ok = call.zero_responds(200, body=SDP_ZERO)
    call.feed(io.StrayResponseIn(call.now, ok))
    acks = call.sent("ACK", to=HOME_ADDR)
    assert len(acks) == 2 and acks[0].message is acks[1].message and not call.sent("BYE")


def test_channel_zero_answering_without_sdp_is_hung_up_saying_why() -> None:
    call = Dialled()
    call.dial()
    call.zero_responds(200)
    assert call.event("hangup") == {"call": "c1", "channel": None,
                                    "reason": "no media with channel ZERO: channel ZERO's 200 OK carried no SDP "
                                              "answer to our offer"}
    assert call.sent("BYE", to=HOME_ADDR) and not call.sent("INVITE", to=FAR_ADDR)
