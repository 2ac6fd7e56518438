"""Session timers (RFC 4028): reading Session-Expires and Min-SE, and the per-leg choice of who
refreshes. Pure functions over messages; the call machine (machine.py) arms the timers.

Each leg of a call has its own session timer with Callflow: on channel ZERO we are the UAS of the
INVITE (the caller's request picks the refresher, RFC 4028 9), on channel ONE the UAC (the far
end's 2xx picks it, 7.2). `SessionTimer.we_refresh` says whether Callflow sends the refreshes on
that leg (at half the interval, 10) or waits for them (and ends the call when none came by
`interval - min(32, interval / 3)`, 10).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..sip.message import Request, Response

MIN_SE = 90          # seconds: our Min-SE, the smallest interval RFC 4028 4 allows (422 below it)


@dataclass(frozen=True, slots=True)
class SessionExpires:
    """A Session-Expires header: `interval` in seconds, `refresher` "uac", "uas" or None."""

    interval: int
    refresher: str | None


@dataclass(frozen=True, slots=True)
class SessionTimer:
    """One leg's session timer: the interval in seconds and whether Callflow refreshes it."""

    interval: int
    we_refresh: bool

    @property
    def expiry_margin(self) -> float:
        """Seconds after the last refresh at which the side waiting for refreshes gives up
        (RFC 4028 10: the interval minus the smaller of 32 s and a third of it)."""
        return self.interval - min(32.0, self.interval / 3)


def session_expires(msg: Request | Response) -> SessionExpires | None:
    """The message's Session-Expires (RFC 4028 4, compact form `x`); None when absent or unreadable."""
    value = msg.headers.get("session-expires")
    if not value:
        return None
    head, *params = value.split(";")
    head = head.strip()
    if not head.isdigit():
        return None
    refresher = None
    for p in params:
        name, _, v = p.partition("=")
        if name.strip().lower() == "refresher":
            v = v.strip().lower()
            refresher = v if v in ("uac", "uas") else None
    return SessionExpires(int(head), refresher)


def min_se(msg: Request | Response) -> int:
    """The message's Min-SE in seconds (RFC 4028 5), 0 when absent or unreadable."""
    value = (msg.headers.get("min-se") or "").split(";")[0].strip()
    return int(value) if value.isdigit() else 0


def has_option(msg: Request | Response, tag: str) -> bool:
    """Whether `tag` (e.g. "timer") is in the message's Supported or Require."""
    tags = msg.headers.values("supported") + msg.headers.values("require")
    return any(t.strip().lower() == tag for t in tags)


def allows(msg: Request | Response, method: str) -> bool | None:
    """Whether the message's Allow lists `method`; None when it has no Allow header."""
    values = msg.headers.values("allow")
    if not values:
        return None
    return any(v.strip().upper() == method for v in values)


def as_uas(request: Request) -> tuple[SessionTimer | None, list[tuple[str, str]]]:
    """We answer `request` (an INVITE or UPDATE, RFC 4028 9): the leg's timer and the headers our
    2xx carries. No Session-Expires in the request: no timer (we do not impose one). The
    refresher is the request's choice; unspecified, the UAC when it supports timers, else us; a
    UAC that does not support timers cannot refresh, so we do (and send no Require: timer)."""
    se = session_expires(request)
    if se is None:
        return None, []
    interval = max(se.interval, MIN_SE, min_se(request))
    supports = has_option(request, "timer")
    refresher = se.refresher or ("uac" if supports else "uas")
    if not supports:
        refresher = "uas"
    headers = [("Session-Expires", f"{interval};refresher={refresher}")]
    if supports:
        headers.append(("Require", "timer"))
    return SessionTimer(interval, refresher == "uas"), headers


def as_uac(response: Response) -> SessionTimer | None:
    """Our request was answered with `response` (a 2xx, RFC 4028 7.2): the leg's timer, None when
    the 2xx has no Session-Expires (no expiration). The UAS names the refresher; missing, we refresh."""
    se = session_expires(response)
    if se is None:
        return None
    return SessionTimer(max(se.interval, 1), se.refresher != "uas")


def request_headers(interval: int, refresher: str | None = None) -> list[tuple[str, str]]:
    """The headers of a request of ours that asks for (or refreshes) a session timer of `interval` s."""
    value = f"{interval};refresher={refresher}" if refresher else str(interval)
    return [("Session-Expires", value), ("Min-SE", str(MIN_SE)), ("Supported", "timer")]
