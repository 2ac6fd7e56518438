"""The documented events are the events the program logs: every `event=NAME` the runtime can write
is defined in flowlang/events.py, and docs/events.md is that table, word for word."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from flowlang.events import BY_NAME, EVENT_NAMES, GENERATE, HANDLED_EVENTS, markdown

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ROOT / "runtime"


def sources() -> list[Path]:
    """The runtime's modules and the public package's (the SDK, the .flow runtime in callflow/flowrun)."""
    return sorted([*RUNTIME.rglob("*.py"), *(ROOT / "callflow").rglob("*.py")])


def logged_names() -> dict[str, list[str]]:
    """event name -> where the runtime writes it: literal `event=NAME` in its sources (log calls,
    f-strings) and `bus.emit("NAME", ...)`."""
    found: dict[str, list[str]] = {}
    for path in sources():
        text = path.read_text(encoding="utf-8")
        for pattern in (r"event=([a-z_][a-z0-9_]*)", r"""(?:emit|Emit)\(\s*["']([a-z_][a-z0-9_]*)["']"""):
            for m in re.finditer(pattern, text):
                line = text.count("\n", 0, m.start()) + 1
                found.setdefault(m.group(1), []).append(f"{path.relative_to(ROOT)}:{line}")
    return found


def test_the_scan_finds_the_events_it_should() -> None:
    names = logged_names()
    for expected in ("created", "closed", "line_registered", "auth_failed", "routed", "no_route", "playing",
                     "play_failed", "bindings_restored", "overload", "message_refused"):
        assert expected in names, expected


def test_every_event_the_runtime_logs_is_defined_in_the_table_of_events() -> None:
    missing = {n: w for n, w in logged_names().items() if n not in BY_NAME}
    assert not missing, ("events logged but not defined in flowlang/events.py (add an EventSpec with its "
                         f"fields, then regenerate docs/events.md: {GENERATE}): {missing}")


def emitted() -> list[tuple[str, str, list[str]]]:
    """(where, event, field names) of every event the runtime emits with a literal name: calls of
    `emit(...)`/`_emit(...)` (keywords) and `Emit(name, {...})` (the machines' actions, dict keys)."""
    out = []
    for path in sources():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            first = node.args[0]
            if called not in ("emit", "_emit", "Emit") or not isinstance(first, ast.Constant) \
                    or not isinstance(first.value, str):
                continue
            names = [k.arg for k in node.keywords if k.arg is not None]
            if called == "Emit" and len(node.args) > 1 and isinstance(node.args[1], ast.Dict):
                names += [k.value for k in node.args[1].keys if isinstance(k, ast.Constant)]
            out.append((f"{path.relative_to(ROOT)}:{node.lineno}", first.value, names))
    return out


def test_the_ast_scan_finds_the_call_lines_and_registrar_events() -> None:
    names = {event for _, event, _ in emitted()}
    assert {"created", "connected", "hangup", "closed", "line_registered", "user_registered"} <= names


def test_every_event_emitted_on_the_bus_is_a_bus_event_with_fields_of_its_own() -> None:
    wrong = []
    for where, event, names in emitted():
        spec = BY_NAME.get(event)
        if spec is None or not spec.bus:
            wrong.append(f"{where}: {event} is not a bus event of flowlang/events.py")
            continue
        wrong += [f"{where}: {event} has no field {n} in flowlang/events.py" for n in names
                  if n not in spec.field_names]
    assert not wrong, "\n".join(wrong)


def test_docs_events_md_is_the_table_of_events() -> None:
    text = (ROOT / "docs" / "events.md").read_text(encoding="utf-8")
    assert text == markdown(), f"docs/events.md is out of date: regenerate it with {GENERATE}"
    for name in EVENT_NAMES:
        assert f"| `{name}` |" in text


def test_the_language_reference_points_to_the_events_and_lists_every_handler() -> None:
    text = (ROOT / "docs" / "language.md").read_text(encoding="utf-8")
    assert "docs/events.md" in text
    section = text[text.index("## Handlers"):text.index("## Text interpolation")]
    for name in HANDLED_EVENTS:
        handler = BY_NAME[name].handler
        assert handler is not None
        words = handler.split()
        # `on line registered` is written `on line [NAME] registered` in the table
        form = " ".join(words[:2]) + " [NAME] " + " ".join(words[2:]) if words[1] in ("line", "user") else handler
        assert f"`{form}`" in section, form


def test_each_event_is_defined_once() -> None:
    from collections import Counter

    from flowlang.events import EVENTS

    twice = [name for name, n in Counter(spec.name for spec in EVENTS).items() if n > 1]
    assert not twice, f"defined more than once in flowlang/events.py: {twice}"
