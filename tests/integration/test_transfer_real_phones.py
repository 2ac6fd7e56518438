"""Transfer between real baresip phones registered to Callflow: bob, in a call with alice, transfers her
to carol with baresip's `/transfer` (a blind REFER: baresip 1.0 has no attended transfer and no
Replaces). Callflow carries it out itself: carol's phone rings as a call from bob would (the rules
decide), alice is bridged to carol and talks to her, bob's phone hears the outcome and is hung up.
A target the rules refuse leaves alice and bob talking."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.callflow_server import CallflowServer
from tests.rig import CALL_CLOSED, CALL_ESTABLISHED, CALL_INCOMING, Phone, PhoneFactory, account_line, ports

MIN_PACKETS = 25  # 20 ms packets over 1.5 s of talk: ~75; a relay left on the old leg gives ~0
FLOW = """
user alice password "alice-pw"
user bob   password "bob-pw"
user carol password "carol-pw"

on incoming from user any to "201" accept to user bob
on incoming from user bob to "202" accept to user carol
"""


@pytest.fixture
def office(tmp_path: Path, phone_factory: PhoneFactory) -> Iterator[Callable[[], tuple[CallflowServer, dict]]]:
    servers: list[CallflowServer] = []

    def start() -> tuple[CallflowServer, dict[str, Phone]]:
        server = CallflowServer(FLOW, tmp_path / "callflow", ports.sip_port(), ports.rtp_range(40)).start()
        servers.append(server)
        phones = {}
        for user in ("alice", "bob", "carol"):
            phone = phone_factory(account_line(user, server.hostport, auth_pass=f"{user}-pw"), name=user)
            phone.wait_registered()
            phones[user] = phone
        return server, phones

    yield start
    for server in servers:
        server.stop()


def alice_calls_bob(server: CallflowServer, phones: dict[str, Phone]) -> None:
    phones["alice"].dial(f"sip:201@{server.hostport}")
    phones["bob"].wait_event(CALL_INCOMING, 10)
    phones["bob"].accept()
    phones["alice"].wait_event(CALL_ESTABLISHED, 10)
    phones["bob"].wait_event(CALL_ESTABLISHED, 10)


def test_a_blind_transfer_bridges_the_caller_to_the_target_and_hangs_up_the_transferor(
        office: Callable[[], tuple[CallflowServer, dict[str, Phone]]]) -> None:
    server, phones = office()
    alice, bob, carol = phones["alice"], phones["bob"], phones["carol"]
    alice_calls_bob(server, phones)
    bob.command("transfer", f"sip:202@{server.hostport}")
    carol.wait_event(CALL_INCOMING, 10)
    carol.accept()
    carol.wait_event(CALL_ESTABLISHED, 10)
    bob.wait_event(CALL_CLOSED, 10)
    connected = server.wait_event("transfer", outcome="connected")
    assert (connected["transferor"], connected["target"], connected["kind"]) == ("bob", "202", "blind")
    mark = alice.mark()
    time.sleep(1.5)  # talk
    carol.hangup()
    alice.wait_event(CALL_CLOSED, 10, since=mark)
    assert alice.rtp_stats().rx_packets >= MIN_PACKETS, "alice heard nothing from carol"
    assert carol.rtp_stats().rx_packets >= MIN_PACKETS, "carol heard nothing from alice"
    steps = [e["outcome"] for e in server.events("transfer", call=connected["call"])]
    assert steps[0] == "trying" and steps[-1] == "connected"
    server.assert_alive()


def test_a_transfer_the_rules_refuse_leaves_the_call_up(
        office: Callable[[], tuple[CallflowServer, dict[str, Phone]]]) -> None:
    server, phones = office()
    alice, bob = phones["alice"], phones["bob"]
    alice_calls_bob(server, phones)
    mark = bob.mark()
    bob.command("transfer", f"sip:999@{server.hostport}")
    failed = server.wait_event("transfer", outcome="failed")
    assert failed["reason"].startswith("404")
    assert CALL_CLOSED not in [e.get("type") for e in bob.events[mark:]]
    bob.hangup()
    alice.wait_event(CALL_CLOSED, 10)
    assert server.events("created") and len(server.events("closed")) == 1
    server.assert_alive()
