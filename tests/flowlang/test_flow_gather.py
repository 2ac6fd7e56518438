"""`gather` in the language: a menu inside an `on incoming` rule, its options and defaults, its branches,
and the checker's errors for menus that cannot work."""

from __future__ import annotations

from pathlib import Path

import pytest
from flowspec import call

from flowlang import Accept, FlowError, Gather, Hangup, compile_source, explain, format_source, load_program
from flowlang.loader import play_files

USERS = '''user sales password "sales-pw-2026"
user support password "support-pw-2026"
user operator password "operator-pw-2026"
line itsp { server "sip.provider.example" }
'''

MENU = USERS + '''on incoming from line itsp {
    gather "menu.wav" max 1 timeout 5s digit timeout 2s retries 2 {
        when "1" accept to user sales
        when "2" { log "support for {caller_id}: {digits}" accept to user support }
        when "0", nothing accept to user operator
        else reject 404
    }
}
'''


def gather_of(source: str) -> Gather:
    decision = compile_source(source, "<menu>").decide(call("line:itsp", "+15551230000"))
    assert decision is not None
    terminal = decision.plan[-1].terminal
    assert isinstance(terminal, Gather)
    return terminal


def errors(source: str) -> str:
    with pytest.raises(FlowError) as info:
        compile_source(source, "menu.flow")
    return str(info.value)


def test_a_gather_compiles_its_prompt_options_and_branches() -> None:
    g = gather_of(MENU)
    assert (g.prompt, g.max_digits, g.terminator, g.timeout, g.digit_timeout, g.retries) == (
        "menu.wav", 1, "#", 5.0, 2.0, 2)
    assert [(b.keys, b.nothing, b.is_else) for b in g.branches] == [
        (("1",), False, False), (("2",), False, False), (("0",), True, False), ((), False, True)]
    assert g.keys == frozenset({"1", "2", "0"})


def test_defaults_end_a_one_key_menu_at_the_first_key_with_hash_as_terminator() -> None:
    g = gather_of(USERS + 'on incoming gather { when "1" accept to user sales\n when nothing hangup }')
    assert (g.prompt, g.max_digits, g.terminator, g.timeout, g.digit_timeout, g.retries) == (
        None, 1, "#", 5.0, 3.0, 0)


def test_an_else_only_gather_takes_any_entry_up_to_twenty_digits() -> None:
    g = gather_of(USERS + 'on incoming from line itsp gather terminator "" {\n'
                          ' else accept to line itsp number "{digits}" }')
    assert (g.max_digits, g.terminator, g.keys) == (20, None, None)


def test_the_entry_selects_its_branch_nothing_the_nothing_branch_and_a_wrong_key_else() -> None:
    g = gather_of(MENU)
    assert g.branch("1") is g.branches[0]
    assert g.branch("0") is g.branches[2]
    assert g.branch("") is g.branches[2]
    assert g.branch("7") is g.branches[3]


def test_without_else_a_wrong_key_goes_where_nothing_goes() -> None:
    g = gather_of(USERS + 'on incoming gather { when "1" accept to user sales\n when nothing hangup }')
    assert isinstance(g.branch("9").plan[0].terminal, Hangup)


def test_digits_fill_a_branchs_number_rewrite_when_it_runs() -> None:
    g = gather_of(USERS + 'on incoming from line itsp gather max 4 { else accept to line itsp number "+1555{digits}" }')
    plan = g.branches[0].rendered_plan({"digits": "1234"})
    terminal = plan[0].terminal
    assert isinstance(terminal, Accept) and terminal.targets[0].number == "+15551234"


def test_digits_is_a_value_known_in_the_branches_and_nowhere_else() -> None:
    program = compile_source(MENU, "<menu>")
    assert not [w for w in program.warnings if "digits" in w.message]
    program = compile_source(USERS + 'on incoming { log "{digits}" hangup }', "<x>")
    assert [w for w in program.warnings if "{digits} is not a value known here" in w.message]


def test_max_digits_zero_is_an_error_at_its_place() -> None:
    out = errors(USERS + 'on incoming gather max 0 { when nothing hangup }')
    assert "menu.flow:5:20: error: gather: max 0: the entry is 1 to 64 digits" in out


