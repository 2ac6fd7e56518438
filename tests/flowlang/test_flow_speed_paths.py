"""The fast paths behind issue 4's speed targets give exactly what the plain paths give.

- the lean LALR driver (flowlang.fastlalr) accepts exactly what lark accepts and builds the same syntax
  nodes, positions included, as converting lark's own parse tree;
- a regex split at its literal start (routing.AnchoredPattern) matches, captures and fails to compile
  exactly like the whole pattern compiled with RE2 (patterns.Pattern);
- fast_init keeps the dataclasses frozen, with their defaults;
- the router's decision is the first rule top to bottom, as a linear scan finds it;
- loading leaves the cyclic collector as it found it.
"""

import dataclasses
import gc
import random
from pathlib import Path

import pytest
from flowspec import SLICE, call
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lark.exceptions import UnexpectedInput
from test_flow_fuzz import WORDS, mutated

from flowlang import CallInfo, FlowError, Target, compile_source, syntax
from flowlang.diagnostics import Position
from flowlang.fastlalr import Reject
from flowlang.patterns import Pattern, PatternError
from flowlang.routing import AnchoredPattern, compile_regex

ROOT = Path(__file__).resolve().parents[2]
FLOWS = sorted((ROOT / "flows").rglob("*.flow")) + sorted((ROOT / "bench" / "flows").glob("*.flow"))


def lark_nodes(text: str):
    """What lark itself makes of the text: syntax nodes from its tree, or None when it refuses it."""
    try:
        tree = syntax.parser().parse(text)
    except UnexpectedInput:
        return None
    return syntax.to_nodes(tree)


def driver_nodes(text: str):
    try:
        return syntax.driver().parse(text)
    except Reject:
        return None


def test_the_driver_is_in_use():
    assert syntax.driver() is not None


@pytest.mark.parametrize("path", FLOWS, ids=lambda p: p.name)
def test_the_driver_builds_what_lark_builds_for_every_flow_in_the_repo(path):
    text = path.read_text(encoding="utf-8")
    nodes = driver_nodes(text)
    assert nodes is not None and nodes == lark_nodes(text)


def test_the_driver_builds_what_lark_builds_for_the_benchmark_script():
    import sys

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from flow_compile import big_script, routing_script
    finally:
        sys.path.remove(str(ROOT / "bench"))
    for text in (big_script(2_000), routing_script(300, 3_000)[0]):
        nodes = driver_nodes(text)
        assert nodes is not None and nodes == lark_nodes(text)


def test_the_driver_handles_the_empty_script_comments_and_odd_layout():
    for text in ("", "\n\n", "# only a comment", "user a password \"p\"# c\n", "\ton\tincoming\taccept\tto\tuser a",
                 "user a\n\n\n   password\n\"p\"\r\n", SLICE.replace("\n", "\r\n")):
        assert driver_nodes(text) == lark_nodes(text), text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_the_driver_agrees_with_lark_on_mutated_flows(text):
    assert driver_nodes(text) == lark_nodes(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(WORDS), max_size=40).map(" ".join))
def test_the_driver_agrees_with_lark_on_sequences_of_language_words(text):
    assert driver_nodes(text) == lark_nodes(text)


def test_several_syntax_errors_still_come_from_lark_with_recovery():
    text = SLICE + "\non incoming to prefix accept to user alice\nuser bob pasword \"x\"\n"
    with pytest.raises(FlowError) as e:
        compile_source(text, "t.flow")
    assert len(e.value.errors) == 2
    assert "expected a \"string\"" in e.value.errors[0].message
    assert "did you mean 'password'" in e.value.errors[1].message


# ------------------------------------------------------------------ regexes split at their literal start

REGEXES = [
    r"^\+44([0-9]{4})$", r"^\+4420(?P<ext>[0-9]+)$", r"^123", r"^1a+", r"^12?3", r"^1{2}", r"^1(?<=1)2",
    r"^ab\b", r"^ab\Bc", r"^a(b)\1$", r"^a(?i)b", r"^a(?i:b)c", r"^ab|cd", r"^a^b", r"^a\Ab", r"^a.*",
    r"^00(", r"^00)", r"^00[", r"^00*", r"^\+1(?P<x>\d)(?P=x)", r"^a\d+", r"^\.\-x", r"^é1", r"^a$",
    r"^+", r"^*1", r"^ab{", r"^ab{2,x}", r"^ab(?#c)d", r"^ab(?=c)", r"^ab(?!c)", r"^a\Z", r"^\\1",
]
PROBES = ["", "1", "12", "123", "1123", "112", "ab", "abc", "abB", "abbb", "aB", "aBc", "a", "00", "001",
          "+44", "+441234", "+4412345", "+44201", "+442012", "+1", "+155", "+156", "a1", "a12", ".-x", "é1",
          "a^b", "cd", "abd", "abcd", "\\1", "111", "ab{", "ab{2,x}", "abc\n", "a\n"]


