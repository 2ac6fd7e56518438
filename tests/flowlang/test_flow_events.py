"""Handlers and the events they observe: every `{field}` of a handler's text is one its event has
(flowlang/events.py), checked at compile time; and the caller identity `callflow explain` shows."""

from datetime import UTC, datetime

import pytest
from flowspec import PREAMBLE, compiles, errors_of

from flowlang import FlowError, explain
from flowlang.events import BY_NAME, CALL_FIELDS, HANDLED_EVENTS, handler_fields
from flowlang.model import EVENTS

# ---- the checker against the table of events -------------------------------------------------


@pytest.mark.parametrize("event", HANDLED_EVENTS)
def test_every_field_of_a_handlers_event_is_accepted(event: str) -> None:
    word = BY_NAME[event].handler.removeprefix("on ")  # type: ignore[union-attr]
    text = " ".join("{" + f.name + "}" for f in handler_fields(event))
    (handler,) = compiles(PREAMBLE + f'on {word} log "{text}"\n').handlers(event)
    assert handler.actions[0].template.names == tuple(f.name for f in handler_fields(event))


def test_the_handlers_the_language_has_are_the_events_with_a_handler_in_the_table() -> None:
    assert set(EVENTS) == set(HANDLED_EVENTS)
    assert set(HANDLED_EVENTS) == {"created", "connecting", "connected", "hangup", "failed", "closed",
                                   "line_registered", "line_register_failed", "user_registered",
                                   "user_unregistered", "message", "dtmf", "gather"}


def test_every_call_handler_has_the_calls_own_fields() -> None:
    for event in HANDLED_EVENTS:
        if BY_NAME[event].kind == "call":
            names = {f.name for f in handler_fields(event)}
            assert {f.name for f in CALL_FIELDS} | {"call", "event"} <= names, event


def test_a_field_of_another_event_is_an_error_pointing_at_it() -> None:
    (err,) = errors_of(PREAMBLE + 'on connecting log "rang for {duration}"\n')
    assert err.startswith("5:29: error: {duration} is not a field of the `connecting` event; its fields are: "
                          "call, channel, from, from_type, caller_id, to, event")


def test_duration_is_a_field_of_hangup_and_closed() -> None:
    compiles(PREAMBLE + 'on hangup log "{duration}" on closed log "{duration}"\n')


def test_expires_is_a_field_of_user_and_line_registrations_only() -> None:
    compiles(PREAMBLE + 'on user registered log "{expires}" on line registered log "{expires}"\n')
    (err,) = errors_of(PREAMBLE + 'on user unregistered log "{expires}"\n')
    assert "{expires} is not a field of the `user_unregistered` event" in err


def test_each_unknown_field_is_reported_once_with_its_own_column() -> None:
    errs = errors_of(PREAMBLE + 'on closed log "{a} and {b}"\n')
    assert [e.split(": ")[0] for e in errs] == ["5:16", "5:24"]


def test_escaped_braces_are_not_fields() -> None:
    (h,) = compiles(PREAMBLE + 'on closed log "{{reason}} {reason}"\n').handlers("closed")
    assert h.actions[0].template.names == ("reason",)


def test_caller_name_is_not_a_handler_field_since_no_event_carries_it() -> None:
    (err,) = errors_of(PREAMBLE + 'on created log "{caller_name}"\n')
    assert "{caller_name} is not a field of the `created` event" in err


# ---- explain's caller identity -----------------------------------------------------------------

IDENTITY = '''user alice password "a" caller-id "+15550001"
user bob password "b"
line itsp1 { server "sip.example.com" }
on incoming from user any when caller-id prefix "+1555" accept to line itsp1
on incoming from user any reject 403 "No caller id"
on incoming from line itsp1 reject 480
'''
NOON = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def test_explain_gives_a_users_call_the_accounts_caller_id() -> None:
    text = explain(compiles(IDENTITY), "user:alice", "+15557654321", NOON)
    assert text.startswith("Call from user alice (caller id +15550001) to +15557654321")
    assert "rule t.flow:4:1 decides" in text


def test_explain_gives_a_user_without_caller_id_its_name() -> None:
    text = explain(compiles(IDENTITY), "user:bob", "+15557654321", NOON)
    assert text.startswith("Call from user bob (caller id bob) to")
    assert "rule t.flow:5:1 decides" in text


def test_explain_refuses_another_caller_id_for_a_user_since_the_server_would_not_use_it() -> None:
    with pytest.raises(FlowError, match=r"a call from user alice always carries its caller-id, \+15550001"):
        explain(compiles(IDENTITY), "user:alice", "+15557654321", NOON, caller_id="+4930123")
    assert "caller id +15550001" in explain(compiles(IDENTITY), "user:alice", "1", NOON, caller_id="+15550001")


def test_explain_takes_the_caller_id_a_line_sends() -> None:
    text = explain(compiles(IDENTITY), "line:itsp1", "+15551230001", NOON, caller_id="+4930123")
    assert "(caller id +4930123)" in text
