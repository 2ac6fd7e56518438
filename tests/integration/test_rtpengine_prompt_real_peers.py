"""`play` with the media in a real rtpengine (Debian's rtpengine-daemon 10.5, built with transcoding
and media playback): a provider's caller (baresip behind Kamailio) hears the prompt rtpengine plays."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.callflow_server import CallflowServer
from tests.integration.conftest import require_peer
from tests.integration.test_play_to_real_phones import write_tone
from tests.integration.test_seed_flows import DID, MIN_PACKETS, office_flow
from tests.rig import CALL_CLOSED, CALL_ESTABLISHED, Kamailio, PhoneFactory, ports
from tests.rig.rtpengine import Rtpengine, rtpengine_problem

pytest.importorskip("av")


@pytest.fixture
def rtpengine(tmp_path: Path) -> Iterator[Rtpengine]:
    require_peer("rtpengine", rtpengine_problem())
    relay = Rtpengine(ports.port(), ports.rtp_range(40), tmp_path / "rtpengine.log")
    relay.start()
    try:
        yield relay
    finally:
        relay.stop()


def test_the_providers_caller_hears_the_prompt_rtpengine_plays_then_callflow_hangs_up(
        kamailio: Kamailio, phone_factory: PhoneFactory, rtpengine: Rtpengine, tmp_path: Path) -> None:
    rules = 'on incoming from line itsp1 { play "tone.wav" answered\n hangup }'
    server = CallflowServer(office_flow(kamailio.hostport, rules=rules), tmp_path / "callflow", ports.sip_port(),
                            ports.rtp_range(20), extra_args=["--media", f"rtpengine:{rtpengine.address}"])
    write_tone(server.dir / "tone.wav")
    server.start()
    try:
        server.wait_event("line_registered", line="itsp1")
        pstn = phone_factory(kamailio.account_line("pstn"), name="pstn")
        pstn.wait_registered()
        pstn.dial(f"sip:{DID}@{kamailio.hostport}")
        pstn.wait_event(CALL_ESTABLISHED, 10)
        pstn.wait_event(CALL_CLOSED, 15)  # the plan's hangup, after the prompt
        playing = server.wait_event("playing")
        assert (playing["codec"], playing["answered"]) == ("PCMU", "yes")
        assert not server.events("play_failed"), server.log_text()[-2000:]
        stats = pstn.rtp_stats()
        assert stats.rx_packets >= MIN_PACKETS, f"the caller heard no prompt: {stats}\n" + \
            rtpengine.log.read_text(errors="replace")[-2000:]
        server.assert_alive()
    finally:
        server.stop()