@pytest.mark.parametrize("source", REGEXES)
def test_a_split_regex_behaves_like_the_whole_one(source):
    try:
        whole = Pattern(source)
    except PatternError as e:
        with pytest.raises(PatternError) as split_err:
            compile_regex(source)
        assert (split_err.value.msg, split_err.value.pos) == (e.msg, e.pos)
        return
    split = compile_regex(source)
    assert split.groups == whole.groups and dict(split.groupindex) == dict(whole.groupindex)
    assert split == whole if isinstance(split, AnchoredPattern) else split.pattern == whole.pattern
    for probe in PROBES:
        a, b = whole.search(probe), split.search(probe)
        assert (a is None) == (b is None), (source, probe)
        if a is not None:
            assert a.groups() == b.groups() and a.groupdict() == b.groupdict(), (source, probe)


def test_the_benchmark_regexes_are_split():
    rx = compile_regex(r"^\+440000003([0-9]{4})$")
    assert isinstance(rx, AnchoredPattern) and rx.literal == "+440000003"


# ------------------------------------------------------------------ frozen data, fast to build


def test_fast_init_keeps_dataclasses_frozen_with_their_defaults():
    c = CallInfo("user", "alice", "alice", None, "+1")
    assert c.headers == {} and c.at is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.to = "+2"  # type: ignore[misc]
    t = Target("user", "bob")
    assert t.number is None and dataclasses.replace(t, number="+1") == Target("user", "bob", "+1")
    assert Position(file="f", line=1, col=2) == Position("f", 1, 2)
    with pytest.raises(TypeError):
        Target("user")  # type: ignore[call-arg]


# ------------------------------------------------------------------ routing: first rule, top to bottom


def _linear(prog, c: CallInfo):
    for rule in prog.rules:
        if not rule.peer_matches(c):
            continue
        found = rule.match_number(c.to)
        if found is None or not rule.conditions_hold(c, c.at):
            continue
        return rule.decision(c, found[0], found[1])
    return None


def test_the_router_decides_like_a_linear_scan():
    rnd = random.Random(7)
    lines = ['user alice password "a"', 'user bob password "b"', 'line t1 { server "h" }', 'line t2 { server "h" }']
    peers = ["", "from user any ", "from user alice ", "from line any ", "from line t1 ", "from any "]
    for i in range(300):
        to = rnd.choice([f'to "+1{rnd.randrange(50):02d}"', f'to prefix "+1{rnd.randrange(10)}"',
                         f'to prefix "+{rnd.randrange(3)}"', rf'to /^\+1{rnd.randrange(10)}([0-9])$/',
                         rf'to /([0-9]){rnd.randrange(10)}$/', "", f'to "+2{i:03d}", prefix "+3{i % 7}"'])
        when = rnd.choice(["", "", "when time 09:00-17:00 ", "when not days sat-sun "])
        lines.append(f"on incoming {rnd.choice(peers)}{to} {when}accept to line t1 number \"00\" + \\1"
                     if "prefix" in to or "(" in to else
                     f"on incoming {rnd.choice(peers)}{to} {when}accept to user bob")
    # an earlier rule may shadow a later one: drop those, as the operator would
    prog = None
    while prog is None:
        try:
            prog = compile_source("\n".join(lines), "r.flow")
        except FlowError as e:
            bad = {d.line for d in e.errors}
            lines = [ln for n, ln in enumerate(lines, 1) if n not in bad]
    assert len(prog.rules) > 50
    for _ in range(2000):
        frm = rnd.choice(["user:alice", "user:bob", "line:t1", "line:t2", "unknown:x"])
        c = call(frm, "+" + "".join(rnd.choice("0123") for _ in range(rnd.randrange(1, 5))))
        assert prog.decide(c) == _linear(prog, c), c


# ------------------------------------------------------------------ the collector


def test_loading_leaves_the_collector_on_and_what_the_application_froze_frozen():
    assert gc.isenabled()
    compile_source(SLICE)
    assert gc.isenabled() and gc.get_freeze_count() == 0
    keep = [[] for _ in range(10)]  # noqa: F841 - objects for freeze() to hold
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        compile_source(SLICE)
        assert gc.isenabled() and gc.get_freeze_count() >= frozen
    finally:
        gc.unfreeze()
