"""Problems found trying this round's features as an operator, with real phones (baresip, tests/rig):
each spec says what the docs promise (each failed until it was fixed; kept as regression specs)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from callflow.sdk import DialError, SipServer
from tests.integration.callflow_server import CallflowServer
from tests.rig import CALL_CLOSED, CALL_ESTABLISHED, Kamailio, PhoneFactory, account_line, ports
from tests.rig.proc import wait_until

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


# ---- dial_call_session: a bad second party is refused before the first phone rings ------------------
class SdkInThread:
    """A SipServer (docs/sdk.md) on its own event loop in a thread, so the test can drive phones meanwhile."""

    def __init__(self, port: int, rtp: tuple[int, int]) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.hostport = f"127.0.0.1:{port}"
        self.server: SipServer = self.run(self._start(port, rtp))

    async def _start(self, port: int, rtp: tuple[int, int]) -> SipServer:
        server = SipServer(listen=f"127.0.0.1:{port}", rtp_ports=rtp)
        server.add_user("alice", "alice-pw-2026")
        await server.start()
        return server

    def run(self, coro: Any, timeout: float = 15.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        async def inside() -> Any:
            return fn(*args, **kwargs)
        return self.run(inside())

    def stop(self) -> None:
        try:
            self.run(self.server.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


@pytest.fixture
def sdk() -> Iterator[SdkInThread]:
    running = SdkInThread(ports.sip_port(), ports.rtp_range(10))
    try:
        yield running
    finally:
        running.stop()


def test_originate_to_an_unknown_line_raises_dial_error_and_rings_nothing(
        sdk: SdkInThread, phone_factory: PhoneFactory) -> None:
    alice = phone_factory(account_line("alice", sdk.hostport, auth_pass="alice-pw-2026"), name="alice")
    alice.wait_registered()
    with pytest.raises(DialError) as refused:
        sdk.call(sdk.server.dial_call_session, to_user="alice", then_line="nosuch", then_number="+15557654321")
    assert refused.value.code == 404



# ---- a voicemail's call record ---------------------------------------------------------------------------
VOICEMAIL = '''user caller password "caller-pw-2026"
on incoming from user caller to "vm" {
    record "vm/{call}.wav" max 2s silence off
    hangup
}
'''


@pytest.fixture
def voicemail(tmp_path: Path) -> Iterator[CallflowServer]:
    server = CallflowServer(VOICEMAIL, tmp_path / "cf", ports.sip_port(), ports.rtp_range(10))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def leave_a_message(server: CallflowServer, phone_factory: PhoneFactory) -> str:
    """The caller dials the voicemail, is answered by Callflow, talks (baresip's sine) until `max`."""
    caller = phone_factory(account_line("caller", server.hostport, auth_pass="caller-pw-2026"), name="caller")
    caller.wait_registered()
    caller.dial(f"sip:vm@{server.hostport}")
    caller.wait_event(CALL_ESTABLISHED, 10)
    caller.wait_event(CALL_CLOSED, 15)              # Callflow's `hangup` after 2 s of message
    recording = server.wait_event("recording", 15)
    assert float(recording["seconds"]) > 1.0        # a message was taken: the caller's RTP reached us
    return recording["call"]


def call_record(server: CallflowServer, call: str) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []

    def written() -> bool:
        out = subprocess.run([sys.executable, "-m", "runtime.cli", "cdr", "--state-dir", str(server.state_dir),
                              "--json"], capture_output=True, text=True, timeout=30, cwd=ROOT)
        rows[:] = json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else []
        return any(r["call_id"] == call for r in rows)

    assert wait_until(written, 15), rows
    return next(r for r in rows if r["call_id"] == call)


def test_a_voicemail_call_is_recorded_as_answered_with_its_duration(
        voicemail: CallflowServer, phone_factory: PhoneFactory) -> None:
    record = call_record(voicemail, leave_a_message(voicemail, phone_factory))
    assert record["outcome"] == "answered" and record["code"] == 200, record
    assert record["answered_at"] is not None and record["duration"] >= 1.5, record
    assert record["recordings"] and record["recordings"].endswith(".wav"), record


def test_a_voicemail_calls_closed_event_counts_its_media(
        voicemail: CallflowServer, phone_factory: PhoneFactory) -> None:
    call = leave_a_message(voicemail, phone_factory)
    closed = voicemail.wait_event("closed", 10, call=call)
    assert int(closed["rtp_in"]) > 50 and int(closed["rtp_out"]) > 10, closed


def test_the_rules_hangup_after_a_voicemail_is_a_hangup_event(
        voicemail: CallflowServer, phone_factory: PhoneFactory) -> None:
    call = leave_a_message(voicemail, phone_factory)
    voicemail.wait_event("closed", 10, call=call)
    assert voicemail.events("hangup", call=call), voicemail.call_events(call)


def test_originate_to_play_a_missing_file_is_refused_before_dialling(
        sdk: SdkInThread, kamailio: Kamailio, tmp_path: Path) -> None:
    sdk.call(sdk.server.add_line, "itsp1", server=kamailio.hostport, username="trunk1", password="s3cret",
             register_every=60)
    sdk.call(sdk.server.register_line, "itsp1")
    assert wait_until(lambda: sdk.call(sdk.server.line_state, "itsp1") == "registered", 10)
    with pytest.raises(ValueError, match="none.wav"):    # DialError is a ValueError with .code
        sdk.call(sdk.server.dial_call_session, to_line="itsp1", number="+15557654321",
                 play=str(tmp_path / "none.wav"))


def test_originate_to_play_a_file_that_is_not_audio_ends_in_a_failure_and_a_play_failed_event(
        sdk: SdkInThread, phone_factory: PhoneFactory, tmp_path: Path) -> None:
    """The file is there (so the call is dialled), but only ZERO's answer settles the codec it is
    decoded to: its failure then is a `play_failed` event, the result a Failure, and ZERO hangs up."""
    text = tmp_path / "notes.wav"
    text.write_text("not a sound\n")
    seen: list[Any] = []
    sdk.call(lambda: sdk.server.on("play_failed")(seen.append))
    alice = phone_factory(account_line("alice", sdk.hostport, auth_pass="alice-pw-2026", answermode="auto"),
                          name="alice")
    alice.wait_registered()
    dialed = sdk.call(sdk.server.dial_call_session, to_user="alice", play=str(text))
    alice.wait_event(CALL_ESTABLISHED, 10)
    alice.wait_event(CALL_CLOSED, 15)                 # hung up: nothing to play

    async def result() -> Any:
        return await asyncio.wait_for(dialed.result, 15)

    failure = sdk.run(result(), timeout=20)
    assert failure is not None and failure.code == 500 and "notes.wav" in failure.reason, failure
    assert seen and seen[0]["file"] == str(text) and seen[0].call == dialed.id, seen
