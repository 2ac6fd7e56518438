"""Fake-clock specifications of session timers (RFC 4028) and UPDATE (RFC 3311) on the call machine
(issue 8, behaviour 9): each leg has its own session timer with Callflow; a refresh never ends a call
because one leg does not do UPDATE, and a call whose refreshes stop is ended on both legs."""

from __future__ import annotations

from calls_kit import FAR_ADDR, SDP_ONE, SDP_ZERO, ZERO, ZERO_ADDR, Call, anchored

from runtime.calls import CallState, io
from runtime.sip.message import Request, Response

TIMER_CALLER = ["Session-Expires: 1800;refresher=uac", "Supported: timer"]
REFRESH = [("Session-Expires", "1800;refresher=uac"), ("Supported", "timer")]
ALLOW_UPDATE = ("Allow", "INVITE, ACK, CANCEL, BYE, UPDATE")
ALLOW_NO_UPDATE = ("Allow", "INVITE, ACK, CANCEL, BYE")


def connected(invite_headers: list[str] | None = None, one_headers: list[tuple[str, str]] | None = None) -> Call:
    """A call whose caller (ZERO) may ask for a session timer, connected to the far leg (ONE)."""
    call = Call(invite_headers=invite_headers or [])
    call.start()
    call.one_responds(180)
    call.one_responds(200, body=SDP_ONE, headers=one_headers)
    call.ack_from(ZERO)
    assert call.machine.state is CallState.CONNECTED
    return call


def last_response(call: Call, method: str) -> Response:
    return [o.message for o in call.out if isinstance(o.message, Response) and o.message.cseq[1] == method][-1]


def requests_to_far(call: Call, method: str) -> list[Request]:
    return [o.message for o in call.sent(method, to=FAR_ADDR)]  # type: ignore[misc]


# ---- negotiation ------------------------------------------------------------------------------------
def test_our_200_to_the_caller_carries_its_session_interval_and_require_timer() -> None:
    call = connected(TIMER_CALLER)
    ok = call.responses(200)[0]
    assert ok.headers.get("session-expires") == "1800;refresher=uac"
    assert ok.headers.get("require") == "timer"


def test_a_caller_without_timer_support_gets_us_as_its_refresher_and_no_require() -> None:
    call = connected(["Session-Expires: 1800"])
    ok = call.responses(200)[0]
    assert ok.headers.get("session-expires") == "1800;refresher=uas" and ok.headers.get("require") is None


def test_a_call_without_session_expires_gets_no_session_timer() -> None:
    call = connected()
    assert call.responses(200)[0].headers.get("session-expires") is None
    assert "session-expires" not in {n.lower() for n, _ in call.invite_to_one().message.headers}
    call.advance(7200)
    assert call.machine.state is CallState.CONNECTED


def test_a_session_interval_below_our_min_se_is_refused_with_422_and_our_min_se() -> None:
    call = Call(invite_headers=["Session-Expires: 30", "Supported: timer"])
    call.start()
    refusal = call.responses(422)[0]
    assert refusal.headers.get("min-se") == "90" and call.closed and not call.sent("INVITE")


def test_the_far_leg_is_offered_the_callers_session_interval() -> None:
    call = Call(invite_headers=TIMER_CALLER)
    call.start()
    invite = call.invite_to_one().message
    assert invite.headers.get("session-expires") == "1800" and invite.headers.get("supported") == "timer"
    assert invite.headers.get("min-se") == "90"


def test_a_422_from_the_far_leg_is_retried_once_with_the_interval_its_min_se_asks() -> None:
    call = Call(invite_headers=TIMER_CALLER)
    call.start()
    call.one_responds(422, headers=[("Min-SE", "3600")])
    retry = call.invite_to_one().message
    assert len(call.sent("INVITE", to=FAR_ADDR)) == 2 and retry.headers.get("session-expires") == "3600"
    assert retry.cseq[0] == 2 and not call.responses(422)


def test_an_in_dialog_refresh_below_our_min_se_gets_422() -> None:
    call = connected(TIMER_CALLER)
    call.request_from(ZERO, "UPDATE", headers=[("Session-Expires", "60"), ("Supported", "timer")])
    assert last_response(call, "UPDATE").status == 422 and not call.sent("UPDATE")


