"""Nothing but FlowError ever comes out of a bad script, and never an internal error.

Hypothesis mutates the example flows (cut, duplicate, insert language fragments, flip characters) and
also feeds random text built from the language's own characters and words.
"""

from pathlib import Path

from flowspec import SLICE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowlang import FlowError, compile_source, format_source

ROOT = Path(__file__).resolve().parents[2]
SEEDS = [SLICE] + [p.read_text(encoding="utf-8") for p in sorted((ROOT / "flows" / "examples").glob("*.flow"))]
ENV = {"ALICE_PASSWORD": "a", "BOB_PASSWORD": "b", "ITSP_PASSWORD": "i"}
WORDS = [
    "on", "incoming", "from", "to", "user", "line", "any", "accept", "otherwise", "reject", "hangup", "log",
    "set", "caller-id", "header", "play", "answered", "server", "listen", "udp", "tls", "rtp", "ports",
    "when", "and", "not", "time", "days", "in", "prefix", "number", "timeout", "register", "every", "env",
    "include", "{", "}", ",", "+", "-", '"', "/", "\\1", "\\", "#", "\n", " ", "09:00", "mon", "fri",
    "20s", "480", '"x"', "/^[0-9]+$/", "/(/", '"{"', '"{call}"', "alice", "itsp1", "nobody", "0.0.0.0:5060",
    "max", "calls", "codecs", "registered", "failed", "24:00", "99:99", "(?P<x>1)", "\x00", "é",
]

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def only_flow_errors(text: str) -> None:
    for fn in (lambda: compile_source(text, "fuzz.flow", env=ENV), lambda: format_source(text)):
        try:
            fn()
        except FlowError as err:
            assert err.diagnostics, "a FlowError always carries at least one diagnostic"
            internal = [d for d in err.diagnostics if d.file == "<flowlang>"]
            assert not internal, internal[0].message


@st.composite
def mutated(draw):
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 4))):
        n = len(text)
        i = draw(st.integers(0, n))
        j = draw(st.integers(i, min(n, i + 40)))
        op = draw(st.sampled_from(["cut", "dup", "insert", "flip"]))
        if op == "cut":
            text = text[:i] + text[j:]
        elif op == "dup":
            text = text[:j] + text[i:j] + text[j:]
        elif op == "insert":
            text = text[:i] + draw(st.sampled_from(WORDS)) + text[i:]
        else:
            text = text[:i] + draw(st.characters(codec="utf-8")) + text[i + 1:]
    return text


@FUZZ
@given(mutated())
def test_mutations_of_the_example_flows_give_only_flow_errors(text):
    only_flow_errors(text)


@FUZZ
@given(st.lists(st.sampled_from(WORDS), max_size=60).map(" ".join))
def test_random_sequences_of_language_words_give_only_flow_errors(text):
    only_flow_errors(text)


@FUZZ
@given(st.text(max_size=200))
def test_random_text_gives_only_flow_errors(text):
    only_flow_errors(text)


def test_format_of_every_seed_is_idempotent():
    for text in SEEDS:
        once = format_source(text)
        assert format_source(once) == once
