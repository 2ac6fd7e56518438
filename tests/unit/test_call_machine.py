"""Fake-clock specifications of the call machine (issue 8): the machine driven directly, no sockets,
no event loop; each test one behaviour a peer or the operator observes."""

from __future__ import annotations

import pytest
from calls_kit import FAR_ADDR, ONE, SDP_ONE, SDP_ZERO, ZERO, ZERO_ADDR, Call, anchored

from runtime.calls import CALL_TRANSITIONS, CallState, IllegalMove, Target, io
from runtime.media.base import MediaError
from runtime.sip.digest import DigestClient

CHALLENGE = ("Proxy-Authenticate", 'Digest realm="itsp", nonce="n1", algorithm=MD5')


# ---- the machine itself -----------------------------------------------------------------------------
def test_every_state_lists_its_moves_and_closed_is_final() -> None:
    assert set(CALL_TRANSITIONS) == set(CallState)
    assert CALL_TRANSITIONS[CallState.CLOSED] == frozenset()


def test_an_illegal_move_raises_with_the_call_id() -> None:
    call = Call()
    with pytest.raises(IllegalMove, match="c1"):
        call.machine._move(CallState.CONNECTED)


def test_inputs_arriving_while_media_is_busy_are_replayed_in_order_after_it() -> None:
    call = Call(hold_media=True)
    call.start()                       # waits for media allocation
    cancel = call.layer                # a CANCEL from the caller arrives meanwhile
    cancel.receive((f"CANCEL sip:+15551230000@192.0.2.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {ZERO_ADDR[0]}:"
                    f"{ZERO_ADDR[1]};branch=z9hG4bKzero1\r\nMax-Forwards: 70\r\nFrom: <sip:+15557654321@"
                    f"{ZERO_ADDR[0]}>;tag=z1\r\nTo: <sip:+15551230000@192.0.2.1:5060>\r\nCall-ID: zero-1\r\n"
                    f"CSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n").encode(), ZERO_ADDR, call.now)
    call.feed(io.CancelIn(call.now, cancel.next_event().transaction))
    assert call.closed is None and not call.responses(200, "CANCEL")
    call.hold_media = False
    call.answer_media()                # allocation done: `incoming`, routing, then the CANCEL
    assert call.responses(200, "CANCEL") and call.responses(487)
    assert call.closed == "cancelled" and call.released


def test_media_that_cannot_be_allocated_refuses_the_call_with_503() -> None:
    call = Call(hold_media=True)
    call.start()
    call.answer_media(MediaError("no ports"))
    assert call.responses(503) and call.closed and call.released


def test_a_media_step_that_fails_after_the_answer_ends_both_legs() -> None:
    call = Call(hold_media=True)
    call.start()
    call.answer_media()                # allocate
    call.answer_media()                # anchor the caller's offer
    call.one_responds(200, body=SDP_ONE)
    call.answer_media(MediaError("backend gone"))  # anchoring ONE's answer fails
    assert call.responses(500) and call.sent("BYE", to=FAR_ADDR)
    assert call.event("failed") == {"call": "c1", "code": 500, "reason": "Server Internal Error"}


def test_a_closed_call_leaves_no_timer_and_is_released() -> None:
    call = Call()
    call.connect()
    call.bye_from(ZERO)
    bye = call.sent("BYE", to=FAR_ADDR)[0]
    call.respond_to(bye, 200)
    assert call.closed == "hangup" and call.released and call.timers == {}
    assert call.machine.relays == {} and call.machine.on_result is None


# ---- 2: our 2xx retransmitted until the ACK; theirs ACKed with the CSeq it answers ------------------
def test_our_2xx_to_the_callers_invite_is_retransmitted_until_its_ack() -> None:
    call = Call()
    call.start()
    call.one_responds(200, body=SDP_ONE)
    call.advance(0.5)
    call.advance(1.0)
    assert len(call.responses(200)) == 3       # sent, then at T1 and 2*T1
    call.ack_from(ZERO)
    call.advance(30)
    assert len(call.responses(200)) == 3


