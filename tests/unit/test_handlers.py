"""Handlers fire on the events the runtime emits, with every field `callflow check` accepts filled.

The engine here is a stand-in holding the real EventBus and Registrar (the dialplan reads nothing
else of it for handlers); the events are the ones the call layer, the lines and the registrar emit,
in their order, with their fields. The clock is a fake one, for `{duration}`.
"""

from __future__ import annotations

import logging
import re
from types import SimpleNamespace

import pytest

from callflow.flowrun.dialplan import CallRecords, Dialplan
from callflow.sdk import SipServer
from flowlang import FlowError, compile_source
from flowlang.events import BY_NAME, HANDLED_EVENTS, handler_fields
from runtime.events import EventBus
from runtime.registrar import Binding, Registrar

USERS_AND_LINES = '''user alice password "a" caller-id "+15550001"
user bob password "b"
line itsp1 { server "sip.example.com" }
line itsp2 { server "sip2.example.com" }
on incoming from user any accept to line itsp1
on incoming from line any accept to user alice
'''


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def harness(handlers: str):  # type: ignore[no-untyped-def]
    clock = Clock()
    engine = SimpleNamespace(bus=EventBus(), calls={}, registrar=Registrar(), now=clock, router=None,
                             transfer_router=None, chat=SimpleNamespace(router=None))
    plan = Dialplan(SipServer(engine=engine), clock=clock)  # type: ignore[arg-type]
    plan.program = compile_source(USERS_AND_LINES + handlers, "t.flow")  # no load(): nothing to apply
    harness.plan = plan  # type: ignore[attr-defined]
    return engine, clock


def logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The texts of the `event=log` lines handlers wrote, in order."""
    out = []
    for r in caplog.records:
        m = re.match(r'event=log handler=\S+ text=(?:"((?:[^"\\]|\\.)*)"|(\S*))$', r.getMessage())
        if m:
            out.append(m.group(1) if m.group(1) is not None else m.group(2))
    return out


def call_from_user(bus: EventBus, clock: Clock, call: str = "c1", user: str = "alice",
                   caller: str = "+15550001", talk: float = 42.4) -> None:
    """A user's call out through itsp1, answered, talked for `talk` seconds, hung up by the phone."""
    bus.emit("created", call=call, peer_type="USER", peer=user, caller=caller, to="+15557654321")
    bus.emit("incoming", call=call, peer_type="USER", peer=user, caller=caller, to="+15557654321",
             user_agent=None, ip="127.0.0.1", port=5062)
    bus.emit("connecting", call=call, channel="ONE")
    bus.emit("connected", call=call, peer_type="LINE", peer="itsp1")
    bus.emit("dtmf", call=call, channel="ZERO", digit="5", duration=160)
    clock.t += talk
    bus.emit("hangup", call=call, channel="ZERO")
    bus.emit("closed", call=call, reason="hangup", rtp_in=2100, rtp_out=2098)


def call_from_line(bus: EventBus, clock: Clock, call: str = "c2", line: str = "itsp1",
                   answered: bool = False) -> None:
    """A provider's call on a line to alice: answered and hung up by alice, or never answered (the
    caller gives up)."""
    bus.emit("created", call=call, peer_type="LINE", peer=line, caller="+4930123", to="+15551230001")
    bus.emit("gather", call=call, digits="1", outcome="max", attempt=1, final="yes")  # a menu chose alice
    bus.emit("connecting", call=call, channel="ONE")
    if answered:
        bus.emit("connected", call=call, peer_type="USER", peer="alice")
        clock.t += 5
        bus.emit("hangup", call=call, channel="ONE")
        bus.emit("closed", call=call, reason="hangup", rtp_in=250, rtp_out=250)
        return
    bus.emit("hangup", call=call, channel="ZERO", reason="cancelled")
    bus.emit("failed", call=call, code=487, reason="Request Terminated")
    bus.emit("closed", call=call, reason="cancelled")


# ---- every field is filled --------------------------------------------------------------------


