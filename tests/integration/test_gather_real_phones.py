"""An auto-attendant with real phones: a baresip phone calls the menu, Callflow answers and plays the
prompt, the caller presses a key (baresip's `sndcode`: RFC 4733 telephone-events), and the call lands
at the phone of the user the key names, with voice both ways. Nothing pressed reaches the operator."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.callflow_server import CallflowServer
from tests.integration.test_seed_flows import TALK_SECONDS, assert_voice_both_ways
from tests.rig import CALL_CLOSED, CALL_ESTABLISHED, CALL_INCOMING, Phone, PhoneFactory, account_line, ports

pytest.importorskip("av")

MENU_WAV = Path(__file__).resolve().parents[2] / "flows" / "examples" / "menu.wav"

FLOW = """
user caller   password "caller-pw-2026"
user sales    password "sales-pw-2026"
user support  password "support-pw-2026"
user operator password "operator-pw-2026"

on incoming from user caller to "menu" {
    gather "menu.wav" max 1 timeout 4s retries 1 {
        when "1" accept to user sales
        when "2" { log "to support: {digits}" accept to user support }
        when "0", nothing accept to user operator
    }
}
on gather { log "menu round {attempt}: '{digits}' ({outcome})" }
"""


@pytest.fixture
def callflow(tmp_path: Path) -> Iterator[CallflowServer]:
    server = CallflowServer(FLOW, tmp_path / "callflow", ports.sip_port(), ports.rtp_range(10))
    shutil.copy(MENU_WAV, server.dir / "menu.wav")  # next to main.flow, where `gather "menu.wav"` reads it
    server.start()
    try:
        yield server
    finally:
        server.stop()


def phones(callflow: CallflowServer, phone_factory: PhoneFactory, *names: str) -> list[Phone]:
    out = [phone_factory(account_line(n, callflow.hostport, auth_pass=f"{n}-pw-2026"), name=n) for n in names]
    for phone in out:
        phone.wait_registered()
    return out


def lands_at(callflow: CallflowServer, caller: Phone, callee: Phone) -> None:
    callee.wait_event(CALL_INCOMING, 15)
    callee.accept()
    callee.wait_event(CALL_ESTABLISHED, 10)
    time.sleep(TALK_SECONDS)
    caller.hangup()
    caller.wait_event(CALL_CLOSED, 10)
    callee.wait_event(CALL_CLOSED, 10)


def test_the_caller_presses_2_and_talks_to_support(callflow: CallflowServer, phone_factory: PhoneFactory) -> None:
    caller, sales, support = phones(callflow, phone_factory, "caller", "sales", "support")
    caller.dial(f"sip:menu@{callflow.hostport}")
    caller.wait_event(CALL_ESTABLISHED, 10)  # Callflow answers to play the menu
    playing = callflow.wait_event("playing")
    assert playing["answered"] == "yes"
    caller.command("sndcode", "2")
    gathered = callflow.wait_event("gather")
    assert (gathered["digits"], gathered["final"]) == ("2", "yes"), gathered
    assert gathered["outcome"] == "max"
    assert callflow.events("log", text="to support: 2")
    assert callflow.events("log", text="menu round 1: '2' (max)")  # the `on gather` handler
    lands_at(callflow, caller, support)
    assert CALL_INCOMING not in sales.event_types()  # the key chose one phone, not every phone
    assert_voice_both_ways(caller, support)
    callflow.assert_alive()


def test_nothing_pressed_replays_the_menu_then_reaches_the_operator(
        callflow: CallflowServer, phone_factory: PhoneFactory) -> None:
    caller, operator = phones(callflow, phone_factory, "caller", "operator")
    caller.dial(f"sip:menu@{callflow.hostport}")
    caller.wait_event(CALL_ESTABLISHED, 10)
    first = callflow.wait_event("gather", timeout=15)
    assert (first["digits"], first["outcome"], first["final"]) == ("", "timeout", "no")
    second = callflow.wait_event("gather", timeout=15, since=1)
    assert (second["attempt"], second["final"]) == ("2", "yes")
    assert len(callflow.events("playing")) == 2  # the menu played again
    lands_at(callflow, caller, operator)
    assert_voice_both_ways(caller, operator)
    callflow.assert_alive()
