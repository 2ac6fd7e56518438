"""Every torture message sent to a running server over UDP: it answers or drops as RFC 4475/5118 say,
and nothing else changes (no binding, no call session, the server keeps answering)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from runtime.engine import Engine
from runtime.transport import ListenSpec
from tests.unit.test_conformance import ACCEPT, DROP, EXPECTED, REFUSE, REJECT, RESPONSE, load


def exchange(engine_port: int, data: bytes, wait: float = 0.3) -> list[int]:
    """Status codes the server sent back: up to its final response, or all within `wait` seconds."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(wait)
        s.sendto(data, ("127.0.0.1", engine_port))
        codes = []
        try:
            for _ in range(10):
                reply = s.recv(65535)
                codes.append(int(reply.split(b" ", 2)[1]))
                if codes[-1] >= 200:
                    break
        except TimeoutError:
            pass
        return codes


PROBE = (b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKprobe\r\n"
         b"Max-Forwards: 70\r\nFrom: <sip:p@x>;tag=1\r\nTo: <sip:x@x>\r\nCall-ID: probe\r\n"
         b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")


@pytest.fixture(scope="module")
def results() -> tuple[dict[str, list[int]], dict[str, dict[str, object]]]:
    """Send each message to a fresh server (several corpus messages share a branch, so one server
    would rightly take them for retransmissions); report what came back and what state it kept."""
    async def one(name: str) -> tuple[list[int], dict[str, object]]:
        engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], advertise="127.0.0.1",
                        rtp_ports=(36200, 36299))
        await engine.start()
        engine.add_user("alice", "alice-pw")
        loop = asyncio.get_running_loop()
        try:
            codes = await loop.run_in_executor(None, exchange, engine.ports["udp"], load(name))
            state = {"alive": await loop.run_in_executor(None, exchange, engine.ports["udp"], PROBE),
                     "bindings": engine.registrar.store.users(), "calls": dict(engine.calls)}
        finally:
            await engine.stop()
        return codes, state

    async def scenario() -> tuple[dict[str, list[int]], dict[str, dict[str, object]]]:
        answers, states = {}, {}
        for name in sorted(EXPECTED):
            answers[name], states[name] = await one(name)
        return answers, states

    return asyncio.run(scenario())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_server_answers_or_drops_each_torture_message(name: str, results) -> None:  # type: ignore[no-untyped-def]
    answers, _ = results
    outcome, status = EXPECTED[name]
    codes = answers[name]
    finals = [c for c in codes if c >= 200]
    if outcome in (RESPONSE, DROP):
        assert codes == [], f"{name}: a response must never be answered, got {codes}"
    elif outcome in (REJECT, REFUSE):
        assert finals and finals[0] == status, f"{name}: expected {status}, got {codes}"
    else:
        assert outcome == ACCEPT
        assert finals, f"{name}: a well-formed request deserves an answer, got {codes}"
        assert finals[0] not in (400, 500), f"{name}: well-formed, yet answered {finals[0]}"


def test_unknown_auth_scheme_is_challenged_never_accepted(results) -> None:  # type: ignore[no-untyped-def]
    answers, _ = results
    assert answers["rfc4475/regaut01"][-1] in (401, 403)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_torture_message_leaves_no_binding_no_call_and_a_live_server(name: str, results) -> None:  # type: ignore[no-untyped-def]
    state = results[1][name]
    assert state["bindings"] == [] and state["calls"] == {}
    assert state["alive"] == [200]
