"""Hot reload: watch the files a program reads, compile away from the event loop, swap in one step
or keep the old program, and say what happened in exactly one log line per attempt.

- Compiling runs on a worker thread: a 20,000-rule script takes about a second to compile, during
  which SIP and RTP must go on (issue 9, "Reload"). The loop only swaps the finished Program in
  (`apply`), and the old one is released on the worker too, so freeing it does not stall the loop.
- The folder is watched rather than the file because editors save by rename and Kubernetes ConfigMaps
  swap a symlink; but only a `.flow` source or a file the program reads (an included file, a `play`
  file) starts a reload: a log file written next to the script does not (issue 10). Events are
  debounced so one save is one reload; a change during a compile gives one more compile after it.
- Every attempt (file change, SIGHUP, `callflow reload`) ends in exactly one line:
  `event=reloaded` (a new program runs), `event=reload_unchanged` (the files give the running
  program; when they fix an earlier failure the line says which error is cleared) or
  `event=reload_failed` (the running version is kept; the diagnostics in one quoted field).
- The running version id, its load time and files, and the last error (file:line:col) are
  attributes for a status page.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from callflow.sdk import logfmt_value
from flowlang import FlowError, load_program
from flowlang.model import Program

log = logging.getLogger("callflow.reload")

DEBOUNCE = 0.1  # seconds: an editor's save is several file events

# Outcomes of one attempt, as the log line names them
RELOADED = "reloaded"
UNCHANGED = "reload_unchanged"
FAILED = "reload_failed"


def _compile(path: Path) -> list[Program]:
    """Runs on the worker. The program comes in a list the loop empties, so that the finished future
    keeps no reference to it (see Reloader._release)."""
    return [load_program(path)]


class Reloader:
    """Owns the running program's identity; `apply` (the dialplan's load) swaps a program in."""

    def __init__(self, path: str | os.PathLike, apply: Callable[[Program], dict[str, list[str]]],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.path = Path(path)
        self.apply = apply
        self.loop = loop
        self.program: Program | None = None
        self.version: str | None = None  # the running program's version id (flowlang/loader.py)
        self.loaded_at: float | None = None  # wall-clock time (time.time()) the running program took over
        self.last_error: str | None = None  # the first error of the last failed attempt, file:line:col: message
        self.last_diagnostics: str | None = None  # all of them, as `callflow check` prints them
        self.last_outcome: str | None = None  # RELOADED, UNCHANGED or FAILED
        self.counts: dict[str, int] = {RELOADED: 0, UNCHANGED: 0, FAILED: 0}
        self._failing = False
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                               thread_name_prefix="callflow-compile")
        self._running: asyncio.Future[Program] | None = None
        self._waiting: list[asyncio.Future[str]] = []  # callers of reload() while a compile runs
        self._next_reason: str | None = None
        self._pending: asyncio.TimerHandle | None = None
        self._observer = None
        self._watched: dict[str, object] = {}  # folder -> watchdog's watch
        self._folder_real = os.path.realpath(self.folder)

    @property
    def current_hash(self) -> str | None:
        return self.program.source_hash if self.program is not None else None

    @property
    def files(self) -> tuple[str, ...]:
        return self.program.files if self.program is not None else ()

    @property
    def folder(self) -> Path:
        return self.path if self.path.is_dir() else self.path.parent

    def load_initial(self) -> Program:
        """The first load, before the server listens: errors stop it (FlowError propagates)."""
        program = load_program(self.path)
        self._took_over(program)
        return program

    # ---- one attempt ---------------------------------------------------------------------------
    def reload(self, reason: str = "change") -> asyncio.Future[str]:
        """Compile the files again on the worker thread, then swap or keep: returns a future of the
        outcome (RELOADED, UNCHANGED or FAILED), logged as one line. Called on the loop. A request while
        a compile runs is served by one more compile after it, whose outcome it gets."""
        done: asyncio.Future[str] = self.loop.create_future()
        if self._running is not None:
            self._waiting.append(done)
            self._next_reason = reason
            return done
        self._start(reason, [done])
        return done

    def _start(self, reason: str, waiters: list[asyncio.Future[str]]) -> None:
        started = time.monotonic()
        running = self.loop.run_in_executor(self._executor, _compile, self.path)
        self._running = running
        running.add_done_callback(lambda f: self._finish(f, reason, waiters, started))

    def _finish(self, compiled: asyncio.Future[list[Program]], reason: str, waiters: list[asyncio.Future[str]],
                started: float) -> None:
        self._running = None
        try:
            outcome = self._settle(compiled, reason, started)
        except Exception as exc:  # noqa: BLE001 - applying must never take the loop's callback down
            outcome = self._failed(reason, f"{type(exc).__name__}: {exc}", f"{type(exc).__name__}: {exc}")
        self.last_outcome = outcome
        self.counts[outcome] += 1
        for w in waiters:
            if not w.done():
                w.set_result(outcome)
        if self._waiting:
            waiting, self._waiting = self._waiting, []
            again, self._next_reason = self._next_reason or reason, None
            self._start(again, waiting)

    def _settle(self, compiled: asyncio.Future[list[Program]], reason: str, started: float) -> str:
        ms = f"{(time.monotonic() - started) * 1000:.0f}"
        exc = compiled.exception()
        if isinstance(exc, FlowError):
            first = exc.errors[0] if exc.errors else (exc.diagnostics[0] if exc.diagnostics else None)
            headline = _headline(first) if first is not None else str(exc).splitlines()[0]
            return self._failed(reason, headline, _bounded(exc.diagnostics))
        if exc is not None:
            return self._failed(reason, f"{type(exc).__name__}: {exc}", f"{type(exc).__name__}: {exc}")
        program = compiled.result().pop()
        warnings = " | ".join(_headline(w) for w in program.warnings)
        cleared = self.last_error if self._failing else None
        self._failing = False
        self.last_error = self.last_diagnostics = None
        self._watch_reads(program)
        if program.version == self.version:
            fields = [("reason", reason), ("version", program.version), ("compile_ms", ms)]
            if cleared:
                fields.append(("cleared", cleared))
            _log(logging.INFO, UNCHANGED, fields)
            box = [program]
            del program
            self._release(box)
            return UNCHANGED
        old, previous = self.program, self.version
        changes = self.apply(program)
        self._took_over(program)
        if old is not None:
            box = [old]
            del old
            self._release(box)
        fields = [("reason", reason), ("version", program.version), ("previous", previous), ("compile_ms", ms)]
        fields += [(k, ",".join(v)) for k, v in changes.items() if v]
        if warnings:
            fields += [("warnings", len(program.warnings)), ("diagnostics", warnings)]
        if cleared:
            fields.append(("cleared", cleared))
        _log(logging.INFO, RELOADED, fields)
        return RELOADED

    def _failed(self, reason: str, headline: str, diagnostics: str) -> str:
        self._failing = True
        self.last_error = headline
        self.last_diagnostics = diagnostics
        _log(logging.WARNING, FAILED, [("reason", reason), ("version", self.version), ("kept", "previous"),
                                       ("error", headline), ("diagnostics", diagnostics)])
        return FAILED

    def _release(self, box: list[Program]) -> None:
        """Free a program on the worker: freeing a 20,000-rule Program takes tens of milliseconds, which
        the event loop must not spend. The caller holds it only in `box` (its own names deleted), so the
        worker's clear() drops the last reference, unless a call in progress still uses it."""
        self._executor.submit(box.clear)

    def _took_over(self, program: Program) -> None:
        self.program = program
        self.version = program.version
        self.loaded_at = time.time()

    # ---- file events ---------------------------------------------------------------------------
    def watch(self) -> None:
        """Start watching the program's folder and the folders of the files it reads."""
        from watchdog.observers import Observer

        observer = Observer()
        observer.daemon = True
        observer.start()
        self._observer = observer
        self._watch_folder(str(self.folder))
        if self.program is not None:
            self._watch_reads(self.program)

    def _watch_folder(self, folder: str) -> None:
        if self._observer is None or folder in self._watched or not os.path.isdir(folder):
            return
        from watchdog.events import FileSystemEventHandler

        reloader = self

        class _Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:  # type: ignore[no-untyped-def]
                if event.event_type in ("opened", "closed_no_write") or event.is_directory:
                    return
                paths = [event.src_path, getattr(event, "dest_path", "")]
                if any(p and reloader.concerns(os.fsdecode(p)) for p in paths):
                    reloader.loop.call_soon_threadsafe(reloader.changed)

        self._watched[folder] = self._observer.schedule(_Handler(), folder, recursive=False)

    def _watch_reads(self, program: Program) -> None:
        for path in program.reads:
            self._watch_folder(os.path.dirname(path))

    def concerns(self, path: str) -> bool:
        """Whether a change to `path` may change the program: a `.flow` file in its folder (not an
        editor's lock file) or any file the running program reads. Called on watchdog's thread."""
        name = os.path.basename(path)
        if name.endswith(".flow") and not name.startswith(".#") and \
                os.path.realpath(os.path.dirname(path)) == self._folder_real:
            return True
        program = self.program
        if program is None:
            return False
        return path in program.reads or os.path.realpath(path) in program.reads

    def changed(self) -> None:
        """Debounce: one save (often several file events) gives one reload."""
        if self._pending is not None:
            self._pending.cancel()
        self._pending = self.loop.call_later(DEBOUNCE, self._fire)

    def _fire(self) -> None:
        self._pending = None
        self.reload("file changed")

    def stop(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
        if self._observer is not None:
            self._observer.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)


MAX_DIAGNOSTICS = 20  # in one log line; `callflow check` prints them all


def _bounded(diagnostics: list) -> str:
    """The first MAX_DIAGNOSTICS diagnostics as `callflow check` renders them, and how many more."""
    shown = "\n".join(d.render() for d in diagnostics[:MAX_DIAGNOSTICS])
    more = len(diagnostics) - MAX_DIAGNOSTICS
    return shown + (f"\n... and {more} more (callflow check lists them all)" if more > 0 else "")


def _headline(d: object) -> str:
    """`file:line:col: message` of one diagnostic."""
    file, line, col, msg = (getattr(d, k, None) for k in ("file", "line", "col", "message"))
    if file is None:
        return str(d).splitlines()[0]
    return f"{file}:{line}:{col}: {msg}"


def _log(level: int, event: str, fields: list[tuple[str, object]]) -> None:
    parts = [f"event={event}"] + [f"{k}={logfmt_value(v)}" for k, v in fields if v is not None and v != ""]
    log.log(level, " ".join(parts))
