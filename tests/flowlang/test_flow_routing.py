"""`on incoming` rules: matching, first match wins, and what the plan says."""

from datetime import datetime
from zoneinfo import ZoneInfo

from flowspec import PREAMBLE, call, compiles

from flowlang import Accept, Hangup, Log, Play, Reject, SetCallerId, SetHeader, Target


def rules(text: str):
    return compiles(PREAMBLE + text)


def decide(text: str, **kw):
    return rules(text).decide(call(**kw))


def test_rules_are_tried_top_to_bottom_and_the_first_match_decides():
    p = rules('''on incoming to prefix "+1" accept to line itsp1
                 on incoming to prefix "+" accept to line itsp2''')
    assert p.decide(call(to="+15551234567")).plan[0].terminal.targets[0].name == "itsp1"
    assert p.decide(call(to="+445551234567")).plan[0].terminal.targets[0].name == "itsp2"


def test_a_longer_prefix_later_in_the_file_does_not_beat_an_earlier_shorter_one_with_conditions():
    p = rules('''on incoming to prefix "+1" when caller-id "alice" accept to line itsp1
                 on incoming to prefix "+1555" accept to line itsp2''')
    assert p.decide(call(to="+15551234567", caller_id="alice")).plan[0].terminal.targets[0].name == "itsp1"
    assert p.decide(call(to="+15551234567", caller_id="bob")).plan[0].terminal.targets[0].name == "itsp2"


def test_exact_number_matches_only_that_number():
    p = rules('on incoming to "200" accept to user bob')
    assert p.decide(call(to="200")) is not None
    assert p.decide(call(to="2000")) is None


def test_several_numbers_in_one_rule():
    p = rules('on incoming to "200", "201", prefix "3" accept to user bob')
    assert all(p.decide(call(to=n)) for n in ("200", "201", "300"))
    assert p.decide(call(to="202")) is None


def test_from_user_name_matches_only_that_user():
    p = rules('on incoming from user bob reject 403')
    assert p.decide(call("user:bob")) is not None
    assert p.decide(call("user:alice")) is None
    assert p.decide(call("line:itsp1")) is None


def test_from_user_any_matches_every_user_but_no_line():
    p = rules('on incoming from user any reject 403')
    assert p.decide(call("user:alice")) and p.decide(call("user:bob"))
    assert p.decide(call("line:itsp1")) is None


def test_from_line_any_matches_every_line():
    p = rules('on incoming from line any reject 403')
    assert p.decide(call("line:itsp1")) and p.decide(call("line:itsp2"))
    assert p.decide(call("user:alice")) is None


def test_from_any_and_no_from_match_everyone_including_unknown_peers():
    for text in ('on incoming from any reject 403', 'on incoming reject 403'):
        p = rules(text)
        assert p.decide(call("user:alice")) and p.decide(call("line:itsp1")) and p.decide(call("unknown"))


def test_regex_captures_rewrite_the_number_sent_to_a_line():
    d = decide(r'on incoming to /^0([1-9][0-9]+)$/ accept to line itsp1 number "+44" + \1', to="02071234567")
    assert d.captures == ("2071234567",)
    assert d.plan[0].terminal.targets == (Target("line", "itsp1", "+442071234567"),)


def test_named_captures_can_be_used_by_name():
    d = decide(r'on incoming to /^9(?P<rest>[0-9]+)$/ accept to line itsp1 number "+1" + \rest', to="95551234")
    assert d.named == {"rest": "5551234"}
    assert d.plan[0].terminal.targets[0].number == "+15551234"


def test_a_prefix_captures_the_rest_of_the_number():
    d = decide(r'on incoming to prefix "9" accept to line itsp1 number "+1{1}"', to="95551234")
    assert d.captures == ("5551234",)
    assert d.plan[0].terminal.targets[0].number == "+15551234"


