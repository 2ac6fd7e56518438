"""A line's registration: digest answered once per nonce, refresh before expiry, backoff after failure.

A UDP socket on loopback plays the provider's registrar (a fake is fine for these unit specs; the
integration tests register to a real Kamailio)."""

from __future__ import annotations

import asyncio
import socket

from runtime.engine import Engine
from runtime.events import EngineEvent
from runtime.lines import LineConfig, machine
from runtime.sip.digest import DigestServer
from runtime.sip.message import create_response, parse_message
from runtime.transport import ListenSpec


async def provider_session(answer, seconds: float, *, shutdown: bool = False  # type: ignore[no-untyped-def]
                           ) -> tuple[list, list[EngineEvent]]:
    """Run an engine with one line against a registrar that answers each REGISTER with `answer(req)`;
    with `shutdown` the engine then stops with the line in place (un-registering it)."""
    registrar = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    registrar.bind(("127.0.0.1", 0))
    registrar.setblocking(False)
    engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], advertise="127.0.0.1", rtp_ports=(36800, 36899))
    engine.bus.history = []
    await engine.start()
    port = registrar.getsockname()[1]
    engine.add_line(LineConfig("itsp1", "127.0.0.1", port, "trunk1", "s3cret", register_every=60))
    engine.register_line("itsp1")
    loop = asyncio.get_running_loop()
    seen: list = []

    async def serve(seconds: float) -> None:
        deadline = loop.time() + seconds
        while loop.time() < deadline:
            try:
                data, addr = registrar.recvfrom(65535)
            except BlockingIOError:
                await asyncio.sleep(0.01)
                continue
            req = parse_message(data)
            seen.append((loop.time(), req))
            resp = answer(req)
            if resp is not None:
                registrar.sendto(bytes(resp), addr)

    await serve(seconds)
    if shutdown:
        server = loop.create_task(serve(10))
        await engine.stop()
        server.cancel()
    else:
        engine.lines.clear()  # no unregistration round trip against the fake
        await engine.stop()
    history = list(engine.bus.history)
    registrar.close()
    return seen, history


def digest_registrar(password: str, expires: int):  # type: ignore[no-untyped-def]
    server = DigestServer("itsp.local")

    def answer(req):  # type: ignore[no-untyped-def]
        value = req.headers.get("authorization")
        if value is None:
            return create_response(req, 401, "Unauthorized", to_tag="r1",
                                   headers=[("WWW-Authenticate", v) for v in server.challenge(0.0)])
        result = server.verify(value, "REGISTER", lambda user: password if user == "trunk1" else None, 1.0)
        if not result.ok:
            return create_response(req, 403, "Forbidden (wrong password)", to_tag="r1")
        contact = req.headers.get("contact")
        return create_response(req, 200, "OK", to_tag="r1", headers=[("Contact", f"{contact};expires={expires}")])

    return answer


def test_line_answers_the_challenge_and_refreshes_before_expiry() -> None:
    seen, history = asyncio.run(provider_session(digest_registrar("s3cret", expires=3), seconds=2.5))
    registers = [req for _, req in seen]
    # 401, authorised 200, then a refresh (at 80 % of a short expiry, at least 1 s later)
    assert len(registers) >= 3
    assert registers[0].headers.get("authorization") is None
    assert registers[1].headers.get("authorization") is not None
    assert len({r.call_id for r in registers}) == 1  # one Call-ID for the line's life (RFC 3261 10.2.4)
    cseqs = [r.cseq[0] for r in registers]
    assert cseqs == sorted(cseqs) and len(set(cseqs)) == len(cseqs)
    refresh_delay = seen[2][0] - seen[1][0]
    assert 0.8 <= refresh_delay < 3.0  # before the 3 s expiry
    assert [e.name for e in history if e.name.startswith("line_") and e.name != "line_state"] == ["line_registered"]
    assert [e.fields["state"] for e in history if e.name == "line_state"] == ["trying", "registered"]


def test_wrong_password_fails_without_looping_and_retries_later() -> None:
    seen, history = asyncio.run(provider_session(digest_registrar("other", expires=60), seconds=1.0))
    assert len(seen) == 2  # unauthenticated, then one answer to the challenge; no loop
    failed = [e for e in history if e.name == "line_register_failed"]
    assert len(failed) == 1
    assert failed[0].fields["code"] == 403 and "retry_in" in failed[0].fields


def test_provider_that_keeps_refusing_is_retried_with_growing_backoff(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(machine, "BACKOFF_FIRST", 0.25)  # the real first step is 2 s; same doubling

    def refuse(req):  # type: ignore[no-untyped-def]
        return create_response(req, 503, "Service Unavailable", to_tag="r1")

    seen, history = asyncio.run(provider_session(refuse, seconds=1.2))
    times = [t for t, _ in seen]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert len(seen) == 3  # at 0, then 0.25 s and 0.5 s later (+-20 %); the next is past the window
    assert 0.15 < gaps[0] < 0.4 and 0.35 < gaps[1] < 0.7 and gaps[1] > gaps[0]
    assert [e.fields["code"] for e in history if e.name == "line_register_failed"] == [503, 503, 503]


def test_shutdown_unregisters_answering_the_providers_challenge() -> None:
    server = DigestServer("itsp.local")

    def answer(req):  # type: ignore[no-untyped-def]
        # challenges every request without fresh credentials, as Kamailio and Asterisk do
        value = req.headers.get("authorization")
        if value is None or not server.verify(value, "REGISTER", lambda user: "s3cret", 1.0).ok \
                or value in used:
            return create_response(req, 401, "Unauthorized", to_tag="r1",
                                   headers=[("WWW-Authenticate", v) for v in server.challenge(0.0)])
        used.add(value)
        contact = req.headers.get("contact")
        return create_response(req, 200, "OK", to_tag="r1",
                               headers=[("Contact", f"{contact};expires={req.headers.get('expires')}")])

    used: set[str] = set()
    seen, history = asyncio.run(provider_session(answer, seconds=0.5, shutdown=True))
    removal = [req for _, req in seen if req.headers.get("expires") == "0"]
    assert removal and removal[-1].headers.get("authorization")
    (done,) = [e for e in history if e.name == "line_unregistered"]
    assert done.fields["code"] == 200


async def closed_port_session() -> list[EngineEvent]:
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now: the kernel answers ICMP port unreachable
    engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], advertise="127.0.0.1", rtp_ports=(36800, 36899))
    engine.bus.history = []
    await engine.start()
    engine.add_line(LineConfig("itsp1", "127.0.0.1", port, "trunk1", "s3cret", register_every=60))
    engine.register_line("itsp1")
    for _ in range(300):  # bounded; the 408 of a timeout would take 32 s
        if any(e.name == "line_register_failed" for e in engine.bus.history):
            break
        await asyncio.sleep(0.01)
    history = list(engine.bus.history)
    await engine.stop()
    return history


def test_a_provider_port_that_is_closed_fails_at_once_as_unreachable() -> None:
    history = asyncio.run(closed_port_session())
    (failed,) = [e for e in history if e.name == "line_register_failed"]
    assert failed.fields["code"] == 503 and "unreachable" in str(failed.fields["reason"])
    assert failed.fields["state"] == "failed_waiting"
