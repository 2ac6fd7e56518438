"""JSON views of a running server: the program, users, lines, calls and counters.

Plain functions of the engine (and the reloader) returning JSON-ready dicts, so the HTTP layer, the
live page and the tests share one shape. They read what the objects have with `getattr` fallbacks:
the line client, call session and reloader are being reworked in parallel, and a view must never
fail because an attribute moved. Times are Unix seconds (floats); durations are seconds.
"""

from __future__ import annotations

import time
from typing import Any

from flowlang.model import Program


class ControlState:
    """What the control endpoint looks into: the engine, and optionally the reloader, the metrics and
    the call-records store (an object with `.recent(limit) -> list[dict]`)."""

    def __init__(self, engine: Any, reloader: Any = None, metrics: Any = None, records: Any = None,
                 started_at: float | None = None) -> None:
        self.engine = engine
        self.reloader = reloader
        self.metrics = metrics
        self._records = records
        self.started_at = started_at if started_at is not None else time.time()
        # load time of each program object we have seen, as a fallback when the reloader keeps none
        self._seen_program: tuple[int, float] | None = None
        # per line, what its last registration attempt came to (from the bus), for a LineClient that
        # keeps none: {"last_response", "backoff", "next_attempt" (Unix seconds)}
        self.line_results: dict[str, dict[str, Any]] = {}
        # per active call, [created_at, answered_at] (Unix seconds), for a session without snapshot()
        self.call_times: dict[str, list[float | None]] = {}
        bus = getattr(engine, "bus", None)
        if bus is not None:
            bus.subscribe(self._on_event)

    def _on_event(self, event: Any) -> None:
        name = event.name
        f = event.fields
        if name in ("created", "connected", "closed"):
            self._call_time(name, f.get("call"))
            return
        if not name.startswith("line_"):
            return
        line = str(f.get("line"))
        if name == "line_registered":
            self.line_results[line] = {"last_response": f"{f.get('code')} {f.get('reason') or ''}".strip(),
                                       "backoff": None, "next_attempt": None}
        elif name == "line_register_failed":
            retry = str(f.get("retry_in") or "").rstrip("s")
            backoff = float(retry) if retry.replace(".", "", 1).isdigit() else None
            self.line_results[line] = {"last_response": f"{f.get('code')} {f.get('reason') or ''}".strip(),
                                       "backoff": backoff,
                                       "next_attempt": time.time() + backoff if backoff is not None else None}
        elif name == "line_unregistered":
            self.line_results[line] = {"last_response": f"{f.get('code')} (unregistered)",
                                       "backoff": None, "next_attempt": None}

    def _call_time(self, name: str, call: object) -> None:
        key = str(call)
        if name == "created":
            if len(self.call_times) < 100_000:  # bounded, should a `closed` ever be missed
                self.call_times[key] = [time.time(), None]
        elif name == "connected":
            times = self.call_times.get(key)
            if times is not None and times[1] is None:
                times[1] = time.time()
        else:
            self.call_times.pop(key, None)

    @property
    def records(self) -> Any:
        return self._records if self._records is not None else getattr(self.engine, "records", None)

    def wall(self, loop_time: float) -> float:
        """A loop-clock time (engine.now()) as Unix seconds."""
        return time.time() - (self.engine.now() - loop_time)

    def program_loaded_at(self, program: object) -> float:
        loaded = getattr(self.reloader, "loaded_at", None)
        if isinstance(loaded, int | float):
            return float(loaded)
        if self._seen_program is None or self._seen_program[0] != id(program):
            first = self._seen_program is None
            self._seen_program = (id(program), self.started_at if first else time.time())
        return self._seen_program[1]


def version_id(program: object) -> str | None:
    """The program's version id: the reloader's when it has one, else the first 12 hex digits of
    the sources' hash (what `callflow check` prints for the same files)."""
    explicit = getattr(program, "version", None) or getattr(program, "version_id", None)
    if isinstance(explicit, str):
        return explicit
    digest = getattr(program, "source_hash", None)
    return digest[:12] if isinstance(digest, str) else None


