"""Who may call through a line (issue 9): line-to-line routing must be written out. A rule without
`from` never sends a call that came in on a line back out through a line (one spoofed packet from a
provider's address must not become an outbound call); `from line ...` or `from any` says it is meant,
and `callflow check` warns where `from any` lets every peer reach a line."""

from __future__ import annotations

from flowspec import PREAMBLE, call, compiles, warnings_of

from flowlang import Accept, explain


def test_a_call_from_a_line_does_not_take_a_rule_without_from_that_goes_out_through_a_line():
    p = compiles(PREAMBLE + 'on incoming to prefix "+1" accept to line itsp1')
    assert p.decide(call("line:itsp2", "+15557654321")) is None
    assert p.decide(call("line:itsp1", "+15557654321")) is None


def test_the_call_from_the_line_goes_on_to_the_rules_below():
    p = compiles(PREAMBLE + 'on incoming to prefix "+1" accept to line itsp1\n'
                            'on incoming from line itsp1 accept to user alice')
    d = p.decide(call("line:itsp1", "+15557654321"))
    assert d is not None and d.plan[0].terminal.targets[0].name == "alice"


def test_a_rule_without_from_whose_fallback_is_a_line_is_not_taken_by_a_line_either():
    p = compiles(PREAMBLE + 'on incoming to "200" { accept to user bob\n otherwise accept to line itsp1 }')
    assert p.decide(call("line:itsp1", "200")) is None
    assert p.decide(call("user:alice", "200")) is not None


def test_phones_still_take_a_rule_without_from():
    p = compiles(PREAMBLE + 'on incoming to prefix "+1" accept to line itsp1')
    d = p.decide(call("user:alice", "+15557654321"))
    assert d is not None and isinstance(d.plan[0].terminal, Accept)


def test_a_rule_without_from_that_only_rings_users_still_takes_calls_from_lines():
    p = compiles(PREAMBLE + 'on incoming to "+15551230000" accept to user alice')
    assert p.decide(call("line:itsp1", "+15551230000")) is not None


def test_line_to_line_routing_written_with_from_line_is_taken():
    p = compiles(PREAMBLE + 'on incoming from line itsp1 to prefix "+44" accept to line itsp2')
    d = p.decide(call("line:itsp1", "+445551234"))
    assert d is not None and d.plan[0].terminal.targets[0].name == "itsp2"


def test_from_any_to_a_line_is_taken_but_warned_about_where_it_is_written():
    text = PREAMBLE + 'on incoming from any to prefix "+44" accept to line itsp2'
    assert compiles(text).decide(call("line:itsp1", "+445551234")) is not None
    ws = warnings_of(text)
    assert any(w.startswith("5:18: `from any` lets every peer") and "line itsp2" in w for w in ws), ws


def test_a_rule_without_from_to_a_line_does_not_hide_a_later_rule_for_calls_from_lines():
    p = compiles(PREAMBLE + 'on incoming accept to line itsp1\non incoming from line itsp1 accept to user bob')
    assert p.decide(call("line:itsp1", "+1")).plan[0].terminal.targets[0].name == "bob"


def test_explain_says_why_the_rule_was_skipped_for_a_call_from_a_line():
    p = compiles(PREAMBLE + 'on incoming to prefix "+1" accept to line itsp1')
    text = explain(p, "line:itsp1", "+15557654321")
    assert "has no `from` and would send a call from a line out through a line" in text
    assert "No rule takes this call" in text
