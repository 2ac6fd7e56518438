"""The call layer's shape (issue 8): the call machine is split by job into modules that import no
asyncio, socket or clock and import each other without a cycle; only runner.py runs on asyncio; and
every name machine.py offered before the split is still importable from it."""

from __future__ import annotations

from pathlib import Path

import runtime.calls as calls
import runtime.calls.machine as machine
from tests.unit.import_scan import FORBIDDEN, imports_of

CALLS = Path(__file__).resolve().parents[2] / "runtime" / "calls"
JOBS = ("setup_routing", "originate", "in_dialog", "session_refresh", "play", "gather", "transfer", "ending",
        "dtmf")



def test_no_call_module_but_the_runner_imports_asyncio_a_socket_or_a_clock() -> None:
    offenders = {
        path.name: sorted(set(FORBIDDEN) & imports_of(path)[1])
        for path in sorted(CALLS.glob("*.py")) if path.name != "runner.py"
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_call_modules_import_each_other_without_a_cycle() -> None:
    graph = {path.stem: imports_of(path)[0] for path in CALLS.glob("*.py") if path.stem != "__init__"}
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


def test_a_job_module_imports_neither_the_machine_nor_the_runner() -> None:
    reaching_up = {job: sorted({"machine", "runner"} & imports_of(CALLS / f"{job}.py")[0]) for job in JOBS}
    assert {job: found for job, found in reaching_up.items() if found} == {}


def test_the_call_machine_is_made_of_one_class_per_job() -> None:
    assert {cls.__module__.rsplit(".", 1)[1] for cls in machine.CallMachine.__mro__[1:-1]} == set(JOBS)


def test_every_name_machine_py_offered_before_the_split_is_still_importable_from_it() -> None:
    before = ("CallMachine", "IllegalMove", "Transfer", "CONNECTED_METHODS", "RELAYED_HEADERS", "NO_HEADERS",
              "NO_ANSWER", "RESEND_2XX", "LINGER", "MAX_DURATION", "RTP_CHECK", "SE_REFRESH", "SE_EXPIRE",
              "TRANSFER_NO_ANSWER", "TRANSFER_TIMEOUT", "SE_TIMERS", "TOO_SMALL", "Step", "ZERO", "ONE", "log")
    assert [name for name in before if not hasattr(machine, name)] == []
    assert calls.CallMachine is machine.CallMachine and calls.IllegalMove is machine.IllegalMove
