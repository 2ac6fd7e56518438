"""The dialplan runs a `gather`: it asks the call session for the menu, and when the entry is in it runs
the branch the entry selects, with `{digits}` among the values its statements use."""

from __future__ import annotations

import logging
from typing import Any

from callflow.flowrun.dialplan import _PlanRun
from flowlang import CallInfo, compile_source
from runtime.calls import Failure

FLOW = '''user sales password "sales-pw-2026"
user operator password "operator-pw-2026"
line itsp { server "sip.provider.example" }
on incoming from line itsp {
    gather "menu.wav" max 1 retries 1 {
        when "1" { log "sales for {caller_id}: pressed {digits}" accept to user sales }
        when nothing accept to user operator
        else accept to line itsp number "+1555000{digits}"
    }
}
'''


class RecordingCall:
    """What the dialplan asks of a call session, recorded (a unit-test stand-in for CallSession)."""

    id = "c1"
    last_failure = Failure(480, "Temporarily Unavailable")

    def __init__(self) -> None:
        self.asked: list[tuple[str, Any]] = []
        self.on_gathered: Any = None

    def gather(self, prompt, max_digits, terminator, timeout, digit_timeout, retries, keys, on_done):  # type: ignore[no-untyped-def]
        self.asked.append(("gather", (prompt, max_digits, terminator, timeout, digit_timeout, retries, keys)))
        self.on_gathered = on_done

    def accept(self, targets, timeout, on_result):  # type: ignore[no-untyped-def]
        self.asked.append(("accept", [(t.kind, t.name, t.number) for t in targets]))

    def reject(self, code: int, reason: str) -> None:
        self.asked.append(("reject", code))

    def hangup(self) -> None:
        self.asked.append(("hangup", None))


def run_menu() -> RecordingCall:
    program = compile_source(FLOW, "<menu>")
    decision = program.decide(CallInfo("line", "itsp", "+15557654321", None, "+15551230000"))
    assert decision is not None
    call = RecordingCall()
    _PlanRun(call, decision).step(None)  # type: ignore[arg-type]
    return call


def test_the_plan_asks_the_call_for_the_menu_with_its_options_and_keys() -> None:
    call = run_menu()
    assert call.asked == [("gather", ("menu.wav", 1, "#", 5.0, 3.0, 1, frozenset({"1"})))]


def test_a_key_runs_its_branch_with_the_digits_in_its_texts(caplog) -> None:  # type: ignore[no-untyped-def]
    call = run_menu()
    with caplog.at_level(logging.INFO, logger="callflow.dialplan"):
        call.on_gathered("1", "max")
    assert call.asked[-1] == ("accept", [("USER", "sales", None)])
    assert 'text="sales for +15557654321: pressed 1"' in caplog.text


def test_nothing_runs_the_nothing_branch() -> None:
    call = run_menu()
    call.on_gathered("", "timeout")
    assert call.asked[-1] == ("accept", [("USER", "operator", None)])


def test_another_key_runs_else_with_the_digits_in_its_number_rewrite() -> None:
    call = run_menu()
    call.on_gathered("7", "max")
    assert call.asked[-1] == ("accept", [("LINE", "itsp", "+15550007")])