def test_a_constant_number_needs_no_captures():
    d = decide('on incoming to "911" accept to line itsp1 number "+15550000911"', to="911")
    assert d.plan[0].terminal.targets[0].number == "+15550000911"


def test_accept_to_several_targets_rings_them_in_parallel_with_a_timeout():
    d = decide('on incoming to "200" { accept to user alice, user bob timeout 30s }', to="200")
    assert d.plan[0].terminal == Accept((Target("user", "alice"), Target("user", "bob")), 30.0)


def test_otherwise_chains_are_attempts_in_order():
    d = decide('''on incoming from line itsp1 {
        accept to user alice timeout 20s
        otherwise accept to user bob timeout 1.5m
        otherwise reject 480 "Nobody home"
    }''', frm="line:itsp1")
    assert [a.terminal for a in d.plan] == [
        Accept((Target("user", "alice"),), 20.0),
        Accept((Target("user", "bob"),), 90.0),
        Reject(480, "Nobody home"),
    ]


def test_actions_before_a_terminal_belong_to_its_attempt():
    d = decide('''on incoming to "1" {
        set caller-id "+15551230000"
        set header X-Account "office-{from}"
        log "dialled {to}"
        accept to line itsp1 timeout 10s
        otherwise log "no answer"
        play "sorry.wav" answered
        hangup
    }''', to="1")
    first, second = d.plan
    assert [type(a) for a in first.actions] == [SetCallerId, SetHeader, Log]
    assert first.actions[1].name == "X-Account"
    assert first.actions[1].value.render(d.values) == "office-alice"
    assert first.actions[2].template.render(d.values) == "dialled 1"
    assert second.actions[1] == Play("sorry.wav", True)
    assert second.terminal == Hangup()


def test_play_defaults_to_early_media():
    d = decide('on incoming { play "ring.wav" reject 486 }')
    assert d.plan[0].actions == (Play("ring.wav", False),)


def test_reject_without_reason_uses_the_standard_phrase():
    assert decide('on incoming reject 486').plan[0].terminal == Reject(486, "Busy Here")


def test_condition_on_caller_id():
    p = rules('on incoming when caller-id prefix "+44" reject 403')
    assert p.decide(call(caller_id="+442071234567")) is not None
    assert p.decide(call(caller_id="+15551234567")) is None


def test_condition_on_a_header_is_case_insensitive_in_the_name():
    p = rules('on incoming when header "X-Priority" "urgent" accept to user bob')
    assert p.decide(call(headers={"x-priority": "urgent"})) is not None
    assert p.decide(call(headers={"x-priority": "low"})) is None
    assert p.decide(call()) is None


def test_not_negates_a_condition():
    p = rules('on incoming when not caller-id /^\\+1/ reject 403')
    assert p.decide(call(caller_id="+44")) is not None
    assert p.decide(call(caller_id="+1555")) is None


def test_time_of_day_and_weekdays_in_a_time_zone():
    p = rules('''on incoming when time 09:00-17:00 in "America/New_York" and days mon-fri in "America/New_York"
                 accept to user alice
                 on incoming accept to user bob''')
    ny = ZoneInfo("America/New_York")
    monday_10 = datetime(2026, 11, 23, 10, 0, tzinfo=ny)
    monday_18 = datetime(2026, 11, 23, 18, 0, tzinfo=ny)
    saturday_10 = datetime(2026, 11, 28, 10, 0, tzinfo=ny)
    who = lambda at: p.decide(call(at=at)).plan[0].terminal.targets[0].name  # noqa: E731
    assert (who(monday_10), who(monday_18), who(saturday_10)) == ("alice", "bob", "bob")
    # the same instant seen from UTC is still 10:00 in New York
    assert who(monday_10.astimezone(ZoneInfo("UTC"))) == "alice"


