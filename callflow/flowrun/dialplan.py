"""The dialplan: runs a compiled flowlang Program on the public SDK (callflow.sdk.SipServer).

It applies the program's declarations to the server (users, lines: only what changed), decides each
incoming call with the program the call started with, walks the decision's attempts (`otherwise`
means: the accept before failed, try the next), and runs the observing handlers on every event.
It uses only the SDK's public operations and events, as any Python program could (issue 12).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from callflow.sdk import (
    EVENT_NAMES,
    RING_TIMEOUT,
    CallSession,
    Channel,
    ChatMessage,
    Event,
    Failure,
    SipServer,
    Target,
    beep_file,
    logfmt_value,
)
from flowlang.events import BY_NAME, EVENTS, EventSpec
from flowlang.model import (
    DTMF_SEND_DURATION,
    Accept,
    Attempt,
    CallInfo,
    Decision,
    Gather,
    Hangup,
    Line,
    Log,
    Play,
    Program,
    Record,
    RecordCall,
    Reject,
    SendDtmf,
    ServerConfig,
    SetCallerId,
    SetHeader,
)

log = logging.getLogger("callflow.dialplan")

# An `accept` without `timeout` gives up after RING_TIMEOUT seconds of ringing (callflow.sdk's
# default, 180 s, like RFC 3261 16.6's Timer C): it fails as `timeout` does (480).
__all__ = ["RING_TIMEOUT", "CallFacts", "CallRecords", "Dialplan", "line_settings"]

# event name -> (a call event?, can a handler observe it?): one lookup per event on the hot path
_FROM_TYPE = {"USER": "user", "LINE": "line"}  # the engine's peer_type -> the language's from_type
_KIND: dict[str, tuple[bool, bool]] = {e.name: (e.kind == "call", e.handler is not None) for e in EVENTS if e.bus}


def line_settings(line: Line) -> dict[str, object]:
    """flowlang's Line -> SipServer.add_line's keyword arguments (AddLine), `max calls` included."""
    host = f"[{line.server_host}]" if ":" in line.server_host else line.server_host
    return dict(
        server=f"{host}:{line.server_port}", username=line.username, password=line.password,
        auth_username=line.auth_username, realm=line.realm, transport=line.transport,
        register_every=line.register_every, numbers=tuple(line.numbers), display=line.display,
        caller_id=line.caller_id, outbound_proxy=line.outbound_proxy, codecs=tuple(line.codecs),
        trust=tuple(line.trust), max_calls=line.max_calls,
    )


def apply_call_limits(server: SipServer, config: ServerConfig) -> None:
    """The script's call limits and timers (its server block) onto the server: they apply to calls
    that start from now on; a call keeps the timers it started with. A line's `max calls` goes with
    the line (line_settings)."""
    server.set_limits(max_calls=config.max_calls, max_call_duration=config.max_call_duration,
                      rtp_timeout=config.rtp_timeout)


class Dialplan:
    def __init__(self, server: SipServer, clock: Callable[[], float] = time.monotonic,
                 server_overrides: Mapping[str, object] | None = None) -> None:
        """Route `server`'s calls, transfers and chat by the program `load` swaps in, and run its
        handlers on every event. `clock` gives seconds on a monotonic clock, for `{duration}` (tests
        pass a fake one). `server_overrides`: ServerConfig fields the command line sets (`callflow
        run --max-calls ...`), which win over every program's server block, reloads included."""
        self.server = server
        self.program: Program | None = None
        self.clock = clock
        self.server_overrides = dict(server_overrides or {})
        self.records = CallRecords(live=lambda call_id: server.call_session(call_id) is not None)
        server.on("incoming")(self._incoming)
        for name in sorted(EVENT_NAMES - {"incoming"}):
            server.on(name)(self.on_event)
        server.route_transfer(self.route_transfer)
        server.route_chat(self.route_message)

    def _incoming(self, event: Event) -> None:
        """OnIncomingCall: the handlers that observe it, then the routing decision. A decision that
        raises refuses the call with 500, as the engine does for any router."""
        self.on_event(event)
        call = event.session
        if call is None:
            return  # the caller gave up meanwhile
        try:
            self.route(call)
        except Exception:
            log.exception("call=%s routing failed", call.id)
            call.reject(500, "Server Internal Error (routing)")

    # ---- declarations -----------------------------------------------------------------------------
    def load(self, program: Program) -> dict[str, list[str]]:
        """Swap in a program in one step; returns what changed, for the reload log line."""
        sip = self.server
        changes: dict[str, list[str]] = {"users+": [], "users-": [], "lines+": [], "lines~": [], "lines-": []}
        users_before = sip.users
        for name, user in program.users.items():
            sip.add_user(name, user.password, caller_id=user.caller_id, max_calls=user.max_calls,
                         legacy_digest=user.legacy_digest)
            if name not in users_before:
                changes["users+"].append(name)
        for name in sorted(users_before - program.users.keys()):
            sip.remove_user(name)
            changes["users-"].append(name)
        lines_before = sip.lines
        for name, line in program.lines.items():
            # same settings: same registration, same Call-ID (add_line says whether they changed)
            if sip.add_line(name, **line_settings(line)):  # type: ignore[arg-type]
                sip.register_line(name)
                changes["lines~" if name in lines_before else "lines+"].append(name)
        for name in sorted(lines_before - program.lines.keys()):
            sip.remove_line(name)
            changes["lines-"].append(name)
        server = program.server
        if self.server_overrides:
            server = replace(server, **self.server_overrides)
        apply_call_limits(sip, server)
        self.program = program
        sip.program = program
        return changes

    # ---- routing ------------------------------------------------------------------------------------
    def route(self, call: CallSession) -> None:
        program: Program | None = call.program or self.program  # type: ignore[assignment]
        if program is None:
            call.reject(503, "Service Unavailable (no routing program loaded)")
            return
        info = CallInfo(
            from_type="user" if call.peer_type == "USER" else "line" if call.peer_type == "LINE" else "unknown",
            from_name=call.peer_name, caller_id=call.caller_id, caller_name=call.caller_name, to=call.dialled,
            headers={name.lower(): value for name, value in call.invite.headers},
            at=datetime.now(UTC),
        )
        decision = program.decide(info)
        if decision is None:
            log.info("event=no_route call=%s peer_type=%s peer=%s to=%s reason=%s", call.id, call.peer_type,
                     call.peer_name, call.dialled, '"no on-incoming rule matches this call"')
            call.reject(404, "Not Found (no route)")
            return
        log.info("event=routed call=%s rule=%s", call.id, decision.rule)
        _PlanRun(call, decision, send_dtmf=self.server.send_dtmf).step(None)

    def route_transfer(self, call: object, user: str, target: str) -> tuple[list[Target], Failure | None]:
        """A transfer that user `user`'s phone asked for (REFER) is decided like a new call from that
        user to `target`, with the program the call started with: the targets of the decision's first
        accept (actions such as `play` are not run: the remaining party is mid-call), else its reject."""
        program: Program | None = getattr(call, "program", None) or self.program  # type: ignore[assignment]
        account = self.server.user(user)
        if program is None or account is None:
            return [], Failure(403, "Forbidden (transfers are for a known user's phone)")
        info = CallInfo(from_type="user", from_name=user, caller_id=account.caller_id or user, caller_name=None,
                        to=target, at=datetime.now(UTC))
        decision = program.decide(info)
        if decision is None:
            return [], Failure(404, "Not Found (no route)")
        for attempt in decision.plan:
            terminal = attempt.terminal
            if isinstance(terminal, Accept):
                log.info("event=routed call=%s rule=%s transfer_to=%s", getattr(call, "id", ""), decision.rule,
                         _quote(target))
                return [Target("USER" if t.kind == "user" else "LINE", t.name, t.number)
                        for t in terminal.targets], None
            if isinstance(terminal, Reject):
                return [], Failure(terminal.code, terminal.reason)
            if isinstance(terminal, Hangup):
                break
        return [], Failure(403, "Forbidden (the rules do not connect this transfer)")

    def route_message(self, message: ChatMessage) -> list[Target] | Failure:
        """Where a MESSAGE goes: the targets of the first `accept` of the rule a call from the same
        sender to the same number would take; that rule's `reject` (or no rule) refuses it."""
        program = self.program
        if program is None:
            return Failure(503, "Service Unavailable (no routing program loaded)")
        info = CallInfo(from_type=_FROM_TYPE.get(message.peer_type, "unknown"), from_name=message.peer,
                        caller_id=message.sender, caller_name=None, to=message.to,
                        headers={name.lower(): value for name, value in message.headers}, at=datetime.now(UTC))
        decision = program.decide(info)
        if decision is None:
            return Failure(404, "Not Found (no route)")
        for attempt in decision.plan:
            terminal = attempt.terminal
            if isinstance(terminal, Accept):
                return [Target("USER" if t.kind == "user" else "LINE", t.name, t.number) for t in terminal.targets]
            if isinstance(terminal, Reject):
                return Failure(terminal.code, terminal.reason)
        return Failure(404, "Not Found (the rule accepts no target)")

    # ---- observers ----------------------------------------------------------------------------------
    def on_event(self, event: Event) -> None:
        """Run every handler the event's filter lets through, its text filled from the event's fields
        (flowlang/events.py), the call's own fields from the call record, and defaults for the rest."""
        name = event.name
        fields = event.fields
        kind = _KIND.get(name)
        if kind is None:
            return  # the bus has logged it as event_invalid
        is_call, handled = kind
        if is_call:
            facts = self.records.observe(event, self.clock)
            if not handled:
                return
            call = event.session
            program: Program | None = (call.program if call is not None else None) or self.program  # type: ignore[assignment]
        else:
            facts = None
            program = self.program
        if program is None or not handled:
            return
        if facts is not None:
            # a call handler's `from user/line NAME` is the peer the call came from (its created event)
            line = facts.peer if facts.from_type == "line" else None
            user = facts.peer if facts.from_type == "user" else None
        else:
            line, user = _s(fields.get("line")), _s(fields.get("user"))
        handlers = program.handlers(name, line=line, user=user)
        if not handlers:
            return
        values = self._values(event, BY_NAME[name], facts)
        for handler in handlers:
            for action in handler.actions:
                if isinstance(action, Log):
                    log.info("event=log handler=%s text=%s", name, _quote(action.template.render(values)))
                elif isinstance(action, RecordCall):
                    live = event.session
                    if live is not None:
                        live.record_call(action.folder, action.name, values, action.mix)
                elif isinstance(action, SendDtmf):
                    live = event.session
                    if live is not None:
                        self.server.send_dtmf(live, action.digits, Channel[action.channel], DTMF_SEND_DURATION)

    def _values(self, event: Event, spec: EventSpec, facts: CallFacts | None) -> dict[str, str]:
        """Every field `callflow check` accepts for this event's handlers, as text."""
        # a field the runtime left out shows its documented default, else nothing: never `{name}`
        values: dict[str, str] = {f.name: f.default or "" for f in spec.fields}
        for k, v in event.fields.items():
            if v is not None:
                values[k] = str(v)
        if facts is not None:
            values.update(facts.values())
            if event.name in ("hangup", "closed"):
                values["duration"] = str(facts.duration(self.clock()))
        elif spec.kind == "call":  # a call whose created event this dialplan did not see
            for name in ("from", "from_type", "caller_id", "to"):
                values.setdefault(name, "")
            values["duration"] = "0"
        elif event.name == "user_registered" and event.fields.get("expires") is None:
            values["expires"] = str(self._expires(values.get("user", ""), values.get("contact", "")))
        values["event"] = event.name
        return values

    def _expires(self, user: str, contact: str) -> int:
        """Seconds left of a user's binding, from the location service (0 when it is gone already)."""
        return self.server.user_registrations(user).get(contact, 0)


