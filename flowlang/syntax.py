"""Text to syntax tree: the lark LALR parser, friendly syntax errors, and panic-mode recovery."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from lark import Lark, Token, Tree
from lark.exceptions import (
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
)

GRAMMAR_PATH = Path(__file__).with_name("grammar.lark")

# ------------------------------------------------------------------ syntax nodes (internal)


@dataclass(slots=True)
class Value:
    text: str | None  # literal text, or None when it comes from the environment
    env: str | None
    line: int
    col: int


@dataclass(slots=True)
class Setting:
    kind: str
    args: list
    line: int
    col: int


@dataclass(slots=True)
class Decl:
    kind: str  # server | user | line | include
    name: str
    settings: list[Setting]
    line: int
    col: int
    name_line: int = 0
    name_col: int = 0


@dataclass(slots=True)
class MatcherNode:
    kind: str  # exact | prefix | regex
    text: str  # the number or prefix (unescaped), or the regex source with its flags
    line: int
    col: int


@dataclass(slots=True)
class CondNode:
    kind: str  # caller_id | caller_name | header | time | days
    negated: bool
    args: list
    line: int
    col: int


@dataclass(slots=True)
class Stmt:
    kind: str  # accept | otherwise | reject | hangup | log | set_caller_id | set_header | play
    args: list
    line: int
    col: int


@dataclass(slots=True)
class Peer:
    kind: str  # user | line | any
    name: str | None  # None = any
    line: int
    col: int


@dataclass(slots=True)
class RuleNode:
    peer: Peer | None
    matchers: list[MatcherNode]
    conditions: list[CondNode]
    body: list[Stmt]
    line: int
    col: int
    end_line: int = 0


@dataclass(slots=True)
class HandlerNode:
    event: str
    peer: Peer | None
    body: list[Stmt]
    line: int
    col: int


@dataclass(slots=True)
class TargetNode:
    kind: str
    name: str
    number: list[tuple[str, str]] | None  # [("text", s) | ("capture", name)]
    line: int
    col: int


@dataclass(slots=True)
class SyntaxProblem:
    line: int
    col: int
    message: str


@dataclass(slots=True)
class Parsed:
    items: list = field(default_factory=list)
    problems: list[SyntaxProblem] = field(default_factory=list)


def unquote(raw: str) -> str:
    """The text of a "string" token: \\" and \\\\ are the only escapes that change meaning."""
    body = raw[1:-1]
    if "\\" not in body:
        return body
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1))
                  if m.group(1) in '"\\nt' else m.group(0), body)


# ------------------------------------------------------------------ tree to syntax nodes


def _pos(meta) -> tuple[int, int]:
    return getattr(meta, "line", 0) or 0, getattr(meta, "column", 0) or 0


