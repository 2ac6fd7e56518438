"""Compiled routing: which `on incoming` rule takes a call, without scanning every rule.

Rules are bucketed by where the call comes from; inside a bucket exact numbers sit in a dict, prefixes
(and regexes that start with a literal, like `^\\+44`) in a prefix table probed once per length, and the
remaining regexes are combined into one RE2 set that tells which of them match, in one pass. Candidates
are then checked in source order, so the result is always "the first rule that matches, top to bottom".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from operator import itemgetter
from types import MappingProxyType

from .diagnostics import Position
from .frozen import fast_init
from .model import EMPTY, Accept, Attempt, CallInfo, Decision, Target, Template
from .patterns import IGNORECASE as _IGNORECASE  # a plain int: `flags & re.IGNORECASE` runs enum code, slowly
from .patterns import MAX_HEADER_VALUE, MAX_VALUE, Pattern, PatternError, PatternSet

# ------------------------------------------------------------------ matchers


@fast_init
@dataclass(frozen=True, slots=True)
class Matcher:
    kind: str  # exact | prefix | regex
    text: str  # number, prefix, or regex source (without slashes)
    regex: Pattern | AnchoredPattern | None = None
    position: Position | None = None

    def match(self, value: str, limit: int = MAX_VALUE) -> tuple[tuple[str, ...], dict[str, str]] | None:
        """Captures when the value matches: a prefix captures the rest of the number as \\1.

        A pattern never reads a value longer than `limit` characters: such a value matches no pattern
        (patterns.py says why)."""
        if self.kind == "exact":
            return ((), {}) if value == self.text else None
        if self.kind == "prefix":
            return ((value[len(self.text):],), {}) if value.startswith(self.text) else None
        assert self.regex is not None
        if len(value) > limit:
            return None
        m = self.regex.search(value)
        if m is None:
            return None
        groups = tuple("" if g is None else g for g in m.groups())
        named = {k: ("" if v is None else v) for k, v in m.groupdict().items()}
        return groups, named

    def __str__(self) -> str:
        if self.kind == "exact":
            return f'"{self.text}"'
        if self.kind == "prefix":
            return f'prefix "{self.text}"'
        flags = "i" if self.regex is not None and self.regex.flags & _IGNORECASE else ""
        return f"/{self.text}/{flags}"


def match_any(matchers: tuple[Matcher, ...], value: str, limit: int = MAX_VALUE) -> bool:
    return any(m.match(value, limit) is not None for m in matchers)


# ------------------------------------------------------------------ conditions


@fast_init
@dataclass(frozen=True, slots=True)
class Condition:
    """One `when` condition; `test` is pure (the call carries its own time)."""

    kind: str  # caller_id | caller_name | header | time | days
    negated: bool
    matchers: tuple[Matcher, ...] = ()
    header: str = ""
    start: int = 0  # minutes since midnight, for time
    end: int = 0
    days: frozenset[int] = frozenset()  # 0 = Monday
    zone: tzinfo | None = None
    text: str = ""  # as written, for explain

    def test(self, call: CallInfo, at: datetime) -> bool:
        return self._raw(call, at) != self.negated

    def _raw(self, call: CallInfo, at: datetime) -> bool:
        if self.kind == "caller_id":
            return match_any(self.matchers, call.caller_id or "")
        if self.kind == "caller_name":
            return match_any(self.matchers, call.caller_name or "")
        if self.kind == "header":
            v = call.headers.get(self.header) if call.headers else None
            return v is not None and match_any(self.matchers, v, MAX_HEADER_VALUE)
        local = at.astimezone(self.zone) if self.zone is not None else at
        if self.kind == "time":
            minute = local.hour * 60 + local.minute
            if self.start < self.end:
                return self.start <= minute < self.end
            return minute >= self.start or minute < self.end  # wraps past midnight
        if self.kind == "days":
            return local.weekday() in self.days
        return False


# ------------------------------------------------------------------ rules


@fast_init
@dataclass(frozen=True, slots=True)
class TargetTemplate:
    kind: str
    name: str
    number: Template | None


@fast_init
@dataclass(frozen=True, slots=True)
class Rule:
    index: int
    position: Position
    peer_kind: str  # any | user | line
    peer_name: str | None  # None = any
    matchers: tuple[Matcher, ...]  # empty = any number
    conditions: tuple[Condition, ...]
    plan: tuple[Attempt, ...]  # numbers of targets are unrendered when `dynamic`
    number_templates: tuple[tuple[Template | None, ...], ...]  # per attempt, per target
    dynamic: bool
    header: str  # the rule's first line as written, for explain and graph

    rid: str = field(default="", compare=False)  # str(position), made once at compile time
    # False for a rule written without `from` whose plan can send the call out through a line: a call
    # that came in on a line never takes it (line-to-line routing must say `from line ...` or
    # `from any`; one spoofed packet from a provider's address must not become an outbound call)
    from_lines: bool = True
    # where the plan has numbers to fill in: (attempt index, its actions, its timeout, ((target, template), ...))
    renders: tuple = field(default=(), compare=False, repr=False)

    @property
    def id(self) -> str:
        return self.rid or str(self.position)

    @property
    def header_id(self) -> str:
        return self.id

    def peer_matches(self, call: CallInfo) -> bool:
        if self.peer_kind == "any":
            return self.from_lines or call.from_type != "line"
        return call.from_type == self.peer_kind and (
            self.peer_name is None or self.peer_name == call.from_name
        )

    def conditions_hold(self, call: CallInfo, at: datetime) -> bool:
        return all(c.test(call, at) for c in self.conditions)

    def match_number(self, to: str) -> tuple[tuple[str, ...], dict[str, str]] | None:
        if not self.matchers:
            return (), {}
        for m in self.matchers:
            r = m.match(to)
            if r is not None:
                return r
        return None

    def decision(self, call: CallInfo, captures: tuple[str, ...], named: Mapping[str, str]) -> Decision:
        """The plan with this call's numbers filled in: the hot path of every routed call, kept lean."""
        values = {
            "to": call.to,
            "from": call.from_name or "",
            "from_type": call.from_type,
            "caller_id": call.caller_id,
            "caller_name": call.caller_name or "",
        }  # = call.values(), without the call
        if captures:
            if len(captures) == 1:
                values["1"] = captures[0]
            else:
                values.update(zip(_NUMBERS, captures, strict=False))
        if named:
            values.update(named)
        plan = self.plan
        if self.renders:
            plan = list(plan)
            for i, actions, timeout, targets in self.renders:
                if len(targets) == 1:
                    tg, tpl = targets[0]
                    rendered: tuple[Target, ...] = (Target(tg.kind, tg.name, tpl.render(values)),)
                else:
                    rendered = tuple([tg if tpl is None else Target(tg.kind, tg.name, tpl.render(values))
                                      for tg, tpl in targets])
                plan[i] = Attempt(actions, Accept(rendered, timeout))
            plan = tuple(plan)
        return Decision(self.rid or str(self.position), captures, plan,
                        MappingProxyType(named) if named else EMPTY, MappingProxyType(values))


