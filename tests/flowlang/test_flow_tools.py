"""explain, fmt and graph: the operator's tools over a compiled program."""

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from flowspec import PREAMBLE, SLICE, compiles

from flowlang import FlowError, compile_source, explain, format_source, to_dot

HUNT = PREAMBLE + r'''on incoming from line itsp1 to "+15551230001" {
    accept to user alice timeout 20s
    otherwise accept to user bob timeout 20s
    otherwise reject 480 "Nobody home"
}
on incoming from user any to /^9([0-9]+)$/ when time 09:00-17:00 in "UTC" accept to line itsp1 number "+1" + \1
on incoming from user any to /^9([0-9]+)$/ accept to line itsp2
'''
UTC = ZoneInfo("UTC")


def test_explain_names_the_deciding_rule_and_every_step_with_timeouts_and_failures():
    text = explain(compiles(HUNT), "line:itsp1", "+15551230001", datetime(2026, 11, 26, 20, 0, tzinfo=UTC))
    assert "rule t.flow:5:1 decides:" in text
    assert "1. ring user alice, for up to 20s" in text
    assert "if that fails (busy, no answer in time, not registered, 4xx/5xx/6xx):" in text
    assert "3. refuse the call: 480 Nobody home" in text


def test_explain_shows_rules_skipped_because_a_condition_does_not_hold():
    text = explain(compiles(HUNT), "user:alice", "95551234", datetime(2026, 11, 26, 20, 0, tzinfo=UTC))
    assert "rule t.flow:10:1 matches the number but is skipped: `time 09:00-17:00 in \"UTC\"` does not hold" in text
    assert "rule t.flow:11:1 decides:" in text
    assert "ring line itsp2 dialling 95551234" in text


def test_explain_shows_captures_and_the_rewritten_number():
    text = explain(compiles(HUNT), "user:alice", "95551234", datetime(2026, 11, 26, 10, 0, tzinfo=UTC))
    assert 'captures: \\1 = "5551234"' in text
    assert "ring line itsp1 dialling +15551234" in text


def test_explain_says_when_no_rule_takes_the_call():
    assert "No rule takes this call: it is refused with 404" in explain(compiles(HUNT), "user:bob", "123")


def test_explain_interprets_a_naive_time_in_the_server_time_zone():
    p = compiles(PREAMBLE + 'server { timezone "Asia/Tokyo" }\non incoming when time 09:00-10:00 reject 480')
    assert "decides" in explain(p, "user:alice", "1", datetime(2026, 11, 26, 9, 30))


def test_explain_rejects_an_unknown_caller_spec_with_a_flow_error():
    with pytest.raises(FlowError, match="no user carol"):
        explain(compiles(HUNT), "user:carol", "1")
    with pytest.raises(FlowError, match="is not user:NAME"):
        explain(compiles(HUNT), "alice", "1")


def test_fmt_is_canonical_and_idempotent():
    messy = 'user  alice   password "a"\nline itsp1 { server "h"   register every 60s username "u" password "p" }\n' \
            'on incoming from line itsp1 {accept to user alice,user alice timeout 5s}\n'
    out = format_source(messy)
    assert out == (
        'user alice password "a"\n'
        "line itsp1 {\n"
        '    server "h"\n'
        "    register every 60s\n"
        '    username "u"\n'
        '    password "p"\n'
        "}\n"
        "on incoming from line itsp1 {\n"
        "    accept to user alice, user alice timeout 5s\n"
        "}\n"
    )
    assert format_source(out) == out


def test_fmt_keeps_comments_and_collapses_blank_lines():
    src = '# head\n\n\n\nuser a password "x"   # why\n\nserver {\n\n  # ports\n  rtp ports 20000 - 20999\n\n}\n'
    assert format_source(src) == (
        '# head\n\nuser a password "x"  # why\n\nserver {\n    # ports\n    rtp ports 20000-20999\n}\n')


def test_fmt_of_the_slice_keeps_its_meaning():
    out = format_source(SLICE)
    assert compile_source(out).rules[0].matchers == compile_source(SLICE).rules[0].matchers
    assert format_source(out) == out


def test_fmt_of_a_broken_script_is_a_flow_error_with_every_syntax_error():
    with pytest.raises(FlowError) as info:
        format_source('user\nline l {\n')
    assert len(info.value.diagnostics) == 2


def test_graph_is_dot_with_callers_rules_and_targets():
    dot = to_dot(compiles(HUNT))
    assert dot.startswith("digraph callflow {")
    assert '"line:itsp1" -> "rule:0";' in dot
    assert '"rule:0" -> "user:bob" [label="2 (otherwise), 20s"];' in dot
    assert 'shape=octagon' in dot
    assert dot.rstrip().endswith("}")