class _ToNodes:
    """Names follow the grammar's rules (lark's Transformer convention); each returns a small syntax node.

    Driven by `to_nodes` below rather than lark's Transformer: the same shape without the per-node
    wrapper objects that v_args(meta=True) creates, which cost a quarter of a big script's load time.
    """

    def start(self, meta, ch):
        return ch

    # values
    def literal(self, meta, ch):
        return Value(unquote(ch[0]), None, ch[0].line, ch[0].column)

    def env_ref(self, meta, ch):
        line, col = _pos(meta)
        return Value(None, str(ch[0]), line, col)

    def _setting(self, kind, meta, args):
        line, col = _pos(meta)
        return Setting(kind, args, line, col)

    # server
    def server_block(self, meta, ch):
        line, col = _pos(meta)
        return Decl("server", "server", list(ch), line, col)

    def transport(self, meta, ch):
        return str(ch[0])

    def address(self, meta, ch):
        tok = ch[0]
        return unquote(tok) if tok.type == "STRING" else str(tok)

    def listen(self, meta, ch):
        return self._setting("listen", meta, list(ch))

    def domain(self, meta, ch):
        return self._setting("domain", meta, ch)

    def realm(self, meta, ch):
        return self._setting("realm", meta, ch)

    def rtp_ports(self, meta, ch):
        return self._setting("rtp_ports", meta, [int(ch[0]), int(ch[1])])

    def user_agent(self, meta, ch):
        return self._setting("user_agent", meta, ch)

    def tls_cert(self, meta, ch):
        return self._setting("tls_cert", meta, ch)

    def tls_key(self, meta, ch):
        return self._setting("tls_key", meta, ch)

    def timezone(self, meta, ch):
        return self._setting("timezone", meta, [unquote(ch[0])])

    # users and lines
    def user_decl(self, meta, ch):
        line, col = _pos(meta)
        name = ch[0]
        return Decl("user", str(name), list(ch[1:]), line, col, name.line, name.column)

    def line_decl(self, meta, ch):
        line, col = _pos(meta)
        name = ch[0]
        return Decl("line", str(name), list(ch[1:]), line, col, name.line, name.column)

    def password(self, meta, ch):
        return self._setting("password", meta, ch)

    def caller_id(self, meta, ch):
        return self._setting("caller_id", meta, ch)

    def max_calls(self, meta, ch):
        return self._setting("max_calls", meta, [int(ch[0])])

    def line_server(self, meta, ch):
        return self._setting("server", meta, ch)

    def line_transport(self, meta, ch):
        return self._setting("transport", meta, ch)

    def username(self, meta, ch):
        return self._setting("username", meta, ch)

    def auth_username(self, meta, ch):
        return self._setting("auth_username", meta, ch)

    def outbound_proxy(self, meta, ch):
        return self._setting("outbound_proxy", meta, ch)

    def register_every(self, meta, ch):
        return self._setting("register_every", meta, [str(ch[0])])

    def register_never(self, meta, ch):
        return self._setting("register_never", meta, [])

    def numbers(self, meta, ch):
        return self._setting("numbers", meta, [unquote(t) for t in ch])

    def codec(self, meta, ch):
        tok = ch[0]
        return unquote(tok) if tok.type == "STRING" else str(tok)

    def codecs(self, meta, ch):
        return self._setting("codecs", meta, list(ch))

    def display(self, meta, ch):
        return self._setting("display", meta, ch)

    def include(self, meta, ch):
        line, col = _pos(meta)
        return Decl("include", unquote(ch[0]), [], line, col, ch[0].line, ch[0].column)

    # rules
    def peer_name(self, meta, ch):
        tok = ch[0]
        return None if tok.type == "ANY" else tok

    def _peer(self, kind, meta, ch):
        line, col = _pos(meta)
        tok = ch[0] if ch else None
        if tok is not None:
            line, col = tok.line, tok.column
        return Peer(kind, None if tok is None else str(tok), line, col)

    def from_user(self, meta, ch):
        return self._peer("user", meta, ch)

    def from_line(self, meta, ch):
        return self._peer("line", meta, ch)

    def from_any(self, meta, ch):
        return self._peer("any", meta, [])

    def from_clause(self, meta, ch):
        return ch[0]

    def to_clause(self, meta, ch):
        return ("to", list(ch))

    def exact(self, meta, ch):
        return MatcherNode("exact", unquote(ch[0]), ch[0].line, ch[0].column)

    def prefix(self, meta, ch):
        line, col = _pos(meta)
        return MatcherNode("prefix", unquote(ch[0]), line, col)

    def regex(self, meta, ch):
        return MatcherNode("regex", str(ch[0]), ch[0].line, ch[0].column)

    def when_clause(self, meta, ch):
        return ("when", list(ch))

    def condition(self, meta, ch):
        negated = len(ch) == 2
        node = ch[-1]
        node.negated = negated
        if negated:
            node.line, node.col = ch[0].line, ch[0].column
        return node

    def _cond(self, kind, meta, args):
        line, col = _pos(meta)
        return CondNode(kind, False, args, line, col)

    def cond_caller_id(self, meta, ch):
        return self._cond("caller_id", meta, list(ch))

    def cond_caller_name(self, meta, ch):
        return self._cond("caller_name", meta, list(ch))

    def header_name(self, meta, ch):
        tok = ch[0]
        return unquote(tok) if tok.type == "STRING" else str(tok)

    def cond_header(self, meta, ch):
        return self._cond("header", meta, list(ch))

    def zone(self, meta, ch):
        return ("zone", unquote(ch[0]), ch[0].line, ch[0].column)

    def cond_time(self, meta, ch):
        return self._cond("time", meta, [ch[0], ch[1], ch[2] if len(ch) > 2 else None])

    def day_range(self, meta, ch):
        return list(ch)

    def cond_days(self, meta, ch):
        zone = ch[-1] if ch and isinstance(ch[-1], tuple) else None
        ranges = [c for c in ch if isinstance(c, list)]
        return self._cond("days", meta, [ranges, zone])

    def rule(self, meta, ch):
        line, col = _pos(meta)
        peer = None
        matchers: list[MatcherNode] = []
        conds: list[CondNode] = []
        body: list[Stmt] = []
        for c in ch:
            if isinstance(c, Peer):
                peer = c
            elif isinstance(c, tuple) and c[0] == "to":
                matchers = c[1]
            elif isinstance(c, tuple) and c[0] == "when":
                conds = c[1]
            else:
                body = c
        return RuleNode(peer, matchers, conds, body, line, col, getattr(meta, "end_line", line))

    def block(self, meta, ch):
        return list(ch)

    def inline(self, meta, ch):
        return list(ch)

    # handlers
    def call_event(self, meta, ch):
        return str(ch[0])

    def line_event(self, meta, ch):
        return "line_registered" if len(ch) == 1 else "line_register_failed"

    def user_event(self, meta, ch):
        return "user_registered" if str(ch[0]) == "registered" else "user_unregistered"

    def handler(self, meta, ch):
        line, col = _pos(meta)
        peer = ch[1] if len(ch) == 3 else None
        return HandlerNode(ch[0], peer, ch[-1], line, col)

    def _filtered_handler(self, kind, meta, ch):
        line, col = _pos(meta)
        peer = None
        if len(ch) == 3:
            tok = ch[0]
            if tok is not None:
                peer = Peer(kind, str(tok), tok.line, tok.column)
        return HandlerNode(ch[-2], peer, ch[-1], line, col)

    def line_handler(self, meta, ch):
        return self._filtered_handler("line", meta, ch)

    def user_handler(self, meta, ch):
        return self._filtered_handler("user", meta, ch)

    # statements
    def _stmt(self, kind, meta, args):
        line, col = _pos(meta)
        return Stmt(kind, args, line, col)

    def target_user(self, meta, ch):
        line, col = _pos(meta)
        return TargetNode("user", str(ch[0]), None, line, col)

    def target_line(self, meta, ch):
        line, col = _pos(meta)
        return TargetNode("line", str(ch[0]), ch[1] if len(ch) > 1 else None, line, col)

    def num_part(self, meta, ch):
        tok = ch[0]
        if tok.type == "STRING":
            return ("text", unquote(tok))
        return ("capture", str(tok)[1:])

    def number(self, meta, ch):
        return list(ch)

    def timeout(self, meta, ch):
        return ("timeout", str(ch[0]), ch[0].line, ch[0].column)

    def accept(self, meta, ch):
        targets = [c for c in ch if isinstance(c, TargetNode)]
        timeout = next((c for c in ch if isinstance(c, tuple)), None)
        return self._stmt("accept", meta, [targets, timeout])

    def otherwise(self, meta, ch):
        return self._stmt("otherwise", meta, [ch[0]])

    def reject(self, meta, ch):
        code = ch[0]
        reason = unquote(ch[1]) if len(ch) > 1 else None
        return self._stmt("reject", meta, [int(code), reason, code.line, code.column])

    def hangup(self, meta, ch):
        return self._stmt("hangup", meta, [])

    def log(self, meta, ch):
        return self._stmt("log", meta, [unquote(ch[0]), ch[0].line, ch[0].column])

    def set_caller_id(self, meta, ch):
        return self._stmt("set_caller_id", meta, [unquote(ch[0]), ch[0].line, ch[0].column])

    def set_header(self, meta, ch):
        return self._stmt("set_header", meta, [ch[0], unquote(ch[1]), ch[1].line, ch[1].column])

    def play(self, meta, ch):
        return self._stmt("play", meta, [unquote(ch[0]), len(ch) > 1])