def test_created_handlers_see_who_called_whom_from_which_number(caplog: pytest.LogCaptureFixture) -> None:
    engine, clock = harness('on created log "{call}: {from} ({from_type}, {caller_id}) -> {to}"\n')
    with caplog.at_level(logging.INFO):
        call_from_user(engine.bus, clock)
    assert logged(caplog) == ["c1: alice (user, +15550001) -> +15557654321"]


def test_later_call_events_still_know_the_caller_from_the_created_event(caplog: pytest.LogCaptureFixture) -> None:
    engine, clock = harness('on connected log "{from} {caller_id} {to} answered by {peer}"\n'
                            'on closed log "{from} -> {to} closed: {reason}"\n')
    with caplog.at_level(logging.INFO):
        call_from_user(engine.bus, clock)
    assert logged(caplog) == ["alice +15550001 +15557654321 answered by itsp1",
                              "alice -> +15557654321 closed: hangup"]


def test_duration_is_whole_seconds_since_connected(caplog: pytest.LogCaptureFixture) -> None:
    engine, clock = harness('on hangup log "{duration}" on closed log "{duration}"\n')
    with caplog.at_level(logging.INFO):
        call_from_user(engine.bus, clock, talk=42.4)
    assert logged(caplog) == ["42", "42"]


def test_a_call_that_never_connected_lasted_zero_seconds(caplog: pytest.LogCaptureFixture) -> None:
    engine, clock = harness('on closed log "{duration} {reason}"\n')
    with caplog.at_level(logging.INFO):
        call_from_line(engine.bus, clock)
    assert logged(caplog) == ["0 cancelled"]


def test_a_hangup_by_bye_says_bye(caplog: pytest.LogCaptureFixture) -> None:
    engine, clock = harness('on hangup log "{channel} {reason}"\n')
    with caplog.at_level(logging.INFO):
        call_from_user(engine.bus, clock)
        call_from_line(engine.bus, clock)
    assert logged(caplog) == ["ZERO BYE", "ZERO cancelled"]


def test_a_hangup_callflow_made_on_both_legs_has_no_channel_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    engine, clock = harness('on hangup log "[{channel}] {reason} after {duration}s"\n')
    bus = engine.bus
    with caplog.at_level(logging.INFO):
        bus.emit("created", call="m1", peer_type="USER", peer="alice", caller="+15550001", to="+15557654321")
        bus.emit("connected", call="m1", peer_type="LINE", peer="itsp1")
        clock.t += 3600
        bus.emit("hangup", call="m1", channel=None, reason="maximum call duration (3600 s) reached")
    assert logged(caplog) == ["[] maximum call duration (3600 s) reached after 3600s"]


def test_a_call_the_dialplan_did_not_see_created_still_prints_no_field_literally(
        caplog: pytest.LogCaptureFixture) -> None:
    engine, _ = harness('on closed log "{call} [{from}] [{caller_id}] {duration}"\n')
    with caplog.at_level(logging.INFO):
        engine.bus.emit("closed", call="x1", reason="hangup")
    assert logged(caplog) == ["x1 [] [] 0"]


def test_a_users_registration_handler_sees_how_long_it_lasts(caplog: pytest.LogCaptureFixture) -> None:
    engine, clock = harness('on user alice registered log "{user} at {contact} for {expires}s"\n')
    contact = "sip:alice@127.0.0.1:5062"
    engine.registrar.store.put(Binding("alice", contact, ("127.0.0.1", 5062), "udp", clock.t + 600, "r", 1))
    with caplog.at_level(logging.INFO):
        engine.bus.emit("user_registered", user="alice", contact=contact, ip="127.0.0.1", port=5062)
    assert logged(caplog) == [f"alice at {contact} for 600s"]


