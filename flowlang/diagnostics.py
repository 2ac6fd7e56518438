"""Diagnostics: the only way flowlang reports a problem, so every error looks the same everywhere."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, ParamSpec, TypeVar

from .frozen import fast_init

P = ParamSpec("P")
R = TypeVar("R")

Severity = Literal["error", "warning"]


@fast_init
@dataclass(frozen=True, slots=True)
class Position:
    """Where a declaration or rule starts; str() gives the `file:line:col` operators grep for."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@fast_init
@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One error or warning at a place in a script (line 0 = about the file as a whole)."""

    file: str
    line: int
    col: int
    severity: Severity
    message: str
    source_line: str = field(default="", compare=False)

    def render(self) -> str:
        """`file:line:col: error: message`, then the source line and a caret under the column."""
        if self.line <= 0:
            return f"{self.file}: {self.severity}: {self.message}"
        head = f"{self.file}:{self.line}:{self.col}: {self.severity}: {self.message}"
        if not self.source_line:
            return head
        text = self.source_line.rstrip("\r\n")
        # keep tabs so the caret lines up in a terminal whatever its tab width
        pad = "".join(c if c == "\t" else " " for c in text[: max(self.col - 1, 0)])
        return f"{head}\n{text}\n{pad}^"

    def to_dict(self) -> dict[str, object]:
        """Plain data for `callflow check --json` (editors, CI)."""
        return {
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "severity": self.severity,
            "message": self.message,
        }


class FlowError(Exception):
    """A script that cannot be loaded; carries every diagnostic found, not only the first."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = list(diagnostics)
        super().__init__("\n".join(d.render() for d in self.diagnostics))

    def __str__(self) -> str:
        return "\n".join(d.render() for d in self.diagnostics)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]


class Reporter:
    """Collects diagnostics for one compilation, looking up source lines for the caret."""

    def __init__(self) -> None:
        self.diagnostics: list[Diagnostic] = []
        self._lines: dict[str, list[str]] = {}
        self.error_count = 0  # errors so far: a cheap "did that add an error?" for the compiler

    def add_source(self, file: str, text: str) -> None:
        self._lines[file] = text.split("\n")

    def source_line(self, file: str, line: int) -> str:
        lines = self._lines.get(file)
        if lines is None or not 1 <= line <= len(lines):
            return ""
        return lines[line - 1]

    def error(self, file: str, line: int, col: int, message: str) -> None:
        self._add(file, line, col, "error", message)

    def warning(self, file: str, line: int, col: int, message: str) -> None:
        self._add(file, line, col, "warning", message)

    def at(self, pos: Position, message: str, severity: Severity = "error") -> None:
        self._add(pos.file, pos.line, pos.col, severity, message)

    def _add(self, file: str, line: int, col: int, severity: Severity, message: str) -> None:
        if severity == "error":
            self.error_count += 1
        self.diagnostics.append(
            Diagnostic(file, line, col, severity, message, self.source_line(file, line))
        )

    def ordered(self) -> list[Diagnostic]:
        """By file (in load order), then line and column, so output reads top to bottom."""
        order = {f: i for i, f in enumerate(self._lines)}
        return sorted(self.diagnostics, key=lambda d: (order.get(d.file, -1), d.line, d.col))

    @property
    def has_errors(self) -> bool:
        return any(d.severity == "error" for d in self.diagnostics)

    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.ordered() if d.severity == "warning"]


def only_flow_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Anything but FlowError escaping is a flowlang bug; report it as a diagnostic, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except FlowError:
            raise
        except (RecursionError, MemoryError) as e:
            raise FlowError([Diagnostic("<flowlang>", 0, 0, "error", f"script too large or too deep: {e!r}")]) from e
        except Exception as e:  # noqa: BLE001 - the contract: only FlowError leaves flowlang
            raise FlowError([Diagnostic("<flowlang>", 0, 0, "error", f"internal error (a flowlang bug): {e!r}")]) from e

    return wrapper
