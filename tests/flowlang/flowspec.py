"""Shared helpers for the flowlang specification tests."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from flowlang import CallInfo, FlowError, compile_source

SLICE = r'''user alice password "alice-pw"

line itsp1 {
    server   "127.0.0.1:5080"
    username "trunk1"
    password "s3cret"
    register every 60s
}

on incoming from user any to /^\+?[0-9]{7,15}$/ accept to line itsp1
on incoming from line itsp1 accept to user alice
on hangup { log "call {call} ended by channel {channel}" }
'''

PREAMBLE = '''user alice password "a"
user bob password "b"
line itsp1 { server "sip.example.com" }
line itsp2 { server "sip2.example.com" }
'''

MONDAY_NOON = datetime(2026, 11, 23, 12, 0, tzinfo=ZoneInfo("UTC"))


def call(frm: str = "user:alice", to: str = "+15551234567", caller_id: str | None = None,
         headers: dict[str, str] | None = None, at: datetime = MONDAY_NOON,
         caller_name: str | None = None) -> CallInfo:
    kind, _, name = frm.partition(":")
    if kind not in ("user", "line"):
        kind, name = "unknown", ""
    return CallInfo(kind, name or None, caller_id if caller_id is not None else (name or "anon"),
                    caller_name, to, headers or {}, at)


def errors_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    """`line:col: error: message` for every error a script produces (warnings left out)."""
    with pytest.raises(FlowError) as info:
        compile_source(text, "t.flow", env=env or {})
    return [f"{d.line}:{d.col}: {d.severity}: {d.message}" for d in info.value.diagnostics
            if d.severity == "error"]


def warnings_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    """`line:col: message` for every warning of a script that compiles."""
    program = compile_source(text, "t.flow", env=env or {})
    return [f"{d.line}:{d.col}: {d.message}" for d in program.warnings]


def compiles(text: str, env: dict[str, str] | None = None):
    return compile_source(text, "t.flow", env=env or {})