def test_a_lines_registration_handlers_see_code_reason_and_expiry(caplog: pytest.LogCaptureFixture) -> None:
    engine, _ = harness('on line registered log "{line} {code} {reason} {expires}"\n'
                        'on line register failed log "{line} {code} {reason} retry in {retry_in}"\n')
    with caplog.at_level(logging.INFO):
        engine.bus.emit("line_registered", line="itsp1", code=200, reason="OK", expires=60)
        engine.bus.emit("line_register_failed", line="itsp2", code=403, reason="Forbidden", retry_in="30s")
    assert logged(caplog) == ["itsp1 200 OK 60", "itsp2 403 Forbidden retry in 30s"]


@pytest.mark.parametrize("event", HANDLED_EVENTS)
def test_every_field_check_accepts_is_filled_at_run_time(event: str, caplog: pytest.LogCaptureFixture) -> None:
    """One handler per event writing every field its event offers; none may print as `{name}`."""
    spec = BY_NAME[event]
    text = " ".join(f"{f.name}={{{f.name}}}" for f in handler_fields(event))
    word = spec.handler.removeprefix("on ")  # type: ignore[union-attr]
    engine, clock = harness(f'on {word} log "{text}"\n')
    contact = "sip:alice@127.0.0.1:5062"
    engine.registrar.store.put(Binding("alice", contact, ("127.0.0.1", 5062), "udp", clock.t + 600, "r", 1))
    with caplog.at_level(logging.INFO):
        call_from_user(engine.bus, clock)
        call_from_line(engine.bus, clock)
        engine.bus.emit("line_registered", line="itsp1", code=200, reason="OK", expires=60)
        engine.bus.emit("line_register_failed", line="itsp2", code=408, reason="Request Timeout",
                        retry_in="30s")
        engine.bus.emit("user_registered", user="alice", contact=contact, ip="127.0.0.1", port=5062)
        engine.bus.emit("user_unregistered", user="alice", contact=contact)
        engine.bus.emit("message", **{"from": "alice", "from_type": "user", "user": "alice", "to": "bob",
                                      "text": "hi", "target": "user bob", "code": 200, "reason": "OK"})
    lines = logged(caplog)
    assert lines, f"no `{spec.handler}` handler fired"
    for line in lines:
        assert "{" not in line, f"a field printed literally: {line}"


# ---- filters ----------------------------------------------------------------------------------


def fired(handlers: str, caplog: pytest.LogCaptureFixture) -> list[str]:
    """Which handlers fire on: calls from alice and from bob out through itsp1 (answered), a call
    on itsp1 (answered by alice) and one on itsp2 (unanswered), registrations of lines and users."""
    engine, clock = harness(handlers)
    bus = engine.bus
    with caplog.at_level(logging.INFO):
        call_from_user(bus, clock, "a1", "alice")
        call_from_user(bus, clock, "b1", "bob", caller="bob")
        call_from_line(bus, clock, "l1", "itsp1", answered=True)
        call_from_line(bus, clock, "l2", "itsp2")
        for line in ("itsp1", "itsp2"):
            bus.emit("line_registered", line=line, code=200, reason="OK", expires=60)
            bus.emit("line_register_failed", line=line, code=408, reason="Request Timeout", retry_in="30s")
        for user in ("alice", "bob"):
            bus.emit("user_registered", user=user, contact=f"sip:{user}@h", ip="127.0.0.1", port=5062)
            bus.emit("user_unregistered", user=user, contact=f"sip:{user}@h")
    return logged(caplog)


def test_a_handler_without_filter_fires_for_every_call(caplog: pytest.LogCaptureFixture) -> None:
    assert fired('on created log "{call}"\n', caplog) == ["a1", "b1", "l1", "l2"]


def test_from_any_fires_for_every_call(caplog: pytest.LogCaptureFixture) -> None:
    assert fired('on closed from any log "{call}"\n', caplog) == ["a1", "b1", "l1", "l2"]


def test_from_line_fires_only_for_calls_that_came_in_on_that_line(caplog: pytest.LogCaptureFixture) -> None:
    assert fired('on created from line itsp1 log "{call}"\n', caplog) == ["l1"]
    caplog.clear()
    assert fired('on hangup from line itsp2 log "{call}"\n', caplog) == ["l2"]