@dataclass(slots=True)
class CallFacts:
    """What the dialplan knows of one live call from its events: who called whom, when it connected.

    The engine's later events of a call carry only `call` and their own fields; handlers of those
    events may still use `{from}`, `{caller_id}`, `{to}` and `{duration}` (flowlang/events.py,
    CALL_FIELDS). Plain strings and a float, no reference to the call: nothing for a cycle to hold.
    """

    peer: str          # the caller's user or line name ("" when unknown)
    from_type: str     # "user", "line" or "unknown"
    caller_id: str
    to: str
    connected_at: float | None = None  # the clock's seconds at the `connected` event

    def values(self) -> dict[str, str]:
        return {"from": self.peer, "from_type": self.from_type, "caller_id": self.caller_id, "to": self.to}

    def duration(self, now: float) -> int:
        """Whole seconds since connected, rounded; 0 for a call that never connected."""
        return 0 if self.connected_at is None else max(0, round(now - self.connected_at))


class CallRecords:
    """The call facts of every live call, kept from `created` to `closed` (then forgotten).

    observe(event, now) is fed every call event in order; `now` is seconds on any monotonic clock.
    A call whose `closed` never comes (a bug in the emitter) is swept once SWEEP_EVERY calls later,
    with an error logged, so the table cannot grow without bound.
    """

    SWEEP_EVERY = 4096

    def __init__(self, live: Callable[[str], bool] | None = None) -> None:
        self.calls: dict[str, CallFacts] = {}
        self._live = live  # is a call id still known to the engine? (for the sweep)
        self._created = 0

    def observe(self, event: Event, clock: Callable[[], float]) -> CallFacts | None:
        """Update the record of the event's call; returns it (None for an event of an unknown call).

        `clock` gives seconds on a monotonic clock; it is read only for `connected`."""
        fields = event.fields
        call_id = fields.get("call")
        name = event.name
        if name == "created":
            facts = CallFacts(
                peer=_text(fields.get("peer")),
                from_type=_FROM_TYPE.get(fields.get("peer_type"), "unknown"),  # type: ignore[arg-type]
                caller_id=_text(fields.get("caller")), to=_text(fields.get("to")),
            )
            self.calls[call_id] = facts  # type: ignore[index]
            self._created += 1
            if self._created % self.SWEEP_EVERY == 0:
                self._sweep(call_id)  # type: ignore[arg-type]
            return facts
        if name == "closed":
            return self.calls.pop(call_id, None)
        facts = self.calls.get(call_id)
        if facts is not None and name == "connected" and facts.connected_at is None:
            facts.connected_at = clock()
        return facts

    def _sweep(self, keep: str) -> None:
        if self._live is None:
            return
        gone = [c for c in self.calls if c != keep and not self._live(c)]
        for c in gone:
            del self.calls[c]
        if gone:
            log.error("event=event_invalid name=closed reason=%s", _quote(
                f"{len(gone)} calls ended without a closed event (first: {gone[0]})"))