def program_view(state: ControlState) -> dict[str, Any]:
    """{"version", "loaded_at", "files", "users", "lines", "rules", "last_reload_error", "started_at"}."""
    program = state.engine.program
    reloader = state.reloader
    error = getattr(reloader, "last_error", None)
    if error is not None and not isinstance(error, str | dict):
        error = str(error)
    version = getattr(reloader, "version", None)
    return {
        "version": version if isinstance(version, str) else version_id(program),
        "loaded_at": state.program_loaded_at(program) if program is not None else None,
        "files": list(getattr(program, "files", ()) or ()),
        "users": len(getattr(program, "users", ()) or ()),
        "lines": len(getattr(program, "lines", ()) or ()),
        "rules": len(getattr(program, "rules", ()) or ()),
        "last_reload_error": error,
        "started_at": state.started_at,
        "server_version": server_version(),
    }


def users_view(state: ControlState) -> list[dict[str, Any]]:
    """Each user of the program with its live contacts: [{"user", "contacts": [{"contact",
    "address", "transport", "expires_in", "user_agent"}]}], users in name order."""
    engine = state.engine
    now = engine.now()
    out = []
    for name in sorted(engine.users):
        try:
            bindings = engine.registrar.lookup(name, now)
        except Exception:  # a store error must not take the view down
            bindings = []
        contacts = []
        for b in bindings:
            source = getattr(b, "source", None)
            contacts.append({
                "contact": getattr(b, "contact", None),
                "address": f"{source[0]}:{source[1]}" if source else None,
                "transport": getattr(b, "transport", None),
                "expires_in": max(0, int(getattr(b, "expires_at", now) - now)),
                "user_agent": getattr(b, "user_agent", None),
            })
        out.append({"user": name, "contacts": contacts})
    return out


def _state_name(value: object) -> str | None:
    if value is None:
        return None
    return str(getattr(value, "value", None) or getattr(value, "name", None) or value).lower()


def lines_view(state: ControlState) -> list[dict[str, Any]]:
    """[{"line", "state", "server", "transport", "registered_until", "last_response", "next_attempt",
    "backoff", "failures"}, and in a cluster "lease": {"holder", "held_here", "state", "expires", "carried"}]; times
    as Unix seconds, backoff in seconds; None where unknown.

    Reads the line's machine (runtime/lines: state, code and reason, expires_at, retry_at, failures)
    and falls back to what the bus said for a line client that keeps none of it."""
    engine = state.engine
    now = engine.now()
    out = []
    leases_of = getattr(getattr(engine, "leases", None), "holding", None)
    leases = leases_of() if callable(leases_of) else {}
    for name, line in sorted(engine.lines.items()):
        config = getattr(line, "config", None)
        machine = getattr(line, "machine", line)
        host = getattr(config, "server_host", None)
        port = getattr(config, "server_port", None)
        seen = state.line_results.get(name, {})
        code = getattr(machine, "code", None)
        if isinstance(code, int) and code > 0:
            last = f"{code} {getattr(machine, 'reason', '') or ''}".strip()
        elif code == 0 and getattr(machine, "reason", None):
            last = str(machine.reason)  # no SIP answer: the reason says what happened
        else:
            last = seen.get("last_response")
        expires_at = getattr(machine, "expires_at", None)
        retry_at = getattr(machine, "retry_at", None)
        line_state = _state_name(getattr(line, "state", None))
        if isinstance(retry_at, int | float):
            next_attempt: float | None = state.wall(retry_at)
            # a wait after failures is a backoff; a registered line's next REGISTER is a refresh
            failed = bool(getattr(machine, "failures", 0)) or line_state in ("rejected", "failed_waiting")
            backoff = max(0.0, retry_at - now) if failed else None
        elif machine is not line:  # the machine keeps no retry time: none pending
            next_attempt, backoff = None, None
        else:
            next_attempt, backoff = seen.get("next_attempt"), seen.get("backoff")
        out.append({
            "line": name,
            "state": line_state,
            "server": f"{host}:{port}" if host else None,
            "transport": getattr(config, "transport", None),
            "registered_until": state.wall(expires_at) if isinstance(expires_at, int | float) else None,
            "last_response": last,
            "next_attempt": next_attempt,
            "backoff": backoff,
            "failures": getattr(machine, "failures", None),
        })
        if name in leases:  # a cluster: which node holds the line's lease (runtime/lines/lease.py)
            lease = leases[name]
            out[-1]["lease"] = {"holder": lease["holder"], "held_here": lease["held"], "state": lease["state"],
                                "expires": lease["expires"], "carried": bool(lease.get("carried"))}
    return out


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def calls_view(state: ControlState) -> list[dict[str, Any]]:
    """Active calls, oldest first: each `call.snapshot()` (see calls.py) or, for a session without
    one, {"call", "state", "caller", "to", "legs": [...]} from its attributes."""
    out = []
    for call in list(state.engine.calls.values()):
        snapshot = getattr(call, "snapshot", None)
        if callable(snapshot):
            try:
                out.append(_jsonable(snapshot()))
                continue
            except Exception:  # fall back to what the attributes say
                pass
        out.append(_call_fallback(state, call))
    out.sort(key=lambda c: c.get("created_at") or 0)
    return out


