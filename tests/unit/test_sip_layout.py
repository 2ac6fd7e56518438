"""The sans-IO SIP layer's shape: no asyncio, socket or clock in runtime/sip, and no import cycle
between its modules, so each module (headers, model, parser, screening, framing...) can be read and
imported on its own."""

from __future__ import annotations

import ast
from pathlib import Path

import runtime.sip.message as message
from tests.unit.import_scan import FORBIDDEN, imports_of

SIP = Path(__file__).resolve().parents[2] / "runtime" / "sip"



def test_no_sip_module_imports_asyncio_a_socket_or_a_clock() -> None:
    offenders = {
        path.name: sorted(set(FORBIDDEN) & imports_of(path)[1]) for path in sorted(SIP.glob("*.py"))
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_sip_modules_import_each_other_without_a_cycle() -> None:
    graph = {path.stem: imports_of(path)[0] for path in SIP.glob("*.py")}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' -> '.join((*path, module))}"
        if module in done:
            return
        for dep in sorted(graph.get(module, ())):
            visit(dep, (*path, module))
        done.add(module)

    for module in sorted(graph):
        visit(module, ())


def _defined_public_names(path: Path) -> set[str]:
    """The names a module defines itself at top level (not those it imports), without a leading `_`."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {name for name in names if not name.startswith("_")}


def test_every_public_name_of_the_message_modules_is_importable_from_runtime_sip_message() -> None:
    parts = ("headers", "model", "parser", "screening", "framing")
    public = set().union(*(_defined_public_names(SIP / f"{part}.py") for part in parts))
    assert sorted(public - set(message.__all__)) == []
    assert all(hasattr(message, name) for name in message.__all__)
