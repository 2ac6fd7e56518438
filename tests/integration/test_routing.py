"""Routing constructs with real phones: hunting with `otherwise`, ringing several phones at once,
a refused number, and a rewritten number on the way out through the line."""

from __future__ import annotations

from collections.abc import Callable

from tests.integration.callflow_server import CallflowServer
from tests.integration.test_seed_flows import OUT_NUMBER, callflow  # noqa: F401 - the fixture
from tests.rig import CALL_CLOSED, CALL_ESTABLISHED, CALL_INCOMING, Kamailio, PhoneFactory, account_line


def flow(provider: str, rules: str) -> str:
    return f"""
user alice password "alice-pw"
user bob   password "bob-pw"
user carol password "carol-pw"

line itsp1 {{
    server   "{provider}"
    username "trunk1"
    password "s3cret"
    register every 60s
}}

{rules}
"""


def office(kamailio: Kamailio, phone_factory: PhoneFactory, start: Callable[[str], CallflowServer],
           rules: str, *users: str):  # type: ignore[no-untyped-def]
    server = start(flow(kamailio.hostport, rules))
    server.wait_event("line_registered", line="itsp1")
    phones = {}
    for user in users:
        phone = phone_factory(account_line(user, server.hostport, auth_pass=f"{user}-pw"), name=user)
        phone.wait_registered()
        phones[user] = phone
    return server, phones


def test_hunt_goes_to_the_next_phone_when_the_first_does_not_answer_in_time(
        kamailio: Kamailio, phone_factory: PhoneFactory, callflow: Callable[[str], CallflowServer]) -> None:  # noqa: F811
    rules = """on incoming from user carol to "200" {
    accept to user alice timeout 2s
    otherwise accept to user bob timeout 20s
}"""
    server, phones = office(kamailio, phone_factory, callflow, rules, "alice", "bob", "carol")
    phones["carol"].dial(f"sip:200@{server.hostport}")
    phones["alice"].wait_event(CALL_INCOMING, 10)  # rings, nobody answers
    phones["alice"].wait_event(CALL_CLOSED, 10)    # cancelled after 2 s
    phones["bob"].wait_event(CALL_INCOMING, 10)
    phones["bob"].accept()
    phones["carol"].wait_event(CALL_ESTABLISHED, 10)
    phones["carol"].hangup()
    phones["bob"].wait_event(CALL_CLOSED, 10)
    closed = server.wait_event("closed")
    connected = server.events("connected", call=closed["call"])
    assert connected and connected[0]["peer"] == "bob"
    server.assert_alive()


def test_ringing_several_phones_at_once_connects_the_first_to_answer(
        kamailio: Kamailio, phone_factory: PhoneFactory, callflow: Callable[[str], CallflowServer]) -> None:  # noqa: F811
    rules = 'on incoming from user carol to "300" { accept to user alice, user bob timeout 20s }'
    server, phones = office(kamailio, phone_factory, callflow, rules, "alice", "bob", "carol")
    phones["carol"].dial(f"sip:300@{server.hostport}")
    phones["alice"].wait_event(CALL_INCOMING, 10)
    phones["bob"].wait_event(CALL_INCOMING, 10)
    phones["bob"].accept()
    phones["carol"].wait_event(CALL_ESTABLISHED, 10)
    phones["alice"].wait_event(CALL_CLOSED, 10)  # the other phone stops ringing
    phones["bob"].hangup()
    phones["carol"].wait_event(CALL_CLOSED, 10)
    closed = server.wait_event("closed")
    assert server.events("connected", call=closed["call"])[0]["peer"] == "bob"
    server.assert_alive()


def test_reject_rule_answers_with_its_code_and_a_number_no_rule_takes_gets_404(
        kamailio: Kamailio, phone_factory: PhoneFactory, callflow: Callable[[str], CallflowServer]) -> None:  # noqa: F811
    rules = 'on incoming from user any to "911" reject 403 "Not from this office"'
    server, phones = office(kamailio, phone_factory, callflow, rules, "alice")
    phones["alice"].dial(f"sip:911@{server.hostport}")
    assert "403" in str(phones["alice"].wait_event(CALL_CLOSED, 10).get("param"))
    phones["alice"].dial(f"sip:12345@{server.hostport}")
    assert "404" in str(phones["alice"].wait_event(CALL_CLOSED, 10).get("param"))
    assert server.events("no_route")
    server.assert_alive()


def test_number_rewritten_with_a_capture_reaches_the_provider(
        kamailio: Kamailio, phone_factory: PhoneFactory, callflow: Callable[[str], CallflowServer]) -> None:  # noqa: F811
    local = OUT_NUMBER.removeprefix("+1")  # 10 digits dialled without the country code
    rules = r'on incoming from user any to /^([0-9]{10})$/ accept to line itsp1 number "+1" + \1'
    server, phones = office(kamailio, phone_factory, callflow, rules, "alice")
    mark = kamailio.log_mark()
    pstn = phone_factory(kamailio.account_line("pstn", answermode="auto"), name="pstn")
    pstn.wait_registered()
    phones["alice"].dial(f"sip:{local}@{server.hostport}")
    phones["alice"].wait_event(CALL_ESTABLISHED, 10)
    phones["alice"].hangup()
    kamailio.wait_log(rf"trunk call to \{OUT_NUMBER}", since=mark)
    server.assert_alive()
