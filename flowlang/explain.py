"""`callflow explain`: which rule takes a call and what it would do, step by step, without any SIP."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from zoneinfo import ZoneInfo

from .diagnostics import Diagnostic, FlowError, only_flow_errors
from .model import (
    Accept,
    Attempt,
    CallInfo,
    Gather,
    Hangup,
    Log,
    Play,
    Program,
    Record,
    RecordCall,
    Reject,
    SendDtmf,
    SetCallerId,
    SetHeader,
    caller_identity,
)
from .routing import Rule, now

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _bad(what: str, message: str) -> FlowError:
    return FlowError([Diagnostic(what, 0, 0, "error", message)])


def parse_from(program: Program, spec: str, caller_id: str | None) -> tuple[str, str | None, str]:
    """`user:alice`, `line:itsp1` or `unknown` -> (from_type, from_name, caller id).

    A user's caller id is the one the running server gives the call: the account's `caller-id`, else
    its name (model.caller_identity), whatever the phone writes in From; so `caller_id` (the From
    number a provider or an unknown caller sends) is refused for a user when it differs, as an
    explanation with it would describe a call that cannot happen. Raises FlowError.
    """
    kind, sep, name = spec.partition(":")
    kind = kind.strip().lower()
    name = name.strip()
    if kind in ("unknown", "any", "anonymous") and not name:
        return "unknown", None, caller_id or "anonymous"
    if kind not in ("user", "line") or not sep or not name:
        raise _bad("--from", f"'{spec}' is not user:NAME, line:NAME or unknown")
    table = program.users if kind == "user" else program.lines
    if name not in table:
        known = ", ".join(sorted(table)) or "none"
        raise _bad("--from", f"no {kind} {name} in this program (known: {known})")
    if kind == "user":
        identity = caller_identity(program.users[name])
        if caller_id is not None and caller_id != identity:
            source = "its caller-id" if program.users[name].caller_id else "its name (it has no caller-id)"
            raise _bad("--caller-id", f"a call from user {name} always carries {source}, {identity}, "
                                      "whatever the phone sends; --caller-id is for calls from a line or "
                                      "an unknown caller")
        return kind, name, identity
    return kind, name, caller_id if caller_id is not None else "unknown"


def _aware(program: Program, at: datetime | None) -> datetime:
    if at is None:
        return now()
    if at.tzinfo is not None:
        return at
    if program.server.timezone:
        return at.replace(tzinfo=ZoneInfo(program.server.timezone))
    return at.astimezone()  # naive: the machine's local time


@only_flow_errors
def explain(
    program: Program,
    from_spec: str,
    to: str,
    at: datetime | None = None,
    caller_id: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> str:
    """Plain text an operator can read: the call, rules skipped on conditions, the decision, the plan."""
    kind, name, cid = parse_from(program, from_spec, caller_id)
    when = _aware(program, at)
    call = CallInfo(kind, name, cid, None, to, {k.lower(): v for k, v in (headers or {}).items()}, when)  # type: ignore[arg-type]
    who = f"{kind} {name}" if name else "an unknown caller"
    out = [f"Call from {who} (caller id {cid}) to {to}, at {when:%Y-%m-%d %H:%M} {when:%Z}".rstrip()
           + f" ({WEEKDAYS[when.weekday()]})", ""]
    decided: Rule | None = None
    caps: tuple[tuple[str, ...], dict[str, str]] | None = None
    for rule in program.rules:
        if not rule.peer_matches(call):
            if not rule.from_lines and kind == "line" and rule.match_number(to) is not None:
                out.append(f"rule {rule.id} matches the number but is skipped: it has no `from` and would send "
                           "a call from a line out through a line (say `from line ...` to allow that)")
                out.append(f"    {rule.header}")
            continue
        caps = rule.match_number(to)
        if caps is None:
            continue
        failed = [c.text for c in rule.conditions if not c.test(call, when)]
        if failed:
            out.append(f"rule {rule.id} matches the number but is skipped: "
                       + "; ".join(f"`{t}` does not hold" for t in failed))
            out.append(f"    {rule.header}")
            continue
        decided = rule
        break
    if decided is None or caps is None:
        out.append("No rule takes this call: it is refused with 404 Not Found (no route).")
        return "\n".join(out) + "\n"
    decision = decided.decision(call, caps[0], caps[1])
    out.append(f"rule {decided.id} decides:")
    out.append(f"    {decided.header}")
    if decision.captures or decision.named:
        shown = [f"\\{i} = \"{c}\"" for i, c in enumerate(decision.captures, 1)]
        shown += [f"\\{k} = \"{v}\"" for k, v in decision.named.items()]
        out.append("  captures: " + ", ".join(shown))
    out.append("")
    out.extend(plan_lines(decision.plan, decision.values, to))
    return "\n".join(out) + "\n"


def plan_lines(plan: tuple[Attempt, ...], values: Mapping[str, str], to: str) -> list[str]:
    lines: list[str] = []
    for n, attempt in enumerate(plan, 1):
        steps = [_action(a, values) for a in attempt.actions]
        t = attempt.terminal
        if isinstance(t, Accept):
            targets = []
            for tg in t.targets:
                num = tg.number if tg.number is not None else to
                targets.append(f"{tg.kind} {tg.name}" + (f" dialling {num}" if tg.kind == "line" else ""))
            ring = "ring " + (" and ".join(targets) if len(targets) < 3 else ", ".join(targets))
            ring += " at once" if len(targets) > 1 else ""
            ring += f", for up to {_secs(t.timeout)}" if t.timeout else ", until answered or refused"
            steps.append(ring)
        elif isinstance(t, Reject):
            steps.append(f"refuse the call: {t.code} {t.reason}")
        elif isinstance(t, Hangup):
            steps.append("hang up")
        elif isinstance(t, Gather):
            steps.append(_gather_text(t))
        lines.append(f"  {n}. " + "; then ".join(steps))
        if isinstance(t, Gather):
            for b in t.branches:
                keys = [f'"{k}"' for k in b.keys] + (["nothing"] if b.nothing else []) + (["else"] if b.is_else else [])
                lines.append(f"     on {', '.join(keys)}:")
                lines.extend("   " + ln for ln in plan_lines(b.rendered_plan(values), values, to))
        if isinstance(t, Accept):
            if n < len(plan):
                lines.append("     if that fails (busy, no answer in time, not registered, 4xx/5xx/6xx):")
            else:
                lines.append("     if that fails: the call is refused with the failure's status")
    return lines


def _gather_text(g: Gather) -> str:
    prompt = f'play "{g.prompt}" and ' if g.prompt else ""
    end = f', "{g.terminator}" ends it' if g.terminator else ""
    again = f"; asked again up to {g.retries} time(s) on nothing or a wrong entry" if g.retries else ""
    return (f"answer the call, {prompt}collect up to {g.max_digits} digit(s) (within {_secs(g.timeout)} of the "
            f"prompt, {_secs(g.digit_timeout)} between digits{end}){again}; then by the entry")


def _secs(s: float) -> str:
    return f"{int(s)}s" if float(s).is_integer() else f"{s}s"


def _action(a: object, values: Mapping[str, str]) -> str:
    if isinstance(a, Log):
        return f'log "{a.template.render(values)}"'
    if isinstance(a, SetCallerId):
        return f'set caller id to "{a.value.render(values)}"'
    if isinstance(a, SetHeader):
        return f'set header {a.name}: "{a.value.render(values)}"'
    if isinstance(a, Play):
        return f'play "{a.file}"' + (" (answering the call)" if a.answered else " (early media)")
    if isinstance(a, Record):
        silence = "off" if a.silence_seconds is None else _secs(a.silence_seconds)
        prompt = f'prompt "{a.prompt}", ' if a.prompt else ""
        return (f'answer, {prompt}beep, record the caller into "{a.name}" in {a.folder} '
                f"(max {_secs(a.max_seconds)}, silence {silence}, # stops)")
    if isinstance(a, SendDtmf):
        whose = "the caller's" if a.channel == "ZERO" else "the dialled party's"
        return f'press "{a.digits}" on {whose} phone (channel {a.channel})'
    if isinstance(a, RecordCall):
        return f'record the call ({a.mix}) into "{a.name}" in {a.folder} until it ends'
    return str(a)