# ---- UPDATE refreshes and a leg without UPDATE --------------------------------------------------------
def test_a_refresh_update_is_answered_by_us_when_the_far_leg_does_not_list_update() -> None:
    call = connected(TIMER_CALLER, [ALLOW_NO_UPDATE])
    call.request_from(ZERO, "UPDATE", headers=REFRESH)
    ok = last_response(call, "UPDATE")
    assert ok.status == 200 and ok.headers.get("session-expires") == "1800;refresher=uac"
    assert ok.headers.get("require") == "timer" and not call.sent("UPDATE")


def test_a_refresh_update_is_relayed_when_the_far_leg_lists_update() -> None:
    call = connected(TIMER_CALLER, [ALLOW_UPDATE])
    call.request_from(ZERO, "UPDATE", headers=REFRESH)
    relayed = call.sent("UPDATE", to=FAR_ADDR)[0]
    call.respond_to(relayed, 200, headers=[("Session-Expires", "1800;refresher=uas")])
    ok = last_response(call, "UPDATE")
    assert ok.status == 200 and ok.headers.get("session-expires") == "1800;refresher=uac"


def test_a_501_to_a_relayed_refresh_update_is_answered_200_by_us_and_the_call_stays_up() -> None:
    call = connected(TIMER_CALLER, [ALLOW_UPDATE])
    call.request_from(ZERO, "UPDATE", headers=REFRESH)
    call.respond_to(call.sent("UPDATE", to=FAR_ADDR)[0], 501)
    assert last_response(call, "UPDATE").status == 200 and not call.responses(501, "UPDATE")
    call.request_from(ZERO, "UPDATE", headers=REFRESH)   # the next refresh is not even tried there
    assert len(call.sent("UPDATE", to=FAR_ADDR)) == 1 and call.machine.state is CallState.CONNECTED


def test_a_reinvite_refresh_is_relayed_with_the_far_legs_own_session_timer() -> None:
    call = connected(TIMER_CALLER, [("Session-Expires", "1800;refresher=uas")])
    call.request_from(ZERO, "INVITE", body=SDP_ZERO, headers=REFRESH)
    reinvite = requests_to_far(call, "INVITE")[-1]
    assert reinvite.headers.get("session-expires") == "1800;refresher=uas"
    call.respond_to(call.sent("INVITE", to=FAR_ADDR)[-1], 200, body=SDP_ONE,
                    headers=[("Session-Expires", "1800;refresher=uas")])
    ok = call.responses(200)[-1]
    assert ok.headers.get("session-expires") == "1800;refresher=uac" and ok.body == anchored(SDP_ONE)


# ---- the peer refreshes: ended when it stops --------------------------------------------------------
def test_refreshes_from_the_caller_in_time_keep_the_call_up() -> None:
    call = connected(TIMER_CALLER, [ALLOW_NO_UPDATE])
    for _ in range(6):
        call.advance(900)
        call.request_from(ZERO, "UPDATE", headers=REFRESH)
    assert call.machine.state is CallState.CONNECTED and call.event("hangup") is None


def test_a_call_whose_refreshes_stop_is_ended_on_both_legs_with_a_hangup_saying_so() -> None:
    call = connected(["Session-Expires: 90;refresher=uac", "Supported: timer"])
    call.advance(59)
    assert call.machine.state is CallState.CONNECTED
    call.advance(2)                    # 90 s minus min(32 s, 30 s)
    assert call.event("hangup") == {"call": "c1", "channel": None,
                                    "reason": "session expired: no refresh on channel ZERO within 90 s"}
    assert call.sent("BYE", to=ZERO_ADDR) and call.sent("BYE", to=FAR_ADDR)


# ---- we refresh ------------------------------------------------------------------------------------
def test_we_refresh_a_leg_whose_2xx_names_us_refresher_with_update_at_half_the_interval() -> None:
    call = connected(None, [("Session-Expires", "1800;refresher=uac"), ALLOW_UPDATE])
    call.advance(899)
    assert not call.sent("UPDATE")
    call.advance(1)
    update = call.sent("UPDATE", to=FAR_ADDR)[0]
    assert update.message.headers.get("session-expires") == "1800;refresher=uac" and not update.message.body
    call.respond_to(update, 200, headers=[("Session-Expires", "1800;refresher=uac")])
    call.advance(900)
    assert len(call.sent("UPDATE", to=FAR_ADDR)) == 2 and call.machine.state is CallState.CONNECTED