def test_our_2xx_to_a_reinvite_is_retransmitted_until_its_ack() -> None:
    call = Call()
    call.connect()
    call.request_from(ZERO, "INVITE", body=SDP_ZERO)
    reinvite = call.sent("INVITE", to=FAR_ADDR)[-1]
    call.respond_to(reinvite, 200, body=SDP_ONE)
    call.advance(0.5)
    assert len(call.responses(200)) == 3       # the initial 200, the re-INVITE's, its retransmission
    call.ack_from(ZERO)
    call.advance(30)
    assert len(call.responses(200)) == 3 and call.machine.state is CallState.CONNECTED


def test_a_retransmitted_2xx_to_a_reinvite_is_acked_with_that_reinvites_cseq() -> None:
    call = Call()
    call.connect()
    call.request_from(ZERO, "INVITE", body=SDP_ZERO)
    reinvite = call.sent("INVITE", to=FAR_ADDR)[-1]
    ok = call.respond_to(reinvite, 200, body=SDP_ONE)
    call.feed(io.StrayResponseIn(call.now, ok))
    acks = call.sent("ACK", to=FAR_ADDR)
    assert [a.message.cseq[0] for a in acks] == [1, 2, 2]


def test_no_ack_for_our_2xx_ends_the_call_with_a_hangup_that_says_so() -> None:
    call = Call()
    call.start()
    call.one_responds(200, body=SDP_ONE)
    call.advance(40)
    assert call.event("hangup") == {"call": "c1", "channel": "ZERO", "reason": "no ACK"}
    assert call.sent("BYE", to=FAR_ADDR) and call.sent("BYE", to=ZERO_ADDR)


# ---- 3: forked 2xx ---------------------------------------------------------------------------------
def test_a_second_2xx_from_another_fork_gets_its_own_ack_then_a_bye() -> None:
    call = Call()
    call.connect()
    call.one_responds(200, to_tag="b2", body=SDP_ONE, stray=True)
    acks = call.sent("ACK", to=FAR_ADDR)
    byes = call.sent("BYE", to=FAR_ADDR)
    assert [a.message.to_tag for a in acks] == ["b1", "b2"]
    assert [b.message.to_tag for b in byes] == ["b2"] and call.machine.state is CallState.CONNECTED


def test_a_retransmitted_2xx_of_the_kept_dialog_is_acked_again_not_byed() -> None:
    call = Call()
    call.connect()
    call.one_responds(200, body=SDP_ONE, stray=True)
    assert len(call.sent("ACK", to=FAR_ADDR)) == 2 and not call.sent("BYE")


# ---- 6: a BYE waits for the ACK of our 2xx ------------------------------------------------------------
def test_a_bye_from_one_while_our_2xx_waits_for_its_ack_waits_for_that_ack() -> None:
    call = Call()
    call.start()
    call.one_responds(200, body=SDP_ONE)
    call.bye_from(ONE)
    call.advance(0.5)
    assert not call.sent("BYE", to=ZERO_ADDR) and len(call.responses(200)) == 2  # still resent
    call.ack_from(ZERO)
    assert len(call.sent("BYE", to=ZERO_ADDR)) == 1


def test_a_bye_waiting_for_an_ack_that_never_comes_goes_at_the_2xx_timeout() -> None:
    call = Call()
    call.start()
    call.one_responds(200, body=SDP_ONE)
    call.bye_from(ONE)
    call.advance(40)
    assert len(call.sent("BYE", to=ZERO_ADDR)) == 1 and call.closed is None  # the BYE's answer closes it


# ---- 7: remote target and route set ----------------------------------------------------------------
def test_in_dialog_requests_to_a_line_go_to_its_contact() -> None:
    call = Call()
    call.start()
    call.one_responds(200, body=SDP_ONE, headers=[("Contact", "<sip:media@203.0.113.9:5070>")])
    call.ack_from(ZERO)
    call.bye_from(ZERO)
    assert [b.destination for b in call.sent("BYE")] == [("203.0.113.9", 5070)]


