"""The TextMate grammar is valid JSON, and its patterns compile and highlight the slice's keywords."""

import json
import re
from pathlib import Path

from flowspec import SLICE

GRAMMAR = Path(__file__).resolve().parents[2] / "editors" / "flow.tmLanguage.json"


def _patterns(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("match", "begin", "end"):
                yield v
            else:
                yield from _patterns(v)
    elif isinstance(node, list):
        for v in node:
            yield from _patterns(v)


def test_the_grammar_is_json_with_the_flow_scope():
    g = json.loads(GRAMMAR.read_text(encoding="utf-8"))
    assert g["scopeName"] == "source.flow" and "flow" in g["fileTypes"]


def test_every_pattern_compiles_and_the_keywords_of_the_slice_are_covered():
    g = json.loads(GRAMMAR.read_text(encoding="utf-8"))
    pats = [re.compile(p, re.M) for p in _patterns(g)]
    for word in ("user", "line", "on", "incoming", "accept", "register", "every", "hangup", "log", "any"):
        assert any(p.search(word) for p in pats), word
    assert any(p.search(SLICE) for p in pats)
