"""Issue 2, item 5: the first slice of the language works exactly as written."""

from flowspec import SLICE, call

from flowlang import Accept, CallInfo, Log, Target, compile_source


def test_the_slice_compiles_without_warnings():
    program = compile_source(SLICE, "office.flow")
    assert program.warnings == ()


def test_the_user_is_declared_with_its_password():
    user = compile_source(SLICE).users["alice"]
    assert (user.name, user.password, user.caller_id) == ("alice", "alice-pw", None)
    assert user.max_calls == 8  # the default per-user limit (docs/language.md, "Call limits")


def test_the_line_carries_server_port_credentials_and_registration_interval():
    line = compile_source(SLICE).lines["itsp1"]
    assert (line.server_host, line.server_port, line.transport) == ("127.0.0.1", 5080, "udp")
    assert (line.username, line.password, line.register_every) == ("trunk1", "s3cret", 60)


def test_a_phone_dialling_a_number_goes_out_through_the_line():
    decision = compile_source(SLICE, "office.flow").decide(call("user:alice", "+15551234567"))
    assert decision is not None
    assert decision.rule == "office.flow:10:1"
    (attempt,) = decision.plan
    assert attempt.actions == ()
    assert attempt.terminal == Accept((Target("line", "itsp1", None),), None)


def test_a_call_from_the_line_rings_the_user():
    decision = compile_source(SLICE, "office.flow").decide(call("line:itsp1", "trunk1", caller_id="+1999"))
    assert decision.rule == "office.flow:11:1"
    assert decision.plan[0].terminal == Accept((Target("user", "alice", None),), None)


def test_a_short_number_from_a_phone_is_taken_by_no_rule():
    assert compile_source(SLICE).decide(call("user:alice", "12")) is None


def test_a_call_from_an_unknown_peer_is_taken_by_no_rule():
    program = compile_source(SLICE)
    assert program.decide(CallInfo("unknown", None, "evil", None, "+15551234567")) is None


def test_the_hangup_handler_logs_with_the_call_values():
    (handler,) = compile_source(SLICE).handlers("hangup")
    (log,) = handler.actions
    assert isinstance(log, Log)
    assert log.template.render({"call": "3f2a", "channel": "ZERO"}) == "call 3f2a ended by channel ZERO"


def test_events_without_handlers_have_none():
    assert compile_source(SLICE).handlers("connected") == ()


def test_the_source_hash_changes_with_the_text_and_only_with_it():
    a = compile_source(SLICE, "office.flow").source_hash
    assert a == compile_source(SLICE, "office.flow").source_hash
    assert a != compile_source(SLICE + "\n# edited\n", "office.flow").source_hash
