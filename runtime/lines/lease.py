"""Which node registers a line, when several share one database: a lease per line, as a sans-IO machine.

In a cluster (nodes behind an edge, ``--location-dsn postgresql://...``) every node runs the same
program, so every node knows every line; but a provider keeps one registration per account (often one
contact), so exactly one live node must register each line. That node holds the line's *lease*: a row
(line, node, expires_at) in the shared store, taken with an atomic conditional upsert (free or expired
rows only), renewed every ``period * RENEW_SHARE`` seconds, released on a clean stop. When the holder
dies its row expires and another node takes it, then registers the line: within one lease period of
the death (the others aim their next try at the row's expiry, as the database says it).

Every input carries ``now`` (seconds on the caller's monotonic clock) and returns a list of actions:

    TryAcquire / Renew / Release      ask the store (the pump answers with ``result``)
    StartRegistering                  the line may register now (LineClient.start)
    StopRegistering(unregister)       stop registering; ``unregister`` says whether to send Expires: 0
    Emit(name, fields)                an event for the bus (line_lease_acquired, line_lease_lost)
    Wake(at)                          call ``tick`` again at ``at``

The states (a node's view of one line's lease):

    state       meaning                                                  registers the line
    waiting     someone else holds it, or the store is away: try again   no
    acquiring   a TryAcquire is on its way                               no
    held        ours until ``held_until``; renewed before that           yes
    renewing    a Renew is on its way; still ours until ``held_until``    yes
    releasing   a clean stop: the line un-registers, then Release        yes, until un-registered
    stopped     nothing more to do                                       no

Safety: ``held_until`` is the time we *sent* the successful request plus the period, on our clock; the
store sets its expiry from its own clock when it *executes* that request, which is later. So this node
stops registering before any other node can take the row (clocks' rates agree; their offsets do not
matter, only the database's clock dates the rows).

Losing the lease (renewals failed until ``held_until``, or a renewal found the row gone or another
node's) stops the registration WITHOUT an un-REGISTER: every node registers the same Contact (the
edge's), so an Expires: 0 from the node that lost would remove the binding the new holder just made.
The provider's binding lapses by itself at its expiry if nobody takes over; a clean stop does send
Expires: 0, then releases the row, in that order, so the next holder's REGISTER comes after it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import Enum

log = logging.getLogger("callflow.lines")

DEFAULT_PERIOD = 30.0   # seconds a lease lasts without renewal (--lease-seconds)
RENEW_SHARE = 1 / 3     # renew after a third of the period: two renewals may fail before it lapses
RETRY_SHARE = 1 / 6     # a node without the lease tries again this often (a share of the period)
MIN_PERIOD = 3.0        # a shorter lease would be renewed more often than a database round trip allows
EXPIRY_MARGIN = 0.05    # a try aimed at another node's expiry comes this long after it ...
MIN_RETRY = 0.1         # ... and never sooner than this after the last one
EARLY = 1e-3            # a wake-up this much early counts as on time


class LeaseState(Enum):
    WAITING = "waiting"
    ACQUIRING = "acquiring"
    HELD = "held"
    RENEWING = "renewing"
    RELEASING = "releasing"
    STOPPED = "stopped"


L = LeaseState
# Which state may follow which; anything else is a bug in this module and raises LeaseStateError.
TRANSITIONS: dict[LeaseState, frozenset[LeaseState]] = {
    L.WAITING:   frozenset({L.ACQUIRING, L.STOPPED}),
    L.ACQUIRING: frozenset({L.HELD, L.WAITING, L.STOPPED}),
    L.HELD:      frozenset({L.RENEWING, L.WAITING, L.RELEASING}),
    L.RENEWING:  frozenset({L.HELD, L.WAITING, L.RELEASING}),
    L.RELEASING: frozenset({L.STOPPED}),
    L.STOPPED:   frozenset(),
}


class LeaseStateError(RuntimeError):
    """A transition the table does not allow, or an answer to a request never asked: a bug."""


# ---- actions ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TryAcquire:
    """Take the line's row if it is free, expired or ours, for `period` seconds; answer with
    `LeaseMachine.result("acquire", ...)`."""

    line: str
    period: float


@dataclass(frozen=True, slots=True)
class Renew:
    """Extend our row by `period` seconds, only if it is still ours; answer with `result("renew", ...)`."""

    line: str
    period: float


@dataclass(frozen=True, slots=True)
class Release:
    """Delete our row (a clean stop); answer with `result("release", ...)`, the outcome does not matter."""

    line: str


@dataclass(frozen=True, slots=True)
class StartRegistering:
    """This node holds the lease: register the line."""

    line: str


@dataclass(frozen=True, slots=True)
class StopRegistering:
    """Stop registering the line; send REGISTER Expires: 0 only when `unregister` (a clean stop)."""

    line: str
    unregister: bool


@dataclass(frozen=True, slots=True)
class Emit:
    name: str
    fields: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Wake:
    """Call `LeaseMachine.tick(now)` at `at` (replaces the previous wake-up)."""

    at: float


Action = TryAcquire | Renew | Release | StartRegistering | StopRegistering | Emit | Wake


@dataclass(frozen=True, slots=True)
class StoreAnswer:
    """What the store said. `ok`: the row is ours (acquire, renew) or the request ran (release);
    `holder`/`expires`: the row's node and expiry (Unix seconds, the database's clock) when known;
    `error`: the store could not be asked (database away), with why; `remaining`: how long another
    node's row still runs, so the next try comes as it ends rather than up to a retry interval later."""

    ok: bool
    holder: str | None = None
    expires: float | None = None
    error: str | None = None
    remaining: float | None = None  # seconds another node's row has left (the database's clock), if known