# ------------------------------------------------------------------ parsers


@cache
def grammar_text() -> str:
    return GRAMMAR_PATH.read_text(encoding="utf-8")


@cache
def parser() -> Lark:
    """Built once per process: building the LALR tables costs more than parsing a big script."""
    return Lark(grammar_text(), parser="lalr", propagate_positions=True, maybe_placeholders=False)


class _Comments:
    def __init__(self) -> None:
        self.items: list[Token] = []

    def __call__(self, tok: Token) -> Token:
        self.items.append(tok)
        return tok


_fmt_comments = _Comments()


@cache
def full_parser() -> Lark:
    """Keeps every token and collects comments: what the formatter needs to reprint a script."""
    return Lark(
        grammar_text(),
        parser="lalr",
        propagate_positions=True,
        keep_all_tokens=True,
        maybe_placeholders=False,
        lexer_callbacks={"COMMENT": _fmt_comments},
    )


_TERMINAL_WORDS = {
    "NAME": "a name",
    "STRING": 'a "string"',
    "REGEX": "a /regex/",
    "CAPTURE": "a capture like \\1",
    "DURATION": "a duration like 30s",
    "INT": "a number",
    "CLOCK": "a time like 09:00",
    "DAY": "a weekday like mon",
    "ADDRESS": "an address like 0.0.0.0:5060",
    "$END": "the end of the file",
}

