"""Errors point at the mistake: file:line:col, the source line, a caret; several per run."""

import pytest
from flowspec import PREAMBLE, errors_of, warnings_of

from flowlang import Diagnostic, FlowError, compile_source


def test_an_error_renders_as_file_line_col_message_source_line_and_caret():
    with pytest.raises(FlowError) as info:
        compile_source('user alice password "x"\non incoming acept to user alice\n', "office.flow")
    assert str(info.value) == (
        "office.flow:2:13: error: unexpected 'acept'; expected one of 'accept', 'from', 'gather', 'hangup', "
        "'log', 'otherwise', 'play', 'record', 'reject', 'send', 'set', 'to', 'when', '{' (did you mean 'accept'?)\n"
        "on incoming acept to user alice\n"
        "            ^"
    )


def test_the_caret_keeps_tabs_so_it_lines_up():
    d = Diagnostic("f.flow", 1, 3, "error", "m", "\tx y")
    assert d.render().splitlines()[2] == "\t ^"


def test_to_dict_is_plain_data_for_json():
    d = Diagnostic("f.flow", 3, 4, "warning", "m", "src")
    assert d.to_dict() == {"file": "f.flow", "line": 3, "col": 4, "severity": "warning", "message": "m"}


def test_several_syntax_errors_are_reported_in_one_run():
    errs = errors_of('''user alice password "x"
on incoming from user alice to "1" acept to user alice
line l { server "a" usrname "u" }
on incoming to "2" accept to user alice
on hangup { log missing-quotes }
''')
    assert [e.split(": error")[0] for e in errs] == ["2:36", "3:21", "5:17"]


def test_a_missing_closing_brace_is_reported_at_the_end():
    errs = errors_of('line l {\n  server "a"\n')
    assert errs == ["2:13: error: missing '}' at the end of the file"] or "missing '}'" in errs[0]


def test_an_unterminated_string_says_so():
    assert "unterminated string" in errors_of('user a password "x\n')[0]


def test_an_unknown_user_in_a_target_is_an_error_with_a_suggestion():
    errs = errors_of(PREAMBLE + 'on incoming accept to user alicee')
    assert errs == ["5:23: error: unknown user alicee (did you mean alice?)"]


def test_an_unknown_line_in_from_is_an_error():
    assert errors_of(PREAMBLE + 'on incoming from line nope reject 480') == ["5:23: error: unknown line nope"]


def test_an_unknown_line_in_a_handler_is_an_error():
    assert errors_of(PREAMBLE + 'on line itsp1x registered log "x"') == [
        "5:9: error: unknown line itsp1x (did you mean itsp1?)"]


def test_an_invalid_regex_is_an_error_at_the_regex():
    errs = errors_of(PREAMBLE + 'on incoming to /^([0-9]+$/ reject 480')
    assert errs[0].startswith("5:18: error: invalid regex: missing ), unterminated subpattern")


def test_a_rule_shadowed_completely_by_an_earlier_one_is_an_error():
    errs = errors_of(PREAMBLE + '''on incoming from line itsp1 accept to user alice
on incoming from line itsp1 to "+15551230001" accept to user bob''')
    assert errs == ["6:1: error: this rule never matches: the rule at t.flow:5:1 already takes every call it "
                    "would (move it above, or narrow the earlier rule)"]


def test_a_shorter_prefix_shadows_longer_prefixes_and_numbers_under_it():
    errs = errors_of(PREAMBLE + '''on incoming to prefix "+1" reject 480
on incoming to prefix "+1555", "+1666" reject 403''')
    assert len(errs) == 1 and "never matches" in errs[0]


def test_a_regex_shadows_the_exact_numbers_it_matches():
    errs = errors_of(PREAMBLE + r'''on incoming to /^[0-9]{3}$/ reject 480
on incoming to "200" reject 403''')
    assert "never matches" in errs[0]


def test_from_any_shadows_the_same_number_from_a_user():
    errs = errors_of(PREAMBLE + '''on incoming to "200" reject 480
on incoming from user alice to "200" reject 403''')
    assert "never matches" in errs[0]


