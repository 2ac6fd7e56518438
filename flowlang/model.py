"""The compiled program: plain frozen data the runtime reads, with no knowledge of SIP or asyncio."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from .diagnostics import Diagnostic, Position
from .events import HANDLED_EVENTS
from .frozen import fast_init

if TYPE_CHECKING:
    from .routing import Router

EMPTY: Mapping[str, str] = MappingProxyType({})

# ------------------------------------------------------------------ templates

_FIELD = re.compile(r"\{\{|\}\}|\{([A-Za-z0-9_]+)\}")


@fast_init
@dataclass(frozen=True, slots=True)
class Template:
    """A string with `{name}` fields, filled from the call's values when the action runs.

    A name with no value stays literally `{name}` in the output, so a missing value shows in the log
    instead of silently vanishing; rendering never raises. `{{` and `}}` stand for braces.
    """

    source: str
    parts: tuple[str | tuple[str], ...]

    @staticmethod
    def parse(text: str) -> Template:
        """Split once at compile time so rendering is a join (the checker has already vetted braces)."""
        parts: list[str | tuple[str]] = []
        pos = 0
        for m in _FIELD.finditer(text):
            if m.start() > pos:
                parts.append(text[pos : m.start()])
            tok = m.group(0)
            if tok == "{{":
                parts.append("{")
            elif tok == "}}":
                parts.append("}")
            else:
                parts.append((m.group(1),))
            pos = m.end()
        if pos < len(text):
            parts.append(text[pos:])
        merged: list[str | tuple[str]] = []
        for p in parts:
            if isinstance(p, str) and merged and isinstance(merged[-1], str):
                merged[-1] = merged[-1] + p
            else:
                merged.append(p)
        return Template(text, tuple(merged))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p[0] for p in self.parts if isinstance(p, tuple))

    @property
    def is_constant(self) -> bool:
        return all(isinstance(p, str) for p in self.parts)

    def render(self, values: Mapping[str, object]) -> str:
        out: list[str] = []
        for p in self.parts:
            if type(p) is str:
                out.append(p)
            else:
                v = values.get(p[0]) if values is not None else None
                out.append("{" + p[0] + "}" if v is None else str(v))
        return "".join(out)

    def __str__(self) -> str:
        return self.source


def template_fields(text: str) -> list[tuple[int, str]]:
    """(offset, name) of each `{name}` field in a text, in order (`{{` and `}}` are not fields)."""
    return [(m.start(), m.group(1)) for m in _FIELD.finditer(text) if m.group(1) is not None]


def template_problems(text: str) -> list[tuple[int, str]]:
    """(offset, message) for braces that do not form `{name}`, checked at compile time."""
    problems: list[tuple[int, str]] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "{":
            if text.startswith("{{", i):
                i += 2
                continue
            m = re.match(r"\{([A-Za-z0-9_]+)\}", text[i:])
            if not m:
                problems.append((i, "a '{' in a text must start a {name} field (write '{{' for a brace)"))
                i += 1
                continue
            i += m.end()
            continue
        if c == "}":
            if text.startswith("}}", i):
                i += 2
                continue
            problems.append((i, "a '}' in a text must close a {name} field (write '}}' for a brace)"))
        i += 1
    return problems


# ------------------------------------------------------------------ declarations

Transport = Literal["udp", "tcp", "tls", "ws", "wss"]


@fast_init
@dataclass(frozen=True, slots=True)
class Listen:
    transport: str
    host: str
    port: int


# Call limits and timers when the script does not set them (docs/language.md, "Call limits").
# A phone rarely needs more than a handful of calls at once (a call, one on hold, a transfer, a
# conference: baresip allows 4); 8 leaves room and still stops one account from taking every media port
# (issue 9: one user held 2,449 calls). A line carries what its provider sells; 100 bounds what one
# trunk, or a packet spoofed from its address, can hold.
DEFAULT_MAX_CALLS_PER_USER = 8
DEFAULT_MAX_CALLS_PER_LINE = 100
# Four hours by default (issue 9: one client must not hold a call, and its media ports, forever; a
# spoofed provider call the far end never hangs up is the case session timers do not cover when no
# leg asks for them). Long enough for any meeting; `max call duration off` lifts it. The call runner
# compacts cancelled timers out of its heap, so ended calls leave no 4-hour entry behind.
DEFAULT_MAX_CALL_DURATION: float | None = 4 * 3600.0


@fast_init
@dataclass(frozen=True, slots=True)
class ServerConfig:
    listen: tuple[Listen, ...] = ()
    domain: str | None = None
    realm: str | None = None
    rtp_ports: tuple[int, int] | None = None
    user_agent: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    timezone: str | None = None  # default zone for `time`/`days` conditions; None = the call's own zone
    control: str | None = None        # the control endpoint's "HOST:PORT" or "off"; the CLI's --control wins
    control_token: str | None = None  # its token (`control token env NAME`); the CLI's --control-token wins
    # None = off; seconds. A call is ended (BYE on both legs, `hangup` saying why) when it reaches the
    # duration, or when no RTP has flowed either way for the timeout.
    max_call_duration: float | None = DEFAULT_MAX_CALL_DURATION
    rtp_timeout: float | None = None
    max_calls: int | None = None  # calls in the whole server at once; None = no limit but the media ports
    # the limit of a user or line that sets none (the compiled User/Line carries its effective limit)
    max_calls_per_user: int | None = DEFAULT_MAX_CALLS_PER_USER
    max_calls_per_line: int | None = DEFAULT_MAX_CALLS_PER_LINE
    recordings: str | None = None  # the folder `record` writes into (absolute; the compiler sets the default)


@fast_init
@dataclass(frozen=True, slots=True)
class User:
    name: str
    password: str
    caller_id: str | None = None
    max_calls: int | None = None  # calls the user is in at once, placed or received; None = no limit
    position: Position | None = None
    # `legacy-digest`: the phone may answer digest without qop (RFC 2069), which the server otherwise
    # refuses because such an answer carries no nonce-count (docs/security.md)
    legacy_digest: bool = False


@fast_init
@dataclass(frozen=True, slots=True)
class Line:
    name: str
    server_host: str
    server_port: int = 5060
    transport: str = "udp"
    username: str = ""
    auth_username: str | None = None
    password: str = ""
    realm: str | None = None
    outbound_proxy: str | None = None
    register_every: int | None = None
    numbers: tuple[str, ...] = ()
    caller_id: str | None = None
    codecs: tuple[str, ...] = ()
    display: str | None = None
    # other addresses the provider sends calls from (IP or CIDR network, normalised), any port
    trust: tuple[str, ...] = ()
    position: Position | None = None
    # calls through the line at once, both directions (it is channel ZERO's or ONE's peer); None = no limit
    max_calls: int | None = None


def caller_identity(user: User) -> str:
    """The caller id a user's calls carry: the account's `caller-id` when set, else its name.

    The authenticated account decides it, never what the phone wrote in From, so `callflow explain`
    and the running server show the same identity (the user's calls go out with it).
    """
    return user.caller_id or user.name


# ------------------------------------------------------------------ actions


@fast_init
@dataclass(frozen=True, slots=True)
class Target:
    kind: Literal["user", "line"]
    name: str
    number: str | None = None  # rendered by decide(); None = keep the dialled number


@fast_init
@dataclass(frozen=True, slots=True)
class Accept:
    targets: tuple[Target, ...]
    timeout: float | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class Reject:
    code: int
    reason: str


@fast_init
@dataclass(frozen=True, slots=True)
class Hangup:
    pass


@fast_init
@dataclass(frozen=True, slots=True)
class Log:
    template: Template


@fast_init
@dataclass(frozen=True, slots=True)
class SetCallerId:
    value: Template


@fast_init
@dataclass(frozen=True, slots=True)
class SetHeader:
    name: str
    value: Template


@fast_init
@dataclass(frozen=True, slots=True)
class Play:
    file: str
    answered: bool = False


# `gather`: answer, play a prompt, collect DTMF digits, then branch on them (docs/language.md, "gather").
# Defaults: the whole entry within 5 s of the prompt's end, at most 3 s between digits, `#` ends it.
GATHER_TIMEOUT = 5.0
GATHER_DIGIT_TIMEOUT = 3.0
GATHER_TERMINATOR = "#"
GATHER_MAX_DIGITS = 20  # without `max` and without keys (an `else` that takes any number)


@fast_init
@dataclass(frozen=True, slots=True)
class Record:
    """A voicemail: answer, play `prompt` (if any) and a beep, then record the caller into `name` (a
    relative `{field}` template, `{time}` included) inside `folder`, until `max_seconds`,
    `silence_seconds` without voice (None: off), `#` or hangup; then the next statement."""

    name: str
    folder: str
    max_seconds: float = 120.0
    silence_seconds: float | None = 5.0
    prompt: str | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class RecordCall:
    """Record both legs from now until the call ends into `name` inside `folder`: `mixed` (one mono
    file), `per leg` (`NAME.zero.wav` and `NAME.one.wav`) or `both`."""

    name: str
    folder: str
    mix: str = "mixed"


@fast_init
@dataclass(frozen=True, slots=True)
class SendDtmf:
    """Press `digits` (0-9, *, #, A-D) on the phone of `channel` ("ZERO": the caller, "ONE": the party
    dialled): RFC 4733 telephone-events where that leg negotiated them, else SIP INFO; the next
    statement runs at once (the digits go out meanwhile, `DTMF_SEND_DURATION` seconds each)."""

    digits: str
    channel: str = "ZERO"


DTMF_SEND_DURATION = 0.1  # seconds each key of `send dtmf` is held (and 0.1 s between keys)
DTMF_SEND_MAX = 64        # keys one `send dtmf` may press (the SDK's send_dtmf limit)

Action = Log | SetCallerId | SetHeader | Play | Record | RecordCall | SendDtmf


@fast_init
@dataclass(frozen=True, slots=True)
class GatherBranch:
    """`when "1", nothing ...` or `else ...`: the plan that runs when the entry is one of `keys`
    (digit strings), nothing (`nothing`: no digit before the timeout, or the terminator alone), or,
    for `else`, anything no other branch takes."""

    keys: tuple[str, ...]
    nothing: bool
    is_else: bool
    plan: tuple[Attempt, ...]
    # per attempt, per accept target: its number rewrite when it uses a value known only at run time
    # (`{digits}`, a capture); rendered when the branch runs. None = the target's number as compiled.
    numbers: tuple[tuple[Template | None, ...], ...] = ()

    def rendered_plan(self, values: Mapping[str, object]) -> tuple[Attempt, ...]:
        """The plan with its accepts' number rewrites filled from `values` (the call's values, the
        captures and `digits`); the compiled plan itself when it has none."""
        if not any(t is not None for ts in self.numbers for t in ts):
            return self.plan
        out: list[Attempt] = []
        for attempt, tpls in zip(self.plan, self.numbers, strict=True):
            t = attempt.terminal
            if isinstance(t, Accept) and any(tpl is not None for tpl in tpls):
                targets = tuple(tg if tpl is None else Target(tg.kind, tg.name, tpl.render(values))
                                for tg, tpl in zip(t.targets, tpls, strict=True))
                attempt = Attempt(attempt.actions, Accept(targets, t.timeout))
            out.append(attempt)
        return tuple(out)


@fast_init
@dataclass(frozen=True, slots=True)
class Gather:
    """Answer the call, play `prompt` (None: no prompt), collect up to `max_digits` digits (ended by
    `terminator`, `digit_timeout` seconds without a digit, or `timeout` seconds after the prompt),
    replay the prompt up to `retries` times while the entry is nothing or no branch's key, then run
    the branch the entry selects (`branch`). The digits are `{digits}` in the branch's texts."""

    prompt: str | None
    max_digits: int
    terminator: str | None
    timeout: float
    digit_timeout: float
    retries: int
    branches: tuple[GatherBranch, ...]

    @property
    def keys(self) -> frozenset[str] | None:
        """The entries a branch names (None when no branch names one: any entry is taken)."""
        keys = frozenset(k for b in self.branches for k in b.keys)
        return keys or None

    def branch(self, digits: str) -> GatherBranch | None:
        """The branch for an entry: the one naming it; for nothing the `nothing` branch, else `else`;
        for an entry no branch names `else`, else `nothing`. None only if no branch fits (the
        checker requires a `nothing` or `else` branch, so a compiled Gather always has one)."""
        fallback: list[GatherBranch] = []
        for b in self.branches:
            if digits and digits in b.keys:
                return b
        for b in self.branches:
            if (not digits and b.nothing) or (digits and b.is_else):
                return b
            if b.nothing or b.is_else:
                fallback.append(b)
        return fallback[0] if fallback else None


