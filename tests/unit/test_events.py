"""The event bus: one logfmt line per event, listeners get `.name` and `.fields`, and a name or a
field that flowlang/events.py does not define is logged as an error, never dropped in silence."""

from __future__ import annotations

import logging

import pytest

from flowlang.events import BUS_EVENT_NAMES, BY_NAME, EVENT_NAMES
from runtime.events import EVENT_NAMES as RUNTIME_EVENT_NAMES
from runtime.events import EngineEvent, EventBus


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records]


def test_the_runtimes_event_names_are_the_schemas() -> None:
    assert RUNTIME_EVENT_NAMES == EVENT_NAMES
    assert {"created", "incoming", "connecting", "connected", "hangup", "failed", "closed",
            "line_registered", "line_register_failed", "user_registered", "attack_detected"} <= set(BUS_EVENT_NAMES)


def test_an_event_is_one_logfmt_line_and_reaches_every_listener(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    seen: list[EngineEvent] = []
    bus.subscribe(seen.append)
    with caplog.at_level(logging.INFO):
        bus.emit("failed", call="3f2a9c01", code=486, reason="Busy Here")
    assert messages(caplog) == ['event=failed call=3f2a9c01 code=486 reason="Busy Here"']
    assert [(e.name, e.fields) for e in seen] == [("failed", {"call": "3f2a9c01", "code": 486, "reason": "Busy Here"})]


@pytest.mark.invalid_events
def test_an_unknown_event_name_is_logged_as_an_error_and_still_delivered(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    seen: list[str] = []
    bus.subscribe(lambda e: seen.append(e.name))
    with caplog.at_level(logging.INFO):
        bus.emit("conected", call="c1")
        bus.emit("conected", call="c2")
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == ['event=event_invalid name=conected reason="no event conected is defined in '
                      'flowlang/events.py"']  # once, not per emit
    assert seen == ["conected", "conected"]


@pytest.mark.invalid_events
def test_a_field_the_event_does_not_define_is_logged_as_an_error(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    with caplog.at_level(logging.INFO):
        bus.emit("hangup", call="c1", channel="ZERO", chanel="ONE")
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "chanel is not a field of hangup" in errors[0]
    assert "its fields: call, channel, reason" in errors[0]


@pytest.mark.invalid_events
def test_a_log_only_event_emitted_on_the_bus_is_an_error(caplog: pytest.LogCaptureFixture) -> None:
    assert not BY_NAME["routed"].bus
    with caplog.at_level(logging.INFO):
        EventBus().emit("routed", call="c1", rule="t.flow:1:1")
    assert any(r.levelno == logging.ERROR and "log-only" in r.getMessage() for r in caplog.records)


def test_typed_access_gives_defaults_of_optional_fields_and_refuses_unknown_names() -> None:
    event = EngineEvent("hangup", {"call": "c1", "channel": "ONE"})
    assert event.get("channel") == "ONE"
    assert event.get("reason") == "BYE"
    assert event.spec is BY_NAME["hangup"]
    with pytest.raises(KeyError, match="its fields: call, channel, reason"):
        event.get("duration")


def test_a_failing_listener_is_logged_and_the_others_still_run(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    seen: list[str] = []
    bus.subscribe(lambda e: 1 / 0)
    bus.subscribe(lambda e: seen.append(e.name))
    with caplog.at_level(logging.INFO):
        bus.emit("closed", call="c1", reason="hangup")
    assert seen == ["closed"]
    assert any("event=listener_failed name=closed" in m for m in messages(caplog))
