"""Rule patterns (`/regex/`) on RE2: deciding a call takes time linear in what is matched, whatever
the operator writes.

Python's `re` backtracks: `/^([0-9]+)+$/` against a 31-character dialled number, or `/(.*a){12}/`
against a long caller name, runs for seconds to minutes, and the whole server with it (issue 9,
"Rules"). RE2 (Google's engine, the `google-re2` package) runs in time linear in the input for
every pattern, so no pattern can freeze routing. What it gives up, and what `callflow check` refuses
with file:line:col, is what needs backtracking: backreferences (`\\1`, `(?P=name)`), lookaround
(`(?=`, `(?!`, `(?<=`, `(?<!`), possessive quantifiers and atomic groups.

What is matched is bounded too: a dialled number, caller id or caller name longer than MAX_VALUE
characters, or a header longer than MAX_HEADER_VALUE, matches no pattern (exact numbers and
prefixes still compare as usual), so no peer can make one decision read an unbounded string.

The binding's own `re2.compile(...).search` costs 5-9 us a call (it decodes every span in Python);
Pattern calls the compiled RE2 object directly (about 1 us) and converts only the groups asked for.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import re2
from re2 import _re2

MAX_VALUE = 256  # characters of a dialled number, caller id or caller name a pattern will read
MAX_HEADER_VALUE = 1024  # characters of a header value a `when header` pattern will read

IGNORECASE = int(re.IGNORECASE)  # the flag Pattern.flags carries for /.../i, as re's patterns do

_UNANCHORED = _re2.RE2.Anchor.UNANCHORED
_ANCHOR_START = _re2.RE2.Anchor.ANCHOR_START
_NO_SPAN = (-1, -1)


class PatternError(ValueError):
    """A pattern RE2 refuses: `msg` says why and what to write instead, `pos` is the offset in the
    pattern's source where the problem starts (0 when RE2 does not say)."""

    def __init__(self, msg: str, pos: int = 0) -> None:
        super().__init__(msg)
        self.msg = msg
        self.pos = pos


def _options(flags: int) -> re2.Options:
    o = re2.Options()
    o.log_errors = False  # RE2 would print every refused pattern to stderr; we report it as a diagnostic
    if flags & IGNORECASE:
        o.case_sensitive = False
    return o


# RE2's messages name the construct; say what the operator can do about it
_WHY = (
    ("invalid escape sequence: \\Z", "\\Z is not supported: use $ (or \\z) for the end of the text"),
    ("invalid escape sequence: \\", "backreferences (\\1 ...) are not supported: rule patterns use RE2, "
                                    "which never backtracks"),
    ("invalid perl operator: (?P=", "backreferences ((?P=name)) are not supported: rule patterns use RE2, "
                                    "which never backtracks"),
    ("invalid perl operator: (?=", "lookahead (?=...) is not supported: rule patterns use RE2, which never "
                                   "backtracks"),
    ("invalid perl operator: (?!", "negative lookahead (?!...) is not supported: use `when not ...` for the "
                                   "opposite of a pattern"),
    ("invalid perl operator: (?<", "lookbehind (?<=...) / (?<!...) is not supported: rule patterns use RE2, "
                                   "which never backtracks"),
    ("invalid perl operator: (?>", "atomic groups (?>...) are not needed: rule patterns use RE2, which never "
                                   "backtracks"),
    ("bad repetition operator: ++", "possessive quantifiers (++, *+) are not needed: rule patterns use RE2, "
                                    "which never backtracks"),
    ("bad repetition operator: *+", "possessive quantifiers (++, *+) are not needed: rule patterns use RE2, "
                                    "which never backtracks"),
)


