"""Chat between real phones through Callflow: baresip sends a SIP MESSAGE (RFC 3428) from one
registered phone to another. baresip 1.0 sends messages with the `contact` module's `message`
command (to its current contact); the rig does not load that module, so the test loads it with
`insmod` after writing the phone's contacts file. The far phone takes the message it received
with 200 (its menu hands the text to the user interface, which a headless phone does not have)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.callflow_server import CallflowServer
from tests.rig import Phone, PhoneFactory, account_line, ports
from tests.rig.proc import wait_until

FLOW = """
user alice password "alice-pw"
user bob   password "bob-pw"

on incoming from user any to "alice" accept to user alice
on incoming from user any to "bob" accept to user bob
on message { log "chat {from} -> {to}: {text} ({code})" }
"""


@pytest.fixture
def callflow(tmp_path: Path) -> Iterator[CallflowServer]:
    server = CallflowServer(FLOW, tmp_path / "callflow", ports.sip_port(), ports.rtp_range(10)).start()
    try:
        yield server
    finally:
        server.stop()


def send_message(phone: Phone, to: str, text: str) -> None:
    """baresip 1.0: the contact module's `message` goes to the current contact."""
    (phone.dir / "contacts").write_text(f'"{to}" <{to}>\n')
    phone.command("insmod", "contact")
    phone.command("contact_next")
    phone.command("message", text)


def test_a_message_from_one_phone_reaches_the_other_through_callflow(
        callflow: CallflowServer, phone_factory: PhoneFactory) -> None:
    alice = phone_factory(account_line("alice", callflow.hostport, auth_pass="alice-pw"), name="alice")
    bob = phone_factory(account_line("bob", callflow.hostport, auth_pass="bob-pw"), name="bob")
    alice.wait_registered()
    bob.wait_registered()
    send_message(alice, f"sip:bob@{callflow.hostport}", "lunch at noon?")
    event = callflow.wait_event("message")
    assert (event["from"], event["to"], event["text"], event["code"]) == ("alice", "bob", "lunch at noon?", "200")
    # the 200 is bob's phone's: baresip takes a text/plain MESSAGE with 200 only when it has a handler
    # for it, and shows it to its user (ui_output: no UI module runs here to print it in the log)
    assert event["target"] == "user bob"
    assert callflow.events("log", text="chat alice -> bob: lunch at noon? (200)")
    callflow.assert_alive()


def test_a_phone_with_a_wrong_password_cannot_send_a_message(
        callflow: CallflowServer, phone_factory: PhoneFactory) -> None:
    bob = phone_factory(account_line("bob", callflow.hostport, auth_pass="bob-pw"), name="bob")
    bob.wait_registered()
    # registers nowhere (regint=0) and answers the challenge with a wrong password
    intruder = phone_factory(account_line("alice", callflow.hostport, auth_pass="guess", regint=0), name="intruder")
    send_message(intruder, f"sip:bob@{callflow.hostport}", "send me your password")
    assert wait_until(lambda: callflow.events("auth_failed", method="MESSAGE"), 5)
    assert callflow.events("message") == []
    assert '"send me your password"' not in bob.log_path.read_text(errors="replace")
    callflow.assert_alive()
