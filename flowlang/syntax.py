"""Text to syntax nodes: lark's LALR tables driven by a lean loop (fastlalr), friendly syntax errors from lark
itself, and panic-mode recovery."""

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
from lark.parsers.lalr_analysis import Shift

from .fastlalr import Driver, Reject, Unsupported

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
class BranchNode:
    """One branch of a `gather`: `when KEY, ... BODY` (keys ("digits", text, line, col) or ("nothing", ...)),
    or `else BODY` (no keys)."""

    keys: list[tuple[str, str, int, int]]
    body: list[Stmt]
    is_else: bool
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


# ------------------------------------------------------------------ tokens and rules to syntax nodes
#
# Builders are called once per reduction by the LALR driver (fastlalr), no parse tree in between.
# Each gets `p`, the first token of the rule's span (where the node starts, what lark's
# propagate_positions calls meta.line/column), and the rule's kept children; tokens are tuples
# (type, text, line, column).


class Word:
    """A token the compiler reports on later (times of day, weekdays): its text and where it is."""

    __slots__ = ("type", "value", "line", "column")

    def __init__(self, tok: tuple) -> None:
        self.type, self.value, self.line, self.column = tok

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return f"Word({self.value!r}, {self.line}:{self.column})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Word) and (self.type, self.value, self.line, self.column) == (
            other.type, other.value, other.line, other.column)

    def __hash__(self) -> int:
        return hash((self.value, self.line, self.column))


def _text(tok: tuple) -> str:
    return unquote(tok[1]) if tok[0] == "STRING" else tok[1]


def _setting(kind: str):
    def build(p, ch):
        return Setting(kind, ch, p[2], p[3])
    return build


def _limit(kind: str):
    def build(p, ch):
        tok = ch[0]
        return Setting(kind, [None if tok[1] == "off" else tok[1], tok[2], tok[3]], p[2], p[3])
    return build


def _cond(kind: str):
    def build(p, ch):
        return CondNode(kind, False, ch, p[2], p[3])
    return build


def _peer(kind: str):
    def build(p, ch):
        tok = ch[0] if ch else None
        if tok is None:
            return Peer(kind, None, p[2], p[3])
        return Peer(kind, tok[1], tok[2], tok[3])
    return build


def _filtered_handler(kind: str):
    def build(p, ch):
        peer = None
        if len(ch) == 3:
            tok = ch[0]
            if tok is not None:
                peer = Peer(kind, tok[1], tok[2], tok[3])
        return HandlerNode(ch[-2], peer, ch[-1], p[2], p[3])
    return build


def _b_rule(p, ch, last):
    peer = None
    matchers: list[MatcherNode] = []
    conds: list[CondNode] = []
    body: list[Stmt] = []
    for c in ch:
        if type(c) is list:
            body = c
        elif type(c) is tuple:
            if c[0] == "to":
                matchers = c[1]
            else:
                conds = c[1]
        else:
            peer = c
    line = p[2]
    return RuleNode(peer, matchers, conds, body, line, p[3], last[2] if last is not None else line)


def _b_condition(p, ch):
    node = ch[-1]
    if len(ch) == 2:
        node.negated = True
        node.line, node.col = ch[0][2], ch[0][3]
    return node


def _b_cond_days(p, ch):
    zone = ch[-1] if ch and type(ch[-1]) is tuple else None
    ranges = [c for c in ch if type(c) is list]
    return CondNode("days", False, [ranges, zone], p[2], p[3])


def _b_accept(p, ch):
    timeout = None
    if type(ch[-1]) is tuple:  # `timeout` comes last
        timeout = ch.pop()
    return Stmt("accept", [ch, timeout], p[2], p[3])


def _b_reject(p, ch):
    code = ch[0]
    reason = unquote(ch[1][1]) if len(ch) > 1 else None
    return Stmt("reject", [int(code[1]), reason, code[2], code[3]], p[2], p[3])


def _b_num_part(p, ch):
    tok = ch[0]
    if tok[0] == "STRING":
        return ("text", unquote(tok[1]))
    return ("capture", tok[1][1:])