def plan_renders(plan: tuple[Attempt, ...], templates: tuple[tuple[Template | None, ...], ...]) -> tuple:
    """The attempts whose targets have numbers to render per call, prepared once for Rule.decision."""
    out = []
    for i, (a, tpls) in enumerate(zip(plan, templates, strict=True)):
        t = a.terminal
        if isinstance(t, Accept) and any(tpls):
            out.append((i, a.actions, t.timeout, tuple(zip(t.targets, tpls, strict=True))))
    return tuple(out)


_NUMBERS = tuple(str(i) for i in range(1, 100))


def now() -> datetime:
    return datetime.now(UTC).astimezone()


# ------------------------------------------------------------------ the index

Key = tuple[str, str | None]


def peer_keys(call: CallInfo) -> tuple[Key, ...]:
    """The buckets a call can be taken from: its own peer, any peer of its kind, and `any`."""
    if call.from_type == "user":
        return (("user", call.from_name), ("user", None), ("any", None))
    if call.from_type == "line":
        return (("line", call.from_name), ("line", None), ("any", None))
    return (("any", None),)


def covering_keys(kind: str, name: str | None) -> tuple[Key, ...]:
    if kind == "any":
        return (("any", None),)
    if name is None:
        return ((kind, None), ("any", None))
    return ((kind, name), (kind, None), ("any", None))


