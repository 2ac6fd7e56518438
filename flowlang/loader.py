"""Files to Program: folders, includes, hashing, and the promise that only FlowError escapes.

A program's version id is a short hash of what it is made of, independent of how its path was
spelled: every source file's name relative to the program's folder and its bytes, and the bytes of
every file a `play` reads. `callflow check` and a running server's status give the same id for the
same files. A script is bounded in size (MAX_SCRIPT_BYTES over all its files): compiling one far
larger would take many seconds and memory for no real dial plan's sake.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from . import syntax
from .compiler import Compiler
from .diagnostics import Diagnostic, FlowError, Reporter, only_flow_errors
from .model import Gather, Play, Program, Record
from .syntax import Decl

MAX_SCRIPT_BYTES = 8 << 20  # all the files of one program; a 20,000-rule script is about 1.2 MB
VERSION_CHARS = 12



class _Load:
    """One load: every file read once, in order, includes spliced in where they appear."""

    def __init__(self, reporter: Reporter, root: Path | None = None) -> None:
        self.r = reporter
        self.items: list[tuple[str, object]] = []
        self.files: list[str] = []
        self.seen: set[str] = set()
        self.hash = hashlib.sha256()
        self.root = os.path.realpath(root) if root is not None else None
        self.version = hashlib.sha256()  # names relative to root: the same files give the same id
        self.size = 0

    def file(self, path: Path, display: str, at: tuple[str, int, int] | None = None) -> None:
        real = os.path.realpath(path)
        if real in self.seen:
            return  # a file is loaded once, even if included twice or in a cycle
        self.seen.add(real)
        try:
            size = os.stat(real).st_size
            if self.size + size > MAX_SCRIPT_BYTES:
                where = (display, 0, 0) if at is None else at
                self.r.error(*where, f"the script is too large: {display} brings it to {self.size + size:,} "
                             f"bytes, over the limit of {MAX_SCRIPT_BYTES:,} bytes for all its files")
                return
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
        self.text(text, display, path.parent, data, real)

    def text(self, text: str, display: str, base: Path, data: bytes | None = None, real: str | None = None) -> None:
        self.files.append(display)
        raw = text.encode("utf-8", "surrogatepass") if data is None else data
        self.size += len(raw)  # a file's size was checked before reading it; text held in memory is checked here
        if real is None and self.size > MAX_SCRIPT_BYTES:
            self.r.error(display, 0, 0, f"the script is too large: {self.size:,} bytes, over the limit of "
                                        f"{MAX_SCRIPT_BYTES:,} bytes")
            return
        self.hash.update(display.encode("utf-8", "surrogatepass") + b"\0" + raw + b"\0")
        self.version.update(self._name(real, display) + b"\0" + raw + b"\0")
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


    def _name(self, real: str | None, display: str) -> bytes:
        name = display
        if real is not None and self.root is not None:
            name = os.path.relpath(real, self.root)
        return name.replace(os.sep, "/").encode("utf-8", "surrogatepass")


def play_files(program: Program) -> tuple[str, ...]:
    """The files the program's `play` statements and `gather` prompts read, as written in the program (resolved against
    the script's folder), in source order, each once."""
    seen: dict[str, None] = {}

    def walk(plan: tuple) -> None:  # a gather's prompt and its branches' plans count too
        for attempt in plan:
            for action in attempt.actions:
                if isinstance(action, Play):
                    seen.setdefault(action.file, None)
                elif isinstance(action, Record) and action.prompt is not None:
                    seen.setdefault(action.prompt, None)
            if isinstance(attempt.terminal, Gather):
                if attempt.terminal.prompt is not None:
                    seen.setdefault(attempt.terminal.prompt, None)
                for branch in attempt.terminal.branches:
                    walk(branch.plan)

    for rule in program.rules:
        walk(rule.plan)
    return tuple(seen)


def _finish_version(load: _Load, program: Program) -> Program:
    """The program with its version id and the absolute paths of every file it reads (sources and
    `play` files, for the reload watcher)."""
    reads = [os.path.realpath(p) for p in load.seen]
    for f in play_files(program):
        real = os.path.realpath(f)
        reads.append(real)
        load.version.update(b"play\0" + load._name(real, f) + b"\0")
        try:
            with open(real, "rb") as fh:
                load.version.update(hashlib.file_digest(fh, "sha256").digest())
        except OSError:
            load.version.update(b"missing")
    return dataclasses.replace(program, version=load.version.hexdigest()[:VERSION_CHARS], reads=tuple(reads))


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
            else:
                # The application froze its start-up objects (`callflow run` does): freeze the new program
                # with them. A reloaded program lives as long as the first one did, and a collection that
                # walks it (about 0.2 s for 20,000 rules) holds the GIL, so it would stall the server's
                # event loop whichever thread runs it. Only cyclic garbage frozen along with it is never
                # collected; the program itself is freed by reference counting when it is replaced.
                gc.freeze()
            gc.enable()


def _join(display: str, name: str) -> str:
    base = os.path.dirname(display) if not display.startswith("<") else ""
    return os.path.normpath(os.path.join(base, name))


def _finish(load: _Load, env: Mapping[str, str] | None) -> Program:
    try:
        if load.r.has_errors:
            raise FlowError(load.r.ordered())
        comp = Compiler(load.r, os.environ if env is None else env)
        program = comp.compile(load.items, tuple(load.files), load.hash.hexdigest())
        return _finish_version(load, program)
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
    load = _Load(r, p if p.is_dir() else p.parent)
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
    base = Path(os.path.dirname(filename)) if not filename.startswith("<") else Path(".")
    load = _Load(r, base)
    with _no_gc():
        load.text(text, filename, base)
        return _finish(load, env)


def version_id(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> str:
    """The version id of the program at `path` (file or folder): 12 hex digits, the same a running
    server shows for the same files, whatever the path's spelling. Raises FlowError when the program
    does not compile (`load_program(path).version` gives it with the program)."""
    return load_program(path, env).version


def check_paths(paths: Iterable[str | os.PathLike[str]], env: Mapping[str, str] | None = None) -> list[Diagnostic]:
    """Every error and warning for each path (file or folder); empty means all good."""
    return check_paths_versions(paths, env)[0]


def check_paths_versions(paths: Iterable[str | os.PathLike[str]], env: Mapping[str, str] | None = None
                         ) -> tuple[list[Diagnostic], dict[str, str]]:
    """What check_paths gives, and the version id of each path that compiled ({path as given: id}),
    each program loaded once: `callflow check` prints the id a running server shows for the same files."""
    out: list[Diagnostic] = []
    versions: dict[str, str] = {}
    for path in paths:
        try:
            prog = load_program(path, env)
        except FlowError as e:
            out.extend(e.diagnostics)
        else:
            out.extend(prog.warnings)
            versions[os.fspath(path)] = prog.version
    return out, versions
