"""Per-user and per-line call counting (issue 8): a new call's limit check counts the calls of that
user or line through the engine's call table index, not by scanning every active call, and the
count always equals the scan's. Specified on randomized sequences of what changes who a call
involves: calls coming in (from users and lines), originated calls, forks dialled and settled,
answers, blind transfers (a new fork on the call) and attended ones (a leg handed over from another
call), and calls ending. Stub calls (fakes only here) carry the real counting rules of
CallMachine.involves_user and the engine's `_on_line`."""

from __future__ import annotations

import asyncio
import random
from itertools import count

import pytest

from runtime.calls import CallMachine, CallState, Channel, Failure, Leg, Target
from runtime.calls.states import ForkState
from runtime.engine import Engine, _on_line
from runtime.transport import ListenSpec
from tests.rig.ports import ports

PEERS = [("USER", "alice"), ("USER", "bob"), ("USER", "carol"), ("LINE", "itsp1"), ("LINE", "itsp2")]
_ids = count()


class StubMachine:
    """The fields the counting rules read, and nothing else."""

    involves_user = CallMachine.involves_user

    def __init__(self, peer_type: str, peer_name: str) -> None:
        self.id = f"c{next(_ids)}"
        self.peer_type, self.peer_name = peer_type, peer_name
        self.state = CallState.ROUTING
        self.one: Leg | None = None
        self.forks: list[Leg] = []
        self.attempt = 0


class StubSession:
    def __init__(self, machine: StubMachine) -> None:
        self.machine = machine
        self.id = machine.id


def fork(peer_type: str, name: str, attempt: int) -> Leg:
    leg = Leg(Channel.ONE, peer_type, name, ("127.0.0.1", 5060), "udp")
    leg.attempt = attempt
    return leg


class StubForks:
    """Stands for ForkBuilder: one leg towards the target."""

    def build_forks(self, call: StubMachine, target: Target, offer: bytes, now: float) -> tuple[list[Leg], None]:
        return [fork(target.kind, target.name, call.attempt)], None


def scan(engine: Engine, kind: str, name: str) -> int:
    """What the limit checks counted before the index: every active call, one by one."""
    if kind == "USER":
        return sum(1 for c in engine.calls.values() if c.machine.involves_user(name))
    return sum(1 for c in engine.calls.values() if _on_line(c.machine, name))


def counted(engine: Engine, kind: str, name: str) -> int:
    return engine.calls_of_user(name) if kind == "USER" else engine.calls_of_line(name)


def run_sequence(seed: int, steps: int) -> Engine:
    rng = random.Random(seed)
    engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], rtp_ports=ports.rtp_range(4))
    engine.forks = StubForks()  # type: ignore[assignment]
    handed: list[Leg] = []

    def hand_over(session: StubSession, channel: Channel, user: str, tag: str) -> tuple[Leg | None, Failure | None]:
        m = session.machine  # the other call gives up its party on `channel` and ends
        leg = m.one if channel is Channel.ONE else fork(m.peer_type, m.peer_name, 0)
        m.state = CallState.CLOSED
        engine.calls.pop(m.id, None)
        handed.append(leg)  # type: ignore[arg-type]
        return leg, None

    engine.call_runner.hand_over = hand_over  # type: ignore[method-assign]
    for _ in range(steps):
        live = [c.machine for c in engine.calls.values()]
        op = rng.choice(["incoming", "originate", "dial", "settle", "answer", "transfer", "attended",
                         "end", "end"])
        if op in ("incoming", "originate") or not live:
            m = StubMachine(*rng.choice(PEERS))
            if op == "originate":
                m.state = CallState.ORIGINATING
            engine.calls[m.id] = StubSession(m)  # type: ignore[assignment]
            continue
        m = rng.choice(live)
        if op == "dial" and m.state in (CallState.ROUTING, CallState.DIALING, CallState.ANSWERED):
            m.state = CallState.DIALING
            if rng.random() < 0.3:
                m.attempt += 1  # the next attempt of the rule: earlier forks no longer count
            kind, name = rng.choice(PEERS)
            legs, _ = engine.build_forks(m, Target(kind, name, None), b"", 0.0)  # type: ignore[arg-type]
            for leg in legs:
                leg.index = len(m.forks)
                m.forks.append(leg)
        elif op == "settle" and m.forks:
            rng.choice(m.forks).state = rng.choice([ForkState.ANSWERED, ForkState.FAILED])
        elif op == "answer" and m.state is CallState.DIALING and m.forks:
            m.one = rng.choice(m.forks)
            m.state = CallState.CONNECTED
        elif op == "transfer" and m.state is CallState.CONNECTED:
            kind, name = rng.choice(PEERS)  # blind: the new party is dialled for this call
            legs, _ = engine.build_forks(m, Target(kind, name, None), b"", 0.0)  # type: ignore[arg-type]
            m.one = legs[0]
        elif op == "attended" and m.state is CallState.CONNECTED:
            others = [o for o in live if o is not m and o.state is CallState.CONNECTED and o.one is not None]
            if others:
                other = rng.choice(others)
                engine.dialogs[("dlg", "tag")] = (engine.calls[other.id], Channel.ONE)
                leg, _ = engine.take_over(m, "alice", "dlg", "tag", "r")  # type: ignore[arg-type]
                del engine.dialogs[("dlg", "tag")]
                m.one = leg
        elif op == "end":
            m.state = CallState.CLOSED
            engine.calls.pop(m.id, None)
        for kind, name in PEERS:
            assert counted(engine, kind, name) == scan(engine, kind, name), (seed, op, kind, name)
    return engine


@pytest.mark.parametrize("seed", range(12))
def test_per_user_and_per_line_counts_equal_a_scan_of_every_call_through_random_sequences(seed: int) -> None:
    async def scenario() -> None:
        run_sequence(seed, 400)

    asyncio.run(scenario())


def test_ended_calls_leave_nothing_in_the_index() -> None:
    async def scenario() -> None:
        engine = run_sequence(99, 300)
        for session in list(engine.calls.values()):
            session.machine.state = CallState.CLOSED
            engine.calls.pop(session.id)
        assert engine.calls.indexed() == 0 and not engine.calls

    asyncio.run(scenario())