_LITERAL = re.compile(r"[A-Za-z0-9_#@:,;=%~!'\"<> -]")
_QUANT = "?*{+"


def literal_prefix(source: str) -> str:
    """The literal text every match of an anchored regex starts with (`^\\+44[0-9]+` -> `+44`)."""
    if not source.startswith("^") or "|" in source:
        return ""
    out: list[str] = []
    i = 1
    while i < len(source):
        c = source[i]
        if c == "\\" and i + 1 < len(source) and not source[i + 1].isalnum():
            lit, step = source[i + 1], 2
        elif _LITERAL.fullmatch(c):
            lit, step = c, 1
        else:
            break
        nxt = source[i + step] if i + step < len(source) else ""
        if nxt and nxt in _QUANT:
            if nxt == "+":
                out.append(lit)
            break
        out.append(lit)
        i += step
    return "".join(out)


_FLAG_GROUP = re.compile(r"\(\?[A-Za-z-]")


class AnchoredPattern:
    r"""A pattern `^LITERAL REST` kept as its literal and REST compiled on its own.

    Scripts write thousands of rules like `/^\+44201234([0-9]{4})$/`: compiling each whole pattern was
    a quarter of a big script's compile time, while the REST part (`([0-9]{4})$`) is the same in all of
    them and compiles once. Matching is the same as the whole pattern's: `^` without MULTILINE only
    matches at 0, so a match is the literal at 0 and REST matched where the literal ends; the string is
    not sliced, so \b and ^ in REST see exactly what they see in the whole pattern.
    search() returns REST's match: its groups() and groupdict() are the whole pattern's (the literal
    has no groups), its span starts after the literal.
    """

    __slots__ = ("pattern", "flags", "literal", "rest", "groups", "groupindex", "_n")

    def __init__(self, pattern: str, literal: str, rest: Pattern) -> None:
        self.pattern = pattern
        self.literal = literal
        self.rest = rest
        self.flags = rest.flags
        self.groups = rest.groups
        self.groupindex = rest.groupindex
        self._n = len(literal)

    def search(self, value: str):  # type: ignore[no-untyped-def]
        if value.startswith(self.literal):
            return self.rest.match(value, self._n)
        return None

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AnchoredPattern | Pattern):
            return self.pattern == other.pattern and self.flags == other.flags
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.pattern, self.flags))

    def __repr__(self) -> str:
        return f"AnchoredPattern({self.pattern!r})"


@lru_cache(maxsize=4096)
def _compile_rest(source: str) -> Pattern:
    return Pattern(source)


def compile_regex(source: str, flags: int = 0) -> Pattern | AnchoredPattern:
    """Pattern(source, flags) (RE2, see patterns.py), or the same pattern split at its literal start.

    Raises PatternError (msg, pos) exactly as Pattern(source, flags) does: any doubt about the split
    (flags, alternation, a REST that does not compile alone) goes to the whole source.
    """
    if flags or not source.startswith("^") or "|" in source or _FLAG_GROUP.search(source):
        return Pattern(source, flags)
    lit: list[str] = []
    i = 1
    while i < len(source):
        c = source[i]
        if c == "\\" and i + 1 < len(source) and not source[i + 1].isalnum() and source[i + 1].isascii():
            ch, step = source[i + 1], 2
        elif _LITERAL.fullmatch(c):
            ch, step = c, 1
        else:
            break
        nxt = source[i + step] if i + step < len(source) else ""
        if nxt and nxt in _QUANT:
            break  # a quantified literal stays in REST with its quantifier
        lit.append(ch)
        i += step
    if not lit:
        return Pattern(source, flags)
    try:
        rest = _compile_rest(source[i:])
    except PatternError:  # the whole pattern decides (and reports)
        return Pattern(source, flags)
    return AnchoredPattern(source, "".join(lit), rest)