class LeaseMachine:
    """One line's lease as seen by node `node`. `period` seconds per lease (>= MIN_PERIOD).

    Raises ValueError for a period below MIN_PERIOD."""

    def __init__(self, line: str, node: str, period: float = DEFAULT_PERIOD) -> None:
        if period < MIN_PERIOD:
            raise ValueError(f"a lease of {period:g}s is too short: at least {MIN_PERIOD:g}s")
        self.line = line
        self.node = node
        self.period = period
        self.state = L.WAITING
        self.held_until: float | None = None   # our clock: registering must stop by then
        self.holder: str | None = None          # the last holder the store named (us or another node)
        self.expires: float | None = None       # the row's expiry as the store said (Unix seconds)
        self.error: str | None = None           # why the store did not answer, while it does not
        self._asked_at: float | None = None     # when the request on its way was sent
        self._next_at: float | None = None      # when tick acts next

    # ---- what the pump and the views read ------------------------------------------------------------
    @property
    def held(self) -> bool:
        """Whether this node may register the line now."""
        return self.state in (L.HELD, L.RENEWING, L.RELEASING)

    # ---- inputs ------------------------------------------------------------------------------------
    def start(self, now: float) -> list[Action]:
        """Begin: ask for the lease at once."""
        out: list[Action] = []
        if self.state is L.WAITING and self._asked_at is None:
            self._acquire(out, now)
        return out

    def tick(self, now: float) -> list[Action]:
        """Time passed: renew, retry, or notice that the lease ran out before a renewal came back."""
        out: list[Action] = []
        due = now + EARLY  # an event loop may run a timer a clock tick before its time
        if self.held and self.state is not L.RELEASING and self.held_until is not None and due >= self.held_until:
            self._lose(out, now, self.error or "the lease could not be renewed before it expired")
            return out
        if self._next_at is not None and due >= self._next_at:
            if self.state is L.WAITING:
                self._acquire(out, now)
                return out
            if self.state is L.HELD:
                self._move(L.RENEWING)
                self._asked_at = now
                self._next_at = None
                out.append(Renew(self.line, self.period))
        self._wake(out)  # whatever happened, the next wake-up stays armed
        return out

    def result(self, op: str, answer: StoreAnswer, now: float) -> list[Action]:
        """The store's answer to TryAcquire ("acquire"), Renew ("renew") or Release ("release")."""
        out: list[Action] = []
        if op == "release":
            if self.state is L.RELEASING:
                self._move(L.STOPPED)
                self._next_at = None
            return out
        expected = {"acquire": L.ACQUIRING, "renew": L.RENEWING}.get(op)
        if expected is None:
            raise LeaseStateError(f"unknown store operation {op!r}")
        if self.state is not expected:
            return out  # a late answer after a stop or a loss: the state already moved on
        sent_at = self._asked_at if self._asked_at is not None else now
        self._asked_at = None
        self.error = answer.error
        if answer.holder is not None or answer.ok:
            self.holder = answer.holder if answer.holder is not None else self.node
            self.expires = answer.expires
        if op == "acquire":
            if answer.ok:
                self._move(L.HELD)
                self.held_until = sent_at + self.period
                self._next_at = now + self.period * RENEW_SHARE
                out.append(StartRegistering(self.line))
                out.append(Emit("line_lease_acquired", {"line": self.line, "node": self.node,
                                                        "expires": _fmt(self.expires)}))
            else:
                self._move(L.WAITING)
                retry = self.period * RETRY_SHARE
                if answer.remaining is not None:  # ask again just as the holder's row runs out
                    retry = min(retry, max(MIN_RETRY, answer.remaining + EXPIRY_MARGIN))
                self._next_at = now + retry
            self._wake(out)
            return out
        # renew
        if answer.ok:
            self._move(L.HELD)
            self.held_until = sent_at + self.period
            self._next_at = now + self.period * RENEW_SHARE
        elif answer.error is not None:
            # the store is away: keep registering while the lease may still be ours, retry sooner
            self._move(L.HELD)
            self._next_at = min(now + self.period * RETRY_SHARE, self.held_until or now)
        else:
            # the row is gone or another node's: it is not ours, whatever our clock says
            self._lose(out, now, f"the lease is held by {answer.holder}" if answer.holder else
                       "the lease row was gone")
            return out
        self._wake(out)
        return out

    def stop(self, now: float) -> list[Action]:
        """A clean stop: un-register the line (when we hold it), then release the row."""
        out: list[Action] = []
        if self.state in (L.RELEASING, L.STOPPED):
            return out
        if self.held:
            self._move(L.RELEASING)
            self._next_at = None
            self._asked_at = None
            out.append(StopRegistering(self.line, unregister=True))
            out.append(Release(self.line))
        else:
            self._move(L.STOPPED)
            self._next_at = None
        return out

    # ---- steps -------------------------------------------------------------------------------------
    def _acquire(self, out: list[Action], now: float) -> None:
        self._move(L.ACQUIRING)
        self._asked_at = now
        self._next_at = None
        out.append(TryAcquire(self.line, self.period))

    def _lose(self, out: list[Action], now: float, reason: str) -> None:
        self._move(L.WAITING)
        self.held_until = None
        self._asked_at = None
        self._next_at = now + self.period * RETRY_SHARE
        out.append(StopRegistering(self.line, unregister=False))
        out.append(Emit("line_lease_lost", {"line": self.line, "node": self.node, "expires": _fmt(self.expires),
                                            "reason": reason}))
        self._wake(out)

    def _wake(self, out: list[Action]) -> None:
        times = [t for t in (self._next_at, self.held_until if self.held else None) if t is not None]
        if times:
            out.append(Wake(min(times)))

    def _move(self, to: LeaseState) -> None:
        if to is self.state:
            return
        if to not in TRANSITIONS[self.state]:
            raise LeaseStateError(f"line {self.line}: lease cannot go from {self.state.value} to {to.value}")
        self.state = to


def _fmt(expires: float | None) -> str:
    """The row's expiry for an event: ISO 8601 UTC, or "" when the store did not say."""
    if expires is None:
        return ""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(expires, UTC).isoformat(timespec="seconds")