def _unclosed(source: str) -> int:
    """The offset of the first ( that no ) closes (0 when all are closed)."""
    opened: list[int] = []
    i, in_class = 0, False
    while i < len(source):
        c = source[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            if source[i + 1:i + 2] == "]":
                i += 1  # a ] first in a class is a literal
        elif c == "(":
            opened.append(i)
        elif c == ")" and opened:
            opened.pop()
        i += 1
    return opened[0] if opened else 0


def _error(source: str, raw: bytes) -> PatternError:
    text = raw.decode("utf-8", "replace")
    what, _, fragment = text.partition(": ")
    if what == "missing )":
        return PatternError("missing ), unterminated subpattern", _unclosed(source))
    if what == "unexpected )":
        return PatternError("unbalanced parenthesis", max(source.find(")"), 0))
    if text == "invalid perl operator: (?P" and "(?P=" in source:
        text, fragment = "invalid perl operator: (?P=", "(?P="  # RE2 names only the (?P, not which
    msg = text
    for prefix, why in _WHY:
        if text.startswith(prefix):
            msg = why
            break
    pos = source.find(fragment) if fragment and fragment != source else 0
    return PatternError(msg, max(pos, 0))


class PatternMatch:
    """One match: groups() and groupdict() as re's Match gives them (None for a group that took no part)."""

    __slots__ = ("_data", "_spans", "_names")

    def __init__(self, data: bytes, spans: list[tuple[int, int]], names: dict[str, int]) -> None:
        self._data = data
        self._spans = spans
        self._names = names

    def group(self, index: int = 0) -> str | None:
        s, e = self._spans[index]
        if s < 0:
            return None
        return self._data[s:e].decode("utf-8", "surrogatepass")

    def groups(self) -> tuple[str | None, ...]:
        data = self._data
        return tuple(None if s < 0 else data[s:e].decode("utf-8", "surrogatepass") for s, e in self._spans[1:])

    def groupdict(self) -> dict[str, str | None]:
        return {name: self.group(i) for name, i in self._names.items()}


class Pattern:
    """A compiled rule pattern: search() and match() like re.Pattern's, linear in the value's length."""

    __slots__ = ("pattern", "flags", "groups", "groupindex", "_rx")

    def __init__(self, pattern: str, flags: int = 0) -> None:
        """Raises PatternError (msg, pos) when RE2 refuses the pattern."""
        rx = _re2.RE2(pattern.encode("utf-8", "surrogatepass"), _options(flags))
        if not rx.ok():
            raise _error(pattern, rx.error())
        self.pattern = pattern
        self.flags = flags & IGNORECASE
        self._rx = rx
        self.groups: int = rx.NumberOfCapturingGroups()
        self.groupindex: dict[str, int] = {k.decode("utf-8", "surrogatepass"): v
                                           for k, v in rx.NamedCapturingGroups()}

    def _run(self, anchor: object, value: str, pos: int) -> PatternMatch | None:
        data = value.encode("utf-8", "surrogatepass")
        if pos and len(data) != len(value):  # not ASCII: a character offset is not a byte offset
            pos = len(value[:pos].encode("utf-8", "surrogatepass"))
        spans = self._rx.Match(anchor, data, pos, len(data))
        if spans[0] == _NO_SPAN:
            return None
        return PatternMatch(data, spans, self.groupindex)

    def search(self, value: str, pos: int = 0) -> PatternMatch | None:
        """The first match anywhere from `pos` (a character offset); ^ still means the start of `value`."""
        return self._run(_UNANCHORED, value, pos)

    def match(self, value: str, pos: int = 0) -> PatternMatch | None:
        """A match that starts exactly at `pos`."""
        return self._run(_ANCHOR_START, value, pos)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Pattern):
            return self.pattern == other.pattern and self.flags == other.flags
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.pattern, self.flags))

    def __repr__(self) -> str:
        return f"Pattern({self.pattern!r}{', i' if self.flags else ''})"

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # the RE2 object cannot be pickled: a Program sent from a compile process rebuilds it
        return (Pattern, (self.pattern, self.flags))


class PatternSet:
    """Which of many patterns match a value, in one pass over it (RE2::Set): the router's filter for
    rules whose pattern has no literal start. Every index it returns still has to be confirmed by its
    own Pattern for the captures."""

    __slots__ = ("_set",)

    MAX_MEM = 64 << 20  # the DFA's budget in bytes: a set that runs out would answer "no match"

    def __init__(self, patterns: Iterable[Pattern]) -> None:
        """Raises PatternError when RE2 cannot build the set (the router then tries each pattern)."""
        o = _options(0)
        o.max_mem = self.MAX_MEM
        s = _re2.Set(_UNANCHORED, o)
        for p in patterns:
            src = f"(?i:{p.pattern})" if p.flags & IGNORECASE else p.pattern
            if s.Add(src.encode("utf-8", "surrogatepass")) < 0:
                raise PatternError(f"cannot combine /{p.pattern}/ with the others")
        if not s.Compile():
            raise PatternError("the patterns are too large to combine")
        self._set = s

    def matching(self, value: str) -> list[int]:
        """The positions (in the order given) of the patterns that match somewhere in `value`."""
        return self._set.Match(value.encode("utf-8", "surrogatepass"))

    def __reduce__(self):  # type: ignore[no-untyped-def]
        raise TypeError("PatternSet is rebuilt by the router, not pickled")
