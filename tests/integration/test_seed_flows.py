"""The two seed flows end to end, between real third-party SIP software:

Kamailio plays the provider (registrar with digest auth, and its own phone `pstn`); baresip plays the
office phone registered to Callflow and the provider-side phone. Callflow runs as the real `callflow
run` command. We assert what an operator and the people on the phones would observe: the event lines
in order with their channels, and voice (RTP packets) arriving at each phone from the other.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.callflow_server import CallflowServer
from tests.rig import (
    CALL_CLOSED,
    CALL_ESTABLISHED,
    CALL_INCOMING,
    CALL_RINGING,
    Kamailio,
    Phone,
    PhoneFactory,
    account_line,
    ports,
)

OUT_NUMBER = "+15557654321"
DID = "+15551230000"
TALK_SECONDS = 1.5
MIN_PACKETS = 25  # 20 ms packets: 1.5 s of talk is ~75; a one-way or dead relay gives ~0


SEED_RULES = r"""on incoming from user any to /^\+?[0-9]{7,15}$/ accept to line itsp1
on incoming from line itsp1 accept to user alice"""


def office_flow(provider: str, password: str = "s3cret", rules: str = SEED_RULES) -> str:
    return f"""
user alice password "alice-pw"

line itsp1 {{
    server   "{provider}"
    username "trunk1"
    password "{password}"
    register every 60s
}}

{rules}
on hangup {{ log "call {{call}} ended by channel {{channel}}" }}
"""


@pytest.fixture
def callflow(tmp_path: Path) -> Iterator[Callable[..., CallflowServer]]:
    servers: list[CallflowServer] = []

    def start(flow_text: str) -> CallflowServer:
        server = CallflowServer(flow_text, tmp_path / f"callflow{len(servers)}", ports.sip_port(),
                                ports.rtp_range(40))
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


def office(kamailio: Kamailio, phone_factory: PhoneFactory,
           callflow: Callable[..., CallflowServer], **flow: str) -> tuple[CallflowServer, Phone, Phone]:
    """Callflow with its line registered, alice registered to it, pstn registered to the provider."""
    server = callflow(office_flow(kamailio.hostport, **flow))
    server.wait_event("line_registered", line="itsp1")
    pstn = phone_factory(kamailio.account_line("pstn"), name="pstn")
    pstn.wait_registered()
    alice = phone_factory(account_line("alice", server.hostport, auth_pass="alice-pw"), name="alice")
    alice.wait_registered()
    return server, alice, pstn


def talk_then_hang_up(server: CallflowServer, caller: Phone, callee: Phone, hang_up: Phone) -> str:
    """Ring, answer, talk, hang up from `hang_up`'s side; returns the call's id in Callflow's log."""
    before = len(server.events("closed"))
    callee.wait_event(CALL_INCOMING, 10)
    caller.wait_event(CALL_RINGING, 10)
    callee.accept()
    caller.wait_event(CALL_ESTABLISHED, 10)
    callee.wait_event(CALL_ESTABLISHED, 10)
    time.sleep(TALK_SECONDS)
    hang_up.hangup()
    caller.wait_event(CALL_CLOSED, 10)
    callee.wait_event(CALL_CLOSED, 10)
    return server.wait_event("closed", since=before)["call"]


def assert_voice_both_ways(a: Phone, b: Phone) -> None:
    sa, sb = a.rtp_stats(), b.rtp_stats()
    assert sa.rx_packets >= MIN_PACKETS, f"{a.name} heard nothing from {b.name}: {sa}"
    assert sb.rx_packets >= MIN_PACKETS, f"{b.name} heard nothing from {a.name}: {sb}"


def expected_events(hangup_channel: str) -> list[tuple[str, str | None]]:
    return [("created", None), ("incoming", None), ("connecting", "ONE"), ("connected", None),
            ("hangup", hangup_channel), ("closed", None)]


# ---- OUT: the office phone dials a number through the line --------------------------------------
@pytest.mark.parametrize("hang_up_side,channel", [("caller", "ZERO"), ("callee", "ONE")])
def test_office_phone_calls_out_through_the_line(kamailio: Kamailio, phone_factory: PhoneFactory,
                                                 callflow: Callable[..., CallflowServer],
                                                 hang_up_side: str, channel: str) -> None:
    server, alice, pstn = office(kamailio, phone_factory, callflow)
    alice.dial(f"sip:{OUT_NUMBER}@{server.hostport}")
    call = talk_then_hang_up(server, alice, pstn, alice if hang_up_side == "caller" else pstn)
    assert server.call_events(call) == expected_events(channel)
    incoming = server.events("incoming", call=call)[0]
    assert (incoming["peer_type"], incoming["peer"], incoming["to"]) == ("USER", "alice", OUT_NUMBER)
    assert server.events("log", text=f"call {call} ended by channel {channel}")
    assert_voice_both_ways(alice, pstn)
    server.assert_alive()


