"""What one Python file imports, read with ast: shared by the layout specs (test_sip_layout.py,
test_call_layout.py), which check that sans-IO layers import no asyncio, socket or clock."""

from __future__ import annotations

import ast
from pathlib import Path

FORBIDDEN = ("asyncio", "socket", "time", "selectors", "threading")


def imports_of(path: Path) -> tuple[set[str], set[str]]:
    """(sibling modules imported relatively, top-level packages imported absolutely) of one file."""
    siblings: set[str] = set()
    absolute: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                siblings.add(node.module.split(".")[0])
            elif node.level == 1:
                siblings.update(alias.name for alias in node.names)
            elif node.level == 0 and node.module:
                absolute.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            absolute.update(alias.name.split(".")[0] for alias in node.names)
    return siblings, absolute
