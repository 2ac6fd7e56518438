"""Routing is safe whatever the operator writes (issue 9, "Rules"): rule patterns run on RE2, so a
pattern that backtracks exponentially in Python's `re` decides at once; patterns RE2 cannot run
(backreferences, lookaround) are refused at check time with file:line:col; and what a pattern reads
is bounded in length. Each hostile case prints how long its decision took (no timed assertion: the
figure is for the reader; a backtracking engine would not return at all within the test's life)."""

from __future__ import annotations

import time

import pytest
from flowspec import PREAMBLE, call, compiles, errors_of

from flowlang.patterns import MAX_HEADER_VALUE, MAX_VALUE


def _timed(program, c):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    d = program.decide(c)
    return d, (time.perf_counter() - start) * 1e6


@pytest.mark.parametrize("pattern", [r"/^([0-9]+)+$/", r"/^(0|[0-9]|1)*$/", r"/^([0-9]*)*[#]$/", r"/(1+)+2/"])
def test_a_backtracking_number_pattern_decides_a_31_character_number_at_once(pattern, capsys):
    p = compiles(PREAMBLE + f"on incoming from user any to {pattern} accept to line itsp1\n"
                            "on incoming from user any reject 404")
    d, us = _timed(p, call(to="1" * 30 + "X"))
    assert d is not None and d.plan[0].terminal.code == 404  # the pattern did not match; the next rule decided
    with capsys.disabled():
        print(f"\n  {pattern} on a 31-character dialled number: decided in {us:.0f} us")


def test_a_backtracking_caller_name_pattern_decides_a_long_anonymous_name_at_once(capsys):
    p = compiles(PREAMBLE + r'on incoming from line itsp1 when caller-name /^(\w+\s?)*$/ accept to user alice'
                 '\non incoming from line itsp1 reject 480')
    name = "Anonymous caller from a provider that pads names " * 2 + "!"
    d, us = _timed(p, call("line:itsp1", "+15551230000", caller_name=name))
    assert d is not None and d.plan[0].terminal.code == 480
    with capsys.disabled():
        print(f"\n  /^(\\w+\\s?)*$/ on a {len(name)}-character caller name: decided in {us:.0f} us")


def test_many_loose_backtracking_patterns_in_one_bucket_still_decide_at_once(capsys):
    rules = "\n".join(f"on incoming from user any to /(([0-9]*){i}[0-9]*)+#$/ reject 48{i % 10}" for i in range(40))
    p = compiles(PREAMBLE + rules + "\non incoming from user any reject 404")
    d, us = _timed(p, call(to="1" * 30 + "X"))
    assert d is not None and d.plan[0].terminal.code == 404
    with capsys.disabled():
        print(f"\n  40 nested-quantifier patterns on a 31-character number: decided in {us:.0f} us")


def test_patterns_still_capture_and_rewrite_as_before():
    p = compiles(PREAMBLE + r'on incoming from user any to /^\+(?P<cc>[1-9][0-9]?)([0-9]+)$/ '
                            r'accept to line itsp1 number "00{cc}-{2}"')
    d = p.decide(call(to="+445551234"))
    assert d is not None and d.plan[0].terminal.targets[0].number == "0044-5551234"


def test_a_non_ascii_caller_name_matches_and_captures_by_characters():
    p = compiles(PREAMBLE + 'on incoming from line itsp1 when caller-name /^Jörg (.+)$/i accept to user alice')
    assert p.decide(call("line:itsp1", "+1555", caller_name="jörg Müller")) is not None
    assert p.decide(call("line:itsp1", "+1555", caller_name="Jorg Muller")) is None


@pytest.mark.parametrize(("pattern", "col", "words"), [
    (r"/^(1)\1$/", 21, "backreferences"),
    (r"/^(?P<x>1)(?P=x)$/", 26, "backreferences"),
    (r"/^1(?=2)/", 19, "lookahead"),
    (r"/^1(?!2)/", 19, "when not"),
    (r"/(?<=1)2/", 17, "lookbehind"),
    (r"/^1++$/", 19, "possessive"),
])
def test_a_pattern_that_needs_backtracking_is_refused_where_it_is_written(pattern, col, words):
    errs = errors_of(PREAMBLE + f"on incoming to {pattern} reject 480")
    assert len(errs) == 1 and errs[0].startswith(f"5:{col}: error: invalid regex:"), errs
    assert words in errs[0]


def test_a_dialled_number_longer_than_the_bound_matches_no_pattern_but_still_exact_and_prefix_rules():
    p = compiles(PREAMBLE + 'on incoming from user any to /^[0-9]+$/ reject 480\n'
                            'on incoming from user any to prefix "1" reject 486\n'
                            'on incoming from user any reject 404')
    assert p.decide(call(to="1" * MAX_VALUE)).plan[0].terminal.code == 480
    assert p.decide(call(to="1" * (MAX_VALUE + 1))).plan[0].terminal.code == 486


def test_a_header_longer_than_its_bound_matches_no_pattern():
    p = compiles(PREAMBLE + 'on incoming from line itsp1 when header "X-Tag" /^a+$/ reject 480\n'
                            'on incoming from line itsp1 reject 404')
    ok = p.decide(call("line:itsp1", "+1", headers={"x-tag": "a" * MAX_HEADER_VALUE}))
    long = p.decide(call("line:itsp1", "+1", headers={"x-tag": "a" * (MAX_HEADER_VALUE + 1)}))
    assert ok.plan[0].terminal.code == 480 and long.plan[0].terminal.code == 404