# ---- IN: the provider's call on the line rings the office phone -----------------------------------
@pytest.mark.parametrize("hang_up_side,channel", [("caller", "ZERO"), ("callee", "ONE")])
def test_provider_call_on_the_line_rings_the_office_phone(kamailio: Kamailio, phone_factory: PhoneFactory,
                                                          callflow: Callable[..., CallflowServer],
                                                          hang_up_side: str, channel: str) -> None:
    server, alice, pstn = office(kamailio, phone_factory, callflow)
    pstn.dial(f"sip:{DID}@{kamailio.hostport}")
    call = talk_then_hang_up(server, pstn, alice, pstn if hang_up_side == "caller" else alice)
    assert server.call_events(call) == expected_events(channel)
    incoming = server.events("incoming", call=call)[0]
    assert (incoming["peer_type"], incoming["peer"], incoming["to"]) == ("LINE", "itsp1", DID)
    assert_voice_both_ways(alice, pstn)
    server.assert_alive()


def test_caller_cancelling_before_the_answer_cancels_the_other_leg(
        kamailio: Kamailio, phone_factory: PhoneFactory, callflow: Callable[..., CallflowServer]) -> None:
    server, alice, pstn = office(kamailio, phone_factory, callflow)
    alice.dial(f"sip:{OUT_NUMBER}@{server.hostport}")
    pstn.wait_event(CALL_INCOMING, 10)
    alice.wait_event(CALL_RINGING, 10)
    alice.hangup()
    pstn.wait_event(CALL_CLOSED, 10)  # the provider's phone stops ringing
    closed = server.wait_event("closed")
    assert server.call_events(closed["call"])[-2:] == [("hangup", "ZERO"), ("closed", None)]
    server.assert_alive()


def test_busy_callee_reaches_the_caller(kamailio: Kamailio, phone_factory: PhoneFactory,
                                        callflow: Callable[..., CallflowServer]) -> None:
    server, alice, pstn = office(kamailio, phone_factory, callflow)
    alice.dial(f"sip:{OUT_NUMBER}@{server.hostport}")
    pstn.wait_event(CALL_INCOMING, 10)
    pstn.hangup()  # rejecting an incoming call: baresip answers 486 Busy Here
    closed = alice.wait_event(CALL_CLOSED, 10)
    assert "486" in str(closed.get("param")), closed
    failed = server.wait_event("failed")
    assert failed["code"] == "486"
    server.assert_alive()


# ---- who may call -----------------------------------------------------------------------------------
def test_phone_with_a_wrong_password_cannot_register_or_call(kamailio: Kamailio, phone_factory: PhoneFactory,
                                                            callflow: Callable[..., CallflowServer]) -> None:
    server = callflow(office_flow(kamailio.hostport))
    server.wait_event("line_registered", line="itsp1")
    intruder = phone_factory(account_line("alice", server.hostport, auth_pass="guess"), name="intruder")
    failure = intruder.wait_register_fail()
    assert "403" in str(failure.get("param")), failure
    mark = kamailio.log_mark()
    intruder.dial(f"sip:{OUT_NUMBER}@{server.hostport}")
    closed = intruder.wait_event(CALL_CLOSED, 10)
    assert "403" in str(closed.get("param")), closed
    assert server.events("created") == []  # no call session, so nothing reached the line
    assert "INVITE" not in kamailio.log_text()[mark:]
    server.assert_alive()


def test_line_with_a_wrong_password_reports_register_failed(kamailio: Kamailio,
                                                            callflow: Callable[..., CallflowServer]) -> None:
    server = callflow(office_flow(kamailio.hostport, password="wrong"))
    failed = server.wait_event("line_register_failed", line="itsp1")
    assert failed["code"] == "403"
    assert "retry_in" in failed
    assert server.events("line_registered") == []
    server.assert_alive()


# ---- hot reload ---------------------------------------------------------------------------------------
def test_edited_rule_takes_over_and_a_broken_edit_keeps_the_old_one(
        kamailio: Kamailio, phone_factory: PhoneFactory, callflow: Callable[..., CallflowServer]) -> None:
    refuse = f'on incoming from user any to "{OUT_NUMBER}" reject 486 "Busy by rule"'
    server, alice, pstn = office(kamailio, phone_factory, callflow, rules=refuse)

    alice.dial(f"sip:{OUT_NUMBER}@{server.hostport}")
    assert "486" in str(alice.wait_event(CALL_CLOSED, 10).get("param"))

    allow = f'on incoming from user any to "{OUT_NUMBER}" accept to line itsp1'
    server.flow_path.write_text(office_flow(kamailio.hostport, rules=allow))
    server.wait_event("reloaded")
    assert server.events("line_registered")[-1:] and len(server.events("line_registered")) == 1  # untouched
    alice.dial(f"sip:{OUT_NUMBER}@{server.hostport}")
    talk_then_hang_up(server, alice, pstn, alice)

    server.flow_path.write_text(office_flow(kamailio.hostport, rules=allow + "\non incoming from nowhere"))
    failed = server.wait_event("reload_failed")
    assert failed["kept"] == "previous"
    assert "main.flow:" in server.log_text().split("event=reload_failed", 1)[1]
    alice.dial(f"sip:{OUT_NUMBER}@{server.hostport}")
    talk_then_hang_up(server, alice, pstn, pstn)  # the previous rule still routes
    server.assert_alive()


