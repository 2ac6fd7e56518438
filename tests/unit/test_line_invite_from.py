"""The From of the INVITE Callflow sends through a line (RFC 3261 8.1.1.3): it names the line's
account at the provider, never an empty user (`sip:@host`, seen in the SIPp specs when a provider's
call went out through a line that does not register). A line without a username falls back to the
number it shows (its `caller-id`, the caller's, its first number), else to `callflow`, the user our
Contact carries in that case. Fork building is sans-IO: a host made of plain values is enough."""

from __future__ import annotations

from types import SimpleNamespace

from runtime.calls.forks import ForkBuilder
from runtime.calls.legs import Target
from runtime.lines.machine import LineConfig
from runtime.sip.digest import DigestClient
from runtime.sip.message import Headers, Request


def from_of_line_invite(config: LineConfig, *, caller_id_override: str | None = None) -> str:
    """The From header value of the INVITE a provider's call (from line `provider`, caller `sipp`)
    gets when the rules send it out through the line `config` describes."""
    line = SimpleNamespace(config=config, address=("127.0.0.1", 5080), carries_calls=True,
                           auth=DigestClient(config.username, config.password))
    host = SimpleNamespace(users={}, lines={config.name: line}, registrar=None, line_max_calls={},
                           advertise="127.0.0.1", user_agent=None,
                           via=lambda transport="udp": "SIP/2.0/UDP 127.0.0.1:5060;rport",
                           contact=lambda transport="udp": "<sip:callflow@127.0.0.1:5060>",
                           calls_of_line=lambda name, besides=None: 0)
    headers = Headers()
    headers.add("From", "<sip:sipp@127.0.0.1:5070>;tag=1")
    call = SimpleNamespace(id="c1", invite=Request("INVITE", "sip:+15551234567@127.0.0.1", headers),
                           extra_headers=(), caller_id_override=caller_id_override, caller_id="sipp",
                           caller_name=None, peer_type="LINE", peer_name="provider", dialled="+15551234567")
    legs, failure = ForkBuilder(host).build_forks(call, Target("LINE", config.name), b"", 0.0)
    assert failure is None
    return str(legs[0].invite.headers.get("from"))


def test_the_from_of_a_line_invite_names_the_lines_username() -> None:
    value = from_of_line_invite(LineConfig("far", "127.0.0.1", 5080, username="trunk1", password="pw"))
    assert value.startswith("<sip:trunk1@127.0.0.1>;tag=")


def test_a_line_without_username_sends_its_first_number_as_from_user() -> None:
    value = from_of_line_invite(LineConfig("far", "127.0.0.1", 5080, numbers=("+15550001111",)))
    assert value.startswith("<sip:+15550001111@127.0.0.1>;tag=")


def test_a_line_without_username_sends_the_rules_caller_id_as_from_user() -> None:
    value = from_of_line_invite(LineConfig("far", "127.0.0.1", 5080), caller_id_override="+15552223333")
    assert value.startswith("<sip:+15552223333@127.0.0.1>;tag=")


def test_a_line_without_username_or_number_sends_callflow_as_from_user_never_an_empty_one() -> None:
    value = from_of_line_invite(LineConfig("far", "127.0.0.1", 5080))
    assert value.startswith("<sip:callflow@127.0.0.1>;tag=")
    assert "sip:@" not in value