Terminal = Accept | Reject | Hangup | Gather


@fast_init
@dataclass(frozen=True, slots=True)
class Attempt:
    """Actions run in order, then the terminal; the next attempt runs only if an Accept failed."""

    actions: tuple[Action, ...]
    terminal: Terminal | None


@fast_init
@dataclass(frozen=True, slots=True)
class Decision:
    rule: str  # "office.flow:12:1"
    captures: tuple[str, ...]
    plan: tuple[Attempt, ...]
    named: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    # call values + captures, ready for Template.render
    values: Mapping[str, str] = field(default_factory=lambda: EMPTY)


@fast_init
@dataclass(frozen=True, slots=True)
class CallInfo:
    from_type: Literal["user", "line", "unknown"]
    from_name: str | None
    caller_id: str
    caller_name: str | None
    to: str
    headers: Mapping[str, str] = field(default_factory=lambda: EMPTY)  # lower-case names
    at: datetime | None = None  # aware; None = now

    def values(self) -> dict[str, str]:
        """The call's fields under the names templates use."""
        return {
            "to": self.to,
            "from": self.from_name or "",
            "from_type": self.from_type,
            "caller_id": self.caller_id,
            "caller_name": self.caller_name or "",
        }


# the events a handler can observe, from the one table of events (flowlang/events.py)
EVENTS = HANDLED_EVENTS


