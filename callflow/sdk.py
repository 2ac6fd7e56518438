"""The SIP server SDK in Python: users, lines and call sessions as methods, the SDK's events as
callbacks and as an async iterator.

```python
from callflow.sdk import SipServer

server = SipServer(listen="127.0.0.1:5060", rtp_ports=(20000, 20999))
server.add_user("alice", "alice-pw")
server.add_line("itsp1", server="sip.provider.example:5060", username="trunk1", password="s3cret")

@server.on("incoming")
def route(event):
    if event["peer_type"] == "USER":
        server.accept_call_session(event.session, to_line="itsp1", timeout=30)
    else:
        server.accept_call_session(event.session, to_user="alice")

async with server:                      # start(), and stop() on the way out
    server.register_line("itsp1")
    async for event in server.events():  # every event, in order
        print(event.name, dict(event.fields))
```

Every name is the SDK's in snake case (AddUser -> add_user, AcceptCallSession -> accept_call_session,
OnIncomingCall -> the `incoming` event); docs/sdk.md has the whole table. Events and their fields are
those of flowlang/events.py (docs/events.md): the same ones the log shows and `.flow` handlers see.

Built on the engine's public surface (Engine's add_user/add_line/register_line..., its EventBus, its
`router`, and CallSession's accept/reject/hangup); nothing here reaches into the call layer.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType, TracebackType

from flowlang.events import BY_NAME, EVENTS, EventSpec
from runtime.calls import CallSession, Channel, Failure, Target
from runtime.chat import ChatMessage
from runtime.engine import Engine, UserAccount
from runtime.events import EngineEvent, logfmt_value  # logfmt_value re-exported: quotes a log field
from runtime.lines import LineConfig
from runtime.logfmt import setup_logging  # re-exported: the log format `callflow run` writes
from runtime.media.dtmf_sender import MAX_DURATION, MIN_DURATION, normalize_digits
from runtime.media.recorder_file import beep_file  # re-exported: the tone played before a voicemail
from runtime.originate import RING_TIMEOUT as RING_ZERO
from runtime.originate import DialError, check_playable, check_target, check_then, originate
from runtime.registrar import LocationStore
from runtime.transport import ListenSpec

__all__ = ["EVENT_NAMES", "RECORDINGS_FOLDER", "RECORDING_MIXES", "RING_TIMEOUT",
           "CallSession", "Channel", "ChatMessage", "DialError", "DialedCall", "Event",
           "EventStream", "Failure", "Handler", "SipServer", "Target", "UserAccount", "beep_file", "logfmt_value",
           "setup_logging"]

log = logging.getLogger("callflow.sdk")

# the events a program can watch: every event of the engine's bus (flowlang/events.py, bus=True)
EVENT_NAMES: frozenset[str] = frozenset(e.name for e in EVENTS if e.bus)
STREAM_SIZE = 10_000  # events an `events()` stream holds unread before it drops its oldest
# An accept without a timeout gives up after this many seconds of ringing (like RFC 3261 16.6's
# Timer C, > 3 min): a callee that rings forever (or a flood of calls to a phone nobody answers) must
# not hold the user's and the line's call slots forever. It fails as a timeout does (408/480).
RING_TIMEOUT = 180.0
_REASONS = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 408: "Request Timeout",
            480: "Temporarily Unavailable", 486: "Busy Here", 487: "Request Terminated",
            488: "Not Acceptable Here", 500: "Server Internal Error", 503: "Service Unavailable",
            600: "Busy Everywhere", 603: "Decline"}


@dataclass(frozen=True, slots=True)
class DialedCall:
    """What dial_call_session returns: the call `session` and `result`, a future: None once bridged
    (or played), else the Failure."""

    session: CallSession
    result: asyncio.Future[Failure | None]

    @property
    def id(self) -> str:
        return self.session.id


@dataclass(frozen=True, slots=True)
class Event:
    """One SDK event: `name` (flowlang/events.py), its `fields` as the engine emitted them, and for
    call events the live `session` (None once the call has closed, and for other events).

    `event["field"]` gives a field, or its documented default when the engine left an optional one
    out; a name that is not a field of the event raises KeyError naming the event's fields.
    """

    name: str
    fields: Mapping[str, object] = field(default_factory=dict)
    session: CallSession | None = None

    def __getitem__(self, name: str) -> object:
        return EngineEvent(self.name, dict(self.fields)).get(name)

    def get(self, name: str, default: object = None) -> object:
        """A field's value; `default` when the event does not carry it."""
        value = self.fields.get(name)
        return default if value is None else value

    @property
    def spec(self) -> EventSpec:
        """The event's definition: meaning, fields with their types, the SDK's own name."""
        return BY_NAME[self.name]

    @property
    def call(self) -> str | None:
        """The call session's id, for call events."""
        value = self.fields.get("call")
        return None if value is None else str(value)

    @property
    def channel(self) -> Channel | None:
        """ZERO (the leg the call came in on) or ONE (the leg Callflow dialled); None when the event
        names no channel (a hang-up of both legs by Callflow itself)."""
        value = self.fields.get("channel")
        return Channel[str(value)] if value in ("ZERO", "ONE") else None


Handler = Callable[[Event], "None | Awaitable[None]"]