class _PlanRun:
    """Walks one decision's attempts for one call (or, after a `gather`, its chosen branch's)."""

    def __init__(self, call: CallSession, decision: Decision, plan: tuple[Attempt, ...] | None = None,
                 values: dict[str, str] | None = None,
                 send_dtmf: Callable[[CallSession, str, Channel, float], None] | None = None) -> None:
        self.call = call
        # SipServer.send_dtmf (it reports `dtmf_sent`); a bare call session's own for unit specs
        self.send_dtmf = send_dtmf or (lambda call, digits, channel, duration: call.send_dtmf(channel, digits,
                                                                                              duration))
        self.decision = decision
        self.plan = decision.plan if plan is None else plan
        self.index = 0   # the attempt under way
        self.action = 0  # the next of its actions
        if values is None:
            values = dict(decision.values)
            values["call"] = call.id
        self.values = values

    def step(self, failure: Failure | None) -> None:
        call = self.call
        plan = self.plan
        while self.index < len(plan):
            attempt = plan[self.index]
            actions = attempt.actions
            while self.action < len(actions):
                action = actions[self.action]
                self.action += 1
                if isinstance(action, Play):
                    # the plan goes on once the file has played (or could not be)
                    call.play(action.file, action.answered, lambda: self.step(failure))
                    return
                if isinstance(action, Record):
                    self._voicemail(action, failure)  # the plan goes on once the message is saved
                    return
                self._act(action)
            self.index += 1
            self.action = 0
            terminal = attempt.terminal
            if isinstance(terminal, Accept):
                targets = [Target("USER" if t.kind == "user" else "LINE", t.name, t.number) for t in terminal.targets]
                timeout = terminal.timeout if terminal.timeout is not None else RING_TIMEOUT
                call.accept(targets, timeout, self._after_accept)
                return
            if isinstance(terminal, Reject):
                call.reject(terminal.code, terminal.reason)
                return
            if isinstance(terminal, Hangup):
                call.hangup()
                return
            if isinstance(terminal, Gather):
                call.gather(terminal.prompt, terminal.max_digits, terminal.terminator, terminal.timeout,
                            terminal.digit_timeout, terminal.retries, terminal.keys,
                            lambda digits, outcome, g=terminal: self._after_gather(g, digits))
                return
        last = failure or call.last_failure
        call.reject(last.code, last.reason)

    def _after_accept(self, failure: Failure | None) -> None:
        if failure is None:
            return  # connected: the plan is done
        self.values["reason"] = failure.reason
        self.values["code"] = str(failure.code)
        self.step(failure)

    def _after_gather(self, gather: Gather, digits: str) -> None:
        """The caller's entry is in: run the branch it selects, with `{digits}` among the values."""
        branch = gather.branch(digits)
        if branch is None:  # the checker requires a `nothing` or `else` branch; never silently stuck
            log.error("event=call_error call=%s step=gather reason=%s", self.call.id, '"no branch for the entry"')
            self.call.hangup()
            return
        values = dict(self.values)
        values["digits"] = digits
        _PlanRun(self.call, self.decision, branch.rendered_plan(values), values, self.send_dtmf).step(None)

    def _voicemail(self, action: Record, failure: Failure | None) -> None:
        """Answer and play the prompt (if any), then a beep, then record the caller
        (runtime/media/recorder_live.py)."""
        call = self.call

        def record() -> None:
            call.record(action.folder, action.name, self.values, action.max_seconds, action.silence_seconds,
                        lambda: self.step(failure))

        def beep() -> None:
            call.play(beep_file(), True, record)

        if action.prompt is not None:
            call.play(action.prompt, True, beep)
        else:
            beep()

    def _act(self, action: object) -> None:
        call = self.call
        if isinstance(action, Log):
            log.info("event=log call=%s text=%s", call.id, _quote(action.template.render(self.values)))
        elif isinstance(action, SetCallerId):
            call.caller_id_override = action.value.render(self.values)
        elif isinstance(action, SetHeader):
            call.extra_headers.append((action.name, action.value.render(self.values)))
        elif isinstance(action, RecordCall):
            call.record_call(action.folder, action.name, self.values, action.mix)
        elif isinstance(action, SendDtmf):  # the digits go out while the plan goes on
            self.send_dtmf(call, action.digits, Channel[action.channel], DTMF_SEND_DURATION)


def _s(value: object) -> str | None:
    return None if value is None else str(value)


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _quote(text: str) -> str:
    return logfmt_value(text)