@fast_init
@dataclass(frozen=True, slots=True)
class Handler:
    event: str
    line: str | None
    user: str | None
    actions: tuple[Action, ...]
    position: Position


# ------------------------------------------------------------------ the program


@dataclass(frozen=True)
class Program:
    source_hash: str
    files: tuple[str, ...]
    server: ServerConfig
    users: Mapping[str, User]
    lines: Mapping[str, Line]
    warnings: tuple[Diagnostic, ...]
    rules: tuple[Any, ...] = field(default=(), repr=False)  # routing.Rule, in source order
    all_handlers: tuple[Handler, ...] = field(default=(), repr=False)
    _router: Router | None = field(default=None, repr=False, compare=False)
    _by_event: Mapping[str, tuple[Handler, ...]] = field(default_factory=lambda: EMPTY, repr=False, compare=False)
    version: str = ""  # a short hash of the program's files (flowlang/loader.py), the same for the same files
    reads: tuple[str, ...] = field(default=(), repr=False, compare=False)  # absolute paths of every file it reads

    def decide(self, call: CallInfo) -> Decision | None:
        """The first `on incoming` rule that takes the call, top to bottom; None = no rule does (404)."""
        if self._router is None:
            return None
        return self._router.decide(call)

    def handlers(
        self, event: str, *, line: str | None = None, user: str | None = None
    ) -> tuple[Handler, ...]:
        """Every handler for the event whose line/user filter matches, in source order."""
        hs = self._by_event.get(event, ())
        if not hs:
            return ()
        return tuple(
            h for h in hs if (h.line is None or h.line == line) and (h.user is None or h.user == user)
        )