def test_we_refresh_a_leg_without_update_with_a_reinvite_repeating_our_sdp_and_ack_it() -> None:
    call = connected(TIMER_CALLER, [("Session-Expires", "1800;refresher=uac"), ALLOW_NO_UPDATE])
    call.advance(900)
    reinvite = call.sent("INVITE", to=FAR_ADDR)[-1]
    assert reinvite.message.body == call.invite_to_one().message.body == anchored(SDP_ZERO)
    call.respond_to(reinvite, 200, body=SDP_ONE, headers=[("Session-Expires", "1800;refresher=uac")])
    assert call.sent("ACK", to=FAR_ADDR)[-1].message.cseq[0] == reinvite.message.cseq[0]
    assert not call.sent("INVITE", to=ZERO_ADDR) and call.machine.state is CallState.CONNECTED


def test_a_refresh_update_answered_501_is_sent_again_as_a_reinvite() -> None:
    call = connected(TIMER_CALLER, [("Session-Expires", "1800;refresher=uac"), ALLOW_UPDATE])
    call.advance(900)
    call.respond_to(call.sent("UPDATE", to=FAR_ADDR)[0], 501)
    assert call.sent("INVITE", to=FAR_ADDR)[-1].tag[0] == "refresh"
    assert call.machine.state is CallState.CONNECTED


def test_we_refresh_a_caller_that_does_not_support_timers() -> None:
    call = connected(["Session-Expires: 1800"])
    call.advance(900)
    reinvite = call.sent("INVITE", to=ZERO_ADDR)[0]
    assert reinvite.message.body == anchored(SDP_ONE)
    assert reinvite.message.headers.get("session-expires") == "1800;refresher=uac"


def test_a_481_to_our_refresh_ends_the_call_with_a_hangup_saying_so() -> None:
    call = connected(TIMER_CALLER, [("Session-Expires", "1800;refresher=uac"), ALLOW_UPDATE])
    call.advance(900)
    call.respond_to(call.sent("UPDATE", to=FAR_ADDR)[0], 481)
    assert call.event("hangup") == {"call": "c1", "channel": None,
                                    "reason": "session refresh failed: 481 from channel ONE"}
    assert call.sent("BYE", to=ZERO_ADDR) and call.sent("BYE", to=FAR_ADDR)


def test_a_refresh_that_gets_no_answer_ends_the_call() -> None:
    call = connected(TIMER_CALLER, [("Session-Expires", "1800;refresher=uac"), ALLOW_UPDATE])
    call.advance(900)
    update = call.sent("UPDATE", to=FAR_ADDR)[0]
    call.feed(io.ResponseIn(call.now, update.tag, None))
    assert call.event("hangup")["reason"] == "session refresh failed: 408 from channel ONE"  # type: ignore[index]


def test_a_refresh_refused_otherwise_leaves_the_call_until_its_session_expires() -> None:
    call = connected(TIMER_CALLER, [("Session-Expires", "1800;refresher=uac"), ALLOW_UPDATE])
    call.advance(900)
    call.respond_to(call.sent("UPDATE", to=FAR_ADDR)[0], 500)
    assert call.machine.state is CallState.CONNECTED
    call.advance(900)
    assert call.event("hangup")["reason"].startswith("session expired")  # type: ignore[index]


def test_a_refresh_due_while_a_reinvite_is_in_progress_waits_for_it() -> None:
    call = connected(None, [("Session-Expires", "1800;refresher=uac"), ALLOW_UPDATE])
    call.advance(899)
    call.request_from(ZERO, "INVITE", body=SDP_ZERO)   # hold, say, towards ONE
    call.advance(1)
    assert not call.sent("UPDATE")
    call.respond_to(call.sent("INVITE", to=FAR_ADDR)[-1], 200, body=SDP_ONE,
                    headers=[("Session-Expires", "1800;refresher=uac")])
    call.ack_from(ZERO)
    call.advance(899)                  # the re-INVITE's 2xx refreshed ONE's session too
    assert not call.sent("UPDATE") and call.machine.state is CallState.CONNECTED
    call.advance(1)
    assert call.sent("UPDATE", to=FAR_ADDR)