def test_a_time_range_may_wrap_past_midnight():
    p = rules('on incoming when time 22:00-06:00 reject 480')
    utc = ZoneInfo("UTC")
    assert p.decide(call(at=datetime(2026, 1, 1, 23, 0, tzinfo=utc))) is not None
    assert p.decide(call(at=datetime(2026, 1, 1, 5, 59, tzinfo=utc))) is not None
    assert p.decide(call(at=datetime(2026, 1, 1, 6, 0, tzinfo=utc))) is None


def test_weekday_ranges_may_wrap_and_list():
    p = rules('on incoming when days fri-mon, wed reject 480')
    utc = ZoneInfo("UTC")
    days = [p.decide(call(at=datetime(2026, 11, 23 + i, 12, tzinfo=utc))) is not None for i in range(7)]
    assert days == [True, False, True, False, True, True, True]  # Mon..Sun


def test_server_timezone_is_the_default_for_time_conditions():
    p = compiles(PREAMBLE + 'server { timezone "Asia/Tokyo" } on incoming when time 09:00-10:00 reject 480')
    at = datetime(2026, 11, 23, 0, 30, tzinfo=ZoneInfo("UTC"))  # 09:30 in Tokyo
    assert p.decide(call(at=at)) is not None


def test_a_rule_whose_conditions_fail_lets_later_rules_decide():
    p = rules('''on incoming to "1" when caller-id "x" reject 403
                 on incoming to "1" accept to user bob''')
    assert p.decide(call(to="1")).rule.endswith(":6:18")


def test_regex_flags_i_ignore_case():
    p = rules('on incoming to /^sales$/i accept to user bob')
    assert p.decide(call(to="SALES")) is not None


def test_decision_values_carry_call_fields_and_captures_for_templates():
    d = decide('on incoming to /^(1)(2)$/ reject 480', to="12", caller_id="+1555")
    assert d.values["1"] == "1" and d.values["2"] == "2"
    assert d.values["caller_id"] == "+1555" and d.values["to"] == "12"


def test_line_handlers_filter_by_line():
    p = rules('''on incoming from line any reject 480
                 on line itsp1 registered { log "itsp1 up" }
                 on line registered { log "{line} up" }
                 on line itsp1 register failed { log "itsp1 down: {reason}" }''')
    assert len(p.handlers("line_registered", line="itsp1")) == 2
    assert len(p.handlers("line_registered", line="itsp2")) == 1
    assert len(p.handlers("line_register_failed", line="itsp1")) == 1
    assert p.handlers("line_register_failed", line="itsp2") == ()


def test_user_handlers_and_call_handlers_for_every_event():
    p = rules('''on user alice registered log "a"
                 on user any unregistered log "u"
                 on created log "c" on connecting log "c" on connected log "c"
                 on hangup from line itsp1 log "h"
                 on closed log "c" on failed log "f"''')
    assert len(p.handlers("user_registered", user="alice")) == 1
    assert p.handlers("user_registered", user="bob") == ()
    assert len(p.handlers("user_unregistered", user="bob")) == 1
    for ev in ("created", "connecting", "connected", "closed", "failed"):
        assert len(p.handlers(ev)) == 1
    assert len(p.handlers("hangup", line="itsp1")) == 1
    assert p.handlers("hangup", user="alice") == ()


def test_handlers_come_back_in_source_order():
    p = rules('on closed log "1"\non closed log "2"')
    assert [h.actions[0].template.source for h in p.handlers("closed")] == ["1", "2"]


def test_incoming_has_no_observers_only_rules():
    assert rules('on incoming reject 480').handlers("incoming") == ()


def test_unknown_template_names_stay_literal():
    (h,) = rules('on closed log "{call} {reason}"').handlers("closed")
    assert h.actions[0].template.render({"call": "c1"}) == "c1 {reason}"


def test_double_braces_are_literal_braces():
    (h,) = rules('on closed log "{{x}} {call}"').handlers("closed")
    assert h.actions[0].template.render({"call": "c1"}) == "{x} c1"
