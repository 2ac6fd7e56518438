"""Originate (the SDK's DialCallSession) on the engine: a call Callflow places itself. Channel ZERO is
rung first (a user's registered phones, or a number through a line); what follows its answer is the
caller's choice (`on_answered(session)`): accept to a target (bridge), play, or `engine.route`
(the program's rules decide, as for a call from that user). The call machine's side is
runtime/calls/originate.py; this module checks the request and builds the call.

Used by callflow/sdk.py (`dial_call_session`) and the control endpoint (`POST /api/calls`,
`callflow call USER NUMBER`)."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from flowlang.model import Accept, CallInfo, Hangup, Reject

from .calls import CallMachine, CallSession, Failure, Target
from .calls.ids import new_call_session_id
from .events import logfmt_value
from .sip.message import Headers, Request
from .sip.transaction import new_branch
from .sip.uri import escape_user, has_control

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("callflow.originate")

RING_TIMEOUT = 60.0  # seconds channel ZERO may ring before the originated call fails with 480
# a number we dial: digits with an optional +, or a dial string of the characters a keypad and a
# SIP user part carry (* # and letters for short codes); no spaces, no control characters
NUMBER_RE = re.compile(r"^\+?[0-9A-Za-z*#._-]{1,64}$")


class DialError(ValueError):
    """An originate that cannot be placed: `code` (the HTTP/SIP-like status: 400 bad input, 404 no
    such user or line, 409 not registered, 503 call limit) and a message a user can act on."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def check_number(number: str, what: str = "number") -> str:
    """`number` stripped, or DialError(400) saying what a number may hold."""
    text = (number or "").strip()
    if not text or has_control(text) or not NUMBER_RE.match(text):
        raise DialError(400, f"bad {what} {number!r}: digits with an optional leading +, or * # and letters "
                             "(at most 64, no spaces)")
    return text


def check_target(engine: Engine, target: Target, now: float) -> None:
    """Raise DialError unless `target` can be rung now: a known user with a registered phone, or a
    known line that is registered (with a good number)."""
    if target.kind == "USER":
        if target.name not in engine.users:
            known = ", ".join(sorted(engine.users)) or "none"
            raise DialError(404, f"no user {target.name!r} (users: {known})")
        if not engine.registrar.lookup(target.name, now):
            raise DialError(409, f"user {target.name!r} has no phone registered: it cannot be rung")
    elif target.kind == "LINE":
        line = engine.lines.get(target.name)
        if line is None:
            known = ", ".join(sorted(engine.lines)) or "none"
            raise DialError(404, f"no line {target.name!r} (lines: {known})")
        if not target.number:
            raise DialError(400, f"dialling through line {target.name!r} needs the number to dial")
        check_number(target.number)
        if line.address is None or not line.carries_calls:
            raise DialError(409, f"line {target.name!r} is not registered: it cannot carry calls now")
    else:
        raise DialError(400, f"a target is a USER or a LINE, not {target.kind!r}")


def check_then(engine: Engine, target: Target) -> None:
    """Raise DialError unless `target` (the call's second leg, channel ONE, dialled once ZERO answers)
    can be dialled: a known user (404; its phones need not be registered yet: they are looked up when
    ZERO answers), or a known line that is registered (409) with a good number (400). Checked before
    ZERO rings, so a call that cannot go on never rings a phone (docs/sdk.md)."""
    if target.kind == "USER":
        if target.name not in engine.users:
            known = ", ".join(sorted(engine.users)) or "none"
            raise DialError(404, f"no user {target.name!r} to connect to (users: {known})")
        if target.number:
            check_number(target.number, "then_number")
    else:
        check_target(engine, target, engine.now())


def check_playable(path: str) -> str:
    """`path` when it names a readable file (relative to the server's working folder), else
    DialError(400) naming it: checked before a call that is to play it is dialled. Whether it decodes
    is known only once ZERO answered (the codec is settled then): a failure then is a `play_failed`
    event and the call's result a Failure."""
    if not path or not os.path.isfile(path):
        raise DialError(400, f"cannot play {path!r}: no such file")
    if not os.access(path, os.R_OK):
        raise DialError(400, f"cannot play {path!r}: it is not readable (permissions)")
    return path


