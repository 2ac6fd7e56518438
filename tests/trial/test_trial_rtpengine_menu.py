"""A menu (`gather`) on a node whose media is in rtpengine (`--media rtpengine:HOST:PORT`,
docs/scaling.md), tried with a baresip caller pressing a key as RFC 4733 telephone-events."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.callflow_server import CallflowServer
from tests.integration.conftest import require_peer
from tests.rig import CALL_ESTABLISHED, PhoneFactory, account_line, ports
from tests.rig.rtpengine import Rtpengine, rtpengine_problem

pytestmark = pytest.mark.integration

FLOW = '''user caller password "caller-pw-2026"
user alice password "alice-pw-2026"
on incoming from user caller to "menu" {
    gather max 1 timeout 4s {
        when "1" accept to user alice
        else hangup
    }
}
'''


@pytest.fixture
def node(tmp_path: Path) -> Iterator[CallflowServer]:
    require_peer("rtpengine", rtpengine_problem())
    relay = Rtpengine(ports.port(), ports.rtp_range(40), tmp_path / "rtpengine.log")
    relay.start()
    server = CallflowServer(FLOW, tmp_path / "cf", ports.sip_port(), ports.rtp_range(10),
                            extra_args=["--media", f"rtpengine:{relay.address}"])
    try:
        server.start()
        yield server
    finally:
        server.stop()
        relay.stop()


@pytest.mark.xfail(strict=True, reason="with --media rtpengine the keys go to rtpengine, not to Callflow: the menu "
                                       "hears nothing (no dtmf event), times out as if nothing was pressed, and "
                                       "nothing (no gather_deaf, no docs line) tells the operator why")
def test_a_key_pressed_in_a_menu_through_rtpengine_is_heard_or_the_deafness_is_logged(
        node: CallflowServer, phone_factory: PhoneFactory) -> None:
    caller = phone_factory(account_line("caller", node.hostport, auth_pass="caller-pw-2026"), name="caller")
    caller.wait_registered()
    caller.dial(f"sip:menu@{node.hostport}")
    caller.wait_event(CALL_ESTABLISHED, 10)         # Callflow answers to collect the keys
    caller.command("sndcode", "1")
    gathered = node.wait_event("gather", 15)
    assert gathered["digits"] == "1" or node.events("gather_deaf"), gathered