@dataclass(slots=True)
class Bucket:
    exact: dict[str, list[tuple[int, Matcher]]] = field(default_factory=dict)
    prefix: dict[str, list[tuple[int, Matcher]]] = field(default_factory=dict)
    lengths: tuple[int, ...] = ()
    any_number: list[int] = field(default_factory=list)
    loose: list[tuple[int, Matcher]] = field(default_factory=list)  # regexes without a literal prefix
    combined: PatternSet | None = None  # which loose regexes match, in one pass (RE2::Set)
    any_pairs: list[tuple[int, None]] = field(default_factory=list)  # any_number as candidates

    def finish(self) -> None:
        self.any_pairs = [(i, None) for i in self.any_number]
        self.lengths = tuple(sorted({len(p) for p in self.prefix}, reverse=True))
        if len(self.loose) > 1:
            try:
                self.combined = PatternSet(m.regex for _, m in self.loose)  # type: ignore[misc]
            except PatternError:
                self.combined = None  # each loose regex is tried on its own

    def candidates(self, to: str, out: list[tuple[int, Matcher | None]]) -> None:
        e = self.exact.get(to)
        if e:
            out.extend(e)
        if self.lengths:
            n = len(to)
            pref = self.prefix
            for length in self.lengths:
                if length <= n:
                    hit = pref.get(to[:length])
                    if hit:
                        out.extend(hit)
        if self.any_pairs:
            out.extend(self.any_pairs)
        if self.loose:
            if len(to) > MAX_VALUE:
                return  # no pattern reads it (patterns.py)
            if self.combined is not None:
                loose = self.loose
                out.extend([loose[k] for k in self.combined.matching(to)])
            else:
                out.extend(self.loose)


class Router:
    """Finds the first rule, in source order, whose peer, number and conditions all match."""

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self.rules = rules
        self.buckets: dict[Key, Bucket] = {}
        for r in rules:
            b = self.buckets.setdefault((r.peer_kind, r.peer_name), Bucket())
            if not r.matchers:
                b.any_number.append(r.index)
            for m in r.matchers:
                if m.kind == "exact":
                    b.exact.setdefault(m.text, []).append((r.index, m))
                elif m.kind == "prefix":
                    b.prefix.setdefault(m.text, []).append((r.index, m))
                else:
                    assert m.regex is not None
                    lit = "" if m.regex.flags & _IGNORECASE else literal_prefix(m.text)
                    if lit:
                        b.prefix.setdefault(lit, []).append((r.index, m))
                    else:
                        b.loose.append((r.index, m))
        for b in self.buckets.values():
            b.finish()
        # the same buckets, reachable without building keys per call
        self._named: dict[str, dict[str, Bucket]] = {}
        self._kind_any: dict[str, Bucket] = {}
        self._any = self.buckets.get(("any", None))
        for (kind, name), b in self.buckets.items():
            if kind == "any":
                continue
            if name is None:
                self._kind_any[kind] = b
            else:
                self._named.setdefault(kind, {})[name] = b

    def decide(self, call: CallInfo) -> Decision | None:
        """Same answer as trying every rule top to bottom (see the module doc), without the scan."""
        cands: list[tuple[int, Matcher | None]] = []
        to = call.to
        kind = call.from_type
        if kind == "user" or kind == "line":
            named = self._named.get(kind)
            if named is not None:
                b = named.get(call.from_name)  # type: ignore[arg-type]
                if b is not None:
                    b.candidates(to, cands)
            b = self._kind_any.get(kind)
            if b is not None:
                b.candidates(to, cands)
        b = self._any
        if b is not None:
            b.candidates(to, cands)
        if not cands:
            return None
        if len(cands) > 1:
            cands.sort(key=_first)
        at: datetime | None = None
        rules = self.rules
        from_line = kind == "line"
        for idx, m in cands:
            rule = rules[idx]
            if from_line and not rule.from_lines:
                continue  # line to line only when the rule says `from` (Rule.from_lines)
            if m is None or m.kind == "exact":
                caps: tuple[str, ...] = ()
                named_caps: Mapping[str, str] = _NO_NAMES
            elif m.kind == "prefix":  # the bucket found it by this prefix: the rest is \1
                caps = (to[len(m.text):],)
                named_caps = _NO_NAMES
            else:
                found = m.match(to)
                if found is None:
                    continue
                caps, named_caps = found
            if rule.conditions:
                if at is None:
                    at = call.at or now()
                if not rule.conditions_hold(call, at):
                    continue
            return rule.decision(call, caps, named_caps)
        return None


