"""Both seed flows with the calls' media in a real rtpengine (`callflow run --media rtpengine:HOST:PORT`).

Kamailio is the provider, baresip the phones (as in test_seed_flows.py); rtpengine-daemon from Debian
runs in user space on 127.0.0.1, started by the test. Voice must reach each phone from the other, and
it must have gone through rtpengine: rtpengine's own final statistics for the call (logged when the
call is deleted) count the packets it relayed from each side, and its ports are the ones the phones
were given (Callflow's own --rtp-ports range stays unused).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.callflow_server import CallflowServer
from tests.integration.conftest import require_peer
from tests.integration.test_seed_flows import (
    DID,
    MIN_PACKETS,
    OUT_NUMBER,
    assert_voice_both_ways,
    expected_events,
    office_flow,
    talk_then_hang_up,
)
from tests.rig import Kamailio, Phone, PhoneFactory, account_line, ports
from tests.rig.proc import log_tail, wait_until
from tests.rig.rtpengine import Rtpengine, rtpengine_problem

# rtpengine's final stats line per stream: "Port 127.0.0.1:40012 <> 127.0.0.1:31000, SSRC ..., 75 p, ..."
_STREAM = re.compile(r"Port\s+127\.0\.0\.1:(\d+)\s+<>\s+127\.0\.0\.1:(\d+)\s*,.*?(\d+) p\b")


@pytest.fixture(scope="module")
def rtpengine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rtpengine]:
    require_peer("rtpengine", rtpengine_problem())
    relay = Rtpengine(ports.port(), ports.rtp_range(40), tmp_path_factory.mktemp("rtpengine") / "rtpengine.log")
    relay.start()
    try:
        yield relay
    finally:
        relay.stop()


@pytest.fixture
def callflow(tmp_path: Path, rtpengine: Rtpengine) -> Iterator[Callable[[str], CallflowServer]]:
    servers: list[CallflowServer] = []

    def start(flow_text: str) -> CallflowServer:
        server = CallflowServer(flow_text, tmp_path / f"callflow{len(servers)}", ports.sip_port(),
                                ports.rtp_range(20), extra_args=["--media", f"rtpengine:{rtpengine.address}"])
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


def office(kamailio: Kamailio, phone_factory: PhoneFactory,
           callflow: Callable[[str], CallflowServer]) -> tuple[CallflowServer, Phone, Phone]:
    server = callflow(office_flow(kamailio.hostport))
    server.wait_event("rtpengine_ready")
    server.wait_event("line_registered", line="itsp1")
    pstn = phone_factory(kamailio.account_line("pstn"), name="pstn")
    pstn.wait_registered()
    alice = phone_factory(account_line("alice", server.hostport, auth_pass="alice-pw"), name="alice")
    alice.wait_registered()
    return server, alice, pstn


def relayed_by_rtpengine(relay: Rtpengine, since: int) -> list[tuple[int, int, int]]:
    """(rtpengine's port, the phone's port, packets) of every RTP stream rtpengine reported at the end
    of the calls deleted since log offset `since`."""
    text = relay.log.read_text(errors="replace")[since:]
    return [(int(a), int(b), int(n)) for a, b, n in _STREAM.findall(text)]


def assert_voice_went_through_rtpengine(relay: Rtpengine, since: int) -> None:
    """rtpengine relayed at least MIN_PACKETS from each of the call's two phones, on its own ports."""
    low, high = relay.media_ports
    ok = wait_until(lambda: sum(n >= MIN_PACKETS for _, _, n in relayed_by_rtpengine(relay, since)) >= 2, 5)
    streams = relayed_by_rtpengine(relay, since)
    assert ok, f"rtpengine relayed no voice both ways: {streams}\n{log_tail(relay.log, 40)}"
    assert all(low <= port <= high for port, _, n in streams if n >= MIN_PACKETS), streams


@pytest.mark.parametrize("hang_up_side,channel", [("caller", "ZERO"), ("callee", "ONE")])
def test_office_phone_calls_out_with_voice_through_rtpengine(
        kamailio: Kamailio, phone_factory: PhoneFactory, callflow: Callable[[str], CallflowServer],
        rtpengine: Rtpengine, hang_up_side: str, channel: str) -> None:
    server, alice, pstn = office(kamailio, phone_factory, callflow)
    mark = len(rtpengine.log.read_text(errors="replace"))
    alice.dial(f"sip:{OUT_NUMBER}@{server.hostport}")
    call = talk_then_hang_up(server, alice, pstn, alice if hang_up_side == "caller" else pstn)
    assert server.call_events(call) == expected_events(channel)
    assert_voice_both_ways(alice, pstn)
    assert_voice_went_through_rtpengine(rtpengine, mark)
    server.assert_alive()


@pytest.mark.parametrize("hang_up_side,channel", [("caller", "ZERO"), ("callee", "ONE")])
def test_provider_call_rings_the_office_phone_with_voice_through_rtpengine(
        kamailio: Kamailio, phone_factory: PhoneFactory, callflow: Callable[[str], CallflowServer],
        rtpengine: Rtpengine, hang_up_side: str, channel: str) -> None:
    server, alice, pstn = office(kamailio, phone_factory, callflow)
    mark = len(rtpengine.log.read_text(errors="replace"))
    pstn.dial(f"sip:{DID}@{kamailio.hostport}")
    call = talk_then_hang_up(server, pstn, alice, pstn if hang_up_side == "caller" else alice)
    assert server.call_events(call) == expected_events(channel)
    assert_voice_both_ways(alice, pstn)
    assert_voice_went_through_rtpengine(rtpengine, mark)
    server.assert_alive()
