"""`send dtmf` in the language with real phones (issue 12): a rule presses keys on the caller's
baresip after answering it, and an `on connected` handler presses keys on the phone Callflow dialled;
each baresip reports the keys it received."""

from __future__ import annotations

import math
import struct
import textwrap
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.callflow_server import CallflowServer
from tests.integration.test_dtmf_both_ways_real_phones import Provider, provider_calls_bob
from tests.rig import CALL_ESTABLISHED, PhoneFactory, account_line, ports

pytest.importorskip("av")


def tone(path: Path, seconds: float) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"".join(struct.pack("<h", int(6000 * math.sin(2 * math.pi * 440 * i / 8000)))
                               for i in range(int(8000 * seconds))))
    return path


@pytest.fixture
def provider() -> Iterator[Provider]:
    peer = Provider()
    try:
        yield peer
    finally:
        peer.close()


def test_a_rule_presses_keys_on_the_callers_phone_after_answering_it(tmp_path: Path,
                                                                     phone_factory: PhoneFactory) -> None:
    folder = tmp_path / "callflow"
    folder.mkdir()
    tone(folder / "hello.wav", 0.3)
    flow = textwrap.dedent("""\
        user alice password "alice-pw"
        on incoming from user alice to "*99" {
            play "hello.wav" answered
            send dtmf "19"
            gather timeout 3s { else hangup }   # a silent wait while the keys go out
        }
        """)
    callflow = CallflowServer(flow, folder, ports.sip_port(), ports.rtp_range(10)).start()
    try:
        alice = phone_factory(account_line("alice", callflow.hostport, auth_pass="alice-pw"), name="alice")
        alice.wait_registered()
        since = alice.mark()
        alice.dial(f"sip:*99@{callflow.hostport}")
        alice.wait_event(CALL_ESTABLISHED, 10, since=since)
        first = alice.wait_event("CALL_DTMF_START", 10, since=since)
        second = alice.wait_event("CALL_DTMF_START", 10, since=since)  # the first one was consumed
        assert (first.get("param"), second.get("param")) == ("1", "9")
        assert not callflow.events("dtmf_dropped")
        callflow.wait_event("closed")  # the branch's hangup once the wait is over
        callflow.assert_alive()
    finally:
        callflow.stop()


def test_on_connected_presses_keys_on_the_phone_callflow_dialled(tmp_path: Path, provider: Provider,
                                                                  phone_factory: PhoneFactory) -> None:
    flow = textwrap.dedent(f"""\
        user bob password "bob-pw"
        line itsp1 {{ server "127.0.0.1:{provider.port}" }}
        on incoming from line itsp1 accept to user bob
        on connected {{ send dtmf "4#" to channel ONE }}
        """)
    callflow = CallflowServer(flow, tmp_path / "callflow", ports.sip_port(), ports.rtp_range(10)).start()
    try:
        since = 0
        bob = provider_calls_bob(callflow, provider, phone_factory, telephone_event=True)
        first = bob.wait_event("CALL_DTMF_START", 10, since=since)
        second = bob.wait_event("CALL_DTMF_START", 10, since=since)
        assert (first.get("param"), second.get("param")) == ("4", "#")
        assert not callflow.events("dtmf_dropped")
        assert provider.request("BYE").status == 200
        callflow.assert_alive()
    finally:
        callflow.stop()
