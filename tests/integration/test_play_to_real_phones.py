"""`play` against real peers: a provider's caller (baresip behind Kamailio) hears the file Callflow
plays, answered or as early media, and an accept after early media still gives voice both ways."""

from __future__ import annotations

import math
import struct
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.callflow_server import CallflowServer
from tests.integration.test_seed_flows import DID, MIN_PACKETS, TALK_SECONDS, assert_voice_both_ways, office_flow
from tests.rig import CALL_CLOSED, CALL_ESTABLISHED, CALL_INCOMING, Kamailio, PhoneFactory, account_line, ports

pytest.importorskip("av")

TONE_SECONDS = 1.5  # 75 packets of 20 ms


def write_tone(path: Path, seconds: float = TONE_SECONDS) -> None:
    rate = 8000
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(9000 * math.sin(2 * math.pi * 440 * i / rate)))
                               for i in range(int(rate * seconds))))


@pytest.fixture
def callflow(tmp_path: Path) -> Iterator[Callable[[str], CallflowServer]]:
    servers: list[CallflowServer] = []

    def start(rules: str, kamailio: Kamailio) -> CallflowServer:
        server = CallflowServer(office_flow(kamailio.hostport, rules=rules), tmp_path / f"callflow{len(servers)}",
                                ports.sip_port(), ports.rtp_range(40))
        write_tone(server.dir / "tone.wav")  # next to main.flow: `play "tone.wav"` finds it there
        servers.append(server)
        return server.start()

    yield start  # type: ignore[misc]
    for server in servers:
        server.stop()


def test_the_providers_caller_hears_the_file_then_callflow_hangs_up(
        kamailio: Kamailio, phone_factory: PhoneFactory, callflow: Callable[..., CallflowServer]) -> None:
    server = callflow('on incoming from line itsp1 { play "tone.wav" answered\n hangup }', kamailio)
    server.wait_event("line_registered", line="itsp1")
    pstn = phone_factory(kamailio.account_line("pstn"), name="pstn")
    pstn.wait_registered()
    pstn.dial(f"sip:{DID}@{kamailio.hostport}")
    pstn.wait_event(CALL_ESTABLISHED, 10)
    pstn.wait_event(CALL_CLOSED, 10)  # the plan's hangup, after the file
    playing = server.wait_event("playing")
    assert (playing["codec"], playing["answered"]) == ("PCMU", "yes")
    stats = pstn.rtp_stats()
    assert stats.rx_packets >= MIN_PACKETS, f"the caller heard no prompt: {stats}"
    server.wait_event("closed")  # logged once our BYE is answered
    server.assert_alive()


def test_early_media_then_the_office_phone_answers_with_voice_both_ways(
        kamailio: Kamailio, phone_factory: PhoneFactory, callflow: Callable[..., CallflowServer]) -> None:
    server = callflow('on incoming from line itsp1 { play "tone.wav"\n accept to user alice }', kamailio)
    server.wait_event("line_registered", line="itsp1")
    pstn = phone_factory(kamailio.account_line("pstn"), name="pstn")
    pstn.wait_registered()
    alice = phone_factory(account_line("alice", server.hostport, auth_pass="alice-pw"), name="alice")
    alice.wait_registered()
    pstn.dial(f"sip:{DID}@{kamailio.hostport}")
    assert server.wait_event("playing")["answered"] == "no"
    alice.wait_event(CALL_INCOMING, 10)  # rings once the file has played
    alice.accept()
    pstn.wait_event(CALL_ESTABLISHED, 10)
    alice.wait_event(CALL_ESTABLISHED, 10)
    time.sleep(TALK_SECONDS)
    pstn.hangup()
    pstn.wait_event(CALL_CLOSED, 10)
    alice.wait_event(CALL_CLOSED, 10)
    assert_voice_both_ways(alice, pstn)
    server.assert_alive()