RECORDING_MIXES = ("mixed", "per leg", "both")  # record_call_session's mix=
RECORDINGS_FOLDER = "recordings"                # the folder a recording's name is relative to by default


@dataclass(slots=True)
class _Recording:
    """A recording the program asked for, followed through its call's events until its files are
    written: `recording_started` per file, then `recording` or `recording_failed` per file."""

    future: asyncio.Future[object]
    kind: str                                  # "voicemail" | "call" (the events' kind)
    arming: bool = False                       # inside CallSession.record*: a failure now is ours
    started: bool = False
    pending: set[str] = field(default_factory=set)
    written: list[str] = field(default_factory=list)
    failure: Failure | None = None

    def settle(self, value: object) -> None:
        if not self.future.done():
            self.future.set_result(value)


class EventStream:
    """The events of one `SipServer.events()` loop, in the order they happened.

    It is subscribed from the moment `events()` returns, so nothing emitted between that call and the
    first `async for` step is lost. It ends when the server stops or `close()` is called. A reader
    that falls STREAM_SIZE events behind loses the oldest ones (`dropped` counts them): a stuck
    reader must not make the server hold memory without bound.
    """

    def __init__(self, server: SipServer, names: frozenset[str] | None) -> None:
        self._server = server
        self._names = names
        self._items: deque[Event | None] = deque()
        self._ready = asyncio.Event()
        self.dropped = 0

    def _put(self, event: Event | None) -> None:
        if event is not None and self._names is not None and event.name not in self._names:
            return
        if len(self._items) >= STREAM_SIZE:
            self._items.popleft()
            self.dropped += 1
            if self.dropped == 1:
                log.warning("sdk event stream full: its reader is %d events behind; the oldest are dropped",
                            STREAM_SIZE)
        self._items.append(event)
        self._ready.set()

    def close(self) -> None:
        """Stop receiving events; the loop reading this stream ends after what it already holds."""
        self._server._streams.discard(self)
        self._put(None)

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        event = self._items.popleft()
        if event is None:
            self._server._streams.discard(self)
            raise StopAsyncIteration
        return event


