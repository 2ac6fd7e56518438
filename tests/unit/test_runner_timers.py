"""The runner's one timer heap stays as small as the timers that are live: a long timer (a maximum
call duration of hours) cancelled when its call ends does not stay behind for hours, one per call."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from runtime.calls.io import CancelTimer, SetTimer
from runtime.calls.runner import COMPACT_AT, CallRunner


def test_cancelled_long_timers_of_ended_calls_do_not_pile_up_in_the_heap() -> None:
    async def scenario() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        runner = CallRunner(SimpleNamespace(now=loop.time))  # type: ignore[arg-type]
        most = 0
        for n in range(20 * COMPACT_AT):  # 80,000 short calls, each with a 4-hour duration timer
            s = SimpleNamespace(id=f"c{n}", timers={})
            runner.sessions[s.id] = s  # type: ignore[assignment]
            runner._set_timer(s, SetTimer("max_duration", loop.time() + 4 * 3600))  # type: ignore[arg-type]
            runner._cancel_timer(s, CancelTimer("max_duration"))  # type: ignore[arg-type]
            del runner.sessions[s.id]
            most = max(most, len(runner._heap))
        keep = SimpleNamespace(id="live", timers={})
        runner.sessions["live"] = keep  # type: ignore[assignment]
        runner._set_timer(keep, SetTimer("max_duration", loop.time() + 3600))  # type: ignore[arg-type]
        runner._timer.cancel()  # type: ignore[union-attr]
        return most, sum(1 for e in runner._heap if e[2] == "live")

    most, live_kept = asyncio.run(scenario())
    assert most <= COMPACT_AT + 1  # bounded, not 80,000
    assert live_kept == 1          # a live timer is never dropped