def test_a_key_in_two_branches_is_an_error_naming_the_first() -> None:
    out = errors(USERS + 'on incoming gather {\n when "1" hangup\n when "2", "1" hangup\n when nothing hangup }')
    assert 'menu.flow:7:12: error: "1" is already a key of the branch at line 6' in out


def test_an_unknown_target_in_a_branch_is_an_error_with_a_suggestion() -> None:
    out = errors(USERS + 'on incoming gather { when "1" accept to user salez\n when nothing hangup }')
    assert "unknown user salez (did you mean sales?)" in out


def test_a_gather_without_a_nothing_or_else_branch_is_an_error() -> None:
    out = errors(USERS + 'on incoming gather { when "1" accept to user sales }')
    assert "this gather has no `nothing` or `else` branch" in out


@pytest.mark.parametrize("key,message", [
    ('"12"', 'never matches: it has more digits than `max 1`'),
    ('"1#"', 'never matches: "#" is the terminator'),
    ('"x"', "cannot be entered: a key is DTMF digits"),
])
def test_a_key_that_cannot_be_entered_is_an_error(key: str, message: str) -> None:
    out = errors(USERS + f'on incoming gather max 1 {{ when {key} hangup\n when nothing hangup }}')
    assert message in out


def test_a_branch_that_can_end_without_accepting_is_an_error() -> None:
    out = errors(USERS + 'on incoming gather { when "1" log "x"\n when nothing hangup }')
    assert "this branch can end without accepting or rejecting the call" in out


def test_statements_after_a_gather_are_errors_that_point_into_the_branches() -> None:
    out = errors(USERS + 'on incoming { gather { else hangup }\n otherwise hangup }')
    assert "`otherwise` after gather never runs" in out


def test_a_gather_may_follow_a_failed_accept() -> None:
    source = USERS + ('on incoming { accept to user operator timeout 20s\n'
                      ' otherwise gather { when "1" accept to user sales\n else hangup } }')
    decision = compile_source(source, "<x>").decide(call("line:itsp", "+1"))
    assert decision is not None and isinstance(decision.plan[1].terminal, Gather)


def test_fmt_lays_a_gather_out_one_branch_a_line_and_is_stable() -> None:
    once = format_source(USERS + 'on incoming { gather "m.wav" max 1 { when "0" , nothing hangup else { log "x" '
                                 'hangup } } }')
    assert '        when "0", nothing hangup\n        else {\n            log "x"\n' in once
    assert format_source(once) == once


def test_explain_shows_the_menu_and_each_branch() -> None:
    text = explain(compile_source(MENU, "menu.flow"), "line:itsp", "+15551230000")
    assert 'play "menu.wav" and collect up to 1 digit(s)' in text
    assert 'on "0", nothing:' in text and "ring user operator" in text


def test_the_prompt_is_read_next_to_the_script_and_watched_for_reloads(tmp_path: Path) -> None:
    (tmp_path / "menu.wav").write_bytes(b"RIFF")
    script = tmp_path / "main.flow"
    script.write_text(MENU, encoding="utf-8")
    program = load_program(script)
    assert play_files(program) == (str(tmp_path / "menu.wav"),)
    assert not [w for w in program.warnings if "no file" in w.message]


def test_a_missing_prompt_is_a_warning_with_the_path_it_resolved(tmp_path: Path) -> None:
    script = tmp_path / "main.flow"
    script.write_text(MENU, encoding="utf-8")
    warnings = [w.message for w in load_program(script).warnings]
    assert any(f"gather: no file at {tmp_path / 'menu.wav'}" in m for m in warnings)


def test_an_on_gather_handler_may_log_the_rounds_fields() -> None:
    program = compile_source(MENU + 'on gather { log "{call}: {digits} {outcome} {attempt} {final}" }', "<x>")
    assert len(program.handlers("gather")) == 1


def test_an_on_gather_handler_refuses_a_field_the_event_does_not_have() -> None:
    assert "{branch} is not a field of the `gather` event" in errors(MENU + 'on gather { log "{branch}" }')
