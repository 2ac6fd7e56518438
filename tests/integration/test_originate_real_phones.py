"""Originate and click-to-call (issue 12) between real peers: `callflow call alice NUMBER` against a
running `callflow run` rings alice's baresip phone (auto answer) first; when it answers, the number
is dialled through the rules as a call from alice, out through the line to Kamailio's phone `pstn`,
and the two talk (RTP both ways). A number the rules refuse rings nothing."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.integration.callflow_server import CallflowServer
from tests.integration.test_seed_flows import (
    OUT_NUMBER,
    TALK_SECONDS,
    assert_voice_both_ways,
    callflow,  # noqa: F401 - the fixture
    office_flow,
)
from tests.rig import CALL_CLOSED, CALL_ESTABLISHED, CALL_INCOMING, Kamailio, PhoneFactory, account_line
from tests.unit.test_control import callflow as callflow_command


def test_click_to_call_rings_the_office_phone_then_connects_it_to_the_providers_phone(
        kamailio: Kamailio, phone_factory: PhoneFactory, callflow: Callable[..., CallflowServer]) -> None:  # noqa: F811
    server = callflow(office_flow(kamailio.hostport))
    server.wait_event("line_registered", line="itsp1")
    pstn = phone_factory(kamailio.account_line("pstn"), name="pstn")
    pstn.wait_registered()
    alice = phone_factory(account_line("alice", server.hostport, auth_pass="alice-pw", answermode="auto"),
                          name="alice")
    alice.wait_registered()
    started = callflow_command("call", "alice", OUT_NUMBER, "--control", server.control)
    assert started.returncode == 0, started.stderr
    assert "ringing alice's phone" in started.stdout
    alice.wait_event(CALL_ESTABLISHED, 10)           # alice's phone answered (auto): channel ZERO
    pstn.wait_event(CALL_INCOMING, 10)               # then the number rings through the line
    pstn.accept()
    pstn.wait_event(CALL_ESTABLISHED, 10)
    time.sleep(TALK_SECONDS)
    pstn.hangup()
    alice.wait_event(CALL_CLOSED, 10)
    pstn.wait_event(CALL_CLOSED, 10)
    closed = server.wait_event("closed")
    call = closed["call"]
    created = server.events("created", call=call)[0]
    assert (created["peer_type"], created["peer"], created["to"], created["origin"]) == (
        "USER", "alice", OUT_NUMBER, "originated")
    assert server.events("originated", call=call)
    events = [e for e in server.call_events(call) if e != ("connecting", "ZERO")]  # alice may not send 180
    assert events == [("created", None), ("connecting", "ONE"), ("connected", None), ("hangup", "ONE"),
                      ("closed", None)]
    assert_voice_both_ways(alice, pstn)
    server.assert_alive()


def test_click_to_call_to_a_number_the_rules_refuse_rings_nothing(
        kamailio: Kamailio, phone_factory: PhoneFactory, callflow: Callable[..., CallflowServer]) -> None:  # noqa: F811
    server = callflow(office_flow(kamailio.hostport))
    alice = phone_factory(account_line("alice", server.hostport, auth_pass="alice-pw"), name="alice")
    alice.wait_registered()
    refused = callflow_command("call", "alice", "12", "--control", server.control)   # rules: 7-15 digits
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "the rules refuse a call from alice to 12: 404" in refused.stderr
    assert server.events("originate_refused", user="alice", to="12")
    assert not server.events("created")
    time.sleep(0.5)
    assert CALL_INCOMING not in alice.event_types()
    server.assert_alive()
