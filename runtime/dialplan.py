"""The dialplan: runs a compiled flowlang Program against the engine.

It applies the program's declarations to the engine (users, lines: only what changed), decides each
incoming call with the program the call started with, walks the decision's attempts (`otherwise`
means: the accept before failed, try the next), and runs the observing handlers on every event.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from flowlang.model import Accept, CallInfo, Decision, Hangup, Log, Play, Program, Reject, SetCallerId, SetHeader

from .calls import CallSession, Failure, Target
from .engine import Engine
from .events import EngineEvent
from .lines import LineConfig

log = logging.getLogger("callflow.dialplan")


def line_config(line) -> LineConfig:  # type: ignore[no-untyped-def]
    """flowlang's Line -> the engine's AddLine arguments."""
    return LineConfig(
        name=line.name, server_host=line.server_host, server_port=line.server_port, username=line.username,
        password=line.password, auth_username=line.auth_username, realm=line.realm, transport=line.transport,
        register_every=line.register_every, numbers=tuple(line.numbers), display=line.display,
        caller_id=line.caller_id, outbound_proxy=line.outbound_proxy, codecs=tuple(line.codecs),
        trust=tuple(line.trust),
    )


class Dialplan:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.program: Program | None = None
        engine.router = self.route
        engine.bus.subscribe(self.on_event)

    # ---- declarations -----------------------------------------------------------------------------
    def load(self, program: Program) -> dict[str, list[str]]:
        """Swap in a program in one step; returns what changed, for the reload log line."""
        engine = self.engine
        changes: dict[str, list[str]] = {"users+": [], "users-": [], "lines+": [], "lines~": [], "lines-": []}
        for name, user in program.users.items():
            old = engine.users.get(name)
            engine.add_user(name, user.password, user.caller_id, user.max_calls, user.legacy_digest)
            if old is None:
                changes["users+"].append(name)
        for name in list(engine.users):
            if name not in program.users:
                engine.remove_user(name)
                changes["users-"].append(name)
        for name, line in program.lines.items():
            config = line_config(line)
            old = engine.lines.get(name)
            if old is not None and old.config == config:
                continue  # same settings: same registration, same Call-ID
            engine.add_line(config)
            engine.register_line(name)
            changes["lines~" if old is not None else "lines+"].append(name)
        for name in list(engine.lines):
            if name not in program.lines:
                engine.remove_line(name)
                changes["lines-"].append(name)
        self.program = program
        engine.program = program
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
        _PlanRun(call, decision).step(None)

    # ---- observers ----------------------------------------------------------------------------------
    def on_event(self, event: EngineEvent) -> None:
        fields = event.fields
        call = self.engine.calls.get(str(fields.get("call", "")))
        program: Program | None = (call.program if call is not None else None) or self.program  # type: ignore[assignment]
        if program is None:
            return
        handlers = program.handlers(event.name, line=_s(fields.get("line")), user=_s(fields.get("user")))
        if not handlers:
            return
        values = {k: "" if v is None else str(v) for k, v in fields.items()}
        values["event"] = event.name
        for handler in handlers:
            for action in handler.actions:
                if isinstance(action, Log):
                    log.info("event=log handler=%s text=%s", event.name, _quote(action.template.render(values)))


class _PlanRun:
    """Walks one decision's attempts for one call."""

    def __init__(self, call: CallSession, decision: Decision) -> None:
        self.call = call
        self.decision = decision
        self.index = 0   # the attempt under way
        self.action = 0  # the next of its actions
        self.values = dict(decision.values)
        self.values["call"] = call.id

    def step(self, failure: Failure | None) -> None:
        call = self.call
        plan = self.decision.plan
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
                self._act(action)
            self.index += 1
            self.action = 0
            terminal = attempt.terminal
            if isinstance(terminal, Accept):
                targets = [Target("USER" if t.kind == "user" else "LINE", t.name, t.number) for t in terminal.targets]
                call.accept(targets, terminal.timeout, self._after_accept)
                return
            if isinstance(terminal, Reject):
                call.reject(terminal.code, terminal.reason)
                return
            if isinstance(terminal, Hangup):
                call.hangup()
                return
        last = failure or call.last_failure
        call.reject(last.code, last.reason)

    def _after_accept(self, failure: Failure | None) -> None:
        if failure is None:
            return  # connected: the plan is done
        self.values["reason"] = failure.reason
        self.values["code"] = str(failure.code)
        self.step(failure)

    def _act(self, action: object) -> None:
        call = self.call
        if isinstance(action, Log):
            log.info("event=log call=%s text=%s", call.id, _quote(action.template.render(self.values)))
        elif isinstance(action, SetCallerId):
            call.caller_id_override = action.value.render(self.values)
        elif isinstance(action, SetHeader):
            call.extra_headers.append((action.name, action.value.render(self.values)))


def _s(value: object) -> str | None:
    return None if value is None else str(value)


def _quote(text: str) -> str:
    from .events import logfmt_value

    return logfmt_value(text)