# ---- in-dialog requests ----------------------------------------------------------------------------
@pytest.mark.parametrize("holder", ["caller", "callee"])
def test_hold_and_resume_pass_through_and_voice_comes_back(kamailio: Kamailio, phone_factory: PhoneFactory,
                                                           callflow: Callable[..., CallflowServer],
                                                           holder: str) -> None:
    """baresip's hold/resume are re-INVITEs (a=sendonly, then a=sendrecv): relayed to the other leg
    with their SDP anchored, answered back (our 2xx resent until its ACK), and the call goes on;
    from the caller's side (channel ZERO) or the callee's behind the provider (channel ONE)."""
    server, alice, pstn = office(kamailio, phone_factory, callflow)
    alice.dial(f"sip:{OUT_NUMBER}@{server.hostport}")
    pstn.wait_event(CALL_INCOMING, 10)
    pstn.accept()
    alice.wait_event(CALL_ESTABLISHED, 10)
    pstn.wait_event(CALL_ESTABLISHED, 10)
    holding, held = (alice, pstn) if holder == "caller" else (pstn, alice)
    since = held.mark()
    holding.command("hold")
    time.sleep(1.0)
    holding.command("resume")
    time.sleep(TALK_SECONDS)
    alice.hangup()
    pstn.wait_event(CALL_CLOSED, 10)
    # both re-INVITEs reached the other phone with an offer (baresip reports each remote SDP)
    offers = [e for e in held.events[since:] if e.get("type") == "CALL_REMOTE_SDP"]
    assert len(offers) >= 2, held.event_types()
    closed = server.wait_event("closed")
    assert server.call_events(closed["call"])[-2:] == [("hangup", "ZERO"), ("closed", None)]
    assert_voice_both_ways(alice, pstn)
    server.assert_alive()


def test_reload_during_a_call_keeps_the_call(kamailio: Kamailio, phone_factory: PhoneFactory,
                                             callflow: Callable[..., CallflowServer]) -> None:
    server, alice, pstn = office(kamailio, phone_factory, callflow)
    alice.dial(f"sip:{OUT_NUMBER}@{server.hostport}")
    pstn.wait_event(CALL_INCOMING, 10)
    pstn.accept()
    alice.wait_event(CALL_ESTABLISHED, 10)
    server.flow_path.write_text(office_flow(kamailio.hostport, rules=SEED_RULES + '\non incoming from user any '
                                            'to "999" reject 403 "Not here"'))
    server.wait_event("reloaded")
    time.sleep(TALK_SECONDS)
    pstn.hangup()
    alice.wait_event(CALL_CLOSED, 10)
    closed = server.wait_event("closed")
    assert server.call_events(closed["call"]) == expected_events("ONE")
    assert_voice_both_ways(alice, pstn)
    assert len(server.events("line_registered")) == 1  # the unchanged line kept its registration
    alice.dial(f"sip:999@{server.hostport}")  # and the new rule is in force for the next call
    assert "403" in str(alice.wait_event(CALL_CLOSED, 10).get("param"))
    server.assert_alive()


def test_a_restart_keeps_the_office_phone_reachable_without_it_registering_again(
        kamailio: Kamailio, phone_factory: PhoneFactory, tmp_path: Path) -> None:
    """With --location-db, the phone's binding outlives the process: after a restart the provider's
    call rings alice although her phone has not sent a REGISTER since (regint 600 s)."""
    db = tmp_path / "location.db"
    server = CallflowServer(office_flow(kamailio.hostport), tmp_path / "callflow", ports.sip_port(),
                            ports.rtp_range(40), extra_args=["--location-db", str(db)])
    try:
        server.start()
        server.wait_event("line_registered", line="itsp1")
        alice = phone_factory(account_line("alice", server.hostport, auth_pass="alice-pw", regint=600),
                              name="alice")
        alice.wait_registered()
        server.wait_event("user_registered", user="alice")
        pstn = phone_factory(kamailio.account_line("pstn"), name="pstn")
        pstn.wait_registered()

        server.stop()
        server.start()  # same port, same database, a new process (its log starts afresh)
        restored = server.wait_event("bindings_restored")
        assert restored["restored"] == "1"
        server.wait_event("line_registered", line="itsp1")

        pstn.dial(f"sip:{DID}@{kamailio.hostport}")
        call = talk_then_hang_up(server, pstn, alice, pstn)
        assert server.call_events(call) == expected_events("ZERO")
        assert not server.events("user_registered"), "the phone registered again: the test proves nothing"
        assert_voice_both_ways(alice, pstn)
        server.assert_alive()
    finally:
        server.stop()
