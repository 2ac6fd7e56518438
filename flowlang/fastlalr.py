"""A lean driver for lark's LALR tables: the success path of parsing, with no parse tree and no lark Tokens.

lark analyses the grammar and builds the parse table and the contextual lexer's per-state scanners; this
module reuses exactly those (same terminals, same order, same keyword handling), so it accepts exactly
the scripts lark accepts and tokenizes them the same way. What it leaves out is lark's per-token and
per-node machinery: Token objects, line counters, tree nodes, position propagation and child-filter
wrappers, which made up nearly all of a big script's parse time.

Each reduction calls a node builder directly with the rule's kept children (lark's filtering: anonymous
keywords dropped unless the rule is `!`, `_rule`s spliced into their parent) and the rule's position: its
first token, which is what `propagate_positions` gives `meta.line`/`meta.column`. That position is only
known (and passed) when the rule starts with a terminal; a rule that starts with another rule gets None,
so its builder must not need a position (in flowlang: `start`, `condition` and `inline`).

Tokens are plain tuples `(type, text, line, column)`. Any syntax problem raises `Reject`: the caller then
runs lark itself for its precise error messages and recovery (the error path may be slower).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from lark import Lark
from lark.lexer import UnlessCallback
from lark.parsers.lalr_analysis import Shift

Tok = tuple  # (type, text, line, column)


class Reject(Exception):
    """The text is not in the language (or uses something this driver does not handle): ask lark."""


class Unsupported(Exception):
    """The grammar or lark build uses a feature this driver does not reproduce."""


def _should_expand(sym) -> bool:
    return not sym.is_term and sym.name.startswith("_")


class Driver:
    """Tables taken from a built Lark(parser='lalr', lexer='contextual') and node builders per rule name.

    `builders` maps a rule's callback name (its alias, else its name) to `f(first_token, children)`,
    or to None when the rule's value is just the list of its kept children; a builder named in
    `with_last` is called as `f(first_token, children, last_token)`.
    """

    def __init__(self, lark: Lark, builders: dict[str, Callable], with_last: frozenset[str] = frozenset()) -> None:
        opts = lark.options
        if opts.parser != "lalr" or opts.lexer != "contextual" or opts.postlex is not None:
            raise Unsupported("needs parser='lalr', lexer='contextual' and no postlexer")
        if opts.maybe_placeholders or opts.keep_all_tokens or opts.g_regex_flags or opts.use_bytes:
            raise Unsupported("placeholders, keep_all_tokens and global regex flags are not reproduced")
        frontend = lark.parser
        table = frontend.parser.parser.parse_table
        self.start = table.start_states["start"]
        self.end = table.end_states["start"]
        self.ignore = frozenset(lark.lexer_conf.ignore)

        # rules: one small generated function each (kept children, splicing, the node builder)
        rule_ids: dict[Any, int] = {}
        self.rules: list[tuple[int, str, Callable]] = []
        ns: dict[str, Any] = {}
        src: list[str] = []
        for rule in lark.rules:
            if rule.options.expand1:
                raise Unsupported("?rule is not reproduced")
            k = len(self.rules)
            rule_ids[rule] = k
            keep = rule.options.keep_all_tokens
            inc = [(i, _should_expand(s)) for i, s in enumerate(rule.expansion)
                   if keep or not (s.is_term and s.filter_out)]
            name = rule.alias or rule.options.template_source or rule.origin.name
            if rule.origin.name.startswith("_"):
                builder = None  # spliced into the parent: the value is the list of kept children
            else:
                if name not in builders:
                    raise Unsupported(f"no node builder for rule {name}")
                builder = builders[name]  # None: the value is the list of kept children
                ns[f"b{k}"] = builder
            size = len(rule.expansion)
            ref = (lambda i: "c") if size == 1 else (lambda i: f"s[{i}]")
            if inc and inc[0][1]:
                # reuse the first spliced list (left recursion `x*` grows it in place: linear, not quadratic)
                lines = [f"x = {ref(inc[0][0])}"]
                for i, exp in inc[1:]:
                    lines.append(f"x.extend({ref(i)})" if exp else f"x.append({ref(i)})")
                expr = "x"
            else:
                lines = []
                if size > 1 and [i for i, _ in inc] == list(range(size)) and not any(e for _, e in inc):
                    expr = "s"  # every child kept as is: the popped slice is already a fresh list
                else:
                    expr = "[" + ", ".join(f"*{ref(i)}" if exp else ref(i) for i, exp in inc) + "]"
            # the node's position: its first token, when the rule starts with one (see the class doc)
            p = ref(0) if size and rule.expansion[0].is_term else "None"
            if builder is None:
                ret = expr
            elif name in with_last:
                ret = f"b{k}({p}, {expr}, last)"
            else:
                ret = f"b{k}({p}, {expr})"
            body = "\n    ".join([*lines, f"return {ret}"])
            src.append(f"def r{k}({'c' if size == 1 else 's'}, last):\n    {body}\n")
            # a rule whose value is its only child's list, unchanged, needs no call at all
            identity = builder is None and size == 1 and inc == [(0, True)]
            self.rules.append((size, str(rule.origin.name), identity))  # type: ignore[arg-type]
        exec(compile("\n".join(src), "<flowlang.fastlalr rules>", "exec"), ns)  # noqa: S102 - our own code
        self.rules = [(size, origin, None if identity else ns[f"r{k}"])
                      for k, (size, origin, identity) in enumerate(self.rules)]

        # actions: state -> {symbol: code}; code >= 0 shifts (or goes) to that state, code < 0 reduces ~code
        n_states = max(table.states) + 1
        self.actions: list[dict[str, int]] = [{} for _ in range(n_states)]
        for state, acts in table.states.items():
            row = self.actions[state]
            for sym, (action, arg) in acts.items():
                # plain str keys: lark's Token keys compare in Python, slowly
                row[str(sym)] = arg if action is Shift else ~rule_ids[arg]

        # lexers: per state, lark's own scanner terminals in lark's order, ignored terminals skipped first
        ctx = frontend.lexer
        ignore_res = []
        for name in sorted(self.ignore):
            ignore_res.append(lark.get_terminal(name).pattern.to_regexp())
        skip = "(?:" + "|".join(f"(?:{r})" for r in ignore_res) + ")*+" if ignore_res else ""
        self.skip = re.compile(skip)
        by_key: dict[int, tuple[Callable, dict[str, dict[str, str]]]] = {}
        self.lexers: list[tuple[Callable, dict[str, dict[str, str]]] | None] = [None] * n_states
        for state, basic in ctx.lexers.items():
            cached = by_key.get(id(basic))
            if cached is None:
                cached = self._lexer(basic, skip)
                by_key[id(basic)] = cached
            self.lexers[state] = cached

    def _lexer(self, basic, skip: str) -> tuple[Callable, dict[str, dict[str, str]]]:
        scanner = basic.scanner  # builds lark's scanner: terminals after keyword folding, in match order
        if basic.ignore_types != self.ignore:
            raise Unsupported("per-state ignore sets")
        unless: dict[str, dict[str, str]] = {}
        for typ, cb in basic.callback.items():
            if not isinstance(cb, UnlessCallback):
                raise Unsupported("lexer callbacks")
            words: dict[str, str] = {}
            for t in cb.scanner.terminals:
                if t.pattern.type != "str" or t.pattern.flags:
                    raise Unsupported("keyword with flags")
                words.setdefault(t.pattern.value, t.name)
            unless[typ] = words
        parts = []
        for t in scanner.terminals:
            if t.name in self.ignore:
                continue
            rx = t.pattern.to_regexp()
            _check_not_ignorable_start(t.name, rx, t.pattern)
            parts.append(f"(?P<{t.name}>{rx})")
        pattern = re.compile(skip + "(?:" + "|".join(parts) + ")")
        return pattern.match, unless

    def parse(self, text: str) -> Any:
        """The start rule's value; raises Reject for anything lark would not accept."""
        try:
            return self._parse(text)
        except KeyError:  # no action for this token in this state
            raise Reject from None

    def _parse(self, text: str) -> Any:
        actions = self.actions
        lexers = self.lexers
        rules = self.rules
        state = self.start
        states = [state]
        values: list[Any] = []
        n = len(text)
        pos = 0
        line = 1
        line_start = 0
        nl = text.find("\n")
        if nl < 0:
            nl = n
        last: Tok | None = None
        while True:
            match, unless = lexers[state]
            m = match(text, pos)
            if m is None:
                if self.skip.match(text, pos).end() != n:
                    raise Reject  # a character no terminal of this state takes
                break
            typ = m.lastgroup
            start, pos = m.span(typ)
            val = text[start:pos]
            if unless:
                words = unless.get(typ)
                if words is not None:
                    typ = words.get(val, typ)
            while start > nl:  # the token is on a later line (only ignored text holds newlines)
                line += 1
                line_start = nl + 1
                nl = text.find("\n", line_start)
                if nl < 0:
                    nl = n
            tok = (typ, val, line, start - line_start + 1)
            code = actions[state][typ]
            while code < 0:
                size, origin, fn = rules[~code]
                if size == 1:
                    if fn is not None:
                        values[-1] = fn(values[-1], last)
                    state = actions[states[-2]][origin]
                    states[-1] = state
                else:
                    if size:
                        ch = values[-size:]
                        del values[-size:], states[-size:]
                    else:
                        ch = []
                    values.append(fn(ch, last))
                    state = actions[states[-1]][origin]
                    states.append(state)
                code = actions[state][typ]
            state = code
            states.append(state)
            values.append(tok)
            last = tok  # the last token shifted: where a rule reduced next ends
        end = self.end
        while True:
            code = actions[state].get("$END")
            if code is None or code >= 0:
                raise Reject
            size, origin, fn = rules[~code]
            if size == 1:
                if fn is not None:
                    values[-1] = fn(values[-1], last)
                state = actions[states[-2]][origin]
                states[-1] = state
            else:
                if size:
                    ch = values[-size:]
                    del values[-size:], states[-size:]
                else:
                    ch = []
                values.append(fn(ch, last))
                state = actions[states[-1]][origin]
                states.append(state)
            if state == end:
                return values[-1]


_IGNORABLE_STARTS = (" ", "\t", "\f", "\r", "\n", "#")


def _check_not_ignorable_start(name: str, rx: str, pattern) -> None:
    """Skipping whitespace and comments before matching is only the same as lark's token-by-token loop
    when no other terminal can start where they do; refuse a grammar where one could."""
    if pattern.type == "str":
        if pattern.value[:1] in _IGNORABLE_STARTS:
            raise Unsupported(f"terminal {name} starts like ignored text")
        return
    compiled = re.compile(rx)
    for c in _IGNORABLE_STARTS:
        for rest in ("", "a", "0", "#", '"', "/", "\\", " ", "x y"):
            if compiled.match(c + rest):
                raise Unsupported(f"terminal {name} can start like ignored text")
