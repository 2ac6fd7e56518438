"""The documented events are the events the program logs: every `event=NAME` the runtime can write
is defined in flowlang/events.py, and docs/events.md is that table, word for word."""

from __future__ import annotations

import re
from pathlib import Path

from flowlang.events import BUS_EVENT_NAMES, BY_NAME, EVENT_NAMES, GENERATE, HANDLED_EVENTS, markdown

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ROOT / "runtime"


def logged_names() -> dict[str, list[str]]:
    """event name -> where the runtime writes it: literal `event=NAME` in its sources (log calls,
    f-strings) and `bus.emit("NAME", ...)`."""
    found: dict[str, list[str]] = {}
    for path in sorted(RUNTIME.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for pattern in (r"event=([a-z_][a-z0-9_]*)", r"""\.emit\(\s*["']([a-z_][a-z0-9_]*)["']"""):
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


def test_every_event_emitted_on_the_bus_is_a_bus_event() -> None:
    emitted: set[str] = set()
    for path in sorted(RUNTIME.rglob("*.py")):
        emitted |= set(re.findall(r"""bus\.emit\(\s*["']([a-z_][a-z0-9_]*)["']""", path.read_text("utf-8")))
    assert emitted <= set(BUS_EVENT_NAMES), emitted - set(BUS_EVENT_NAMES)


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
