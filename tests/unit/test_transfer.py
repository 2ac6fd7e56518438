"""Fake-clock specifications of transfer (issue 8, behaviour 10; RFC 3515 REFER, 3420 sipfrag): a user's
phone asks to transfer the other party; Callflow answers 202, routes the Refer-To target like a new
call from that user, reports progress in NOTIFYs, bridges the remaining party to the new leg and ends
the transferor's leg. Here the transferor is alice on channel ZERO (a registered phone that called
out) unless a spec says otherwise; the remaining party is line `far` on ONE; the rules send a
transfer's target to line `xfer` (calls_kit.FakeEnv.route_transfer)."""

from __future__ import annotations

from calls_kit import FAR_ADDR, SDP_ONE, XFER_ADDR, ZERO, ZERO_ADDR, Call, Out, anchored

from runtime.calls import CallState, Channel, Target, io
from runtime.calls.legs import Failure
from runtime.sip.dialog import Dialog
from runtime.sip.message import Request, Response, create_response, parse_message
from runtime.sip.transaction import RequestReceived

ONE = Channel.ONE
SDP_XFER = b"v=0\r\no=x 1 1 IN IP4 203.0.113.9\r\ns=-\r\nc=IN IP4 203.0.113.9\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\n"
REFER_TO = [("Refer-To", "<sip:+15550001111@192.0.2.1>"), ("Referred-By", "<sip:alice@192.0.2.1>")]


def connected(peer_type: str = "USER") -> Call:
    call = Call(peer_type=peer_type)
    call.connect()
    assert call.machine.state is CallState.CONNECTED
    return call


def notifies(call: Call, to: tuple[str, int] = ZERO_ADDR) -> list[tuple[bytes, str]]:
    """The sipfrag status lines NOTIFYed to the transferor, with their Subscription-State."""
    return [(o.message.body, o.message.headers.get("subscription-state") or "") for o in call.sent("NOTIFY", to=to)]


def xfer_invite(call: Call) -> Out:
    return [o for o in call.sent("INVITE", to=XFER_ADDR) if o.tag[0] == "transfer"][-1]


def xfer_responds(call: Call, status: int, body: bytes = b"") -> Response:
    out = xfer_invite(call)
    resp = create_response(out.message, status, "OK" if status == 200 else "Whatever", to_tag="x1",
                           headers=[("Contact", f"<sip:bob@{XFER_ADDR[0]}:{XFER_ADDR[1]}>")], body=body,
                           content_type="application/sdp" if body else None)
    resp = parse_message(bytes(resp))
    call.feed(io.ResponseIn(call.now, out.tag, resp))
    return resp


def events(call: Call) -> list[str]:
    return [str(f["outcome"]) for n, f in call.events if n == "transfer"]


def transferred(call: Call) -> None:
    call.request_from(ZERO, "REFER", headers=REFER_TO)
    xfer_responds(call, 180)
    xfer_responds(call, 200, body=SDP_XFER)


TRANSFEROR_LEFT = {"call": "c1", "channel": "ZERO", "reason": "transferred"}  # the BYE to the transferor


def hangups(call: Call) -> list[dict[str, object]]:
    return [fields for name, fields in call.events if name == "hangup"]


def request_from_new_party(call: Call, channel: Channel, method: str) -> None:
    """The new party (reached at XFER_ADDR) sends an in-dialog request on the leg it now holds."""
    d = Dialog.as_uas(xfer_invite(call).message, "x1")  # type: ignore[arg-type]
    req = d.create_request(method, f"SIP/2.0/UDP {XFER_ADDR[0]}:{XFER_ADDR[1]}")
    call.layer.receive(bytes(req), XFER_ADDR, call.now)
    event = call.layer.next_event()
    assert isinstance(event, RequestReceived) and event.transaction is not None
    call.feed(io.RequestIn(call.now, channel, event.transaction))


# ---- accepting and routing ---------------------------------------------------------------------------
def test_a_refer_from_a_users_phone_gets_202_and_a_notify_saying_100_trying() -> None:
    call = connected()
    call.request_from(ZERO, "REFER", headers=REFER_TO)
    assert call.responses(202, "REFER")
    assert notifies(call) == [(b"SIP/2.0 100 Trying\r\n", "active;expires=60")]
    notify = call.sent("NOTIFY", to=ZERO_ADDR)[0].message
    assert notify.headers.get("event") == "refer" and notify.headers.get("content-type") == \
        "message/sipfrag;version=2.0"