def originate(engine: Engine, zero: Target, on_answered: Callable[[CallSession], None], *,
              number: str = "", then: str = "route", on_failed: Callable[[Failure], None] | None = None,
              ring_timeout: float = RING_TIMEOUT) -> CallSession:
    """Ring `zero` (channel ZERO) and call `on_answered(session)` once it answers; `on_failed(failure)`
    when it does not (480 no answer within `ring_timeout` seconds, 486 busy...: the call has closed).

    `number` is what the call is for: shown to ZERO's phone as the caller, and the number the rules
    see dialled when the session is routed (`engine.route(session)`), as a call from `zero`'s user
    (or line); `then` names what `on_answered` does, for the log (`route`, `bridge`, `play`).
    Raises DialError (unknown or unregistered user or line, a bad number, the server's call limit)
    before anything is sent."""
    now = engine.now()
    check_target(engine, zero, now)
    if number:
        number = check_number(number)
    if ring_timeout <= 0:
        raise DialError(400, f"ring timeout {ring_timeout!r}: seconds, more than 0")
    if engine.max_calls is not None and len(engine.calls) >= engine.max_calls:
        raise DialError(503, f"the server's call limit ({engine.max_calls}) is reached")
    if zero.kind == "USER":
        account = engine.users[zero.name]
        caller_id = account.caller_id or zero.name
    else:
        caller_id = zero.number or zero.name
    call_id = new_call_session_id()
    machine = CallMachine(engine, call_id, None, peer_type=zero.kind, peer_name=zero.name, caller_id=caller_id,
                          dialled=number, program=engine.program, now=now, t1=engine.layer.t1, t2=engine.layer.t2,
                          max_duration=engine.max_call_duration, rtp_timeout=engine.rtp_timeout,
                          invite=stands_for(engine, call_id, caller_id, number or zero.number or zero.name))
    machine.zero_shows = number or None
    call = CallSession(engine.call_runner, machine)
    engine.calls[call.id] = call
    engine.call_runner.add(call)
    log.info("event=originating call=%s zero=%s:%s number=%s then=%s", call.id, zero.kind.lower(), zero.name,
             number or "-", then)

    def answered() -> None:
        on_answered(call)

    def failed(failure: Failure) -> None:
        if on_failed is not None:
            on_failed(failure)

    call.dial([zero], ring_timeout, answered, failed)
    return call


def stands_for(engine: Engine, call_id: str, caller: str, number: str) -> Request:
    """The INVITE an originated call stands for (no one sent it): From the caller, To the number, no
    body, Max-Forwards 70. The rules read its headers; the INVITEs we send are built from the call."""
    host = engine.advertise
    h = Headers()
    h.add("Via", f"{engine.via()};branch={new_branch()}")
    h.add("Max-Forwards", "70")
    h.add("From", f"<sip:{escape_user(caller)}@{host}>;tag={call_id}")
    h.add("To", f"<sip:{escape_user(number)}@{host}>")
    h.add("Call-ID", f"{call_id}-originate@callflow")
    h.add("CSeq", "1 INVITE")
    h.add("Content-Length", "0")
    return Request("INVITE", f"sip:{escape_user(number)}@{host}", h)


def rules_refusal(engine: Engine, user: str, number: str) -> Failure | None:
    """Click-to-call's check before a phone rings: would the running program refuse a call from user
    `user` to `number`? The Failure its rules give (their `reject`, 404 when no rule takes the call),
    else None (also when no program is loaded: the call is then decided when ZERO answers). The rules
    decide again when ZERO answers: this only spares the user answering a call that cannot go on."""
    program = getattr(engine, "program", None)
    if program is None:
        return None
    account = engine.users.get(user)
    info = CallInfo(from_type="user", from_name=user, caller_id=(account.caller_id if account else None) or user,
                    caller_name=None, to=number, at=datetime.now(UTC))
    decision = program.decide(info)
    if decision is None:
        return Failure(404, f"Not Found (no rule takes a call from user {user} to {number})")
    for attempt in decision.plan:
        if isinstance(attempt.terminal, Reject):
            return Failure(attempt.terminal.code, attempt.terminal.reason)
        if isinstance(attempt.terminal, Accept | Hangup):
            return None
    return None


def click_to_call(engine: Engine, user: str, number: str, ring_timeout: float = RING_TIMEOUT) -> CallSession:
    """`callflow call USER NUMBER` and `POST /api/calls`: ring `user`'s phones; when one answers, the
    program's rules route NUMBER as a call from that user (their security applies). Raises DialError:
    unknown user (404), no phone registered (409), a bad number (400), the rules refuse it (403,
    the message giving their SIP status and reason), the call limit (503)."""
    number = check_number(number)
    check_target(engine, Target("USER", user), engine.now())
    refusal = rules_refusal(engine, user, number)
    if refusal is not None:
        log.warning("event=originate_refused user=%s to=%s code=%d reason=%s", user, number, refusal.code,
                    logfmt_value(refusal.reason))
        raise DialError(403, f"the rules refuse a call from {user} to {number}: {refusal.code} {refusal.reason}")
    return originate(engine, Target("USER", user), engine.route, number=number, then="route",
                     ring_timeout=ring_timeout)
