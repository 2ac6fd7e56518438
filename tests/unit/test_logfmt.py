"""Every log line is one logfmt line with time, level and event=, whatever the module wrote."""

from __future__ import annotations

import io
import logging
import re

from runtime.events import EventBus
from runtime.logfmt import LogfmtFormatter, setup_logging

LINE = re.compile(r'^time=\S+Z level=(debug|info|warning|error|critical) event=\w+( \w+=("(?:[^"\\]|\\.)*"|\S*))*$')


def record(msg: str, *args: object, level: int = logging.INFO, exc: bool = False) -> str:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            import sys

            exc_info = sys.exc_info()
    rec = logging.LogRecord("callflow.test", level, __file__, 1, msg, args, exc_info)
    return LogfmtFormatter().format(rec)


def test_an_event_line_gets_time_and_level_in_front() -> None:
    line = record("event=started script=%s users=%d", "office.flow", 1)
    assert LINE.match(line) and line.endswith("level=info event=started script=office.flow users=1")


def test_a_multi_line_message_stays_one_line_with_the_rest_in_a_quoted_field() -> None:
    line = record("event=reload_failed reason=change kept=previous\nmain.flow:2:5: error: x\n    ^")
    assert "\n" not in line and LINE.match(line)
    assert 'detail="main.flow:2:5: error: x\\n    ^"' in line


def test_a_plain_message_becomes_event_note_with_the_text_quoted() -> None:
    line = record("call=%s no media: %s", "ab12", "no ports left")
    assert LINE.match(line) and "event=note logger=callflow.test" in line
    assert 'msg="call=ab12 no media: no ports left"' in line


def test_a_traceback_is_carried_in_one_quoted_field() -> None:
    line = record("event=listener_failed", level=logging.ERROR, exc=True)
    assert "\n" not in line and LINE.match(line) and "traceback=" in line and "ValueError: boom" in line


def test_line_failures_are_logged_at_warning() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    setup_logging("info", stream)
    try:
        EventBus().emit("line_register_failed", line="itsp1", code=403, reason="Forbidden", retry_in="4s")
        EventBus().emit("line_registered", line="itsp1", code=200, reason="OK", expires=60)
    finally:  # the root logger as pytest had it: later tests must not log (and capture) at INFO
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
    failed, registered = stream.getvalue().splitlines()
    assert "level=warning event=line_register_failed" in failed and 'reason=Forbidden' in failed
    assert "level=info event=line_registered" in registered


def test_values_with_spaces_are_quoted_even_when_the_message_did_not() -> None:
    line = record("event=reload_failed reason=%s kept=previous error=%r", "file changed", "No such file")
    assert LINE.match(line), line
    assert 'reason="file changed" kept=previous error="No such file"' in line


def test_already_quoted_values_are_kept() -> None:
    line = record('event=overload lag_ms=3 action="new calls get 503"')
    assert line.endswith('event=overload lag_ms=3 action="new calls get 503"')


def test_field_names_with_plus_and_tilde_stay_fields_of_their_own() -> None:
    line = record('event=reloaded reason=change version=abc compile_ms=9 users+=bob lines~=itsp1 diagnostics="a b"')
    assert " compile_ms=9 users+=bob lines~=itsp1 " in line