def test_the_refer_to_target_is_routed_as_a_call_from_the_transferring_user() -> None:
    call = connected()
    call.machine.zero.peer = "alice"
    call.request_from(ZERO, "REFER", headers=REFER_TO)
    assert call.machine.env.transfers_routed == [("alice", "+15550001111")]  # type: ignore[attr-defined]
    invite = xfer_invite(call).message
    assert invite.body == b"our-offer" and not call.sent("REFER")   # carried out, not relayed


def test_a_transfer_the_rules_refuse_is_reported_to_the_transferor_and_the_call_stays_up() -> None:
    call = connected()
    call.machine.env.refused["+15550001111"] = Failure(403, "Forbidden (no route)")  # type: ignore[attr-defined]
    call.request_from(ZERO, "REFER", headers=REFER_TO)
    assert notifies(call)[-1] == (b"SIP/2.0 403 Forbidden (no route)\r\n", "terminated;reason=noresource")
    assert not call.sent("INVITE", to=XFER_ADDR) and call.machine.state is CallState.CONNECTED
    assert events(call) == ["trying", "failed"] and not call.sent("BYE")


def test_a_refer_without_a_refer_to_gets_400_and_nothing_is_dialled() -> None:
    call = connected()
    call.request_from(ZERO, "REFER")
    assert call.responses(400, "REFER") and not call.sent("INVITE", to=XFER_ADDR)


def test_a_second_refer_while_a_transfer_is_under_way_gets_491() -> None:
    call = connected()
    call.request_from(ZERO, "REFER", headers=REFER_TO)
    call.request_from(ZERO, "REFER", headers=REFER_TO)
    assert call.responses(491, "REFER") and len(call.sent("INVITE", to=XFER_ADDR)) == 1


# ---- progress and the bridge --------------------------------------------------------------------------
def test_the_target_ringing_is_reported_to_the_transferor_as_180() -> None:
    call = connected()
    call.request_from(ZERO, "REFER", headers=REFER_TO)
    xfer_responds(call, 180)
    assert notifies(call)[-1] == (b"SIP/2.0 180 Ringing\r\n", "active;expires=60")
    assert events(call) == ["trying", "ringing"]


def test_on_the_targets_answer_the_remaining_party_is_reinvited_with_the_new_media() -> None:
    call = connected()
    transferred(call)
    assert call.sent("ACK", to=XFER_ADDR)
    reinvite = [o for o in call.sent("INVITE", to=FAR_ADDR) if o.tag == ("bridge", ONE)][0]
    assert reinvite.message.body == anchored(SDP_XFER)
    call.respond_to(reinvite, 200, body=SDP_ONE)
    assert call.sent("ACK", to=FAR_ADDR)[-1].message.cseq == (reinvite.message.cseq[0], "ACK")


def test_on_the_targets_answer_the_transferor_hears_200_and_its_leg_is_ended() -> None:
    call = connected()
    transferred(call)
    assert notifies(call)[-1] == (b"SIP/2.0 200 OK\r\n", "terminated;reason=noresource")
    assert len(call.sent("BYE", to=ZERO_ADDR)) == 1 and not call.sent("BYE", to=FAR_ADDR)
    assert events(call) == ["trying", "ringing", "connected"] and call.machine.state is CallState.CONNECTED


def test_after_a_transfer_the_new_partys_bye_ends_the_call_with_the_remaining_party() -> None:
    call = connected()
    transferred(call)
    request_from_new_party(call, ZERO, "BYE")
    assert call.sent("BYE", to=FAR_ADDR)
    assert hangups(call)[-1] == {"call": "c1", "channel": "ZERO"}


def test_the_transferors_own_bye_after_the_transfer_is_answered_and_ends_nothing_else() -> None:
    call = connected()
    transferred(call)
    call.bye_from(ZERO)
    assert call.responses(200, "BYE") and not call.sent("BYE", to=FAR_ADDR)
    assert call.machine.state is CallState.CONNECTED and hangups(call) == [TRANSFEROR_LEFT]  # none after it


def test_a_target_that_does_not_answer_is_reported_as_480_and_cancelled() -> None:
    call = connected()
    call.request_from(ZERO, "REFER", headers=REFER_TO)
    xfer_responds(call, 180)
    call.advance(60)
    assert notifies(call)[-1][0] == b"SIP/2.0 480 Temporarily Unavailable (no answer)\r\n"
    assert call.sent("CANCEL", to=XFER_ADDR) and call.machine.state is CallState.CONNECTED


