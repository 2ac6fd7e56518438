"""Reload applies declarations as a diff: unchanged lines keep their registration, changed ones
re-register, removed ones go, and a removed user's phones lose their bindings."""

from __future__ import annotations

import asyncio
import re

from callflow.flowrun.dialplan import Dialplan
from callflow.sdk import SipServer
from flowlang import compile_source
from runtime.engine import Engine
from runtime.registrar import Binding
from runtime.transport import ListenSpec


def program(password: str = "s3cret", with_line: bool = True, users: str = "alice bob"):  # type: ignore[no-untyped-def]
    text = "".join(f'user {u} password "{u}-pw"\n' for u in users.split())
    if with_line:
        text += f'line itsp1 {{\n server "127.0.0.1:9"\n username "trunk1"\n password "{password}"\n' \
                f' register every 60s\n}}\non incoming from user any accept to line itsp1\n'
    text += "on incoming from line any accept to user alice\n" if with_line else ""
    return compile_source(text)


async def scenario() -> dict[str, object]:
    engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], advertise="127.0.0.1", rtp_ports=(37400, 37499))
    await engine.start()
    plan = Dialplan(SipServer(engine=engine))
    out: dict[str, object] = {}
    out["first"] = plan.load(program())
    first_line = engine.lines["itsp1"]
    out["same"] = plan.load(program())
    out["same_line_kept"] = engine.lines["itsp1"] is first_line
    out["changed"] = plan.load(program(password="new"))
    out["changed_line_new"] = engine.lines["itsp1"] is not first_line and first_line.stopped
    engine.registrar.store.put(Binding("bob", "sip:bob@127.0.0.1:5999", ("127.0.0.1", 5999), "udp",
                                       engine.now() + 600, "c", 1))
    out["removed"] = plan.load(program(with_line=False, users="alice"))
    out["lines_left"] = list(engine.lines)
    out["bob_bindings"] = engine.registrar.lookup("bob", engine.now())
    await engine.stop()
    return out


def test_reload_applies_only_what_changed() -> None:
    out = asyncio.run(scenario())
    assert out["first"] == {"users+": ["alice", "bob"], "users-": [], "lines+": ["itsp1"], "lines~": [], "lines-": []}
    assert out["same"] == {"users+": [], "users-": [], "lines+": [], "lines~": [], "lines-": []}
    assert out["same_line_kept"] is True
    assert out["changed"]["lines~"] == ["itsp1"]  # type: ignore[index]
    assert out["changed_line_new"] is True
    assert out["removed"]["lines-"] == ["itsp1"] and out["removed"]["users-"] == ["bob"]  # type: ignore[index]
    assert out["lines_left"] == [] and out["bob_bindings"] == []


# ---- the Reloader: off-loop compiles, one line per attempt, a watcher that ignores other files ----------

import logging  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from callflow.flowrun.reload import FAILED, RELOADED, UNCHANGED, Reloader  # noqa: E402

DECLS = 'user alice password "a"\nline itsp1 { server "127.0.0.1:9" }\n'
RULES = 'on incoming from user any accept to line itsp1\non incoming from line itsp1 accept to user alice\n'
SMALL = DECLS + RULES


def big(rules: int) -> str:
    return DECLS + "".join(f'on incoming from user any to "{n:06d}" reject 480\n' for n in range(rules)) + RULES


class _Applied:
    def __init__(self) -> None:
        self.programs: list = []
        self.threads: list[int] = []

    def __call__(self, program):  # type: ignore[no-untyped-def]
        self.programs.append(program)
        self.threads.append(threading.get_ident())
        return {"users+": []}


def reload_lines(caplog) -> list[str]:  # type: ignore[no-untyped-def]
    return [r.getMessage() for r in caplog.records if r.name == "callflow.reload"]