def test_in_dialog_requests_follow_the_route_set() -> None:
    call = Call()
    call.start()
    call.one_responds(200, body=SDP_ONE, headers=[("Record-Route", "<sip:203.0.113.50:5080;lr>")])
    call.ack_from(ZERO)
    call.bye_from(ZERO)
    bye = call.sent("BYE")[0]
    assert bye.destination == ("203.0.113.50", 5080) and bye.message.headers.get("route")


def test_a_registered_phone_behind_nat_is_reached_at_its_source_not_its_contact() -> None:
    call = Call(peer_type="USER", contact="<sip:alice@10.0.0.5:5062>")
    call.connect()
    call.bye_from(ONE)
    bye = call.sent("BYE", to=ZERO_ADDR)[0]
    assert bye.message.uri == "sip:alice@10.0.0.5:5062"  # addressed to its Contact, sent to its source


# ---- 8: target refresh; our 200 to CANCEL; one CANCEL per fork -----------------------------------------
def test_only_target_refresh_requests_move_the_remote_target() -> None:
    call = Call()
    call.connect()
    call.request_from(ONE, "INFO", headers=[("Contact", "<sip:moved@203.0.113.20>")])
    assert call.machine.one.dialog.remote_target == f"sip:far@{FAR_ADDR[0]}:{FAR_ADDR[1]}"
    call.request_from(ONE, "UPDATE", headers=[("Contact", "<sip:moved@203.0.113.20>")])
    assert call.machine.one.dialog.remote_target == "sip:moved@203.0.113.20"


def test_our_200_to_a_cancel_carries_our_to_tag() -> None:
    call = Call()
    call.start()
    call.one_responds(180)
    call.layer.receive((f"CANCEL sip:+15551230000@192.0.2.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {ZERO_ADDR[0]}:"
                        f"{ZERO_ADDR[1]};branch=z9hG4bKzero1\r\nMax-Forwards: 70\r\nFrom: <sip:+15557654321@"
                        f"{ZERO_ADDR[0]}>;tag=z1\r\nTo: <sip:+15551230000@192.0.2.1:5060>\r\nCall-ID: zero-1\r\n"
                        f"CSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n").encode(), ZERO_ADDR, call.now)
    call.feed(io.CancelIn(call.now, call.layer.next_event().transaction))
    assert call.responses(200, "CANCEL")[0].to_tag == call.machine.local_tag == call.responses(487)[0].to_tag
    assert len(call.sent("CANCEL")) == 1


def test_a_no_answer_timeout_sends_one_cancel_whatever_follows() -> None:
    call = Call()
    call.route = lambda c: c.feed(io.AcceptIn(c.now, [Target("LINE", "far")], 20, lambda failure: c.feed(
        io.RejectIn(c.now, 480, "Temporarily Unavailable"))))
    call.start()
    call.one_responds(180)
    call.advance(21)
    call.feed(io.HangupIn(call.now))
    assert len(call.sent("CANCEL")) == 1 and call.responses(480)


# ---- 1: late offer in re-INVITEs ----------------------------------------------------------------------
def test_a_reinvite_without_sdp_carries_the_callers_answer_in_our_ack_to_the_far_leg() -> None:
    call = Call()
    call.connect()
    call.request_from(ZERO, "INVITE")                 # hold/resume with late offer: no SDP
    reinvite = call.sent("INVITE", to=FAR_ADDR)[-1]
    assert not reinvite.message.body
    call.respond_to(reinvite, 200, body=SDP_ONE)      # the far leg offers in its 2xx
    assert len(call.sent("ACK", to=FAR_ADDR)) == 1    # no empty ACK at once
    relayed = call.responses(200)[-1]
    assert relayed.body == anchored(SDP_ONE)
    call.ack_from(ZERO, body=SDP_ZERO)                # the caller answers in its ACK
    ack = call.sent("ACK", to=FAR_ADDR)[-1].message
    assert ack.cseq[0] == 2 and ack.body == anchored(SDP_ZERO)


