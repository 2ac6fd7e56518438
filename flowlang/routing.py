"""Compiled routing: which `on incoming` rule takes a call, without scanning every rule.

Rules are bucketed by where the call comes from; inside a bucket exact numbers sit in a dict, prefixes
(and regexes that start with a literal, like `^\\+44`) in a prefix table probed once per length, and the
remaining regexes are combined into one alternation that finds the first one that matches. Candidates
are then checked in source order, so the result is always "the first rule that matches, top to bottom".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from types import MappingProxyType

from .diagnostics import Position
from .model import EMPTY, Accept, Attempt, CallInfo, Decision, Target, Template

# ------------------------------------------------------------------ matchers


@dataclass(frozen=True, slots=True)
class Matcher:
    kind: str  # exact | prefix | regex
    text: str  # number, prefix, or regex source (without slashes)
    regex: re.Pattern[str] | None = None
    position: Position | None = None

    def match(self, value: str) -> tuple[tuple[str, ...], dict[str, str]] | None:
        """Captures when the value matches: a prefix captures the rest of the number as \\1."""
        if self.kind == "exact":
            return ((), {}) if value == self.text else None
        if self.kind == "prefix":
            return ((value[len(self.text):],), {}) if value.startswith(self.text) else None
        assert self.regex is not None
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
        flags = "i" if self.regex is not None and self.regex.flags & re.IGNORECASE else ""
        return f"/{self.text}/{flags}"


def match_any(matchers: tuple[Matcher, ...], value: str) -> bool:
    return any(m.match(value) is not None for m in matchers)


# ------------------------------------------------------------------ conditions


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
            return v is not None and match_any(self.matchers, v)
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


@dataclass(frozen=True, slots=True)
class TargetTemplate:
    kind: str
    name: str
    number: Template | None


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

    @property
    def id(self) -> str:
        return self.header_id

    @property
    def header_id(self) -> str:
        return _ids.get(self.position) or _ids.setdefault(self.position, str(self.position))

    def peer_matches(self, call: CallInfo) -> bool:
        if self.peer_kind == "any":
            return True
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

    def decision(self, call: CallInfo, captures: tuple[str, ...], named: dict[str, str]) -> Decision:
        """The plan with this call's numbers filled in: the hot path of every routed call, kept lean."""
        values = call.values()
        if captures:
            values.update(zip(_NUMBERS, captures, strict=False))
        if named:
            values.update(named)
        plan = _render_plan(self.plan, self.number_templates, values) if self.dynamic else self.plan
        return Decision(self.id, captures, plan, MappingProxyType(named) if named else EMPTY,
                        MappingProxyType(values))


_ids: dict[Position, str] = {}
_NUMBERS = tuple(str(i) for i in range(1, 100))


def _render_plan(
    plan: tuple[Attempt, ...], templates: tuple[tuple[Template | None, ...], ...], values: Mapping[str, str]
) -> tuple[Attempt, ...]:
    out = []
    for a, tpls in zip(plan, templates, strict=True):
        t = a.terminal
        if not isinstance(t, Accept) or not any(tpls):
            out.append(a)
            continue
        targets = tuple(
            tg if tpl is None else Target(tg.kind, tg.name, tpl.render(values))
            for tg, tpl in zip(t.targets, tpls, strict=True)
        )
        out.append(Attempt(a.actions, Accept(targets, t.timeout)))
    return tuple(out)


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


@dataclass(slots=True)
class Bucket:
    exact: dict[str, list[tuple[int, Matcher]]] = field(default_factory=dict)
    prefix: dict[str, list[tuple[int, Matcher]]] = field(default_factory=dict)
    lengths: tuple[int, ...] = ()
    any_number: list[int] = field(default_factory=list)
    loose: list[tuple[int, Matcher]] = field(default_factory=list)  # regexes without a literal prefix
    combined: re.Pattern[str] | None = None
    combined_groups: dict[int, int] = field(default_factory=dict)  # group number -> position in loose

    def finish(self) -> None:
        self.lengths = tuple(sorted({len(p) for p in self.prefix}, reverse=True))
        if len(self.loose) > 1:
            self._combine()

    def _combine(self) -> None:
        """One alternation over every loose regex, tried in order: match() finds the first that hits."""
        parts = []
        groups: dict[int, int] = {}
        gno = 1
        for k, (_, m) in enumerate(self.loose):
            assert m.regex is not None
            src = m.regex.pattern
            if re.search(r"\\[1-9]|\(\?P=|\(\?[aiLmsux]+\)", src):
                return  # backreferences or global flags do not survive combining
            src = re.sub(r"\(\?P<([A-Za-z_]\w*)>", lambda mm, k=k: f"(?P<_{k}_{mm.group(1)}>", src)
            flags = "i" if m.regex.flags & re.IGNORECASE else ""
            body = f"(?{flags}:{src})" if flags else f"(?:{src})"
            parts.append(f"((?s:.*?){body})")
            groups[gno] = k
            gno += 1 + m.regex.groups
        try:
            self.combined = re.compile("|".join(parts))
        except (re.error, OverflowError, RecursionError):
            self.combined = None
            return
        self.combined_groups = groups

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
        if self.any_number:
            out.extend((i, None) for i in self.any_number)
        if self.loose:
            if self.combined is not None:
                m = self.combined.match(to)
                if m is None:
                    return
                start = self.combined_groups.get(m.lastindex or 0, 0)
                out.extend(self.loose[start:])
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
                    lit = "" if m.regex.flags & re.IGNORECASE else literal_prefix(m.text)
                    if lit:
                        b.prefix.setdefault(lit, []).append((r.index, m))
                    else:
                        b.loose.append((r.index, m))
        for b in self.buckets.values():
            b.finish()

    def decide(self, call: CallInfo) -> Decision | None:
        cands: list[tuple[int, Matcher | None]] = []
        to = call.to
        for key in peer_keys(call):
            b = self.buckets.get(key)
            if b is not None:
                b.candidates(to, cands)
        if not cands:
            return None
        if len(cands) > 1:
            cands.sort(key=_first)
        at: datetime | None = None
        rules = self.rules
        for idx, m in cands:
            rule = rules[idx]
            if m is None:
                caps: tuple[tuple[str, ...], dict[str, str]] | None = ((), {})
            elif m.kind == "exact":
                caps = ((), {})
            else:
                caps = m.match(to)
                if caps is None:
                    continue
            if rule.conditions:
                if at is None:
                    at = call.at or now()
                if not rule.conditions_hold(call, at):
                    continue
            return rule.decision(call, caps[0], caps[1])
        return None


def _first(c: tuple[int, Matcher | None]) -> int:
    return c[0]


# ------------------------------------------------------------------ shadowing


@dataclass(slots=True)
class _Cover:
    any_rule: int | None = None
    exact: dict[str, int] = field(default_factory=dict)
    prefix: dict[str, int] = field(default_factory=dict)
    lengths: set[int] = field(default_factory=set)
    regex_src: dict[str, int] = field(default_factory=dict)
    regexes: list[tuple[Matcher, int]] = field(default_factory=list)


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
                take(c.regex_src.get(str(m)))
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
                c.regex_src.setdefault(str(m), index)
                c.regexes.append((m, index))