TOP_KEYWORDS = ("server", "user", "line", "on", "include")


def _describe_terminal(p: Lark, name: str) -> str:
    if name in _TERMINAL_WORDS:
        return _TERMINAL_WORDS[name]
    try:
        term = p.get_terminal(name)
    except KeyError:
        return name.lower()
    if term.pattern.type == "str":
        return f"'{term.pattern.value}'"
    return name.lower()


def _describe_token(tok: Token) -> str:
    if tok.type == "$END":
        return "the end of the file"
    text = str(tok)
    if len(text) > 30:
        text = text[:27] + "..."
    if tok.type in ("STRING", "REGEX"):
        return text
    return f"'{text}'"


def _expected_list(p: Lark, expected: set[str]) -> tuple[str, list[str]]:
    words = sorted({_describe_terminal(p, e) for e in expected if not e.startswith("__")})
    keywords = [w[1:-1] for w in words if w.startswith("'")]
    if not words:
        return "", keywords
    if len(words) == 1:
        return f"; expected {words[0]}", keywords
    shown = words[:14]
    more = "" if len(words) <= 14 else ", ..."
    return "; expected one of " + ", ".join(shown) + more, keywords


def problem_from(p: Lark, err: UnexpectedInput, text: str) -> SyntaxProblem:
    """Turn lark's exception into one sentence an operator can act on."""
    line = getattr(err, "line", 0) or 0
    col = getattr(err, "column", 0) or 0
    if isinstance(err, UnexpectedCharacters):
        ch = text[err.pos_in_stream] if 0 <= err.pos_in_stream < len(text) else ""
        if ch == '"':
            return SyntaxProblem(line, col, "unterminated string: a \" must close it on the same line")
        if ch == "/":
            return SyntaxProblem(line, col, "unterminated regex: a / must close it on the same line")
        if ch == "\\":
            return SyntaxProblem(line, col, "a capture like \\1 is only allowed in a `number` rewrite")
        exp, kws = _expected_list(p, set(err.allowed or ()))
        word = re.match(r"[A-Za-z0-9_.\-:+@]+", text[err.pos_in_stream:])
        if word and len(word.group(0)) > 1:
            hint = _did_you_mean(word.group(0), kws)
            return SyntaxProblem(line, col, f"unexpected '{word.group(0)}'{exp}{hint}")
        return SyntaxProblem(line, col, f"unexpected character {ch!r}{exp}")
    if isinstance(err, UnexpectedToken):
        tok = err.token
        if tok.type == "$END":
            exp, _ = _expected_list(p, set(err.expected))
            if "RBRACE" in err.expected:
                return SyntaxProblem(line or _last_line(text), col or 1, "missing '}' at the end of the file")
            return SyntaxProblem(_last_line(text), 1, f"unexpected end of file{exp}")
        exp, kws = _expected_list(p, set(err.expected))
        hint = _did_you_mean(str(tok), kws) if tok.type in ("NAME", "DAY", "ADDRESS") else ""
        return SyntaxProblem(tok.line, tok.column, f"unexpected {_describe_token(tok)}{exp}{hint}")
    if isinstance(err, UnexpectedEOF):
        exp, _ = _expected_list(p, set(err.expected))
        return SyntaxProblem(_last_line(text), 1, f"unexpected end of file{exp}")
    return SyntaxProblem(line, col, str(err).splitlines()[0])