# ---- 4: glare ------------------------------------------------------------------------------------------
def test_a_reinvite_while_ours_is_pending_on_that_dialog_gets_491() -> None:
    call = Call()
    call.connect()
    call.request_from(ZERO, "INVITE", body=SDP_ZERO)  # relayed to ONE, not answered yet
    call.request_from(ONE, "INVITE", body=SDP_ONE)    # ONE re-INVITEs at the same time
    assert call.responses(491)
    assert len(call.sent("INVITE", to=ZERO_ADDR)) == 0


def test_a_491_from_the_far_leg_reaches_the_originator_which_retries_after_its_own_14_1_wait() -> None:
    call = Call()
    call.connect()
    call.request_from(ZERO, "INVITE", body=SDP_ZERO)
    call.respond_to(call.sent("INVITE", to=FAR_ADDR)[-1], 491)
    assert call.responses(491)
    call.request_from(ZERO, "INVITE", body=SDP_ZERO)  # its retry is relayed: nothing left pending
    assert len(call.sent("INVITE", to=FAR_ADDR)) == 3


# ---- 5: in-dialog challenges answered with the line's credentials ------------------------------------
def test_a_bye_challenged_by_the_line_is_answered_with_its_credentials_once_per_nonce() -> None:
    call = Call(auth=DigestClient("trunk1", "s3cret"))
    call.connect()
    call.bye_from(ZERO)
    call.respond_to(call.sent("BYE", to=FAR_ADDR)[0], 407, headers=[CHALLENGE])
    retry = call.sent("BYE", to=FAR_ADDR)[1]
    assert retry.message.headers.get("proxy-authorization") and call.closed is None
    call.respond_to(retry, 407, headers=[CHALLENGE])  # the same nonce again: given up
    assert len(call.sent("BYE", to=FAR_ADDR)) == 2 and call.closed == "hangup"


def test_a_reinvite_challenged_by_the_line_is_answered_by_us_and_the_phone_never_sees_it() -> None:
    call = Call(auth=DigestClient("trunk1", "s3cret"))
    call.connect()
    call.request_from(ZERO, "INVITE", body=SDP_ZERO)
    call.respond_to(call.sent("INVITE", to=FAR_ADDR)[-1], 407, headers=[CHALLENGE])
    retry = call.sent("INVITE", to=FAR_ADDR)[-1]
    assert retry.message.headers.get("proxy-authorization") and not call.responses(407)
    call.respond_to(retry, 200, body=SDP_ONE)
    assert len(call.responses(200)) == 2


# ---- 11: maximum duration and RTP inactivity -------------------------------------------------------
def test_a_call_longer_than_the_maximum_duration_is_hung_up_with_a_reason_saying_so() -> None:
    call = Call(max_duration=3600)
    call.connect()
    call.advance(3600)
    assert "maximum call duration" in str(call.event("hangup")["reason"])  # type: ignore[index]
    assert call.sent("BYE", to=ZERO_ADDR) and call.sent("BYE", to=FAR_ADDR)


def test_a_call_whose_rtp_stopped_both_ways_is_hung_up_with_a_reason_saying_so() -> None:
    call = Call(rtp_timeout=30)
    call.connect()
    call.packets = (100, 100)
    call.advance(30)
    assert call.event("hangup") is None               # media flowed in the last 30 s
    call.advance(30)
    assert "no RTP" in str(call.event("hangup")["reason"])  # type: ignore[index]
    assert call.sent("BYE", to=ZERO_ADDR) and call.sent("BYE", to=FAR_ADDR)


