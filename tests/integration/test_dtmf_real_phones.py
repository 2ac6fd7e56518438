"""DTMF detected by Callflow between real phones: baresip presses keys during a call (its `sndcode`
command sends RFC 4733 telephone-events), Callflow's relay reports each digit once as a `dtmf` event
with the channel it came from, runs `on dtmf`, and the other phone still gets the events."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.callflow_server import CallflowServer
from tests.rig import CALL_ESTABLISHED, CALL_INCOMING, Phone, PhoneFactory, account_line, ports

FLOW = """
user alice password "alice-pw"
user bob   password "bob-pw"

on incoming from user any to "bob" accept to user bob
on dtmf { log "key {digit} on {channel} for {duration} ms" }
"""


@pytest.fixture
def callflow(tmp_path: Path) -> Iterator[CallflowServer]:
    server = CallflowServer(FLOW, tmp_path / "callflow", ports.sip_port(), ports.rtp_range(10)).start()
    try:
        yield server
    finally:
        server.stop()


def call_up(callflow: CallflowServer, phone_factory: PhoneFactory) -> tuple[Phone, Phone]:
    alice = phone_factory(account_line("alice", callflow.hostport, auth_pass="alice-pw"), name="alice")
    bob = phone_factory(account_line("bob", callflow.hostport, auth_pass="bob-pw"), name="bob")
    alice.wait_registered()
    bob.wait_registered()
    alice.dial(f"sip:bob@{callflow.hostport}")
    bob.wait_event(CALL_INCOMING, 10)
    bob.accept()
    alice.wait_event(CALL_ESTABLISHED, 10)
    bob.wait_event(CALL_ESTABLISHED, 10)
    return alice, bob


@pytest.mark.parametrize("presser,channel", [("caller", "ZERO"), ("callee", "ONE")])
def test_keys_pressed_on_a_phone_are_dtmf_events_with_the_channel_they_came_from(
        callflow: CallflowServer, phone_factory: PhoneFactory, presser: str, channel: str) -> None:
    alice, bob = call_up(callflow, phone_factory)
    pressing, hearing = (alice, bob) if presser == "caller" else (bob, alice)
    since = hearing.mark()
    pressing.command("sndcode", "5")
    first = callflow.wait_event("dtmf")
    pressing.command("sndcode", "#")
    second = callflow.wait_event("dtmf", since=1)
    assert [(e["digit"], e["channel"]) for e in (first, second)] == [("5", channel), ("#", channel)]
    assert int(first["duration"]) > 0
    assert callflow.events("log", text=f"key 5 on {channel} for {first['duration']} ms")
    # the far phone got the digits too (baresip reports each telephone-event it receives)
    heard = hearing.wait_event("CALL_DTMF_START", 5, since=since)
    assert heard.get("param") == "5", heard
    alice.hangup()
    assert len(callflow.events("dtmf")) == 2  # one event per key press, not per packet
    callflow.assert_alive()
