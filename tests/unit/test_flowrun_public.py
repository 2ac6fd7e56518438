"""The .flow runtime is built on the same public SDK as any Python program (issue 12).

callflow/flowrun/ (the dialplan and hot reload) may use the standard library, the language (flowlang),
the third-party packages pyproject.toml lists for it, its own modules, and the names callflow.sdk
exports (its __all__); never the runtime package, nor another object's private members, nor the
engine behind the SDK. Read from the source's syntax tree, so a lazy import inside a function counts
as much as one at the top.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import callflow.sdk

FLOWRUN = Path(__file__).resolve().parents[2] / "callflow" / "flowrun"
THIRD_PARTY = {"watchdog"}  # hot reload's folder events (pyproject.toml)
LANGUAGE = "flowlang"


def modules() -> list[tuple[str, ast.Module]]:
    found = sorted(FLOWRUN.glob("*.py"))
    assert found, f"no modules in {FLOWRUN}"
    return [(path.name, ast.parse(path.read_text(), str(path))) for path in found]


def imports(tree: ast.Module) -> list[tuple[str, list[str], int]]:
    """(module, names, level) of every import statement, wherever it is."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, [], 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((node.module or "", [alias.name for alias in node.names], node.level))
    return out


def test_the_flow_runtime_imports_only_the_standard_library_the_language_and_the_public_sdk() -> None:
    wrong = []
    for name, tree in modules():
        for module, _names, level in imports(tree):
            top = module.split(".")[0]
            if level > 0 or module.startswith("callflow.flowrun"):
                continue  # its own modules
            if module == "callflow.sdk" or top == LANGUAGE or top in THIRD_PARTY or top in sys.stdlib_module_names:
                continue
            wrong.append(f"{name}: import {module}")
    assert wrong == []


def test_the_flow_runtime_uses_only_names_the_sdk_exports() -> None:
    public = set(callflow.sdk.__all__)
    wrong = [f"{name}: {item}" for name, tree in modules()
             for module, names, _level in imports(tree) if module == "callflow.sdk"
             for item in names if item not in public]
    assert wrong == []


def test_the_flow_runtime_reaches_no_private_member_and_not_the_engine_behind_the_sdk() -> None:
    wrong = []
    for name, tree in modules():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            own = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            if node.attr == "engine" or (node.attr.startswith("_") and not node.attr.startswith("__") and not own):
                wrong.append(f"{name}:{node.lineno}: .{node.attr}")
    assert wrong == []


def test_the_runtime_package_does_not_import_the_flow_runtime_at_load_time() -> None:
    """Imports point down: callflow (the SDK, the .flow runtime) sits on runtime, never under it.
    The command (runtime/cli.py, the composition root) builds the .flow runtime inside `serve`."""
    root = FLOWRUN.parents[1] / "runtime"
    wrong = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in tree.body:  # module level only
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("callflow"):
                wrong.append(f"{path.relative_to(root.parent)}: from {node.module}")
            elif isinstance(node, ast.Import):
                wrong += [f"{path.relative_to(root.parent)}: import {a.name}" for a in node.names
                          if a.name.startswith("callflow")]
    assert wrong == []