def test_a_rule_with_conditions_shadows_nothing():
    warnings_of(PREAMBLE + '''on incoming to "200" when caller-id "x" reject 480
on incoming to "200" accept to user alice, user bob
on incoming from line any accept to line itsp1, line itsp2''')


def test_a_rule_only_partly_covered_is_fine():
    warnings_of(PREAMBLE + '''on incoming to "200" reject 480
on incoming to "200", "201" accept to user alice, user bob
on incoming from line any accept to line itsp1, line itsp2''')


def test_a_rule_that_can_end_without_accepting_or_rejecting_is_an_error():
    errs = errors_of(PREAMBLE + 'on incoming to "1" {\n  log "hello"\n}')
    assert errs == ["6:3: error: this rule can end without accepting or rejecting the call: "
                    "end it with accept, reject or hangup"]


def test_an_otherwise_that_only_logs_is_an_error_too():
    errs = errors_of(PREAMBLE + 'on incoming { accept to user alice otherwise log "x" }')
    assert "can end without accepting or rejecting" in errs[0]


def test_an_empty_rule_is_an_error():
    assert "does nothing" in errors_of(PREAMBLE + 'on incoming to "1" { }')[0]


def test_a_statement_after_accept_needs_otherwise():
    errs = errors_of(PREAMBLE + 'on incoming {\n accept to user alice\n accept to user bob\n}')
    assert errs == ["7:2: error: `accept` after accept never runs; start it with `otherwise` to run it "
                    "when the accept fails"]


def test_otherwise_after_reject_never_runs():
    errs = errors_of(PREAMBLE + 'on incoming { reject 486 otherwise accept to user bob }')
    assert "`otherwise` after reject never runs: reject ends the call" in errs[0]


def test_otherwise_at_the_start_is_an_error():
    assert "`otherwise` must follow an accept" in errors_of(PREAMBLE + 'on incoming otherwise reject 480')[0]


def test_reject_needs_a_failure_status():
    assert "400 to 699" in errors_of(PREAMBLE + 'on incoming reject 200')[0]


def test_a_capture_that_does_not_exist_is_an_error():
    errs = errors_of(PREAMBLE + r'on incoming to /^9([0-9]+)$/ accept to line itsp1 number "+1" + \2')
    assert "\\2: the rule's number pattern has only 1 capture(s)" in errs[0]


def test_handlers_only_observe():
    errs = errors_of(PREAMBLE + 'on hangup { accept to user alice }')
    assert "cannot run in an `on hangup` handler" in errs[0]


def test_a_stray_brace_in_a_log_text_is_an_error():
    assert "must start a {name} field" in errors_of(PREAMBLE + 'on closed log "a { b"')[0]


def test_a_line_no_rule_uses_is_a_warning():
    ws = warnings_of('user alice password "a1-b2-c3"\nline spare { server "x" }\non incoming accept to user alice')
    assert ws == ["2:1: line spare is declared but no rule uses it"]


def test_a_user_no_rule_reaches_is_a_warning():
    ws = warnings_of('user alice password "a1-b2-c3"\nuser bob password "b1-b2-c3"\non incoming accept to user alice')
    assert ws == ["2:1: user bob is declared but no rule reaches it (no `accept to user bob`)"]


def test_an_unknown_name_in_a_rules_text_is_a_warning():
    ws = warnings_of('on incoming log "{reasn}" reject 480')
    assert ws == ["1:17: {reasn} is not a value known here; it will print as written"]


def test_an_unknown_field_in_a_handlers_text_is_an_error_naming_the_events_fields():
    (err,) = errors_of('on closed log "x {reasn}"')
    assert err == ("1:18: error: {reasn} is not a field of the `closed` event; its fields are: call, reason, "
                   "rtp_in, rtp_out, from, from_type, caller_id, to, duration, event")


def test_errors_and_warnings_come_out_in_source_order():
    with pytest.raises(FlowError) as info:
        compile_source('user zed password env NOPE\non incoming accept to user nobody\n', env={})
    assert [d.line for d in info.value.diagnostics] == sorted(d.line for d in info.value.diagnostics)