_NO_NAMES: Mapping[str, str] = MappingProxyType({})
_first = itemgetter(0)


# ------------------------------------------------------------------ shadowing


@dataclass(slots=True)
class _Cover:
    any_rule: int | None = None
    exact: dict[str, int] = field(default_factory=dict)
    prefix: dict[str, int] = field(default_factory=dict)
    lengths: set[int] = field(default_factory=set)
    regex_src: dict[tuple[str, int], int] = field(default_factory=dict)
    regexes: list[tuple[Matcher, int]] = field(default_factory=list)


def _regex_key(m: Matcher) -> tuple[str, int]:
    """Two regex matchers with the same key match the same numbers (what str(m) tells apart, cheaper)."""
    return m.text, (m.regex.flags & _IGNORECASE if m.regex is not None else 0)


class ShadowIndex:
    """What the unconditional rules seen so far already take, to find rules that can never match."""

    MAX_REGEX_PROBES = 200

    def __init__(self) -> None:
        self.cover: dict[Key, _Cover] = {}

    def shadowed_by(self, kind: str, name: str | None, matchers: tuple[Matcher, ...]) -> int | None:
        """The earlier rule that takes everything this rule would (one of them), or None."""
        covers = [c for k in covering_keys(kind, name) if (c := self.cover.get(k)) is not None]
        if not covers:
            return None
        if not matchers:
            found = [c.any_rule for c in covers if c.any_rule is not None]
            return min(found) if found else None
        first: int | None = None
        for m in matchers:
            by = self._covering(covers, m)
            if by is None:
                return None
            first = by if first is None else min(first, by)
        return first

    def _covering(self, covers: list[_Cover], m: Matcher) -> int | None:
        best: int | None = None

        def take(i: int | None) -> None:
            nonlocal best
            if i is not None and (best is None or i < best):
                best = i

        for c in covers:
            take(c.any_rule)
            if m.kind == "regex":
                take(c.regex_src.get(_regex_key(m)))
                continue
            text = m.text
            if m.kind == "exact":
                take(c.exact.get(text))
            for length in c.lengths:
                if length <= len(text):
                    take(c.prefix.get(text[:length]))
            if m.kind == "exact" and len(c.regexes) <= self.MAX_REGEX_PROBES:
                for rm, i in c.regexes:
                    if rm.regex is not None and rm.regex.search(text):
                        take(i)
                        break
        return best

    def add(self, kind: str, name: str | None, matchers: tuple[Matcher, ...], index: int) -> None:
        c = self.cover.setdefault((kind, name), _Cover())
        if not matchers:
            if c.any_rule is None:
                c.any_rule = index
            return
        for m in matchers:
            if m.kind == "exact":
                c.exact.setdefault(m.text, index)
            elif m.kind == "prefix":
                if m.text not in c.prefix:
                    c.prefix[m.text] = index
                    c.lengths.add(len(m.text))
            else:
                c.regex_src.setdefault(_regex_key(m), index)
                c.regexes.append((m, index))