def _b_gather(p, ch):
    """Stmt("gather", [prompt or None, prompt line, prompt col, options, branches]); an option is
    (name, token text, line, col)."""
    prompt = None
    pline = pcol = 0
    options: list[tuple[str, str, int, int]] = []
    branches: list[BranchNode] = []
    for c in ch:
        if type(c) is BranchNode:
            branches.append(c)
        elif c[0] == "STRING":
            prompt, pline, pcol = unquote(c[1]), c[2], c[3]
        else:
            options.append(c)
    return Stmt("gather", [prompt, pline, pcol, options, branches], p[2], p[3])


def _gather_option(name: str):
    def build(p, ch):
        t = ch[0]
        return (name, unquote(t[1]) if t[0] == "STRING" else t[1], p[2], p[3])
    return build


def _b_stmt_text(kind: str):
    def build(p, ch):
        t = ch[0]
        return Stmt(kind, [unquote(t[1]), t[2], t[3]], p[2], p[3])
    return build


BUILDERS = {
    "start": None,  # None: the value is the list of kept children
    # values
    "literal": lambda p, ch: Value(unquote(ch[0][1]), None, ch[0][2], ch[0][3]),
    "env_ref": lambda p, ch: Value(None, ch[0][1], p[2], p[3]),
    # server
    "server_block": lambda p, ch: Decl("server", "server", ch, p[2], p[3]),
    "transport": lambda p, ch: ch[0][1],
    "address": lambda p, ch: _text(ch[0]),
    "listen": _setting("listen"),
    "domain": _setting("domain"),
    "realm": _setting("realm"),
    "rtp_ports": lambda p, ch: Setting("rtp_ports", [int(ch[0][1]), int(ch[1][1])], p[2], p[3]),
    "user_agent": _setting("user_agent"),
    "tls_cert": _setting("tls_cert"),
    "tls_key": _setting("tls_key"),
    "control": _setting("control"),
    "control_token": _setting("control_token"),
    "recordings": _setting("recordings"),
    "timezone": lambda p, ch: Setting("timezone", [unquote(ch[0][1])], p[2], p[3]),
    # users and lines
    "user_decl": lambda p, ch: Decl("user", ch[0][1], ch[1:], p[2], p[3], ch[0][2], ch[0][3]),
    "line_decl": lambda p, ch: Decl("line", ch[0][1], ch[1:], p[2], p[3], ch[0][2], ch[0][3]),
    "password": _setting("password"),
    "caller_id": _setting("caller_id"),
    # limits: args = [the INT/DURATION token, or None for `off`; its line; its column]
    "limit_count": lambda p, ch: ch[0],
    "limit_duration": lambda p, ch: ch[0],
    "max_calls": _limit("max_calls"),
    "max_call_duration": _limit("max_call_duration"),
    "rtp_timeout": _limit("rtp_timeout"),
    "max_calls_total": _limit("max_calls_total"),
    "max_calls_per_user": _limit("max_calls_per_user"),
    "max_calls_per_line": _limit("max_calls_per_line"),
    "legacy_digest": lambda p, ch: Setting("legacy_digest", [], p[2], p[3]),
    "line_server": _setting("server"),
    "line_transport": _setting("transport"),
    "username": _setting("username"),
    "auth_username": _setting("auth_username"),
    "outbound_proxy": _setting("outbound_proxy"),
    "register_every": lambda p, ch: Setting("register_every", [ch[0][1]], p[2], p[3]),
    "register_never": lambda p, ch: Setting("register_never", [], p[2], p[3]),
    "numbers": lambda p, ch: Setting("numbers", [unquote(t[1]) for t in ch], p[2], p[3]),
    "trust": lambda p, ch: Setting("trust", [unquote(t[1]) for t in ch], p[2], p[3]),
    "codec": lambda p, ch: _text(ch[0]),
    "codecs": _setting("codecs"),
    "display": _setting("display"),
    "include": lambda p, ch: Decl("include", unquote(ch[0][1]), [], p[2], p[3], ch[0][2], ch[0][3]),
    # rules
    "peer_name": lambda p, ch: None if ch[0][0] == "ANY" else ch[0],
    "from_user": _peer("user"),
    "from_line": _peer("line"),
    "from_any": lambda p, ch: Peer("any", None, p[2], p[3]),
    "from_clause": lambda p, ch: ch[0],
    "to_clause": lambda p, ch: ("to", ch),
    "exact": lambda p, ch: MatcherNode("exact", unquote(ch[0][1]), ch[0][2], ch[0][3]),
    "prefix": lambda p, ch: MatcherNode("prefix", unquote(ch[0][1]), p[2], p[3]),
    "regex": lambda p, ch: MatcherNode("regex", ch[0][1], ch[0][2], ch[0][3]),
    "when_clause": lambda p, ch: ("when", ch),
    "condition": _b_condition,
    "cond_caller_id": _cond("caller_id"),
    "cond_caller_name": _cond("caller_name"),
    "header_name": lambda p, ch: _text(ch[0]),
    "cond_header": _cond("header"),
    "zone": lambda p, ch: ("zone", unquote(ch[0][1]), ch[0][2], ch[0][3]),
    "cond_time": lambda p, ch: CondNode(
        "time", False, [Word(ch[0]), Word(ch[1]), ch[2] if len(ch) > 2 else None], p[2], p[3]),
    "day_range": lambda p, ch: [Word(t) for t in ch],
    "cond_days": _b_cond_days,
    "rule": _b_rule,
    "block": None,
    "inline": None,
    # handlers
    "call_event": lambda p, ch: ch[0][1],
    "line_event": lambda p, ch: "line_registered" if len(ch) == 1 else "line_register_failed",
    "user_event": lambda p, ch: "user_registered" if ch[0][1] == "registered" else "user_unregistered",
    "handler": lambda p, ch: HandlerNode(ch[0], ch[1] if len(ch) == 3 else None, ch[-1], p[2], p[3]),
    "line_handler": _filtered_handler("line"),
    "user_handler": _filtered_handler("user"),
    # statements
    "target_user": lambda p, ch: TargetNode("user", ch[0][1], None, p[2], p[3]),
    "target_line": lambda p, ch: TargetNode("line", ch[0][1], ch[1] if len(ch) > 1 else None, p[2], p[3]),
    "num_part": _b_num_part,
    "number": None,
    "timeout": lambda p, ch: ("timeout", ch[0][1], ch[0][2], ch[0][3]),
    "accept": _b_accept,
    "otherwise": lambda p, ch: Stmt("otherwise", [ch[0]], p[2], p[3]),
    "reject": _b_reject,
    "hangup": lambda p, ch: Stmt("hangup", [], p[2], p[3]),
    "log": _b_stmt_text("log"),
    "set_caller_id": _b_stmt_text("set_caller_id"),
    "set_header": lambda p, ch: Stmt("set_header", [ch[0], unquote(ch[1][1]), ch[1][2], ch[1][3]], p[2], p[3]),
    "play": lambda p, ch: Stmt("play", [unquote(ch[0][1]), len(ch) > 1], p[2], p[3]),
    # gather: a menu
    "gather": _b_gather,
    "gather_max": _gather_option("max"),
    "gather_terminator": _gather_option("terminator"),
    "gather_timeout": _gather_option("timeout"),
    "gather_digit_timeout": _gather_option("digit timeout"),
    "gather_retries": _gather_option("retries"),
    "gather_when": lambda p, ch: BranchNode(ch[:-1], ch[-1], False, p[2], p[3]),
    "gather_else": lambda p, ch: BranchNode([], ch[-1], True, p[2], p[3]),
    "key_digits": lambda p, ch: ("digits", unquote(ch[0][1]), ch[0][2], ch[0][3]),
    "key_nothing": lambda p, ch: ("nothing", "nothing", p[2], p[3]),
    # recording: args = [name, its line, its column, options as (word, value, line, col)] / [..., mix]
    "record": lambda p, ch: Stmt("record", [unquote(ch[0][1]), ch[0][2], ch[0][3], list(ch[1:])], p[2], p[3]),
    "record_prompt": lambda p, ch: ("prompt", unquote(ch[0][1]), p[2], p[3]),
    "record_max": lambda p, ch: ("max", ch[0][1], p[2], p[3]),
    "record_silence": lambda p, ch: ("silence", ch[0][1] if ch else None, p[2], p[3]),
    "record_call": lambda p, ch: Stmt("record_call", [unquote(ch[0][1]), ch[0][2], ch[0][3],
                                                      ch[1] if len(ch) > 1 else None], p[2], p[3]),
    "record_mix": lambda p, ch: " ".join(t[1] for t in ch),
    # send dtmf: args = [digits, their line, their column, (channel word, line, col) or None]
    "send_dtmf": lambda p, ch: Stmt("send_dtmf", [unquote(ch[0][1]), ch[0][2], ch[0][3],
                                                  ch[1] if len(ch) > 1 else None], p[2], p[3]),
    "dtmf_channel": lambda p, ch: (ch[0][1], ch[0][2], ch[0][3]),
}
WITH_LAST = frozenset({"rule"})


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
        options = _options_of_statement(p, err)
        exp, kws = _expected_list(p, options or set(err.expected))
        if options:  # an optional word of the statement: name those, not every word that may follow it
            exp += " (or the next statement)"
        hint = _did_you_mean(str(tok), kws) if tok.type in ("NAME", "DAY", "ADDRESS") else ""
        return SyntaxProblem(tok.line, tok.column, f"unexpected {_describe_token(tok)}{exp}{hint}")
    if isinstance(err, UnexpectedEOF):
        exp, _ = _expected_list(p, set(err.expected))
        return SyntaxProblem(_last_line(text), 1, f"unexpected end of file{exp}")
    return SyntaxProblem(line, col, str(err).splitlines()[0])