# ---- per-user call limits count both directions (issue 9) --------------------------------------------
def test_a_user_at_its_call_limit_is_not_rung_and_calls_it_receives_count() -> None:
    import asyncio
    from types import SimpleNamespace

    from runtime.engine import Engine

    async def scenario() -> tuple[int, object]:
        engine = Engine(advertise="127.0.0.1")  # not started: only its call tables are used
        engine.add_user("bob", "pw", max_calls=1)
        ringing_bob = Call(destinations={"bob": [("198.51.100.9", 5060)]})
        ringing_bob.route = lambda c: c.feed(io.AcceptIn(c.now, [Target("USER", "bob")], None, c.results.append))
        ringing_bob.start()
        engine.calls["c1"] = SimpleNamespace(machine=ringing_bob.machine)  # type: ignore[assignment]
        legs, failure = engine.build_forks(Call().machine, Target("USER", "bob"), b"", 0.0)
        assert legs == []
        return engine.calls_of_user("bob"), failure

    count, failure = asyncio.run(scenario())
    assert count == 1 and getattr(failure, "code", None) == 486


def test_a_reinvite_from_the_far_leg_without_sdp_carries_the_callers_answer_in_our_ack_to_it() -> None:
    call = Call()
    call.connect()
    call.request_from(ONE, "INVITE")
    reinvite = call.sent("INVITE", to=ZERO_ADDR)[-1]
    call.respond_to(reinvite, 200, body=SDP_ZERO)     # the caller offers in its 2xx
    assert not call.sent("ACK", to=ZERO_ADDR)
    call.ack_from(ONE, body=SDP_ONE)
    ack = call.sent("ACK", to=ZERO_ADDR)[-1].message
    assert ack.body == anchored(SDP_ONE)


def test_a_challenge_we_cannot_answer_is_not_passed_to_the_phone() -> None:
    call = Call()                                      # no credentials for this line
    call.connect()
    call.request_from(ZERO, "INVITE", body=SDP_ZERO)
    call.respond_to(call.sent("INVITE", to=FAR_ADDR)[-1], 407, headers=[CHALLENGE])
    assert not call.responses(407) and call.responses(403)


def test_the_status_page_snapshot_names_both_legs_and_the_codec() -> None:
    from runtime.calls import CallSession

    call = Call()
    call.connect()
    call.now = 12.0
    session = CallSession.__new__(CallSession)
    session.machine, session.created_wall = call.machine, 1_700_000_000.0
    session.runner = type("R", (), {"now": lambda self: call.now})()
    snap = session.snapshot()
    assert snap["state"] == "connected" and snap["duration"] == 12.0 and snap["to"] == "+15551230000"
    assert [(leg["channel"], leg["peer_type"], leg["address"]) for leg in snap["legs"]] == [
        ("ZERO", "LINE", "198.51.100.1:5060"), ("ONE", "LINE", "203.0.113.7:5060")]
    assert snap["legs"][1]["codec"] == "PCMU" and snap["answered_at"] == 1_700_000_000.0


# ---- a step that fails never wedges a call, whatever the step ---------------------------------------
def _failing(call: Call, error: BaseException) -> None:
    """Answer the pending media step with `error` (a backend failure, or a cancelled step)."""
    call.answer_media(error)


def test_an_unreadable_offer_from_the_caller_is_refused_with_488_and_the_call_closed() -> None:
    from runtime.sip.sdp import SdpError

    call = Call(hold_media=True)
    call.start()
    call.answer_media()                               # allocate
    _failing(call, SdpError("no m= line"))            # anchoring the caller's offer
    assert call.responses(488) and call.closed and not call.sent("INVITE")


@pytest.mark.parametrize("error", [MediaError("backend gone"), MediaError("media step anchor cancelled")])
def test_a_media_step_that_fails_or_is_cancelled_while_dialling_refuses_the_call(error: MediaError) -> None:
    call = Call(hold_media=True)
    call.start()
    call.answer_media()
    _failing(call, error)
    assert call.responses(500) and call.closed and call.released


