"""The asyncio side of line leases: runs each line's `LeaseMachine` (runtime/lines/lease.py) against a
lease store (runtime/lines/lease_pg.py) and the engine's lines. All decisions are the machines'.

The engine hands a line to `want` instead of starting it (`engine.leases`), so a line registers only
while this node holds its lease. A node that does not hold it still resolves the line's provider, so it
recognises the provider's calls and can place calls through the line (the edge sends the provider's
calls to any node). The store's blocking calls run on one worker thread: the event loop never waits
for the database.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Protocol

from .client import LineClient
from .lease import (
    DEFAULT_PERIOD,
    Action,
    Emit,
    LeaseMachine,
    LeaseState,
    Release,
    Renew,
    StartRegistering,
    StopRegistering,
    StoreAnswer,
    TryAcquire,
    Wake,
)

if TYPE_CHECKING:
    from ..engine import Engine

log = logging.getLogger("callflow.lines")

RELEASE_WAIT = 5.0  # seconds a shutdown waits for the lease rows to be released


class LeaseStore(Protocol):
    """What the pump needs of a store (PostgresLeaseStore; fakes in the unit tests)."""

    node: str

    def acquire(self, line: str, period: float) -> StoreAnswer: ...
    def renew(self, line: str, period: float) -> StoreAnswer: ...
    def release(self, line: str) -> StoreAnswer: ...
    def close(self) -> None: ...


class LeasePump:
    """Leases for every line of `engine`, held as node `store.node` for `period` seconds each."""

    def __init__(self, engine: Engine, store: LeaseStore, period: float = DEFAULT_PERIOD) -> None:
        self.engine = engine
        self.store = store
        self.node = store.node
        self.period = period
        self.machines: dict[str, LeaseMachine] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Future[object]] = set()
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="callflow-lease")
        self._closed = False
        self._stopping = False  # close() has begun: no line starts registering any more

    # ---- what the engine calls ---------------------------------------------------------------------
    def want(self, line: LineClient) -> None:
        """The program has this line: register it when (and while) this node holds its lease."""
        name = line.config.name
        machine = self.machines.get(name)
        if machine is None or machine.state is LeaseState.STOPPED:
            machine = self.machines[name] = LeaseMachine(name, self.node, self.period)
            self._resolve(line)
            self._apply(name, machine.start(self.engine.now()))
        elif machine.held:
            self._start(line)  # a reload replaced the line: ours, so it registers at once
        else:
            self._resolve(line)
        self._mark(name)

    def drop(self, name: str) -> None:
        """The program no longer has this line (the engine has stopped its client): release the lease."""
        machine = self.machines.get(name)
        if machine is not None:
            self._apply(name, machine.stop(self.engine.now()))

    async def close(self) -> None:
        """A clean stop, before the engine's: the lines we hold un-register, then their leases are
        released (bounded: UNREGISTER_TIMEOUT, then RELEASE_WAIT)."""
        self._stopping = True
        now = self.engine.now()
        for name, machine in list(self.machines.items()):
            self._apply(name, machine.stop(now))
        leaving = [line for line in self.engine.lines.values() if line.stopped and not line.stopped_done]
        if leaving:
            await asyncio.gather(*(line.wait_stopped() for line in leaving))
        pending = [task for task in self._tasks if not task.done()]
        if pending:
            await asyncio.wait(pending, timeout=RELEASE_WAIT)
        # a request that was on its way may have taken a row after all: delete whatever is ours
        # (only this node's rows go), so no other node waits a lease period for nothing
        loop = self.engine.endpoint.loop
        sweep = [loop.run_in_executor(self._worker, self.store.release, name) for name in self.machines]
        if sweep:
            await asyncio.wait(sweep, timeout=RELEASE_WAIT)
        self._closed = True
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self._worker.shutdown(wait=False, cancel_futures=True)
        self.store.close()

    def holding(self) -> dict[str, dict[str, object]]:
        """{line: {"holder", "expires", "held", "state", "carried"}} as this node last learnt it;
        "expires" in Unix seconds (the database's clock), "held" whether this node registers the line,
        "carried" whether calls go out through it from this node although another node registers it."""
        out: dict[str, dict[str, object]] = {}
        for name, m in sorted(self.machines.items()):
            line = self.engine.lines.get(name)
            carried = bool(line is not None and not m.held and line.registered_by and line.carries_calls)
            out[name] = {"holder": m.holder, "expires": m.expires, "held": m.held, "state": m.state.value,
                         "carried": carried}
        return out

    # ---- running the machines' actions ------------------------------------------------------------
    def _apply(self, name: str, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, TryAcquire):
                self._ask(name, "acquire", self.store.acquire, action.line, action.period)
            elif isinstance(action, Renew):
                self._ask(name, "renew", self.store.renew, action.line, action.period)
            elif isinstance(action, Release):
                line = self.engine.lines.get(name)
                if line is not None and line.stopped and not line.stopped_done:
                    # release only once the un-REGISTER is over, so the next holder's REGISTER follows it
                    line.on_done(lambda _line, n=name: self._ask(n, "release", self.store.release, n))
                else:
                    self._ask(name, "release", self.store.release, name)
            elif isinstance(action, StartRegistering):
                line = self.engine.lines.get(name)
                if line is not None:
                    self._start(line)
            elif isinstance(action, StopRegistering):
                line = self.engine.lines.get(name)
                if line is not None and not line.stopped:
                    line.stop(unregister=action.unregister)
                    self.engine.endpoint.pump()
            elif isinstance(action, Emit):
                self.engine.bus.emit(action.name, **action.fields)
            elif isinstance(action, Wake):
                self._arm(name, action.at)

    def _ask(self, name: str, op: str, call, *args: object) -> None:  # type: ignore[no-untyped-def]
        if self._closed:
            return
        loop = self.engine.endpoint.loop
        future = loop.run_in_executor(self._worker, call, *args)
        self._tasks.add(future)

        def answered(done: asyncio.Future[object]) -> None:
            self._tasks.discard(done)
            if done.cancelled():
                return
            error = done.exception()
            answer = done.result() if error is None else StoreAnswer(False, error=str(error))
            machine = self.machines.get(name)
            if machine is not None:
                try:
                    self._apply(name, machine.result(op, answer, self.engine.now()))  # type: ignore[arg-type]
                except Exception:
                    log.exception("line=%s lease %s answer failed", name, op)
                self._mark(name)

        future.add_done_callback(answered)

    def _arm(self, name: str, at: float) -> None:
        handle = self._timers.pop(name, None)
        if handle is not None:
            handle.cancel()
        if not self._closed:
            self._timers[name] = self.engine.endpoint.loop.call_at(at, self._tick, name)

    def _tick(self, name: str) -> None:
        self._timers.pop(name, None)
        machine = self.machines.get(name)
        if machine is not None:
            self._apply(name, machine.tick(self.engine.now()))

    # ---- lines ---------------------------------------------------------------------------------------
    def _mark(self, name: str) -> None:
        """Tell the line's client which other node registers it (None: this node, or nobody known), so
        it carries calls here too: the provider authenticates an INVITE by digest, not by who
        registered (issue 13)."""
        machine, line = self.machines.get(name), self.engine.lines.get(name)
        if machine is None or line is None:
            return
        holder = machine.holder
        line.registered_by = holder if holder and holder != self.node and not machine.held \
            and machine.state is not LeaseState.STOPPED else None

    def _start(self, line: LineClient) -> None:
        """Register `line`; a client stopped by an earlier loss of the lease is replaced by a fresh one
        (a line machine does not restart)."""
        engine = self.engine
        if self._stopping:
            return
        if line.stopped:
            if engine.lines.get(line.config.name) is not line:
                return
            old, line = line, LineClient(engine, line.config)
            line.address, line.targets = old.address, old.targets  # still recognised while it resolves
            engine.lines[line.config.name] = line
            engine.index_lines()
        elif line.machine.state.value != "unregistered":
            return  # registering already
        self._spawn(line.start())

    def _resolve(self, line: LineClient) -> None:
        """Learn the provider's address without registering: its calls are recognised by it."""
        if line.address is None:
            self._spawn(line.resolve())

    def _spawn(self, coro) -> None:  # type: ignore[no-untyped-def]
        task = self.engine.endpoint.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def open_leases(engine: Engine, dsn: str, node: str, period: float = DEFAULT_PERIOD) -> LeasePump:
    """Line leases in the PostgreSQL at `dsn` for node `node`: sets and returns `engine.leases`.
    Raises LocationDbError when the database cannot be reached or migrated."""
    from .lease_pg import PostgresLeaseStore

    engine.leases = LeasePump(engine, PostgresLeaseStore(dsn, node), period)
    log.info("event=line_leases file=%s node=%s lease_seconds=%g", engine.leases.store.name,  # type: ignore[attr-defined]
             node, period)
    return engine.leases