class SipServer:
    """The SIP server SDK: a registrar, B2BUA and RTP relay driven from Python.

    listen: "HOST:PORT" (UDP and TCP), "udp:HOST:PORT", "tcp:...", "tls:...", "ws:...", or a list
    of them; the first one's host is the address advertised unless `advertise` says otherwise.
    rtp_ports: the inclusive range the relay takes its ports from. realm: the digest realm phones
    authenticate in. location_store: where registrations live (runtime.registrar.sqlite's SQLite store
    keeps them across restarts); memory by default.

    Create it inside the running event loop (in your `async def main()`); nothing is bound before
    `start()` (or `async with server:`), and users and lines may be added before or after it.

    engine: a runtime.engine.Engine built already, with what these arguments do not cover (TLS
    contexts, a media backend, a request screen: what `callflow run` builds); the listen, advertise,
    rtp_ports, realm, user_agent and location_store arguments are then not used. Whoever built it
    starts and stops it (or calls start() / stop() here).
    """

    def __init__(self, *, listen: str | Iterable[str] = "0.0.0.0:5060", advertise: str | None = None,
                 rtp_ports: tuple[int, int] = (20000, 29999), realm: str = "callflow",
                 user_agent: str | None = None, location_store: LocationStore | None = None,
                 engine: Engine | None = None) -> None:
        if engine is None:
            specs = _listen_specs([listen] if isinstance(listen, str) else list(listen))
            engine = Engine(listen=specs, advertise=advertise, realm=realm, rtp_ports=rtp_ports,
                            user_agent=user_agent, location_store=location_store)
        self.engine = engine
        self._handlers: dict[str, list[Handler]] = {}
        self._streams: set[EventStream] = set()
        self._pending_incoming: dict[str, EngineEvent] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self._registering: weakref.WeakSet[object] = weakref.WeakSet()  # lines register_line started
        # futures settled by a call's events: dial_call_session(route=) and transfer_call_session
        self._routed: dict[str, asyncio.Future[Failure | None]] = {}
        self._transfers: dict[str, asyncio.Future[Failure | None]] = {}
        # (call id, kind) -> a recording asked for by record_voicemail / record_call_session
        self._recordings: dict[tuple[str, str], _Recording] = {}
        self._plays: dict[str, asyncio.Future[Failure | None]] = {}   # dial_call_session(play=), by call
        self.engine.router = self._route
        self.engine.bus.subscribe(self._on_bus)

    # ---- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the listeners and the RTP relay. Raises OSError when an address cannot be bound."""
        await self.engine.start()
        self._started = True

    async def stop(self) -> None:
        """End every call (BYE, CANCEL or a final response as its state needs), un-register the
        lines (bounded), close the sockets, and end every `events()` stream."""
        if self._started:
            self._started = False
            await self.engine.stop()
        for stream in list(self._streams):
            stream.close()

    async def __aenter__(self) -> SipServer:
        await self.start()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    @property
    def ports(self) -> Mapping[str, int]:
        """The bound SIP port of each transport ({"udp": 5060, "tcp": 5060}), once started."""
        return MappingProxyType(self.engine.ports)

    # ---- users (AddUser / RemoveUser) ----------------------------------------------------------------
    def add_user(self, name: str, password: str, *, caller_id: str | None = None,
                 max_calls: int | None = None, legacy_digest: bool = False) -> None:
        """A phone account that may REGISTER and call (digest authentication, RFC 3261 22).

        caller_id: the number its calls show (else the account name); max_calls: calls it may be on
        at once, placed and received (a further one gets 486); legacy_digest: its phone may answer a
        challenge without qop (RFC 2069, old phones). Adding an existing name replaces it."""
        if not name or not password:
            raise ValueError("a user needs a name and a password")
        self.engine.add_user(name, password, caller_id, max_calls, legacy_digest)

    def remove_user(self, name: str) -> None:
        """The account goes, and its phones' registrations with it (no-op for an unknown name)."""
        self.engine.remove_user(name)

    @property
    def users(self) -> frozenset[str]:
        return frozenset(self.engine.users)

    def user(self, name: str) -> UserAccount | None:
        """The account `name` as added (name, password, caller_id, max_calls, legacy_digest), or None."""
        return self.engine.users.get(name)

    def user_registrations(self, name: str) -> dict[str, int]:
        """The registered contacts of user `name`'s phones: contact URI -> whole seconds until the
        registration lapses (RFC 3261 10.3). Empty when none is registered or there is no such user."""
        now = self.engine.now()
        return {b.contact: max(0, round(b.expires_at - now)) for b in self.engine.registrar.lookup(name, now)}

    # ---- lines (AddLine / RemoveLine / RegisterLine / UnRegisterLine) -------------------------------
    def add_line(self, name: str, *, server: str, username: str | None = None, password: str = "",
                 auth_username: str | None = None, realm: str | None = None, transport: str = "udp",
                 register_every: int | None = 300, numbers: Iterable[str] = (), display: str | None = None,
                 caller_id: str | None = None, outbound_proxy: str | None = None, codecs: Iterable[str] = (),
                 trust: Iterable[str] = (), max_calls: int | None = None) -> bool:
        """An account at a provider. `server` is "HOST[:PORT]" (PORT 5060, 5061 for TLS, when left
        out; a bare host name is looked up with NAPTR/SRV, RFC 3263). `register_every` is the
        REGISTER expiry asked for, in seconds (None: the line does not register; calls still go
        out). `trust`: other addresses (IPs, CIDR networks, or "IP:PORT" for one socket) the provider's calls come from.
        `max_calls`: calls the line may carry at once, in and out (a further one gets 503 out, 486
        in; None: no limit; changing it alone changes nothing else). The line does not register until
        `register_line(name)`. Replacing a line with the same settings keeps its registration.
        `username`: the account's user part, needed only when the line registers (as in a .flow
        `line`: a provider that trusts the trunk by its address needs none). Returns True when the
        line is new or its settings changed (then register it again), False when they are the same.
        Raises ValueError for an unknown transport or a registering line without a username."""
        if transport not in ("udp", "tcp", "tls"):
            raise ValueError(f"transport {transport!r}: a line speaks udp, tcp or tls")
        if register_every is not None and not username:
            raise ValueError(f"line {name!r} registers (register_every={register_every}) but has no username: "
                             "give username=, or register_every=None for a provider that trusts the trunk "
                             "by its address")
        host, port = _hostport(server, 5061 if transport == "tls" else 5060)
        config = LineConfig(
            name=name, server_host=host, server_port=port, username=username or "", password=password,
            auth_username=auth_username, realm=realm, transport=transport, register_every=register_every,
            numbers=tuple(numbers), display=display, caller_id=caller_id, outbound_proxy=outbound_proxy,
            codecs=tuple(codecs), trust=tuple(trust))
        old = self.engine.lines.get(name)
        before = old.config if old is not None else None
        self.engine.add_line(config)
        self.engine.line_max_calls[name] = max_calls
        return before != config

    def remove_line(self, name: str) -> None:
        """Un-register the line (bounded) and forget it; no-op for an unknown name."""
        self.engine.remove_line(name)
        self.engine.line_max_calls.pop(name, None)

    def register_line(self, name: str, expires: int | None = None) -> None:
        """REGISTER the line to its provider and keep it registered (refreshes, backoff on failure);
        `line_registered` / `line_register_failed` events follow. `expires` (seconds) replaces the
        expiry given to add_line. Raises KeyError for an unknown line; no-op while it registers."""
        line = self._line(name)
        if expires is not None and expires != line.config.register_every:
            line = self.engine.add_line(replace(line.config, register_every=expires))
        if line in self._registering:
            return
        self._registering.add(line)
        self.engine.register_line(name)

    def unregister_line(self, name: str) -> None:
        """Withdraw the line's registration (REGISTER with Expires: 0) but keep the line, so
        `register_line` registers it again. Raises KeyError for an unknown line."""
        line = self._line(name)
        self.engine.remove_line(name)
        self.engine.add_line(line.config)

    def line_state(self, name: str) -> str:
        """"unregistered", "trying", "registered", "failed_waiting", "rejected"... (LineState)."""
        return self._line(name).state

    @property
    def lines(self) -> frozenset[str]:
        return frozenset(self.engine.lines)

    def _line(self, name: str):  # type: ignore[no-untyped-def]
        try:
            return self.engine.lines[name]
        except KeyError:
            raise KeyError(f"no line {name!r} (add_line first; lines: {', '.join(sorted(self.engine.lines)) or 'none'})"
                           ) from None

    # ---- server-wide settings ----------------------------------------------------------------------
    def set_limits(self, *, max_calls: int | None = None, max_call_duration: float | None = None,
                   rtp_timeout: float | None = None) -> None:
        """Limits for the calls that start from now on (a call keeps the timers it started with).

        max_calls: calls in the whole server at once (a further INVITE gets 503 with Retry-After);
        max_call_duration: seconds a call may last once connected (or once Callflow answered it
        itself: a prompt, a menu, a voicemail, an originated call), then BYE on both legs;
        rtp_timeout: seconds without RTP either way before a connected call is ended (both: a
        `hangup` whose reason says so). None: no limit. Per user and per line: add_user's and
        add_line's max_calls."""
        for what, value in (("max_calls", max_calls), ("max_call_duration", max_call_duration),
                            ("rtp_timeout", rtp_timeout)):
            if value is not None and value <= 0:
                raise ValueError(f"{what} {value!r}: more than 0, or None for no limit")
        self.engine.max_calls = max_calls
        self.engine.max_call_duration = max_call_duration
        self.engine.rtp_timeout = rtp_timeout

    @property
    def program(self) -> object:
        """What every new call session carries as `session.program` from now on (None by default):
        the .flow runtime sets its compiled Program, so that a call keeps deciding with the rules it
        started with while a reload swaps in new ones."""
        return self.engine.program

    @program.setter
    def program(self, value: object) -> None:
        self.engine.program = value

    # ---- call sessions -----------------------------------------------------------------------------
    def call_sessions(self) -> list[CallSession]:
        """The live call sessions (a closed one is gone)."""
        return list(self.engine.calls.values())

    def call_session(self, call_id: str) -> CallSession | None:
        """The live call session with that id, or None once it has closed (or never was)."""
        return self.engine.calls.get(call_id)

    def accept_call_session(self, session: CallSession | str, *, to_user: str | None = None,
                            to_line: str | None = None, number: str | None = None,
                            timeout: float | None = None, fallback: bool = False) -> asyncio.Future[Failure | None]:
        """AcceptCallSession: ring a user's registered phones (all at once) or dial out through a line.

        number: the number to dial through the line (default: the number the caller dialled), or
        shown to the user's phone as the one called. timeout: seconds to ring before giving up
        (None: the default no-answer timeout, RING_TIMEOUT, 180 s; a call never
        rings forever). Returns a future: None once connected, else the
        Failure (SIP code and reason: 486 busy, 480 not registered, 408 no answer in time, 404
        unknown user or line...). Without `fallback` a failure refuses the call with that code
        (the caller hears busy for busy); with `fallback=True` the session waits for the program's
        next accept_call_session or reject_call_session (hunting: alice, then bob, then voicemail).
        A session that has closed meanwhile gives Failure(487) at once.
        Raises ValueError unless exactly one of to_user and to_line is given."""
        if (to_user is None) == (to_line is None):
            raise ValueError("accept_call_session needs exactly one of to_user= and to_line=")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout {timeout!r}: seconds, more than 0 (or None for the default, 180 s)")
        future: asyncio.Future[Failure | None] = asyncio.get_running_loop().create_future()
        call = self._session(session)
        if call is None:
            future.set_result(Failure(487, "Request Terminated (the call session has closed)"))
            return future
        target = Target("USER", to_user, number) if to_user is not None else Target("LINE", to_line or "", number)

        def on_result(failure: Failure | None) -> None:
            if failure is not None and not fallback:
                call.reject(failure.code, failure.reason)
            if not future.done():
                future.set_result(failure)

        call.accept([target], timeout if timeout is not None else RING_TIMEOUT, on_result)
        return future

    def reject_call_session(self, session: CallSession | str, code: int = 603, reason: str | None = None) -> None:
        """RejectCallSession: refuse the call with a final response `code reason` (300-699; the
        reason defaults to the standard phrase). No-op for a session that has closed."""
        if not 300 <= code <= 699:
            raise ValueError(f"code {code}: a call is refused with 300-699")
        call = self._session(session)
        if call is not None:
            call.reject(code, reason or _REASONS.get(code, "Rejected"))

    def close_call_session(self, session: CallSession | str) -> None:
        """CloseCallSession: end the call as its state needs (BYE to both legs, CANCEL of the ringing
        leg, or a final response to the caller). No-op for a session that has closed."""
        call = self._session(session)
        if call is not None:
            call.hangup()

    def dial_call_session(self, *, to_user: str | None = None, to_line: str | None = None, number: str | None = None,
                          then_user: str | None = None, then_line: str | None = None,
                          then_number: str | None = None, route: str | None = None, play: str | None = None,
                          ring_timeout: float = RING_ZERO, timeout: float | None = None) -> DialedCall:
        """DialCallSession (originate): Callflow places a call itself. Channel ZERO is rung first:
        `to_user`'s registered phones (all at once), or `number` through `to_line`; for at most
        `ring_timeout` seconds. Once ZERO answers, exactly one of:

        - `then_user=` / `then_line=` + `then_number=`: dial channel ONE (for at most `timeout`
          seconds, default 180) and bridge the two; ONE offered the codec ZERO answered with;
        - `route="NUMBER"`: the program decides, as for a call from ZERO's user to NUMBER (an
          `incoming` event for its handler, the `.flow` rules under `callflow run`);
        - `play="file.wav"`: play the file to ZERO, then hang up.

        ZERO's phone shows the number it will be connected to as the caller. Returns a DialedCall:
        `session` (events of this call carry its id; `created` has origin=originated) and `result`,
        a future: None once bridged (connected) or played, else the Failure (ZERO: 480 no answer,
        486 busy...; ONE's failure after ZERO answered ends ZERO with BYE, `hangup` saying why).
        Raises ValueError for a bad combination, and runtime.originate.DialError (a ValueError with
        `.code`) for an unknown or unregistered user or line (ZERO's, or ONE's: an unknown then_user,
        an unknown or unregistered then_line), a bad number, a `play` file that is not there or not
        readable (400, naming it) or the call limit: before anything is sent. A file that cannot be
        decoded is known only once ZERO answered: a `play_failed` event, and `result` a Failure (500)."""
        if (to_user is None) == (to_line is None):
            raise ValueError("dial_call_session needs exactly one of to_user= and to_line= (+ number=)")
        if to_line is not None and not number:
            raise ValueError("dial_call_session through a line needs the number= to dial")
        thens = [name for name, value in (("then_user", then_user), ("then_line", then_line), ("route", route),
                                           ("play", play)) if value is not None]
        if len(thens) != 1:
            raise ValueError("dial_call_session needs exactly one of then_user=, then_line= (+ then_number=), "
                             f"route= and play= (got {', '.join(thens) or 'none'})")
        if then_line is not None and not then_number:
            raise ValueError("dial_call_session bridging through a line needs then_number=")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout {timeout!r}: seconds, more than 0 (or None for the default, 180 s)")
        zero = Target("USER", to_user, None) if to_user is not None else Target("LINE", to_line or "", number)
        # what follows ZERO's answer is checked before ZERO rings (after ZERO itself: its problem is
        # the first to report): a call that cannot go on rings no one
        check_target(self.engine, zero, self.engine.now())
        if then_user is not None:
            check_then(self.engine, Target("USER", then_user, then_number))
        elif then_line is not None:
            check_then(self.engine, Target("LINE", then_line, then_number))
        elif play is not None:
            check_playable(play)
        future: asyncio.Future[Failure | None] = asyncio.get_running_loop().create_future()

        def settle(result: Failure | None) -> None:
            if not future.done():
                future.set_result(result)

        if route is not None:
            shown, then = route, "route"
        elif play is not None:
            shown, then = "", "play"
        else:
            shown, then = then_number or then_user or "", "bridge"

        def answered(call: CallSession) -> None:
            if route is not None:
                self._routed[call.id] = future   # settled by its `connected` or `closed` event
                self.engine.route(call)
            elif play is not None:
                self._plays[call.id] = future   # a file that fails to decode: `play_failed` settles it
                def played() -> None:
                    settle(None)
                    call.hangup()
                call.play(play, True, played)
            else:
                target = Target("USER", then_user, then_number) if then_user is not None \
                    else Target("LINE", then_line or "", then_number)

                def on_result(failure: Failure | None) -> None:
                    if failure is not None:
                        call.reject(failure.code, failure.reason)  # ZERO gets BYE; `hangup` says why
                    settle(failure)

                call.accept([target], timeout if timeout is not None else RING_TIMEOUT, on_result)

        session = originate(self.engine, zero, answered, number=shown, then=then, on_failed=settle,
                            ring_timeout=ring_timeout)
        return DialedCall(session, future)

    def transfer_call_session(self, session: CallSession | str, *, to_user: str | None = None,
                              to_line: str | None = None, number: str | None = None,
                              channel: Channel = Channel.ONE) -> asyncio.Future[Failure | None]:
        """Blind transfer of a connected call: the party on `channel` (default ONE, the leg Callflow
        dialled) leaves, and the other party is bridged to `to_user`'s phones or to `number` through
        `to_line` once one answers (Callflow carries it out as it does a phone's REFER; `transfer`
        events report trying, ringing, connected or failed). Returns a future: None once bridged,
        else the Failure (the call then goes on as it was). Raises ValueError unless exactly one of
        to_user and to_line is given (to_line needs number)."""
        if (to_user is None) == (to_line is None):
            raise ValueError("transfer_call_session needs exactly one of to_user= and to_line= (+ number=)")
        if to_line is not None and not number:
            raise ValueError("transfer_call_session through a line needs the number= to dial")
        future: asyncio.Future[Failure | None] = asyncio.get_running_loop().create_future()
        call = self._session(session)
        if call is None:
            future.set_result(Failure(481, "Call/Transaction Does Not Exist (the call session has closed)"))
            return future
        pending = self._transfers.get(call.id)
        if pending is not None and not pending.done():  # one transfer at a time per call (RFC 3515 4.1's spirit)
            future.set_result(Failure(491, "Request Pending (a transfer of this call is under way)"))
            return future
        target = Target("USER", to_user, number) if to_user is not None else Target("LINE", to_line or "", number)
        self._transfers[call.id] = future   # settled by the call's `transfer` event: connected or failed
        call.transfer(channel, [target], number or to_user or "")
        return future

    def send_dtmf(self, session: CallSession | str, digits: str, channel: Channel = Channel.ZERO,
                  duration: float = 0.1) -> None:
        """SendDigitDTMF: press `digits` ("0"-"9", "*", "#", "A"-"D", at most 64) on `channel`'s phone:
        ZERO the leg the call came in on, ONE the leg Callflow dialled. Each key is held `duration`
        seconds (0.04-8) with 0.1 s between keys. Sent as RFC 4733 telephone-events when that leg's
        offer/answer settled telephone-event, else as SIP INFO (application/dtmf-relay), one per key.
        Returns at once after a `dtmf_sent` event; a digit that cannot be delivered (the phone takes
        neither, refuses the INFO, or the leg is not answered) is a `dtmf_dropped` event. Raises
        ValueError for bad digits or duration; no-op for a session that has closed."""
        digits = normalize_digits(digits)
        if not MIN_DURATION <= duration <= MAX_DURATION:
            raise ValueError(f"duration {duration!r}: seconds, {MIN_DURATION}-{MAX_DURATION}")
        call = self._session(session)
        if call is not None:
            channel = Channel(channel)
            self.engine.bus.emit("dtmf_sent", call=call.id, channel=channel.name, digits=digits)
            call.send_dtmf(channel, digits, duration)

    def record_call_session(self, session: CallSession | str, name: str, *, mix: str = "mixed",
                            folder: str = RECORDINGS_FOLDER) -> asyncio.Future[list[str] | Failure]:
        """Record both legs of a bridged call from now until it ends (the `.flow` `record call`).

        name: the file's name relative to `folder`, a `{field}` template (`{call}`, `{time}`: UTC
        20261130-021500) ending in .wav. mix: "mixed" (one mono file), "per leg" (NAME.zero.wav and
        NAME.one.wav) or "both" (all three). Files are written through the codec library, atomically,
        once the call ends, and listed in its call record; `recording_started`, `recording` and
        `recording_failed` events report them. Returns a future: the absolute paths written, or the
        Failure (500 with the reason: a name leaving the folder, a media backend that cannot record,
        the call recorded already, a full disk...; 487 if the call had closed). Never ends the call.
        Raises ValueError for a mix that is not one of RECORDING_MIXES."""
        if mix not in RECORDING_MIXES:
            raise ValueError(f"mix {mix!r}: one of {', '.join(repr(m) for m in RECORDING_MIXES)}")
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        call = self._session(session)
        if call is None:
            future.set_result(Failure(487, "Request Terminated (the call session has closed)"))
            return future  # type: ignore[return-value]
        rec = self._recordings[(call.id, "call")] = _Recording(future, "call", arming=True)
        try:
            call.record_call(folder, name, {"call": call.id}, mix)
        finally:
            rec.arming = False
        return future  # type: ignore[return-value]

    def record_voicemail(self, session: CallSession | str, name: str, *, prompt: str | None = None,
                         max_seconds: float = 120.0, silence_seconds: float | None = 5.0,
                         folder: str = RECORDINGS_FOLDER, hangup: bool = True) -> asyncio.Future[str | Failure]:
        """A voicemail (the `.flow` `record`): answer the caller on channel ZERO (a call not yet
        accepted to anyone), play `prompt` (if any) and a beep, then record the caller into `name`
        (as for record_call_session) until `max_seconds`, `silence_seconds` without voice (None:
        off), `#`, or the caller hangs up. `hangup`: close the call once the file is written.
        Returns a future: the file's absolute path once written, else the Failure (500 with the
        reason: the caller's phone offers neither PCMU nor PCMA, an unwritable folder...; 487 when
        the caller hung up before the beep). Raises ValueError for a bad max_seconds or
        silence_seconds, or while a voicemail of this call is under way."""
        if not 0 < max_seconds <= 3600:
            raise ValueError(f"max_seconds {max_seconds!r}: more than 0, at most 3600")
        if silence_seconds is not None and silence_seconds <= 0:
            raise ValueError(f"silence_seconds {silence_seconds!r}: more than 0, or None for off")
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        call = self._session(session)
        if call is None:
            future.set_result(Failure(487, "Request Terminated (the call session has closed)"))
            return future  # type: ignore[return-value]
        key = (call.id, "voicemail")
        if key in self._recordings:
            raise ValueError(f"call {call.id}: a voicemail is under way already")
        rec = self._recordings[key] = _Recording(future, "voicemail")

        def done() -> None:  # the file is written (or could not be) and the call is still up
            if hangup:
                call.hangup()

        def record() -> None:
            rec.arming = True
            try:
                call.record(folder, name, {"call": call.id}, max_seconds, silence_seconds, done)
            finally:
                rec.arming = False

        def beep() -> None:
            call.play(beep_file(), True, record)

        if prompt is not None:
            call.play(prompt, True, beep)
        else:
            beep()
        return future  # type: ignore[return-value]

    def send_chat(self, text: str, *, to_user: str | None = None, to_line: str | None = None,
                  number: str | None = None, sender: str = "callflow",
                  content_type: str = "text/plain;charset=UTF-8") -> asyncio.Future[tuple[int, str]]:
        """Chat (SIP MESSAGE outside a dialog, RFC 3428) from the server: to every registered phone of
        `to_user`, or to `number` through `to_line` (answering the provider's challenge with the
        line's credentials). `sender` is the From user the recipient sees. Returns a future of the
        final (code, reason): the first 2xx, else the lowest failure (480: the user has no phone
        registered, 404: no such user or line, 503: the line is not registered, 408: no answer).
        Raises ValueError unless exactly one of to_user and to_line is given (to_line needs number)."""
        if (to_user is None) == (to_line is None):
            raise ValueError("send_chat needs exactly one of to_user= and to_line=")
        if to_line is not None and not number:
            raise ValueError("send_chat through a line needs the number= to send to")
        future: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
        target = Target("USER", to_user, number) if to_user is not None else Target("LINE", to_line or "", number)
        message = ChatMessage("SERVER", "callflow", sender, number or to_user or "", content_type,
                              text.encode("utf-8"))

        def done(code: int, reason: str) -> None:
            if not future.done():
                future.set_result((code, reason))

        self.engine.chat.send(message, [target], done)
        return future

    def route_chat(self, router: Callable[[ChatMessage], Target | list[Target] | Failure | None]
                   ) -> Callable[[ChatMessage], Target | list[Target] | Failure | None]:
        """Decorator: decide where a user's or a line's MESSAGE goes. `router(message)` gets the
        ChatMessage (peer_type "USER"/"LINE", peer, sender, to, text) and returns a Target
        (`Target("USER", "bob")`, `Target("LINE", "itsp1", "+15557654321")`), a list of them, a
        Failure to refuse it with, or None for 404. Without one, a message goes to the user whose
        name it was sent to. The sender was authenticated first (never an open relay), and a line's
        message never goes back out through a line."""

        def route(message: ChatMessage) -> list[Target] | Failure:
            decided = router(message)
            if decided is None:
                return Failure(404, "Not Found (no route)")
            if isinstance(decided, Target):
                return [decided]
            return decided

        self.engine.chat.router = route
        return router

    def route_transfer(self, router: Callable[[CallSession, str, str], tuple[list[Target], Failure | None]]
                       ) -> Callable[[CallSession, str, str], tuple[list[Target], Failure | None]]:
        """Decorator: decide where a transfer goes. When user `user`'s phone transfers call `session`
        (a REFER, RFC 3515, blind or attended), `router(session, user, target)` gets the Refer-To's
        number or name as `target` and returns the targets to dial for it (a list of Target) and
        None, or [] and the Failure the transferor is told (NOTIFY with its code). A router that
        raises refuses the transfer with 500. Without one, every transfer is refused with 404."""
        calls = self.engine.calls

        def route(call: object, user: str, target: str) -> tuple[list[Target], Failure | None]:
            session = calls.get(getattr(call, "id", ""))
            if session is None:  # the call ended meanwhile
                return [], Failure(487, "Request Terminated (the call session has closed)")
            return router(session, user, target)

        self.engine.transfer_router = route
        return router

    def _session(self, session: CallSession | str) -> CallSession | None:
        call_id = session if isinstance(session, str) else session.id
        return self.engine.calls.get(call_id)

    # ---- events ------------------------------------------------------------------------------------
    def on(self, name: str) -> Callable[[Handler], Handler]:
        """Decorator: call `handler(event)` for every `name` event (a plain function, or a coroutine
        function run as a task). `incoming` is the routing decision point: its handler decides with
        accept_call_session / reject_call_session, at once or later. A call that arrives while no
        `incoming` handler and no `events()` stream that gets `incoming` exists is refused with 404.
        Raises ValueError for a name that is not an event (flowlang/events.py)."""
        if name not in EVENT_NAMES:
            raise ValueError(f"no event {name!r}; events: {', '.join(sorted(EVENT_NAMES))}")

        def register(handler: Handler) -> Handler:
            self._handlers.setdefault(name, []).append(handler)
            return handler

        return register

    def events(self, *names: str) -> EventStream:
        """Every event (or only those named), in order, for `async for event in server.events():`.
        Raises ValueError for a name that is not an event."""
        unknown = [n for n in names if n not in EVENT_NAMES]
        if unknown:
            raise ValueError(f"no event {unknown[0]!r}; events: {', '.join(sorted(EVENT_NAMES))}")
        stream = EventStream(self, frozenset(names) if names else None)
        self._streams.add(stream)
        return stream

    def _on_bus(self, engine_event: EngineEvent) -> None:
        name = engine_event.name
        if name == "incoming":
            # handed out when the engine asks for the decision (the next step of the same call), so
            # that a handler's accept_call_session finds the session waiting for one
            self._pending_incoming[str(engine_event.fields.get("call"))] = engine_event
            return
        if name in ("connected", "closed", "transfer"):
            self._settle(name, engine_event.fields)
        if self._recordings and name in ("recording_started", "recording", "recording_failed", "closed"):
            self._follow_recording(name, engine_event.fields)
        if self._plays and name in ("play_failed", "closed"):
            self._settle_play(name, engine_event.fields)
        if name == "closed":
            self._pending_incoming.pop(str(engine_event.fields.get("call")), None)
        call_id = engine_event.fields.get("call")
        session = self.engine.calls.get(call_id) if isinstance(call_id, str) else None
        self._deliver(Event(name, MappingProxyType(dict(engine_event.fields)), session))

    def _settle(self, name: str, fields: Mapping[str, object]) -> None:
        """The futures of dial_call_session(route=) and transfer_call_session, from the call's events."""
        call_id = str(fields.get("call"))
        if name == "transfer":
            outcome = fields.get("outcome")
            if outcome in ("connected", "failed"):
                future = self._transfers.pop(call_id, None)
                if future is not None and not future.done():
                    reason = str(fields.get("reason") or "")
                    code, _, text = reason.partition(" ")
                    future.set_result(None if outcome == "connected" else
                                      Failure(int(code) if code.isdigit() else 500, text or reason or "Failed"))
            return
        if name == "closed":
            # whatever settled before: a closed call keeps no future here (a transfer still pending,
            # a route= future whose call connected earlier), so the dicts hold only live calls
            transfer = self._transfers.pop(call_id, None)
            if transfer is not None and not transfer.done():
                transfer.set_result(Failure(487, "Request Terminated (the call closed)"))
        future = self._routed.pop(call_id, None)
        if future is None or future.done():
            return
        if name == "connected":
            future.set_result(None)
        else:
            session = self.engine.calls.get(call_id)
            reason = str(fields.get("reason") or "")
            code, _, text = reason.partition(" ")
            failure = session.last_failure if session is not None else None
            future.set_result(failure or Failure(int(code) if code.isdigit() else 480, text or reason or "hangup"))

    def _follow_recording(self, name: str, fields: Mapping[str, object]) -> None:
        """Settle record_voicemail's and record_call_session's futures from the recording events."""
        call_id = str(fields.get("call"))
        for kind in ("voicemail", "call"):
            rec = self._recordings.get((call_id, kind))
            if rec is None:
                continue
            path = str(fields.get("path") or "")
            if name == "recording_started":
                if fields.get("kind") == kind:
                    rec.started = True
                    rec.pending.add(path)
                continue
            if name == "closed":
                if not rec.started:  # hung up before the recording began: nothing will be written
                    rec.settle(Failure(487, "Request Terminated (the call ended before the recording began)"))
                    del self._recordings[(call_id, kind)]
                continue
            if rec.arming and not rec.started and name == "recording_failed":
                rec.failure = Failure(500, str(fields.get("reason") or "the recording could not be made"))
            elif path in rec.pending:
                rec.pending.discard(path)
                if name == "recording":
                    rec.written.append(path)
                else:
                    rec.failure = Failure(500, str(fields.get("reason") or "the recording could not be written"))
                if rec.pending:
                    continue
            else:
                continue
            del self._recordings[(call_id, kind)]
            if kind == "voicemail":
                rec.settle(rec.written[0] if rec.written else rec.failure)
            else:
                rec.settle(list(rec.written) if rec.written else rec.failure)
            return

    def _settle_play(self, name: str, fields: Mapping[str, object]) -> None:
        """dial_call_session(play=)'s future: a Failure when the file could not be played (it was
        checked before dialling, so this is a decode failure after ZERO answered) or the call ended
        before the file had played; None is settled by the play's end (in dial_call_session)."""
        future = self._plays.pop(str(fields.get("call")), None)
        if future is None or future.done():
            return
        if name == "play_failed":
            future.set_result(Failure(500, str(fields.get("reason") or "the file could not be played")))
        else:
            future.set_result(Failure(487, "Request Terminated (the call ended before the file had played)"))

    def _route(self, call: CallSession) -> None:
        incoming = self._pending_incoming.pop(call.id, None)
        fields = dict(incoming.fields) if incoming is not None else {
            "call": call.id, "peer_type": call.peer_type, "peer": call.peer_name, "caller": call.caller_id,
            "to": call.dialled}
        deciders = [s for s in self._streams if s._names is None or "incoming" in s._names]
        if not self._handlers.get("incoming") and not deciders:
            call.reject(404, "Not Found (no incoming handler)")
        self._deliver(Event("incoming", MappingProxyType(fields), call))

    def _deliver(self, event: Event) -> None:
        if self._streams:  # per event on the hot path (the .flow runtime listens to every event)
            for stream in list(self._streams):
                stream._put(event)
        for handler in self._handlers.get(event.name, ()):
            try:
                result = handler(event)
            except Exception:
                log.exception("event=listener_failed name=%s", event.name)
                continue
            if result is not None and inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._tasks.add(task)
                task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("event=listener_failed name=handler", exc_info=task.exception())


def _listen_specs(texts: list[str]) -> list[ListenSpec]:
    """"[transport:]HOST:PORT" -> listeners; a bare HOST:PORT listens on UDP and TCP (like `callflow
    run --listen`). Raises ValueError naming the text that is not one."""
    specs: list[ListenSpec] = []
    for text in texts:
        transport, sep, rest = text.partition(":")
        if sep and transport in ("udp", "tcp", "tls", "ws", "wss"):
            host, port = _hostport(rest, None)
            specs.append(ListenSpec(transport, host, port))
        else:
            host, port = _hostport(text, None)
            specs += [ListenSpec("udp", host, port), ListenSpec("tcp", host, port)]
    if not specs:
        raise ValueError("listen: at least one HOST:PORT")
    return specs


def _hostport(text: str, default: int | None) -> tuple[str, int]:
    """"host:port", "[v6]:port" or (with a default port) "host" -> (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not port_text:
        if default is None:
            raise ValueError(f"{text!r}: HOST:PORT expected")
        return host, default
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r}: the port must be a number from 0 to 65535")
    if not host:
        raise ValueError(f"{text!r}: a host is needed before the port")
    return host, int(port_text)