def test_an_unreadable_early_media_answer_gives_the_caller_plain_ringing() -> None:
    from runtime.sip.sdp import SdpError

    call = Call(hold_media=True)
    call.start()
    call.answer_media()
    call.answer_media()
    call.one_responds(183, body=SDP_ONE)
    _failing(call, SdpError("garbled"))
    assert call.responses(180) and call.machine.state is CallState.DIALING


def test_an_unreadable_offer_in_a_reinvite_is_refused_488_and_the_call_goes_on() -> None:
    from runtime.sip.sdp import SdpError

    call = Call()
    call.connect()
    call.hold_media = True
    call.request_from(ZERO, "INVITE", body=SDP_ZERO)
    _failing(call, SdpError("garbled"))
    assert call.responses(488) and call.machine.state is CallState.CONNECTED
    call.hold_media = False
    call.request_from(ZERO, "INVITE", body=SDP_ZERO)  # nothing left pending: the next one is relayed
    assert len(call.sent("INVITE", to=FAR_ADDR)) == 2


def test_a_file_that_cannot_be_played_lets_the_plan_go_on() -> None:
    done: list[str] = []
    call = Call(hold_media=True)
    call.route = lambda c: c.feed(io.PlayIn(c.now, "closed.wav", False, lambda: done.append("next step")))
    call.start()
    call.answer_media()                               # allocate
    _failing(call, MediaError("no codec we can play"))  # answering the caller's offer
    assert done == ["next step"] and call.machine.state is CallState.ROUTING


def test_a_playback_that_fails_midway_lets_the_plan_go_on() -> None:
    done: list[str] = []
    call = Call()
    call.route = lambda c: c.feed(io.PlayIn(c.now, "closed.wav", True, lambda: done.append("next step")))
    call.start()
    call.ack_from(ZERO)
    call.feed(io.PlayDone(call.now, MediaError("socket closed")))
    assert done == ["next step"] and call.machine.state is CallState.ANSWERED


def test_an_action_the_runner_could_not_carry_out_ends_the_call() -> None:
    call = Call()
    call.connect()
    call.feed(io.ActionFailed(call.now, OSError("no route to host")))
    assert call.sent("BYE", to=ZERO_ADDR) and call.sent("BYE", to=FAR_ADDR)


# ---- forks racing ------------------------------------------------------------------------------------
B_ADDR = ("203.0.113.8", 5060)


def test_a_fork_that_answers_after_another_won_gets_its_own_ack_and_a_bye() -> None:
    call = Call(destinations={"far": [FAR_ADDR, B_ADDR]})
    call.start()
    first, second = call.invite_to_one(0), call.invite_to_one(1)
    call.one_responds(180, out=second, to_tag="c1")
    call.one_responds(200, body=SDP_ONE, out=first)
    assert len(call.sent("CANCEL", to=B_ADDR)) == 1
    call.one_responds(200, body=SDP_ONE, out=second, to_tag="c1")  # the CANCEL crossed its 2xx
    assert [a.message.to_tag for a in call.sent("ACK")] == ["b1", "c1"]
    assert [b.message.to_tag for b in call.sent("BYE")] == ["c1"] and call.machine.state is CallState.CONNECTED


def test_a_fork_that_answers_after_the_caller_cancelled_is_acked_and_byed_then_the_call_is_released() -> None:
    call = Call()
    call.start()
    call.one_responds(180)
    call.feed(io.HangupIn(call.now))                  # the plan gives up: CANCEL, 480 to the caller
    assert call.closed and not call.released           # the cancelled fork may still answer
    call.one_responds(200, body=SDP_ONE)
    assert call.sent("ACK", to=FAR_ADDR) and call.sent("BYE", to=FAR_ADDR) and call.released


def test_a_cancelled_fork_that_never_answers_is_released_after_64_t1() -> None:
    call = Call()
    call.start()
    call.one_responds(180)
    call.feed(io.HangupIn(call.now))
    call.advance(32)
    assert call.released
