"""Handlers of a running server, with real peers: filtered handlers fire for the calls they name and
only those, and every field they write is filled (Kamailio is the provider, baresip the phones)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.callflow_server import CallflowServer
from tests.rig import CALL_CLOSED, CALL_ESTABLISHED, CALL_INCOMING, Kamailio, PhoneFactory, account_line, ports

OUT_NUMBER = "+15557654321"
DID = "+15551230000"


def flow(provider: str) -> str:
    return f"""
user alice password "alice-pw" caller-id "+15550001"

line itsp1 {{
    server   "{provider}"
    username "trunk1"
    password "s3cret"
    register every 60s
}}

on incoming from user any to /^\\+?[0-9]{{7,15}}$/ accept to line itsp1
on incoming from line itsp1 accept to user alice

on line itsp1 registered        log "line {{line}} up for {{expires}}s"
on created                      log "created {{call}} from {{from_type}} {{from}} to {{to}}"
on connected from user alice    log "out {{call}} answered by {{peer}}"
on connected from line itsp1    log "in {{call}} from {{caller_id}} answered by {{peer}}"
on hangup from user alice       log "out {{call}} hangup {{channel}} {{reason}} after {{duration}}s"
on closed from line itsp1       log "in {{call}} closed {{reason}} from {{from}} to {{to}}"
"""


@pytest.fixture
def server(kamailio: Kamailio, tmp_path: Path) -> Iterator[CallflowServer]:
    srv = CallflowServer(flow(kamailio.hostport), tmp_path / "callflow", ports.sip_port(), ports.rtp_range(40))
    srv.start()
    yield srv
    srv.stop()


def texts(server: CallflowServer) -> list[str]:
    return [e["text"] for e in server.events("log")]


def answered_call(server: CallflowServer, caller, callee, dial: str) -> str:  # type: ignore[no-untyped-def]
    """`caller` dials, `callee` answers, the caller hangs up; returns the call's id."""
    before = len(server.events("closed"))
    caller.dial(dial)
    callee.wait_event(CALL_INCOMING, 10)
    callee.accept()
    caller.wait_event(CALL_ESTABLISHED, 10)
    callee.wait_event(CALL_ESTABLISHED, 10)
    caller.hangup()
    caller.wait_event(CALL_CLOSED, 10)
    callee.wait_event(CALL_CLOSED, 10)
    return server.wait_event("closed", since=before)["call"]


def test_filtered_handlers_fire_for_their_calls_with_every_field_filled(
        kamailio: Kamailio, phone_factory: PhoneFactory, server: CallflowServer) -> None:
    server.wait_event("line_registered", line="itsp1")
    pstn = phone_factory(kamailio.account_line("pstn"), name="pstn")
    pstn.wait_registered()
    alice = phone_factory(account_line("alice", server.hostport, auth_pass="alice-pw"), name="alice")
    alice.wait_registered()

    out = answered_call(server, alice, pstn, f"sip:{OUT_NUMBER}@{server.hostport}")
    inbound = answered_call(server, pstn, alice, f"sip:{DID}@{kamailio.hostport}")

    logged = texts(server)
    assert any(t.startswith("line itsp1 up for ") and t[len("line itsp1 up for "):-1].isdigit() for t in logged)
    assert f"created {out} from user alice to {OUT_NUMBER}" in logged
    assert f"created {inbound} from line itsp1 to {DID}" in logged
    assert f"out {out} answered by itsp1" in logged
    caller_id = server.events("created", call=inbound)[0]["caller"]
    assert f"in {inbound} from {caller_id} answered by alice" in logged
    hangups = [t for t in logged if t.startswith(f"out {out} hangup ZERO BYE after ")]
    assert len(hangups) == 1 and hangups[0].removesuffix("s").rsplit(" ", 1)[1].isdigit()
    assert f"in {inbound} closed hangup from itsp1 to {DID}" in logged
    # each filtered handler fired for its own call only
    assert not [t for t in logged if t.startswith(f"out {inbound}") or t.startswith(f"in {out}")]
    assert not [t for t in logged if "{" in t], logged
    server.assert_alive()
