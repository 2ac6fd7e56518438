"""Originate and click-to-call (issue 12) between real peers: `callflow call alice NUMBER` against a
running `callflow run` rings alice's baresip phone (auto answer) first; when it answers, the number
is dialled through the rules as a call from alice, out through the line to Kamailio's phone `pstn`,
and the two talk (RTP both ways). A number the rules refuse rings nothing. The SDK's example
(examples/originate.py) does the same with dial_call_session, then hands the far party to bob with
transfer_call_session."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.integration.callflow_server import CallflowServer
from tests.integration.test_seed_flows import (
    MIN_PACKETS,
    OUT_NUMBER,
    TALK_SECONDS,
    assert_voice_both_ways,
    callflow,  # noqa: F401 - the fixture
    office_flow,
)
from tests.rig import CALL_CLOSED, CALL_ESTABLISHED, CALL_INCOMING, Kamailio, PhoneFactory, account_line, ports
from tests.rig.proc import log_tail, wait_until
from tests.rig.sipping import options_ping
from tests.unit.test_control import callflow as callflow_command

ROOT = Path(__file__).resolve().parents[2]


def test_click_to_call_rings_the_office_phone_then_connects_it_to_the_providers_phone(
        kamailio: Kamailio, phone_factory: PhoneFactory, callflow: Callable[..., CallflowServer]) -> None:  # noqa: F811
    server = callflow(office_flow(kamailio.hostport))
    server.wait_event("line_registered", line="itsp1")
    pstn = phone_factory(kamailio.account_line("pstn"), name="pstn")
    pstn.wait_registered()
    alice = phone_factory(account_line("alice", server.hostport, auth_pass="alice-pw", answermode="auto"),
                          name="alice")
    alice.wait_registered()
    started = callflow_command("call", "alice", OUT_NUMBER, "--control", server.control)
    assert started.returncode == 0, started.stderr
    assert "ringing alice's phone" in started.stdout
    alice.wait_event(CALL_ESTABLISHED, 10)           # alice's phone answered (auto): channel ZERO
    pstn.wait_event(CALL_INCOMING, 10)               # then the number rings through the line
    pstn.accept()
    pstn.wait_event(CALL_ESTABLISHED, 10)
    time.sleep(TALK_SECONDS)
    pstn.hangup()
    alice.wait_event(CALL_CLOSED, 10)
    pstn.wait_event(CALL_CLOSED, 10)
    closed = server.wait_event("closed")
    call = closed["call"]
    created = server.events("created", call=call)[0]
    assert (created["peer_type"], created["peer"], created["to"], created["origin"]) == (
        "USER", "alice", OUT_NUMBER, "originated")
    assert server.events("originated", call=call)
    events = [e for e in server.call_events(call) if e != ("connecting", "ZERO")]  # alice may not send 180
    assert events == [("created", None), ("connecting", "ONE"), ("connected", None), ("hangup", "ONE"),
                      ("closed", None)]
    assert_voice_both_ways(alice, pstn)
    server.assert_alive()


def test_click_to_call_to_a_number_the_rules_refuse_rings_nothing(
        kamailio: Kamailio, phone_factory: PhoneFactory, callflow: Callable[..., CallflowServer]) -> None:  # noqa: F811
    server = callflow(office_flow(kamailio.hostport))
    alice = phone_factory(account_line("alice", server.hostport, auth_pass="alice-pw"), name="alice")
    alice.wait_registered()
    refused = callflow_command("call", "alice", "12", "--control", server.control)   # rules: 7-15 digits
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "the rules refuse a call from alice to 12: 404" in refused.stderr
    assert server.events("originate_refused", user="alice", to="12")
    assert not server.events("created")
    time.sleep(0.5)
    assert CALL_INCOMING not in alice.event_types()
    server.assert_alive()


# ---- the SDK: examples/originate.py (dial_call_session, then transfer_call_session) ------------------
class OriginateProgram(CallflowServer):
    """examples/originate.py in a child process, read through its log like `callflow run`."""

    def __init__(self, provider: str, workdir: Path, extra: list[str]) -> None:
        super().__init__("", workdir, ports.sip_port(), ports.rtp_range(40), extra_args=["--control", "-"])
        self.provider = provider
        self.extra = extra

    def start(self, timeout: float = 15.0) -> OriginateProgram:
        cmd = [sys.executable, str(ROOT / "examples" / "originate.py"), "--listen", self.hostport,
               "--provider", self.provider, "--rtp-ports", f"{self.rtp_range[0]}-{self.rtp_range[1]}", *self.extra]
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                      env=env, start_new_session=True)
        ok = wait_until(lambda: self._proc.poll() is not None or options_ping(self.port) == 200, timeout)
        if not ok or self._proc.poll() is not None:
            self.stop()
            raise AssertionError(f"the example did not start ({shlex.join(cmd)}):\n{log_tail(self.log_path, 40)}")
        return self


def test_the_sdk_dials_alice_then_bridges_her_to_the_providers_phone_then_transfers_it_to_bob(
        kamailio: Kamailio, phone_factory: PhoneFactory, tmp_path: Path) -> None:
    program = OriginateProgram(kamailio.hostport, tmp_path / "originate",
                               ["--number", OUT_NUMBER, "--transfer-to", "bob", "--transfer-after", "2"]).start()
    try:
        program.wait_event("line_registered", line="itsp1")
        pstn = phone_factory(kamailio.account_line("pstn"), name="pstn")
        pstn.wait_registered()
        bob = phone_factory(account_line("bob", program.hostport, auth_pass="bob-pw", answermode="auto"),
                            name="bob")
        bob.wait_registered()
        alice = phone_factory(account_line("alice", program.hostport, auth_pass="alice-pw", answermode="auto"),
                              name="alice")
        alice.wait_registered()
        alice.wait_event(CALL_ESTABLISHED, 15)        # rung first, answered (auto): channel ZERO
        pstn.wait_event(CALL_INCOMING, 10)            # then the number, through the line: channel ONE
        pstn.accept()
        pstn.wait_event(CALL_ESTABLISHED, 10)
        connected = program.wait_event("log", 10)
        call = connected["text"].split()[1]
        assert connected["text"] == f"call {call} connected alice to {OUT_NUMBER}"
        alice.wait_event(CALL_CLOSED, 15)             # transferred away: alice's leg ended by us
        bob.wait_event(CALL_ESTABLISHED, 10)          # and the far party now talks to bob
        program.wait_event("log", 10, text=f"call {call} transferred to bob")
        time.sleep(TALK_SECONDS)
        pstn.hangup()
        bob.wait_event(CALL_CLOSED, 10)
        pstn.wait_event(CALL_CLOSED, 10)
        program.wait_event("closed", 10, call=call)
        created = program.events("created", call=call)[0]
        assert (created["peer"], created["origin"]) == ("alice", "originated")
        steps = [e["outcome"] for e in program.events("transfer", call=call)]
        assert steps[0] == "trying" and steps[-1] == "connected"
        assert_voice_both_ways(alice, pstn)
        assert bob.rtp_stats().rx_packets >= MIN_PACKETS, f"bob heard nothing from pstn: {bob.rtp_stats()}"
        program.assert_alive()
    finally:
        program.stop()
