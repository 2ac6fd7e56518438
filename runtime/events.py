"""The engine's event bus: the SDK's events as plain records, one logfmt line each.

The dialplan, the log, and later CDRs and metrics all listen here, so none of them needs to know
how the SIP side produced the event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("callflow.events")

# SDK event -> our name: OnCallSessionCreated=created, OnIncomingCall=incoming,
# OnCallSessionConnecting=connecting, OnCallSessionConnected=connected, OnCallSessionHangUp=hangup,
# OnCallSessionFailed=failed, OnCallSessionClosed=closed, OnLineRegisterSuccess=line_registered,
# OnLineRegisterFailed=line_register_failed, OnRegisterUserSuccess=user_registered, ...
EVENT_NAMES = (
    "created", "incoming", "connecting", "connected", "hangup", "failed", "closed",
    "line_registered", "line_register_failed", "line_unregistered", "line_state", "line_failover",
    "user_registered", "user_unregistered", "user_register_failed", "attack_detected",
)


@dataclass(frozen=True, slots=True)
class EngineEvent:
    name: str
    fields: dict[str, object] = field(default_factory=dict)

    def logfmt(self) -> str:
        parts = [f"event={self.name}"]
        for key, value in self.fields.items():
            if value is None:
                continue
            parts.append(f"{key}={logfmt_value(value)}")
        return " ".join(parts)


def logfmt_value(value: object) -> str:
    text = str(value)
    if text and not any(c in text for c in ' "=\\\n\t'):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


class EventBus:
    def __init__(self) -> None:
        self._listeners: list[Callable[[EngineEvent], None]] = []
        self.history: list[EngineEvent] | None = None  # tests switch this on to read what happened

    def subscribe(self, listener: Callable[[EngineEvent], None]) -> None:
        self._listeners.append(listener)

    def emit(self, name: str, **fields: object) -> EngineEvent:
        event = EngineEvent(name, fields)
        if log.isEnabledFor(logging.INFO):
            log.info(event.logfmt())
        if self.history is not None:
            self.history.append(event)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("event listener failed on %s", name)
        return event
