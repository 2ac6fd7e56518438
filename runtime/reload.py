"""Hot reload: watch the script's folder, recompile on change, swap in one step or keep the old program.

The folder is watched rather than the file because editors save by rename and Kubernetes ConfigMaps
swap a symlink; events are debounced so one save is one reload. A program whose sources hash the same
as the running one is not reloaded at all.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

from flowlang import FlowError, load_program
from flowlang.model import Program

log = logging.getLogger("callflow.reload")

DEBOUNCE = 0.1


class Reloader:
    def __init__(self, path: str | os.PathLike, apply: Callable[[Program], dict[str, list[str]]],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.path = Path(path)
        self.apply = apply
        self.loop = loop
        self.current_hash: str | None = None
        self.last_error: str | None = None
        self._pending: asyncio.TimerHandle | None = None
        self._observer = None

    def load_initial(self) -> Program:
        """The first load: errors here stop the server before it listens (FlowError propagates)."""
        program = load_program(self.path)
        self.current_hash = program.source_hash
        return program

    def reload(self, reason: str = "change") -> bool:
        """Recompile now; True when a new program took over."""
        try:
            program = load_program(self.path)
        except FlowError as exc:
            self.last_error = str(exc)
            log.error("event=reload_failed reason=%s kept=previous\n%s", reason, exc)
            return False
        except OSError as exc:
            self.last_error = str(exc)
            log.error("event=reload_failed reason=%s kept=previous error=%r", reason, str(exc))
            return False
        self.last_error = None
        for warning in program.warnings:
            log.warning("%s", warning.render() if hasattr(warning, "render") else warning)
        if program.source_hash == self.current_hash:
            return False
        changes = self.apply(program)
        self.current_hash = program.source_hash
        summary = " ".join(f"{k}={','.join(v)}" for k, v in changes.items() if v)
        log.info("event=reloaded reason=%s hash=%s %s", reason, program.source_hash[:12], summary)
        return True

    # ---- file events --------------------------------------------------------------------------
    def watch(self) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        reloader = self

        class _Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:  # type: ignore[no-untyped-def]
                if event.event_type in ("opened", "closed_no_write"):
                    return
                reloader.loop.call_soon_threadsafe(reloader.changed)

        folder = self.path if self.path.is_dir() else self.path.parent
        observer = Observer()
        observer.schedule(_Handler(), str(folder), recursive=False)
        observer.daemon = True
        observer.start()
        self._observer = observer

    def changed(self) -> None:
        """Debounce: one save (often several file events) gives one reload."""
        if self._pending is not None:
            self._pending.cancel()
        self._pending = self.loop.call_later(DEBOUNCE, self._fire)

    def _fire(self) -> None:
        self._pending = None
        self.reload("file changed")

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
