"""`callflow fmt`: one canonical layout, idempotent, comments kept.

The layout: one statement per line, blocks opened at the end of the line and closed on their own line,
four spaces per level, single spaces between words (none around `-` in ranges, none before `,`),
comments kept where they were (trailing ones two spaces after the code), author's blank lines
collapsed to one, and none just inside braces.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lark import Token, Tree
from lark.exceptions import UnexpectedInput

from . import syntax
from .diagnostics import FlowError, Reporter, only_flow_errors

INDENT = "    "


@dataclass(slots=True)
class _Out:
    indent: int
    parts: list[str] = field(default_factory=list)
    first: int = 0
    last: int = 0
    token_lines: set[int] = field(default_factory=set)
    closes: bool = False
    opens: bool = False
    trailing: list[str] = field(default_factory=list)
    glue: bool = False  # the last token was a range's `-`: the next one sticks to it

    def add(self, tok: Token) -> None:
        text = str(tok)
        if not self.parts:
            self.parts.append(text)
        elif text in (",", "-") or self.glue:
            self.parts[-1] += text
        else:
            self.parts.append(text)
        self.glue = tok.type == "MINUS"
        line = tok.line or 0
        end = tok.end_line or line
        if not self.first:
            self.first = line
        self.last = max(self.last, end)
        self.token_lines.add(line)

    def text(self) -> str:
        body = INDENT * self.indent + " ".join(self.parts)
        if self.trailing:
            body += "  " + "  ".join(self.trailing)
        return body


class _Printer:
    def __init__(self) -> None:
        self.lines: list[_Out] = []
        self.cur: _Out | None = None
        self.depth = 0

    def start(self) -> None:
        self.flush()
        self.cur = _Out(self.depth)

    def flush(self) -> None:
        if self.cur is not None and self.cur.parts:
            self.lines.append(self.cur)
        self.cur = None

    def token(self, tok: Token) -> None:
        if self.cur is None:
            self.cur = _Out(self.depth)
        self.cur.add(tok)

    def node(self, tree: Tree) -> None:
        in_block = False
        for child in tree.children:
            if isinstance(child, Token):
                if child.type == "LBRACE":
                    self.token(child)
                    assert self.cur is not None
                    self.cur.opens = True
                    self.flush()
                    self.depth += 1
                    in_block = True
                elif child.type == "RBRACE":
                    self.flush()
                    self.depth -= 1
                    self.start()
                    self.token(child)
                    assert self.cur is not None
                    self.cur.closes = True
                    self.flush()
                    in_block = False
                else:
                    self.token(child)
            elif in_block:
                self.start()
                self.node(child)
                self.flush()
            else:
                self.node(child)


@only_flow_errors
def format_source(text: str, filename: str = "<fmt>") -> str:
    """The script in canonical layout; a script with syntax errors raises FlowError instead, its
    diagnostics naming `filename` (the path `callflow fmt` read) as `file:line:col: message`."""
    p = syntax.full_parser()
    syntax._fmt_comments.items = []
    try:
        tree = p.parse(text)
    except UnexpectedInput:
        r = Reporter()
        r.add_source(filename, text)
        for prob in syntax.parse(text).problems:
            r.error(filename, prob.line, prob.col, prob.message)
        raise FlowError(r.ordered()) from None
    comments = sorted(syntax._fmt_comments.items, key=lambda t: (t.line, t.column))
    syntax._fmt_comments.items = []

    pr = _Printer()
    for item in tree.children:
        if isinstance(item, Tree):
            pr.start()
            pr.node(item)
            pr.flush()
    outs = pr.lines

    # a trailing comment goes to the first output line holding code from its source line
    last_on_line: dict[int, _Out] = {}
    for o in outs:
        for ln in o.token_lines:
            last_on_line.setdefault(ln, o)
    standalone = []
    for c in comments:
        holder = last_on_line.get(c.line)
        if holder is not None:
            holder.trailing.append(str(c).rstrip())
        else:
            standalone.append(c)

    result: list[str] = []
    prev_last: int | None = None
    prev_opens = False

    def emit(first: int, last: int, line: str, closes: bool) -> None:
        nonlocal prev_last, prev_opens
        if prev_last is not None and first - prev_last > 1 and not closes and not prev_opens:
            result.append("")
        result.append(line)
        prev_last = last
        prev_opens = False

    ci = 0
    for o in outs:
        while ci < len(standalone) and standalone[ci].line < o.first:
            c = standalone[ci]
            indent = o.indent + (1 if o.closes else 0)
            emit(c.line, c.line, INDENT * indent + str(c).rstrip(), False)
            ci += 1
        emit(o.first, o.last, o.text(), o.closes)
        prev_opens = o.opens
    while ci < len(standalone):
        c = standalone[ci]
        emit(c.line, c.line, str(c).rstrip(), False)
        ci += 1
    return "\n".join(result) + "\n" if result else ""