def _options_of_statement(p: Lark, err: UnexpectedInput) -> set[str] | None:
    """The keywords that would go on with the statement under way, when the parser could also end it
    there (`record call "c.wav"` then `mixed`, `per` or `both`): the error is then best described by
    them (a misspelt option) rather than by every word that may start the next statement. None when
    the parser's state is not at hand or is not such a point."""
    state = getattr(err, "state", None)
    try:
        actions = state.parse_conf.states[state.position]  # type: ignore[union-attr]
    except (AttributeError, KeyError, TypeError):
        return None
    terminals = {t for t in actions if t.isupper()}
    shifted = {t for t in terminals if actions[t][0] is Shift}
    if not shifted or shifted == terminals or "RBRACE" in shifted:
        return None
    if not all(_describe_terminal(p, t).startswith("'") for t in shifted):
        return None
    return shifted


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


@cache
def driver() -> Driver | None:
    """The lean LALR driver over parser()'s tables (None if this lark build cannot be driven that way)."""
    try:
        return Driver(parser(), BUILDERS, WITH_LAST)
    except Unsupported:
        return None


def parse(text: str) -> Parsed:
    """Parse a whole script; on failure, reparse statement by statement to report every error.

    The driver parses a correct script without lark's per-token machinery; any syntax error sends the
    script to lark itself, whose exceptions make the messages (the error path may be slower).
    """
    d = driver()
    if d is not None:
        try:
            return Parsed(items=d.parse(text))
        except Reject:
            pass
    p = parser()
    try:
        tree = p.parse(text)
    except UnexpectedInput as err:
        first = problem_from(p, err, text)
    else:
        return Parsed(items=to_nodes(tree))
    problems: list[SyntaxProblem] = []
    for offset, chunk in statement_chunks(text):
        if d is not None:
            try:
                d.parse(chunk)
                continue  # a correct statement: nothing to report, no need to ask lark
            except Reject:
                pass
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


def _tok(t: Token) -> tuple:
    return (t.type, str(t), t.line, t.column)


def to_nodes(tree: Tree) -> list:
    """The same syntax nodes from a lark parse tree (built with propagate_positions): the driver's
    reference, used if it ever refuses a script lark accepts, and by the tests to check the driver."""

    def conv(t: Tree):
        ch = [conv(c) if isinstance(c, Tree) else _tok(c) for c in t.children]
        meta = t.meta
        p = None if meta.empty else (None, None, meta.line, meta.column)
        build = BUILDERS[t.data]
        if build is None:
            return ch
        if t.data in WITH_LAST:
            last = None if meta.empty else (None, None, meta.end_line, meta.end_column)
            return build(p, ch, last)
        return build(p, ch)

    return conv(tree)