def test_a_20000_rule_reload_compiles_off_the_loop_which_keeps_running(tmp_path: Path, capsys) -> None:
    flow = tmp_path / "main.flow"
    flow.write_text(SMALL)

    async def go() -> tuple[str, int, float, float, _Applied, int]:
        loop = asyncio.get_running_loop()
        applied = _Applied()
        reloader = Reloader(flow, applied, loop)
        reloader.load_initial()
        flow.write_text(big(20_000))
        ticks, lag = 0, 0.0
        started = time.monotonic()
        outcome = reloader.reload("test")
        while not outcome.done():  # bounded: the compile ends (a failure ends it too)
            before = loop.time()
            await asyncio.sleep(0.005)
            lag = max(lag, loop.time() - before - 0.005)
            ticks += 1
        took = time.monotonic() - started
        reloader.stop()
        return outcome.result(), ticks, lag, took, applied, threading.get_ident()

    outcome, ticks, lag, took, applied, loop_thread = asyncio.run(go())
    assert outcome == RELOADED and len(applied.programs) == 1 and len(applied.programs[0].rules) == 20_002
    assert applied.threads == [loop_thread]  # swapped on the loop, compiled elsewhere
    assert ticks > 1  # the loop ran timers while the script compiled
    with capsys.disabled():
        print(f"\n  20,000-rule reload: {took * 1000:.0f} ms to compile and swap; the loop ticked {ticks} times "
              f"meanwhile, max lag {lag * 1000:.1f} ms over a 5 ms timer")


def run_attempts(flow: Path, steps) -> tuple[list[str], Reloader]:  # type: ignore[no-untyped-def]
    """Load `flow`, then for each step write the text it gives (None: leave the file) and reload."""
    async def go() -> tuple[list[str], Reloader]:
        reloader = Reloader(flow, _Applied(), asyncio.get_running_loop())
        reloader.load_initial()
        outcomes = []
        for text in steps:
            if text is not None:
                flow.write_text(text)
            outcomes.append(await reloader.reload("SIGHUP"))
        reloader.stop()
        return outcomes, reloader
    return asyncio.run(go())


def test_every_reload_attempt_ends_in_exactly_one_line(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="callflow.reload")
    flow = tmp_path / "main.flow"
    flow.write_text(SMALL)
    broken = SMALL + "on incoming accept to user nobody\n"
    huge = DECLS + RULES * 50  # 98 rules that never match: the line holds the first 20 of the errors
    outcomes, reloader = run_attempts(flow, [None, SMALL + "# edit\n", broken, broken, huge, SMALL + "# edit\n"])
    assert outcomes == [UNCHANGED, RELOADED, FAILED, FAILED, FAILED, UNCHANGED]
    lines = reload_lines(caplog)
    assert [line.split()[0] for line in lines] == [
        "event=reload_unchanged", "event=reloaded", "event=reload_failed", "event=reload_failed",
        "event=reload_failed", "event=reload_unchanged"]
    assert all("\n" not in line for line in lines)
    # the first 20 diagnostics are in the line, the count of the rest (errors and warnings) closes it
    assert re.search(r"\.\.\. and \d+ more \(callflow check lists them all\)\"$", lines[4]), lines[4][-200:]
    assert len(lines[4]) < 10_000


def test_a_failed_reload_names_the_version_kept_and_carries_the_diagnostics_in_one_quoted_field(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="callflow.reload")
    flow = tmp_path / "main.flow"
    flow.write_text(SMALL)
    outcomes, reloader = run_attempts(flow, [SMALL + "on incoming accept to user nobody\n"])
    line = reload_lines(caplog)[-1]
    where = f"{flow}:5:"
    assert f"version={reloader.version} kept=previous" in line
    assert f'error="{where}' in line and 'diagnostics="' in line and "\\n" in line
    assert [r.levelname for r in caplog.records if r.name == "callflow.reload"] == ["WARNING"]
    assert reloader.last_error is not None and reloader.last_error.startswith(where)


def test_a_fix_that_restores_the_running_program_says_so_and_clears_the_error(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="callflow.reload")
    flow = tmp_path / "main.flow"
    flow.write_text(SMALL)
    outcomes, reloader = run_attempts(flow, [SMALL + "on incoming accept to user nobody\n", SMALL])
    assert outcomes == [FAILED, UNCHANGED]
    last = reload_lines(caplog)[-1]
    assert last.startswith("event=reload_unchanged") and f'cleared="{flow}:5:' in last
    assert reloader.last_error is None


def test_the_reloader_shows_the_version_check_gives_and_when_it_loaded(tmp_path: Path) -> None:
    from flowlang.loader import version_id

    flow = tmp_path / "main.flow"
    flow.write_text(SMALL)
    outcomes, reloader = run_attempts(flow, [SMALL + "# edit\n"])
    assert reloader.version == version_id(flow) and reloader.loaded_at is not None
    assert reloader.files == (str(flow),) and reloader.last_outcome == RELOADED


