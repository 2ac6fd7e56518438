"""The engine's event bus: the SDK's events as plain records, one logfmt line each.

The dialplan, the log, and later CDRs and metrics all listen here, so none of them needs to know
how the SIP side produced the event. What each event is and which fields it carries is defined once,
in flowlang/events.py (pure data, so the compiler checks handler texts against the same table).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from flowlang.events import BY_NAME, EVENT_NAMES, EVENTS, EventSpec

log = logging.getLogger("callflow.events")

# bus event -> the field names it may carry (log-only events are not here: emitting one is a bug)
_BUS_FIELDS: dict[str, frozenset[str]] = {e.name: frozenset(e.field_names) for e in EVENTS if e.bus}

__all__ = ["EVENT_NAMES", "EngineEvent", "EventBus", "logfmt_value"]

# SDK event -> our name: OnCallSessionCreated=created, OnIncomingCall=incoming,
# OnCallSessionConnecting=connecting, OnCallSessionConnected=connected, OnCallSessionHangUp=hangup,
# OnCallSessionFailed=failed, OnCallSessionClosed=closed, OnLineRegisterSuccess=line_registered,
# OnLineRegisterFailed=line_register_failed, OnRegisterUserSuccess=user_registered, ... (each
# EventSpec's `sdk`). EVENT_NAMES is every name in that table, log-only events included.
# failures an operator must act on are logged at WARNING, so `level>=warning` filters find them
WARNING_EVENTS = frozenset({"line_register_failed", "user_register_failed", "attack_detected", "recording_failed",
                            "play_failed"})


@dataclass(frozen=True, slots=True)
class EngineEvent:
    """One event: `name` (a name of flowlang/events.py) and `fields` as the runtime emitted them."""

    name: str
    fields: dict[str, object] = field(default_factory=dict)

    @property
    def spec(self) -> EventSpec | None:
        """The event's definition (fields, types, meanings); None for a name the table lacks."""
        return BY_NAME.get(self.name)

    def get(self, name: str) -> object:
        """A field's value, or its documented default when the runtime left an optional one out.

        Raises KeyError naming the event's fields when `name` is not one of them.
        """
        spec = BY_NAME.get(self.name)
        if spec is None:
            return self.fields[name]
        for f in spec.fields:
            if f.name == name:
                return self.fields.get(name, f.default)
        raise KeyError(f"{name!r} is not a field of the {self.name} event (its fields: "
                       f"{', '.join(spec.field_names) or 'none'})")

    def logfmt(self) -> str:
        parts = [f"event={self.name}"]
        for key, value in self.fields.items():
            if value is None:
                continue
            parts.append(f"{key}={logfmt_value(value)}")
        return " ".join(parts)


_LOGFMT_PLAIN = re.compile(r'[^\x00-\x20\x7f"=\\]+')
_LOGFMT_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_LOGFMT_SPECIAL = re.compile(r'[\x00-\x1f\x7f"\\]')


def logfmt_value(value: object) -> str:
    """`value` as one logfmt value: bare when it is plain, else quoted with backslash, quote, CR,
    LF and tab escaped and every other control character (ESC, NUL ...) written `\\xHH`, so what a
    peer sent can neither split a log line nor drive the operator's terminal."""
    text = str(value)
    if _LOGFMT_PLAIN.fullmatch(text):
        return text
    escaped = _LOGFMT_SPECIAL.sub(lambda m: _LOGFMT_ESCAPES.get(m.group(), f"\\x{ord(m.group()):02x}"), text)
    return f'"{escaped}"'


class EventBus:
    def __init__(self) -> None:
        self._listeners: list[Callable[[EngineEvent], None]] = []
        self.history: list[EngineEvent] | None = None  # tests switch this on to read what happened
        self._reported: set[tuple[str, str]] = set()  # (event, field) already logged as invalid

    def subscribe(self, listener: Callable[[EngineEvent], None]) -> None:
        self._listeners.append(listener)

    def emit(self, name: str, **fields: object) -> EngineEvent:
        """Log the event and hand it to every listener, in subscription order.

        `name` must be an event of flowlang/events.py and `fields` among its fields: anything else is
        a bug in the emitter, logged once as `event=event_invalid` (the event still goes out, so no
        information is lost). A listener that raises is logged and the others still run.
        """
        known = _BUS_FIELDS.get(name)
        if known is None or not fields.keys() <= known:
            self._invalid(name, BY_NAME.get(name), fields)
        event = EngineEvent(name, fields)
        level = logging.WARNING if name in WARNING_EVENTS else logging.INFO
        if log.isEnabledFor(level):
            log.log(level, event.logfmt())
        if self.history is not None:
            self.history.append(event)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("event=listener_failed name=%s", name)
        return event

    def _invalid(self, name: str, spec: EventSpec | None, fields: dict[str, object]) -> None:
        if spec is None:
            problems = [("", f"no event {name} is defined in flowlang/events.py")]
        elif not spec.bus:
            problems = [("", f"{name} is a log-only event in flowlang/events.py (bus=False)")]
        else:
            problems = [(k, f"{k} is not a field of {name} in flowlang/events.py (its fields: "
                            f"{', '.join(spec.field_names)})") for k in fields if k not in _BUS_FIELDS[name]]
        for key, reason in problems:
            if (name, key) in self._reported:
                continue
            self._reported.add((name, key))
            log.error("event=event_invalid name=%s reason=%s", logfmt_value(name), logfmt_value(reason))
