"""The SDK's example program (examples/seed_flows.py: both seed flows in Python, no `.flow` file)
against real peers: Kamailio as the provider with its phone `pstn`, baresip as alice's office phone.

The same observations as tests/integration/test_seed_flows.py makes of `callflow run`: the event
lines in order with their channels, and voice arriving at each phone from the other.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.callflow_server import CallflowServer
from tests.integration.test_seed_flows import (
    DID,
    OUT_NUMBER,
    assert_voice_both_ways,
    expected_events,
    talk_then_hang_up,
)
from tests.rig import Kamailio, PhoneFactory, account_line, ports
from tests.rig.proc import log_tail, wait_until
from tests.rig.sipping import options_ping

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "seed_flows.py"


class ExampleProgram(CallflowServer):
    """examples/seed_flows.py in a child process, read through its log like `callflow run`."""

    def __init__(self, provider: str, workdir: Path) -> None:
        super().__init__("", workdir, ports.sip_port(), ports.rtp_range(40), extra_args=["--control", "-"])
        self.provider = provider

    def start(self, timeout: float = 15.0) -> ExampleProgram:
        cmd = [sys.executable, str(EXAMPLE), "--listen", self.hostport, "--provider", self.provider,
               "--rtp-ports", f"{self.rtp_range[0]}-{self.rtp_range[1]}"]
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                      env=env, start_new_session=True)
        ok = wait_until(lambda: self._proc.poll() is not None or options_ping(self.port) == 200, timeout)
        if not ok or self._proc.poll() is not None:
            self.stop()
            raise AssertionError(f"the example did not start ({shlex.join(cmd)}):\n{log_tail(self.log_path, 40)}")
        return self


@pytest.fixture
def example(kamailio: Kamailio, tmp_path: Path) -> Iterator[ExampleProgram]:
    program = ExampleProgram(kamailio.hostport, tmp_path / "example").start()
    try:
        program.wait_event("line_registered", line="itsp1")
        yield program
    finally:
        program.stop()


@pytest.mark.parametrize("hang_up_side,channel", [("caller", "ZERO"), ("callee", "ONE")])
def test_the_sdk_example_sends_the_office_phones_call_out_through_the_line(
        example: ExampleProgram, kamailio: Kamailio, phone_factory: PhoneFactory,
        hang_up_side: str, channel: str) -> None:
    pstn = phone_factory(kamailio.account_line("pstn"), name="pstn")
    pstn.wait_registered()
    alice = phone_factory(account_line("alice", example.hostport, auth_pass="alice-pw"), name="alice")
    alice.wait_registered()
    alice.dial(f"sip:{OUT_NUMBER}@{example.hostport}")
    call = talk_then_hang_up(example, alice, pstn, alice if hang_up_side == "caller" else pstn)
    assert example.call_events(call) == expected_events(channel)
    incoming = example.events("incoming", call=call)[0]
    assert (incoming["peer_type"], incoming["peer"], incoming["to"]) == ("USER", "alice", OUT_NUMBER)
    assert example.events("log", text=f"call {call} ended by channel {channel}")
    assert_voice_both_ways(alice, pstn)
    example.assert_alive()


def test_the_sdk_example_rings_the_office_phone_for_the_providers_call(
        example: ExampleProgram, kamailio: Kamailio, phone_factory: PhoneFactory) -> None:
    pstn = phone_factory(kamailio.account_line("pstn"), name="pstn")
    pstn.wait_registered()
    alice = phone_factory(account_line("alice", example.hostport, auth_pass="alice-pw"), name="alice")
    alice.wait_registered()
    pstn.dial(f"sip:{DID}@{kamailio.hostport}")
    call = talk_then_hang_up(example, pstn, alice, pstn)
    assert example.call_events(call) == expected_events("ZERO")
    incoming = example.events("incoming", call=call)[0]
    assert (incoming["peer_type"], incoming["peer"], incoming["to"]) == ("LINE", "itsp1", DID)
    assert_voice_both_ways(alice, pstn)
    example.assert_alive()
