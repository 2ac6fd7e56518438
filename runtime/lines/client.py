"""The asyncio side of a line: resolves the provider, runs its `LineMachine`'s actions (requests
through the engine's transaction layer, timers on the event loop, events on the bus) and feeds the
machine what comes back. All decisions are the machine's (runtime/lines/machine.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..sip.message import Request, Response
from ..sip.transaction import ClientTransaction
from .dns import LocateError, Target, locate
from .machine import (
    GIVE_UP_TIMER,
    REGISTER_TIMER,
    UNREGISTER_TIMEOUT,
    Action,
    CancelTimer,
    Emit,
    LineConfig,
    LineMachine,
    LineState,
    LocalAddress,
    SendRequest,
    SetTimer,
)

if TYPE_CHECKING:
    from ..engine import Engine

log = logging.getLogger("callflow.lines")

PREDECESSOR_WAIT = UNREGISTER_TIMEOUT + 1.0


def _split_hostport(text: str, default_port: int) -> tuple[str, int]:
    """"host", "host:port", "[v6]:port", optionally with a "sip:" prefix -> (host, port)."""
    text = text.strip()
    if text.lower().startswith("sip:"):
        text = text[4:]
    text = text.split(";", 1)[0]
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else default_port
    host, sep, port = text.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        return host, int(port)
    return text, default_port


class LineClient:
    """One line: `start()` registers it (or settles an IP trunk), `stop()` un-registers it.

    `predecessor` is the client this one replaces on a reload: its un-registration is waited for
    (at most PREDECESSOR_WAIT seconds) so that it cannot land after our new registration and remove
    the binding the provider just granted us.
    """

    def __init__(self, engine: Engine, config: LineConfig, predecessor: LineClient | None = None) -> None:
        self.engine = engine
        self.config = config
        self.machine = LineMachine(config)
        self.address: tuple[str, int] | None = None
        # in a cluster, the node that holds this line's lease and registers it when that is not this
        # node (set by runtime/lines/lease_pump.py): calls still go out through the line from here
        self.registered_by: str | None = None
        self.predecessor = predecessor
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._txns: dict[str, ClientTransaction] = {}
        self._done = asyncio.Event()
        self._done_callbacks: list[Callable[[LineClient], None]] = []
        self._resolving = False
        self._resolve_error = ""
        self.targets: list[Target] = []
        self.target_index = 0
        self._next_target = False

    # ---- what the engine reads --------------------------------------------------------------------
    @property
    def state(self) -> str:
        """The operator's name of the line's state (LineState values: "registered", "rejected"...)."""
        return self.machine.state.value

    @property
    def carries_calls(self) -> bool:
        """Whether a call may go out through this line now (see LineMachine.carries_calls), or, in a
        cluster, because another node registers it (`registered_by`): a provider takes an INVITE with
        the account's digest credentials from whatever address sends it; only the REGISTER is the
        lease holder's."""
        if self.address is None:
            return False
        return self.machine.carries_calls or (self.registered_by is not None and not self._removed())

    def _removed(self) -> bool:
        """Stopped, and no longer the engine's client for this line (removed or replaced by a reload)."""
        return self.machine.stopping and self.engine.lines.get(self.config.name) is not self

    @property
    def registered(self) -> bool:
        return self.machine.state is LineState.REGISTERED

    @property
    def unregistering(self) -> bool:
        return self.machine.state is LineState.UNREGISTERING

    @property
    def stopped(self) -> bool:
        return self.machine.stopping

    @property
    def stopped_done(self) -> bool:
        """Stopped, and its un-registration (if any) is over."""
        return self._done.is_set()

    def on_done(self, callback: Callable[[LineClient], None]) -> None:
        """Call `callback(self)` once the line has stopped and un-registered (at once if it has)."""
        if self._done.is_set():
            callback(self)
        else:
            self._done_callbacks.append(callback)

    @property
    def auth(self):  # type: ignore[no-untyped-def]
        """The line's digest client (the call layer makes its own from the same credentials)."""
        return self.machine.auth

    # ---- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Resolve the provider (or the outbound proxy) and register."""
        before = self.predecessor
        self.predecessor = None
        if before is not None and not before._done.is_set():
            try:
                await asyncio.wait_for(before._done.wait(), PREDECESSOR_WAIT)
            except TimeoutError:
                log.warning("event=line_predecessor_timeout line=%s", self.config.name)
        if self.machine.stopping:
            return
        await self.resolve()
        if self.machine.stopping:  # stopped (removed, replaced, shut down) while resolving
            return
        local = self._local()
        if self.address is None and self.config.register_every:
            self.machine.local = local
            self._apply(self.machine.unresolved(self.engine.now(), self._unresolved_reason()))
        else:
            self._apply(self.machine.start(self.engine.now(), local))

    def stop(self, *, unregister: bool = True) -> None:
        """Un-register (bounded by UNREGISTER_TIMEOUT, answering a challenge) and stop refreshing;
        `unregister=False` stops without a REGISTER (a lost lease: runtime/lines/lease.py)."""
        self._apply(self.machine.stop(self.engine.now(), unregister=unregister))

    async def wait_stopped(self, timeout: float = UNREGISTER_TIMEOUT + 0.5) -> bool:
        """Wait until the un-registration has ended; False if it had not after `timeout` seconds."""
        try:
            await asyncio.wait_for(self._done.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def resolve(self) -> None:
        """Where requests go: the outbound proxy when the line names one, else the server."""
        cfg = self.config
        if cfg.outbound_proxy:
            host, port = _split_hostport(cfg.outbound_proxy, 5061 if cfg.transport == "tls" else 5060)
        else:
            host, port = cfg.server_host, cfg.server_port
        self._resolve_error = ""
        self._next_target = False
        try:
            self.targets = await locate(host, port, cfg.transport)
            self.address = self.targets[0].address
        except LocateError as exc:
            self.targets = []
            self.address = None
            self._resolve_error = str(exc)
        self.target_index = 0
        self.engine.index_lines()

    def _fail_over(self) -> bool:
        """After a failure, move to the next address DNS gave (RFC 3263 4.3); False when none is left."""
        if not self._next_target or self.target_index + 1 >= len(self.targets):
            return False
        self._next_target = False
        before = self.targets[self.target_index]
        self.target_index += 1
        after = self.targets[self.target_index]
        self.address = after.address
        self.engine.index_lines()
        self.engine.bus.emit("line_failover", line=self.config.name, failed=f"{before.host}:{before.port}",
                             next=f"{after.host}:{after.port}", found_by=after.source)
        return True

    def _unresolved_reason(self) -> str:
        return self._resolve_error or "cannot resolve the provider's address"

    def _local(self) -> LocalAddress:
        engine = self.engine
        transport = self.config.transport
        contact = engine.contact_uri(self.config.username or "callflow", transport)
        edge = getattr(engine, "line_contact", None)
        if edge:  # in a cluster: the edge's address, so the provider's calls reach any node (--line-contact)
            contact = f"sip:{self.config.username or 'callflow'}@{edge}" + ("" if transport == "udp"
                                                                              else f";transport={transport}")
        return LocalAddress(engine.via(transport), contact, engine.user_agent)

    # ---- transaction results (the engine calls these) ------------------------------------------------
    def on_response(self, resp: Response, txn: ClientTransaction | None) -> None:
        if txn is None:
            return
        self._apply(self.machine.response(resp, self.engine.now()))

    def on_timeout(self, txn: ClientTransaction) -> None:
        self._apply(self.machine.timeout(txn.request, self.engine.now()))

    # ---- running the machine's actions --------------------------------------------------------------
    def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, SendRequest):
                self._send(action.request, action.purpose)
            elif isinstance(action, SetTimer):
                self._cancel(action.name)
                self._timers[action.name] = self.engine.endpoint.loop.call_at(action.at, self._fire, action.name)
            elif isinstance(action, CancelTimer):
                self._cancel(action.name)
            elif isinstance(action, Emit):
                if action.name == "line_register_failed" and action.fields.get("code") in (408, 503):
                    self._next_target = True  # that server did not answer: the next one may
                self.engine.bus.emit(action.name, **action.fields)
        if self.machine.done and not self._done.is_set():
            for name in list(self._timers):
                self._cancel(name)
            self._done.set()
            callbacks, self._done_callbacks = self._done_callbacks, []
            for callback in callbacks:
                callback(self)

    def _send(self, request: Request, purpose: str) -> None:
        if self.address is None:
            # the machine only sends once we know where: this is a bug, say it loudly
            log.error("event=line_send_failed line=%s reason=\"no provider address\"", self.config.name)
            return
        self._txns[purpose] = self.engine.send_request(request, self.address, self, self.config.transport)
        self.engine.endpoint.pump()

    def _cancel(self, name: str) -> None:
        handle = self._timers.pop(name, None)
        if handle is not None:
            handle.cancel()

    def _fire(self, name: str) -> None:
        self._timers.pop(name, None)
        if name == REGISTER_TIMER and self.machine.state is not LineState.REGISTERED and self._fail_over():
            pass  # the retry goes to the next server DNS named
        elif name == REGISTER_TIMER and self.machine.state is not LineState.REGISTERED and self._named():
            # after a failure, ask DNS again: the provider may have moved
            if not self._resolving:
                task = self.engine.endpoint.loop.create_task(self._resolve_then(name))
                task.add_done_callback(lambda t: t.cancelled() or t.exception())
            return
        if name == REGISTER_TIMER and self.address is None:
            self._apply(self.machine.unresolved(self.engine.now(), self._unresolved_reason()))
            return
        try:
            self._apply(self.machine.timer(name, self.engine.now()))
        except Exception:
            log.exception("line=%s timer %s failed", self.config.name, name)
        if name == GIVE_UP_TIMER:
            self.engine.endpoint.pump()

    async def _resolve_then(self, name: str) -> None:
        self._resolving = True
        try:
            await self.resolve()
        finally:
            self._resolving = False
        if self.machine.stopping:
            return
        if self.address is None:
            self._apply(self.machine.unresolved(self.engine.now(), self._unresolved_reason()))
        else:
            self._apply(self.machine.timer(name, self.engine.now()))

    def _named(self) -> bool:
        host = _split_hostport(self.config.outbound_proxy, 5060)[0] if self.config.outbound_proxy \
            else self.config.server_host
        try:
            ipaddress.ip_address(host)
            return False
        except ValueError:
            return True