def test_a_reload_asked_for_during_a_compile_gets_one_more_compile_after_it(tmp_path: Path) -> None:
    flow = tmp_path / "main.flow"
    flow.write_text(SMALL)

    async def go() -> tuple[list[str], int, bool]:
        applied = _Applied()
        reloader = Reloader(flow, applied, asyncio.get_running_loop())
        reloader.load_initial()
        flow.write_text(big(3000))
        first = reloader.reload("one")
        flow.write_text(SMALL + "# two\n")  # the first compile may or may not read this yet
        second, third = reloader.reload("two"), reloader.reload("three")
        out = [await first, await second, await third]
        reloader.stop()
        return out, len(applied.programs[-1].rules), reloader.version == version_id(flow)

    from flowlang.loader import version_id

    outcomes, rules, current = asyncio.run(go())
    assert outcomes[0] == RELOADED and outcomes[1] == outcomes[2]  # the two waiters share one compile
    assert rules == 2 and current  # and what runs is what the file says last


def test_only_flow_sources_and_files_the_program_reads_concern_the_watcher(tmp_path: Path) -> None:
    flow = tmp_path / "main.flow"
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "closed.wav").write_bytes(b"RIFF")
    flow.write_text(SMALL.replace("accept to user alice\n", '{ play "prompts/closed.wav"\n accept to user alice }\n'))

    async def go() -> Reloader:
        reloader = Reloader(flow, _Applied(), asyncio.get_running_loop())
        reloader.load_initial()
        return reloader

    r = asyncio.run(go())
    assert r.concerns(str(flow)) and r.concerns(str(tmp_path / "other.flow"))
    assert r.concerns(str(tmp_path / "prompts" / "closed.wav"))
    for other in ("callflow.log", "main.flow.swp", "main.flow~", ".#main.flow", "4913", "prompts/x.flow"):
        assert not r.concerns(str(tmp_path / other)), other


def test_a_log_file_written_in_the_script_folder_starts_no_reload_but_a_save_does(tmp_path: Path) -> None:
    flow = tmp_path / "main.flow"
    flow.write_text(SMALL + "on incoming to \"1\" accept to user nobody_warns\n".replace("nobody_warns", "alice"))

    async def go() -> tuple[dict[str, int], dict[str, int]]:
        reloader = Reloader(flow, _Applied(), asyncio.get_running_loop())
        reloader.load_initial()
        reloader.watch()
        try:
            with open(tmp_path / "callflow.log", "a") as logf:
                for i in range(20):
                    logf.write(f"event=reloaded n={i}\n")
                    logf.flush()
                    await asyncio.sleep(0.02)
            await asyncio.sleep(0.5)  # a reload would have started by now (debounce 0.1 s)
            quiet = dict(reloader.counts)
            flow.write_text(SMALL + "# saved\n")
            for _ in range(200):  # bounded: 10 s
                if sum(reloader.counts.values()) > sum(quiet.values()):
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            return quiet, dict(reloader.counts)
        finally:
            reloader.stop()

    quiet, after = asyncio.run(go())
    assert quiet == {RELOADED: 0, UNCHANGED: 0, FAILED: 0}
    assert after == {RELOADED: 1, UNCHANGED: 0, FAILED: 0}


def test_the_replaced_program_and_an_unchanged_one_are_freed_off_the_loop(tmp_path: Path) -> None:
    import weakref

    flow = tmp_path / "main.flow"
    flow.write_text(SMALL)
    freed_on: dict[str, int] = {}

    async def go() -> int:
        reloader = Reloader(flow, lambda program: {}, asyncio.get_running_loop())
        first = reloader.load_initial()
        weakref.finalize(first, lambda: freed_on.setdefault("replaced", threading.get_ident()))
        del first
        flow.write_text(SMALL + "# edit\n")
        assert await reloader.reload("edit") == RELOADED
        original = reloader._executor.submit  # watch the unchanged program handed to the worker

        def submit(fn, *args):  # type: ignore[no-untyped-def]
            for p in getattr(fn, "__self__", ()):
                weakref.finalize(p, lambda: freed_on.setdefault("unchanged", threading.get_ident()))
            return original(fn, *args)

        reloader._executor.submit = submit  # type: ignore[method-assign]
        assert await reloader.reload("again") == UNCHANGED
        reloader._executor.submit = original  # type: ignore[method-assign]
        for _ in range(100):  # bounded: the worker frees them
            if len(freed_on) == 2:
                break
            await asyncio.sleep(0.01)
        reloader.stop()
        return threading.get_ident()

    loop_thread = asyncio.run(go())
    assert set(freed_on) == {"replaced", "unchanged"} and loop_thread not in freed_on.values()
