"""`record` (voicemail) and `record call` (call recording) in the language: what they compile to,
which names the checker refuses (a recording never leaves the recordings folder), where they may
appear, and how `fmt` and `explain` show them."""

from __future__ import annotations

from pathlib import Path

from flowspec import PREAMBLE, call, compiles, errors_of, warnings_of

from flowlang import explain, format_source, load_program
from flowlang.model import Record, RecordCall


def actions(text: str) -> list[object]:
    program = compiles(PREAMBLE + text)
    return [a for rule in program.rules for attempt in rule.plan for a in attempt.actions]


def test_a_voicemail_with_every_option_compiles_to_a_record_step_then_the_rules_next_statement() -> None:
    program = compiles(PREAMBLE + 'on incoming from line itsp1 {\n'
                       '  record "voicemail/{caller_id}-{time}.wav" prompt "leave.wav" max 90s silence 4s\n'
                       '  hangup\n}\n')
    [attempt] = program.rules[0].plan
    [rec] = attempt.actions
    assert isinstance(rec, Record)
    assert (rec.name, rec.max_seconds, rec.silence_seconds) == ("voicemail/{caller_id}-{time}.wav", 90.0, 4.0)
    assert rec.prompt == "leave.wav"  # a compile_source script has no folder: the name as written
    assert rec.folder.endswith("/recordings")


def test_a_voicemail_defaults_to_two_minutes_five_seconds_of_silence_and_no_prompt() -> None:
    [rec] = actions('on incoming from line itsp1 { record "vm.wav"\n hangup }\n')
    assert (rec.max_seconds, rec.silence_seconds, rec.prompt) == (120.0, 5.0, None)


def test_silence_off_records_until_the_maximum() -> None:
    [rec] = actions('on incoming from line itsp1 { record "vm.wav" silence off max 10s\n hangup }\n')
    assert (rec.max_seconds, rec.silence_seconds) == (10.0, None)


def test_a_voicemail_after_a_failed_accept_is_the_classic_no_answer_mailbox() -> None:
    program = compiles(PREAMBLE + 'on incoming from line itsp1 {\n accept to user alice timeout 20s\n'
                       ' otherwise record "vm/{to}.wav"\n hangup\n}\n')
    first, second = program.rules[0].plan
    assert first.actions == () and isinstance(second.actions[0], Record)


def test_record_call_in_a_rule_defaults_to_one_mixed_file() -> None:
    [rec] = actions('on incoming from line itsp1 { record call "calls/{call}.wav"\n accept to user alice }\n')
    assert isinstance(rec, RecordCall) and rec.mix == "mixed"


def test_record_call_names_its_mix() -> None:
    for mix in ("mixed", "per leg", "both"):
        rule = f'on incoming from line itsp1 {{ record call "c/{{call}}.wav" {mix}\n accept to user alice }}\n'
        [rec] = actions(rule)
        assert rec.mix == mix


def test_record_call_may_start_from_an_on_connected_handler_with_the_events_fields() -> None:
    program = compiles(PREAMBLE + 'on incoming from line itsp1 accept to user alice\n'
                       'on connected from line itsp1 record call "calls/{peer}-{call}-{time}.wav" per leg\n')
    [handler] = program.all_handlers
    assert handler.actions == (RecordCall("calls/{peer}-{call}-{time}.wav", handler.actions[0].folder, "per leg"),)


def test_record_call_in_a_handler_of_a_call_that_is_over_is_an_error() -> None:
    [err] = errors_of(PREAMBLE + 'on incoming from line itsp1 accept to user alice\n'
                      'on hangup record call "c.wav"\n')
    assert "cannot run in an `on hangup` handler" in err and "record call" in err


def test_a_voicemail_cannot_run_in_a_handler() -> None:
    [err] = errors_of(PREAMBLE + 'on incoming from line itsp1 accept to user alice\non connected record "vm.wav"\n')
    assert "`record` cannot run in an `on connected` handler" in err


def test_an_unknown_field_in_a_handlers_recording_name_is_an_error_naming_the_fields() -> None:
    [err] = errors_of(PREAMBLE + 'on incoming from line itsp1 accept to user alice\n'
                      'on connected record call "{digits}.wav"\n')
    assert "{digits} is not a field of the `connected` event" in err and "time" in err


def test_names_that_would_leave_the_recordings_folder_are_refused_at_compile_time() -> None:
    for name, words in (("/var/spool/vm.wav", "absolute"), ("../vm.wav", "`..`"), ("vm/../../x.wav", "`..`"),
                        ("vm//x.wav", "empty"), ("vm.mp3", "must end in .wav"), ("v m.wav", "' '")):
        errs = errors_of(PREAMBLE + f'on incoming from line itsp1 {{ record "{name}"\n hangup }}\n')
        assert len(errs) == 1 and words in errs[0], (name, errs)


def test_a_value_unknown_in_a_rules_recording_name_is_a_warning() -> None:
    warns = warnings_of(PREAMBLE + 'on incoming from line itsp1 { record "{digits}.wav"\n hangup }\n')
    assert any("{digits} is not a value known here" in w for w in warns)


def test_an_option_given_twice_and_a_zero_length_are_errors() -> None:
    errs = errors_of(PREAMBLE + 'on incoming from line itsp1 { record "vm.wav" max 5s max 6s silence 0s\n hangup }\n')
    assert any("`max` is given twice" in e for e in errs) and any("`silence` must be more than 0s" in e for e in errs)


def test_the_recordings_folder_is_the_server_blocks() -> None:
    program = compiles('server { recordings "/srv/callflow/recordings" }\n' + PREAMBLE
                       + 'on incoming from line itsp1 { record "vm.wav"\n hangup }\n')
    assert program.server.recordings == "/srv/callflow/recordings"
    assert program.rules[0].plan[0].actions[0].folder == "/srv/callflow/recordings"


def test_a_rule_must_still_end_the_call_after_a_voicemail() -> None:
    [err] = errors_of(PREAMBLE + 'on incoming from line itsp1 { record "vm.wav" }\n')
    assert "can end without accepting or rejecting" in err


def test_fmt_keeps_record_statements_on_one_line_each() -> None:
    text = PREAMBLE + ('on incoming from line itsp1 {\n record   "vm.wav"  prompt "p.wav"\n max 30s\n hangup\n}\n'
                       'on connected record call "c.wav"  per   leg\n')
    out = format_source(text)
    assert '    record "vm.wav" prompt "p.wav" max 30s\n' in out
    assert 'on connected record call "c.wav" per leg\n' in out
    assert format_source(out) == out


def test_explain_says_what_a_voicemail_does() -> None:
    program = compiles(PREAMBLE + 'on incoming from line itsp1 { record "vm.wav" max 30s silence off\n hangup }\n')
    text = explain(program, "line:itsp1", "+15551234567")
    assert 'beep, record the caller into "vm.wav"' in text and "max 30s, silence off, # stops" in text


def test_the_voicemail_example_records_the_call_rings_the_desk_then_takes_a_message() -> None:
    path = Path(__file__).resolve().parents[2] / "flows" / "examples" / "voicemail.flow"
    program = load_program(path, env={"DESK_PASSWORD": "desk-secret-pw", "ITSP_PASSWORD": "itsp-secret-pw"})
    assert program.warnings == ()
    first, second = program.decide(call("line:itsp", "+15551230020")).plan
    assert isinstance(first.actions[0], RecordCall) and first.actions[0].mix == "per leg"
    assert isinstance(second.actions[0], Record) and second.actions[0].max_seconds == 120.0
    assert second.actions[0].folder == str(path.parent / "recordings")
