"""Files to Program: folders, includes, hashing, and the promise that only FlowError escapes."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from . import syntax
from .compiler import Compiler
from .diagnostics import Diagnostic, FlowError, Reporter, only_flow_errors
from .model import Program
from .syntax import Decl


class _Load:
    """One load: every file read once, in order, includes spliced in where they appear."""

    def __init__(self, reporter: Reporter) -> None:
        self.r = reporter
        self.items: list[tuple[str, object]] = []
        self.files: list[str] = []
        self.seen: set[str] = set()
        self.hash = hashlib.sha256()

    def file(self, path: Path, display: str, at: tuple[str, int, int] | None = None) -> None:
        real = os.path.realpath(path)
        if real in self.seen:
            return  # a file is loaded once, even if included twice or in a cycle
        self.seen.add(real)
        try:
            data = path.read_bytes()
        except OSError as e:
            why = e.strerror or str(e)
            if at is None:
                self.r.error(display, 0, 0, f"cannot read: {why}")
            else:
                self.r.error(at[0], at[1], at[2], f"cannot include \"{display}\": {why}")
            return
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            line = data[: e.start].count(b"\n") + 1
            col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
            self.r.error(display, line, col, "not UTF-8 text")
            return
        self.text(text, display, path.parent, data)

    def text(self, text: str, display: str, base: Path, data: bytes | None = None) -> None:
        self.files.append(display)
        raw = text.encode("utf-8", "surrogatepass") if data is None else data
        self.hash.update(display.encode("utf-8", "surrogatepass") + b"\0" + raw + b"\0")
        self.r.add_source(display, text)
        parsed = syntax.parse(text)
        for p in parsed.problems:
            self.r.error(display, p.line, p.col, p.message)
        for item in parsed.items:
            if isinstance(item, Decl) and item.kind == "include":
                target = Path(item.name)
                path = target if target.is_absolute() else base / target
                shown = item.name if target.is_absolute() else _join(display, item.name)
                if not item.name.endswith(".flow"):
                    self.r.error(display, item.name_line, item.name_col, "an included file must end in .flow")
                    continue
                self.file(path, shown, (display, item.name_line, item.name_col))
            else:
                self.items.append((display, item))


@contextlib.contextmanager
def _no_gc():
    """A parse allocates hundreds of thousands of small objects that all live on: the cyclic collector
    would rescan them again and again (a third of the time of a big script) for nothing to free."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            if gc.get_freeze_count() == 0:
                # Turning the collector back on with every new object still counted as young makes the very
                # next allocation walk them all (a tenth of a big script's load) to find nothing to free.
                # freeze() + unfreeze() moves the tracked objects to the oldest generation without a walk,
                # where the next full collection sees them as it would have anyway. Skipped when the
                # application froze objects itself (unfreeze would undo that).
                gc.freeze()
                gc.unfreeze()
            gc.enable()


def _join(display: str, name: str) -> str:
    base = os.path.dirname(display) if not display.startswith("<") else ""
    return os.path.normpath(os.path.join(base, name))


def _finish(load: _Load, env: Mapping[str, str] | None) -> Program:
    try:
        if load.r.has_errors:
            raise FlowError(load.r.ordered())
        comp = Compiler(load.r, os.environ if env is None else env)
        return comp.compile(load.items, tuple(load.files), load.hash.hexdigest())
    finally:
        # free the syntax nodes now, while the collector is still off: the collection that follows
        # turning it back on then only walks the Program, not the nodes it was built from too
        load.items.clear()


@only_flow_errors
def load_program(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Program:
    """Load a .flow file, or every *.flow in a folder (sorted) as one program: all or nothing."""
    p = Path(path)
    display = os.fspath(path)
    r = Reporter()
    load = _Load(r)
    with _no_gc():
        return _load_path(p, display, load, env)


def _load_path(p: Path, display: str, load: _Load, env: Mapping[str, str] | None) -> Program:
    r = load.r
    if p.is_dir():
        files = sorted(c for c in p.iterdir() if c.suffix == ".flow" and c.is_file())
        if not files:
            r.error(display, 0, 0, "no .flow files in this folder")
        for c in files:
            load.file(c, os.path.join(display, c.name))
    elif p.exists():
        load.file(p, display)
    else:
        r.error(display, 0, 0, "no such file or folder")
    return _finish(load, env)


@only_flow_errors
def compile_source(text: str, filename: str = "<string>", env: Mapping[str, str] | None = None) -> Program:
    """Compile a script held in memory; includes resolve relative to `filename`'s folder."""
    r = Reporter()
    load = _Load(r)
    base = Path(os.path.dirname(filename)) if not filename.startswith("<") else Path(".")
    with _no_gc():
        load.text(text, filename, base)
        return _finish(load, env)


def check_paths(paths: Iterable[str | os.PathLike[str]], env: Mapping[str, str] | None = None) -> list[Diagnostic]:
    """Every error and warning for each path (file or folder); empty means all good."""
    out: list[Diagnostic] = []
    for path in paths:
        try:
            prog = load_program(path, env)
        except FlowError as e:
            out.extend(e.diagnostics)
        else:
            out.extend(prog.warnings)
    return out
