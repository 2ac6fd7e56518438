"""`send dtmf "DIGITS" [to channel ZERO|ONE]` in the language: what it compiles to, where it may stand
(in a rule only to the caller once answered; in `on connected` / `on dtmf` to either leg), the errors
a mistake gives as file:line:col, and how `fmt` and `explain` show it."""

from __future__ import annotations

from flowspec import PREAMBLE, compiles, errors_of

from flowlang import explain, format_source
from flowlang.model import Play, SendDtmf

MENU = 'on incoming from line itsp1 {\n    play "hello.wav" answered\n    send dtmf "12#"\n    hangup\n}\n'


def test_send_dtmf_after_answering_the_caller_compiles_to_keys_for_channel_zero() -> None:
    program = compiles(PREAMBLE + MENU)
    [attempt] = program.rules[0].plan
    assert isinstance(attempt.actions[0], Play)
    assert attempt.actions[1] == SendDtmf("12#", "ZERO")


def test_the_letter_keys_and_the_channel_word_are_taken_in_either_case() -> None:
    program = compiles(PREAMBLE + 'on connected { send dtmf "a1d" to channel one }\n')
    [handler] = program.handlers("connected", line=None, user=None)
    assert handler.actions == (SendDtmf("A1D", "ONE"),)


def test_send_dtmf_in_a_gather_branch_goes_to_the_caller_the_menu_answered() -> None:
    program = compiles(PREAMBLE + 'on incoming from line itsp1 {\n gather "menu.wav" max 1 {\n'
                       '  when "1" { send dtmf "1" hangup }\n  else hangup\n }\n}\n')
    gather = program.rules[0].plan[0].terminal
    assert gather.branches[0].plan[0].actions == (SendDtmf("1", "ZERO"),)


def test_a_key_that_is_not_dtmf_is_pointed_at() -> None:
    assert errors_of(PREAMBLE + 'on connected { send dtmf "12x" }\n') == [
        "5:29: error: send dtmf: 'x' is not a key (0-9, *, #, A-D)"]


def test_no_keys_and_too_many_keys_are_errors() -> None:
    assert errors_of(PREAMBLE + 'on connected { send dtmf "" }\n') == [
        '5:26: error: send dtmf "": no keys to press (0-9, *, #, A-D)']
    assert errors_of(PREAMBLE + 'on connected { send dtmf "' + "1" * 65 + '" }\n') == [
        "5:26: error: send dtmf: 65 keys; at most 64 at once"]


def test_a_channel_that_is_not_zero_or_one_is_named() -> None:
    [error] = errors_of(PREAMBLE + 'on connected { send dtmf "1" to channel two }\n')
    assert error.startswith("5:41: error: send dtmf to channel two: the channels are ZERO")


def test_in_a_rule_the_caller_must_be_answered_first() -> None:
    [error] = errors_of(PREAMBLE + 'on incoming from line itsp1 {\n send dtmf "1"\n hangup\n}\n')
    assert error.startswith("6:2: error: send dtmf in a rule needs the caller answered first")


def test_early_media_does_not_answer_the_caller() -> None:
    [error] = errors_of(PREAMBLE + 'on incoming from line itsp1 {\n play "ring.wav"\n send dtmf "1"\n hangup\n}\n')
    assert "needs the caller answered first" in error


def test_channel_one_in_a_rule_points_to_on_connected() -> None:
    [error] = errors_of(PREAMBLE + 'on incoming from line itsp1 {\n play "hi.wav" answered\n'
                        ' send dtmf "1" to channel ONE\n accept to user alice\n}\n')
    assert error.startswith("7:2: error: send dtmf to channel ONE in a rule") and "on connected" in error


def test_handlers_of_calls_not_connected_cannot_send_digits() -> None:
    [error] = errors_of(PREAMBLE + 'on hangup { send dtmf "1" }\n')
    assert error.startswith("5:13: error: `send dtmf` cannot run in an `on hangup` handler")


def test_fmt_keeps_send_dtmf_on_one_line() -> None:
    out = format_source(PREAMBLE + 'on connected {\n send   dtmf  "99"   to channel   ONE\n}\n')
    assert '    send dtmf "99" to channel ONE\n' in out
    assert format_source(out) == out


def test_explain_says_whose_phone_gets_the_keys() -> None:
    text = explain(compiles(PREAMBLE + MENU), "line:itsp1", "+15551234567")
    assert "press \"12#\" on the caller's phone (channel ZERO)" in text
