"""Every ```flow example in docs/language.md compiles without errors."""

import re
from pathlib import Path

import pytest

from flowlang import compile_source

DOC = Path(__file__).resolve().parents[2] / "docs" / "language.md"
BLOCKS = re.findall(r"```flow\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
ENV = {"BOB_PASSWORD": "b", "EXT1003_PASSWORD": "e", "ITSP1_PASSWORD": "i",
       "CALLFLOW_TLS_KEY_PATH": "/etc/callflow/key.pem"}


def test_the_reference_has_examples():
    assert len(BLOCKS) >= 10


@pytest.mark.parametrize("block", BLOCKS, ids=[f"example-{i + 1}" for i in range(len(BLOCKS))])
def test_each_example_in_the_reference_compiles(block):
    compile_source(block, "language.md", env=ENV)


def test_the_tls_settings_the_reference_names_are_the_ones_the_language_takes():
    text = DOC.read_text(encoding="utf-8")
    named = set(re.findall(r"`(tls (?:cert\w*|key))`", text))
    assert named == {"tls certificate", "tls key"}
    compile_source("server {\n" + "".join(f'    {w} "/etc/callflow/x.pem"\n' for w in sorted(named)) + "}\n")