def _call_fallback(state: ControlState, call: Any) -> dict[str, Any]:
    source = getattr(call, "source", None)
    legs = [{"channel": "ZERO", "peer_type": getattr(call, "peer_type", None),
             "peer": getattr(call, "peer_name", None),
             "address": f"{source[0]}:{source[1]}" if source else None,
             "transport": getattr(call, "transport", None), "codec": None}]
    leg_b = getattr(call, "leg_b", None)
    if leg_b is not None:
        target = getattr(leg_b, "target", None)
        dest = getattr(leg_b, "destination", None)
        legs.append({"channel": "ONE", "peer_type": getattr(target, "kind", None),
                     "peer": getattr(target, "name", None),
                     "address": f"{dest[0]}:{dest[1]}" if dest else None,
                     "transport": getattr(leg_b, "transport", None), "codec": None})
    created_at, answered_at = state.call_times.get(str(getattr(call, "id", None)), (None, None))
    return {"call": getattr(call, "id", None), "state": _state_name(getattr(call, "state", None)),
            "created_at": created_at, "answered_at": answered_at,
            "duration": time.time() - answered_at if answered_at else None, "legs": legs,
            "caller": getattr(call, "caller_id", None), "to": getattr(call, "dialled", None)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return _state_name(value) if hasattr(value, "value") else str(value)


def records_view(state: ControlState, limit: int = 20) -> list[dict[str, Any]] | None:
    """The most recent call records, newest first, or None when the server keeps none."""
    records = state.records
    if records is None or not hasattr(records, "recent"):
        return None
    try:
        return _jsonable(list(records.recent(limit)))
    except Exception as exc:  # the page shows why instead of failing whole
        return [{"error": str(exc)}]


def graph_view(program: Program | None) -> dict[str, Any]:
    """The routing as data for the page: {"users", "lines", "rules": [{"id", "from", "to", "when",
    "steps": [text]}], "dot"}; the page draws it without Graphviz."""
    if program is None:
        return {"users": [], "lines": [], "rules": [], "dot": None}
    from flowlang import Accept, Hangup, Reject, to_dot

    rules = []
    for rule in getattr(program, "rules", ()):
        steps = []
        for attempt in rule.plan:
            terminal = attempt.terminal
            if isinstance(terminal, Accept):
                steps.append("accept to " + ", ".join(f"{t.kind} {t.name}" for t in terminal.targets)
                             + (f" timeout {terminal.timeout:g}s" if terminal.timeout else ""))
            elif isinstance(terminal, Reject):
                steps.append(f"reject {terminal.code} {terminal.reason}")
            elif isinstance(terminal, Hangup):
                steps.append("hang up")
            else:
                steps.append(type(terminal).__name__.lower())
        peer = "any caller" if rule.peer_kind == "any" else f"{rule.peer_kind} {rule.peer_name or 'any'}"
        rules.append({"id": str(rule.id), "from": peer,
                      "to": ", ".join(str(m) for m in rule.matchers) or "any number",
                      "when": " and ".join(c.text for c in rule.conditions) or None, "steps": steps})
    try:
        dot = to_dot(program)
    except Exception:
        dot = None
    return {"users": sorted(program.users), "lines": sorted(program.lines), "rules": rules, "dot": dot}


def server_version() -> str:
    """The installed callflow package's version (pyproject's), or "unknown" from a bare checkout."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("callflow")
    except PackageNotFoundError:
        return "unknown"