def test_a_target_that_refuses_is_reported_with_its_status() -> None:
    call = connected()
    call.request_from(ZERO, "REFER", headers=REFER_TO)
    xfer_responds(call, 486)
    assert notifies(call)[-1] == (b"SIP/2.0 486 Whatever\r\n", "terminated;reason=noresource")
    assert events(call)[-1] == "failed" and call.machine.state is CallState.CONNECTED


# ---- a transferor that leaves at once (a blind transfer) ----------------------------------------------
def test_a_transferor_that_hangs_up_after_the_202_does_not_stop_the_transfer() -> None:
    call = connected()
    call.request_from(ZERO, "REFER", headers=REFER_TO)
    call.bye_from(ZERO)
    assert call.responses(200, "BYE") and not call.sent("BYE", to=FAR_ADDR)
    xfer_responds(call, 200, body=SDP_XFER)
    assert events(call) == ["trying", "connected"] and call.machine.state is CallState.CONNECTED
    assert not call.sent("BYE", to=ZERO_ADDR)
    assert hangups(call) == [TRANSFEROR_LEFT]  # at its BYE; the call goes on


def test_a_transfer_that_fails_after_its_transferor_left_ends_the_call_with_a_hangup_saying_so() -> None:
    call = connected()
    call.request_from(ZERO, "REFER", headers=REFER_TO)
    call.bye_from(ZERO)
    xfer_responds(call, 486)
    assert hangups(call) == [TRANSFEROR_LEFT,  # its BYE
                             {"call": "c1", "channel": "ZERO", "reason": "transfer failed: 486 Whatever"}]
    assert call.sent("BYE", to=FAR_ADDR)


def test_a_call_ended_by_the_remaining_party_during_a_transfer_cancels_the_target() -> None:
    call = connected()
    call.request_from(ZERO, "REFER", headers=REFER_TO)
    xfer_responds(call, 180)
    call.bye_from(ONE)
    assert call.sent("CANCEL", to=XFER_ADDR) and call.sent("BYE", to=ZERO_ADDR)


# ---- the transferor on channel ONE, and who may transfer -------------------------------------------------
def test_a_user_called_on_channel_one_can_transfer_the_caller() -> None:
    call = Call(peer_type="LINE")
    call.route = lambda c: c.feed(io.AcceptIn(c.now, [Target("USER", "far")], None, c.results.append))
    call.connect()
    call.request_from(ONE, "REFER", headers=REFER_TO)
    assert call.responses(202, "REFER") and notifies(call, FAR_ADDR)
    xfer_responds(call, 200, body=SDP_XFER)
    assert [o for o in call.sent("INVITE", to=ZERO_ADDR) if o.tag == ("bridge", ZERO)]
    assert call.sent("BYE", to=FAR_ADDR) and not call.sent("BYE", to=ZERO_ADDR)
    request_from_new_party(call, ONE, "BYE")
    assert call.sent("BYE", to=ZERO_ADDR)


def test_a_refer_from_a_provider_is_relayed_with_the_headers_refer_needs() -> None:
    call = connected(peer_type="LINE")
    call.request_from(ZERO, "REFER", headers=REFER_TO)
    relayed: Request = call.sent("REFER", to=FAR_ADDR)[0].message  # type: ignore[assignment]
    assert relayed.headers.get("refer-to") == "<sip:+15550001111@192.0.2.1>"
    assert relayed.headers.get("referred-by") == "<sip:alice@192.0.2.1>"
    assert not call.sent("INVITE", to=XFER_ADDR)


def test_a_relayed_notify_keeps_its_event_and_subscription_state() -> None:
    call = connected(peer_type="LINE")
    call.request_from(ONE, "NOTIFY", headers=[("Event", "refer"), ("Subscription-State", "active;expires=60")])
    relayed: Request = call.sent("NOTIFY", to=ZERO_ADDR)[0].message  # type: ignore[assignment]
    assert relayed.headers.get("event") == "refer"
    assert relayed.headers.get("subscription-state") == "active;expires=60"


# ---- attended: REFER with Replaces naming the transferor's consultation call ------------------------
def consultation() -> tuple[Call, Call]:
    """c1: bob (ZERO, itsp1's phone here) talks to line far (ONE); c2: bob consults carol, reached
    through line xfer (ONE of c2). Both calls run on the same fake engine."""
    c1 = connected()
    c2 = Call(peer_type="USER", call_id="zero-2", destinations={"far": [XFER_ADDR]})
    c2.start()
    c2.one_responds(200, body=SDP_ONE, headers=[("Contact", f"<sip:carol@{XFER_ADDR[0]}:{XFER_ADDR[1]}>")])
    c2.ack_from(ZERO)
    c1.machine.env.others.append(c2)  # type: ignore[attr-defined]
    return c1, c2