def test_from_user_fires_only_for_that_users_calls(caplog: pytest.LogCaptureFixture) -> None:
    assert fired('on connected from user alice log "{call}"\n', caplog) == ["a1"]
    caplog.clear()
    assert fired('on hangup from user bob log "{call} {duration}"\n', caplog) == ["b1 42"]


def test_from_line_means_the_line_the_call_came_in_on_not_the_one_that_answered(
        caplog: pytest.LogCaptureFixture) -> None:
    # alice's and bob's calls are answered through itsp1, but they came from phones
    assert fired('on connected from line itsp1 log "{call}"\n', caplog) == ["l1"]


@pytest.mark.parametrize(("event", "line", "calls"), [
    ("created", "itsp1", ["l1"]), ("connecting", "itsp1", ["l1"]), ("connected", "itsp1", ["l1"]),
    ("hangup", "itsp1", ["l1"]), ("closed", "itsp1", ["l1"]), ("failed", "itsp2", ["l2"]),
    ("failed", "itsp1", []),
])
def test_every_call_event_can_be_filtered_by_the_line_it_came_in_on(
        event: str, line: str, calls: list[str], caplog: pytest.LogCaptureFixture) -> None:
    assert fired(f'on {event} from line {line} log "{{call}}"\n', caplog) == calls


def test_from_user_any_is_refused_since_a_handler_filters_on_one_name() -> None:
    with pytest.raises(FlowError, match="a handler filters on one user by name"):
        compile_source(USERS_AND_LINES + 'on hangup from user any log "x"\n', "t.flow")


def test_line_handlers_filter_on_the_line_named(caplog: pytest.LogCaptureFixture) -> None:
    assert fired('on line itsp2 registered log "{line}"\n'
                 'on line itsp1 register failed log "{line} down"\n', caplog) == ["itsp1 down", "itsp2"]


def test_line_handlers_without_a_name_or_with_any_fire_for_every_line(caplog: pytest.LogCaptureFixture) -> None:
    assert fired('on line registered log "{line}"\n', caplog) == ["itsp1", "itsp2"]
    caplog.clear()
    assert fired('on line any register failed log "{line}"\n', caplog) == ["itsp1", "itsp2"]


def test_user_handlers_filter_on_the_user_named(caplog: pytest.LogCaptureFixture) -> None:
    assert fired('on user bob registered log "{user}"\n'
                 'on user alice unregistered log "{user} left"\n', caplog) == ["alice left", "bob"]


def test_user_handlers_without_a_name_or_with_any_fire_for_every_user(caplog: pytest.LogCaptureFixture) -> None:
    assert fired('on user unregistered log "{user}"\n', caplog) == ["alice", "bob"]
    caplog.clear()
    assert fired('on user any registered log "{user}"\n', caplog) == ["alice", "bob"]


# ---- the call record --------------------------------------------------------------------------


def test_a_calls_record_is_forgotten_when_it_closes() -> None:
    engine, clock = harness("")
    records: CallRecords = harness.plan.records  # type: ignore[attr-defined]
    call_from_user(engine.bus, clock)
    assert records.calls == {}


def test_records_of_calls_that_never_closed_are_swept_with_an_error(caplog: pytest.LogCaptureFixture) -> None:
    live = {"keep"}
    records = CallRecords(live=lambda c: c in live)
    records.SWEEP_EVERY = 3
    bus = EventBus()
    bus.subscribe(lambda e: records.observe(e, lambda: 0.0))
    with caplog.at_level(logging.INFO):
        for call in ("lost", "keep", "new"):
            live.add(call) if call == "new" else None
            bus.emit("created", call=call, peer_type="USER", peer="alice", caller="a", to="1")
    assert set(records.calls) == {"keep", "new"}
    assert any("event=event_invalid name=closed" in r.getMessage() and "first: lost" in r.getMessage()
               for r in caplog.records)
