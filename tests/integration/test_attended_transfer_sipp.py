"""Attended transfer with real peers (issue 8, behaviour 10): baresip phones alice and carol, and
bob's phone played by SIPp (baresip 1.0 sends no REFER with Replaces), all registered to Callflow.

carol calls bob (the consultation call), alice calls bob, and bob transfers alice to carol with a
REFER whose Refer-To names carol with Replaces = bob's consultation dialog (RFC 3515, RFC 3891,
RFC 5589 7). Callflow carries it out: carol's phone is taken over from the consultation call and
re-INVITEd onto alice's call, bob hears 100 and 200 in NOTIFYs (message/sipfrag) and both his legs
are hung up, and alice and carol talk to each other (RTP both ways).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.callflow_server import CallflowServer
from tests.integration.conftest import require_peer
from tests.integration.sipp_peer import SippPeer, sipp_problem
from tests.rig import CALL_CLOSED, CALL_ESTABLISHED, Phone, PhoneFactory, account_line, ports
from tests.rig.proc import wait_until

MIN_PACKETS = 25  # 20 ms packets over 1.5 s of talk: ~75; media left on bob's legs gives 0 (SIPp sends none)
FLOW = """
user alice password "alice-pw"
user bob   password "bob-pw"
user carol password "carol-pw"

on incoming from user alice to "201" accept to user bob
on incoming from user carol to "204" accept to user bob
"""


@pytest.fixture
def office(tmp_path: Path, phone_factory: PhoneFactory) -> Iterator[tuple[CallflowServer, dict[str, Phone], Path]]:
    require_peer("sipp", sipp_problem())
    server = CallflowServer(FLOW, tmp_path / "callflow", ports.sip_port(), ports.rtp_range(40)).start()
    try:
        phones = {}
        for user in ("alice", "carol"):
            phone = phone_factory(account_line(user, server.hostport, auth_pass=f"{user}-pw"), name=user)
            phone.wait_registered()
            phones[user] = phone
        yield server, phones, tmp_path / "sipp"
    finally:
        server.stop()


def test_an_attended_transfer_bridges_the_transferee_to_the_consulted_party_and_hangs_up_the_transferor(
        office: tuple[CallflowServer, dict[str, Phone], Path]) -> None:
    server, phones, sipp_dir = office
    alice, carol = phones["alice"], phones["carol"]
    bob_port = ports.sip_port()
    register = SippPeer("register_user.xml", sipp_dir, bob_port, target=server.hostport, keys={"user": "bob"},
                        auth=("bob", "bob-pw")).start()
    register.wait(15)
    bob = SippPeer("attended_transferor.xml", sipp_dir, bob_port, calls=2, keys={"callflow": server.hostport})
    try:
        bob.start().wait_listening()
        # the consultation call: carol -> bob
        carol.dial(f"sip:204@{server.hostport}")
        carol.wait_event(CALL_ESTABLISHED, 10)
        # the call to transfer: alice -> bob; bob's phone REFERs it to carol, replacing the consultation
        alice.dial(f"sip:201@{server.hostport}")
        alice.wait_event(CALL_ESTABLISHED, 10)
        connected = server.wait_event("transfer", 15, outcome="connected")
        assert (connected["transferor"], connected["target"], connected["kind"]) == ("bob", "carol", "attended")
        bob.wait(20)  # both of bob's calls ended by Callflow's BYE, after NOTIFY 100 and 200
    finally:
        bob.stop()

    notifies = [m.body for m in bob.received("NOTIFY")]
    assert [n.split()[1] for n in notifies] == ["100", "200"], notifies
    assert len(bob.received("BYE")) == 2, "the consultation leg and the transferred leg both end"
    time.sleep(1.5)  # talk
    assert CALL_CLOSED not in [e.get("type") for e in carol.events], "carol's phone was taken over, not hung up"
    mark = alice.mark()
    carol.hangup()
    alice.wait_event(CALL_CLOSED, 10, since=mark)
    assert alice.rtp_stats().rx_packets >= MIN_PACKETS, "alice heard nothing from carol"
    assert carol.rtp_stats().rx_packets >= MIN_PACKETS, "carol heard nothing from alice"
    assert wait_until(lambda: len(server.events("closed")) == 2, 10), "the consultation call and alice's call close"
    server.assert_alive()