def _did_you_mean(word: str, keywords: list[str]) -> str:
    close = difflib.get_close_matches(word, keywords, n=1, cutoff=0.7)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _last_line(text: str) -> int:
    return max(1, text.count("\n") + (0 if text.endswith("\n") else 1))


_TOP_START = re.compile(r"(\s*)(server\s*\{|user\b|line\b|on\b|include\b)")


def statement_chunks(text: str) -> list[tuple[int, str]]:
    """Split a script at lines that start a top-level statement, for panic-mode recovery.

    A statement starts at a line whose first word is a top-level keyword, at the script's outermost
    indentation. Used only after the whole-file parse failed, to find every broken statement.
    """
    lines = text.split("\n")
    starts: list[int] = []
    base: int | None = None
    for i, ln in enumerate(lines):
        m = _TOP_START.match(ln)
        if not m:
            continue
        indent = len(m.group(1).expandtabs(4))
        if base is None:
            base = indent
        if indent <= base:
            starts.append(i)
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    chunks = []
    for k, s in enumerate(starts):
        e = starts[k + 1] if k + 1 < len(starts) else len(lines)
        chunks.append((s, "\n".join(lines[s:e])))
    return chunks


def parse(text: str) -> Parsed:
    """Parse a whole script; on failure, reparse statement by statement to report every error."""
    p = parser()
    try:
        tree = p.parse(text)
    except UnexpectedInput as err:
        first = problem_from(p, err, text)
    else:
        return Parsed(items=to_nodes(tree))
    problems: list[SyntaxProblem] = []
    for offset, chunk in statement_chunks(text):
        try:
            p.parse(chunk)
        except UnexpectedInput as err:
            prob = problem_from(p, err, chunk)
            if isinstance(err, UnexpectedToken) and err.token.type == "$END":
                # a statement cut short: point at its last real line, not at the next statement
                prob.line = _last_nonblank(chunk)
                prob.col = max(1, len(chunk.split("\n")[prob.line - 1].rstrip()) + 1)
            prob.line += offset
            problems.append(prob)
    if not problems:
        problems.append(first)
    return Parsed(problems=problems)


def _last_nonblank(chunk: str) -> int:
    lines = chunk.split("\n")
    for i in range(len(lines) - 1, -1, -1):
        s = lines[i].split("#", 1)[0].strip() if '"' not in lines[i] else lines[i].strip()
        if s:
            return i + 1
    return 1


@cache
def _dispatch() -> dict:
    t = _ToNodes()
    return {name: getattr(t, name) for name in dir(t) if not name.startswith("__")}


def to_nodes(tree: Tree) -> list:
    """Bottom-up conversion of the parse tree, each rule handled by the _ToNodes method of its name."""
    table = _dispatch()

    def conv(t: Tree):
        children = [conv(c) if isinstance(c, Tree) else c for c in t.children]
        return table[t.data](t.meta, children)

    return conv(tree)