def refer_with_replaces(c1: Call, c2: Call, from_tag: str = "z1") -> None:
    replaces = f"zero-2%3Bto-tag%3D{c2.machine.local_tag}%3Bfrom-tag%3D{from_tag}"
    c1.request_from(ZERO, "REFER", headers=[("Refer-To", f"<sip:carol@192.0.2.1?Replaces={replaces}>")])


def adopt_reinvite(c1: Call) -> Out:
    return [o for o in c1.sent("INVITE", to=XFER_ADDR) if o.tag == ("adopt", ZERO)][0]


def test_an_attended_transfer_takes_the_consulted_party_over_and_ends_the_consultation_call() -> None:
    c1, c2 = consultation()
    refer_with_replaces(c1, c2)
    assert c1.responses(202, "REFER")
    assert c2.sent("BYE", to=ZERO_ADDR) and not c2.sent("BYE", to=XFER_ADDR)   # bob's consult leg only
    assert c2.event("hangup") == {"call": "c1", "channel": "ZERO", "reason": "transferred"}
    reinvite = adopt_reinvite(c1).message
    assert reinvite.call_id == c2.invite_to_one().message.call_id and reinvite.body == b"our-offer"


def test_an_attended_transfer_bridges_the_remaining_party_once_the_consulted_party_answers() -> None:
    c1, c2 = consultation()
    refer_with_replaces(c1, c2)
    c1.respond_to(adopt_reinvite(c1), 200, body=SDP_XFER)
    assert c1.sent("ACK", to=XFER_ADDR)
    bridge = [o for o in c1.sent("INVITE", to=FAR_ADDR) if o.tag == ("bridge", ONE)][0]
    assert bridge.message.body == anchored(SDP_XFER)
    assert notifies(c1)[-1] == (b"SIP/2.0 200 OK\r\n", "terminated;reason=noresource")
    assert c1.sent("BYE", to=ZERO_ADDR) and events(c1) == ["trying", "connected"]
    assert [f["kind"] for n, f in c1.events if n == "transfer"] == ["attended", "attended"]


def test_after_an_attended_transfer_the_consulted_partys_bye_ends_the_call() -> None:
    c1, c2 = consultation()
    refer_with_replaces(c1, c2)
    c1.respond_to(adopt_reinvite(c1), 200, body=SDP_XFER)
    d = c2.one_dialog()
    d.local_cseq += 5
    bye = d.create_request("BYE", f"SIP/2.0/UDP {XFER_ADDR[0]}:{XFER_ADDR[1]}")
    c1.layer.receive(bytes(bye), XFER_ADDR, c1.now)
    event = c1.layer.next_event()
    assert isinstance(event, RequestReceived) and event.transaction is not None
    c1.feed(io.RequestIn(c1.now, ZERO, event.transaction))
    assert c1.sent("BYE", to=FAR_ADDR) and c1.machine.state is CallState.ENDING


def test_a_replaces_naming_another_users_dialog_is_refused_and_both_calls_stay_up() -> None:
    c1, c2 = consultation()
    refer_with_replaces(c1, c2, from_tag="someone-else")
    assert notifies(c1)[-1][0].startswith(b"SIP/2.0 403")
    assert c1.machine.state is CallState.CONNECTED and c2.machine.state is CallState.CONNECTED
    assert not c2.sent("BYE")


def test_a_replaces_naming_no_call_is_refused_with_481() -> None:
    c1 = connected()
    c1.request_from(ZERO, "REFER", headers=[("Refer-To", "<sip:carol@192.0.2.1?Replaces=nope%3Bto-tag%3Da"
                                                         "%3Bfrom-tag%3Db>")])
    assert notifies(c1)[-1][0].startswith(b"SIP/2.0 481") and c1.machine.state is CallState.CONNECTED


def test_the_transferors_session_timer_leaves_with_its_leg() -> None:
    call = Call(peer_type="USER", invite_headers=["Session-Expires: 90;refresher=uac", "Supported: timer"])
    call.connect()
    transferred(call)
    call.advance(600)              # the transferor never refreshes again: it is gone
    assert call.machine.state is CallState.CONNECTED and hangups(call) == [TRANSFEROR_LEFT]  # none after it
