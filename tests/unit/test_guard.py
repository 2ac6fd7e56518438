"""Floods and scanners are stopped before a message costs a parse, and reported once."""

from __future__ import annotations

import asyncio
import socket

from runtime.engine import Engine
from runtime.guard import FloodGuard
from runtime.transport import ListenSpec

OPTIONS = (b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK%d\r\n"
           b"Max-Forwards: 70\r\nFrom: <sip:p@x>;tag=1\r\nTo: <sip:x@x>\r\nCall-ID: g%d\r\n"
           b"CSeq: 1 OPTIONS\r\n%sContent-Length: 0\r\n\r\n")


def options(n: int, user_agent: bytes = b"") -> bytes:
    return OPTIONS % (n, n, user_agent)


def test_a_source_over_its_rate_is_ignored_and_reported_once() -> None:
    guard = FloodGuard(rate=10, burst=20, block=60)
    verdicts = [guard.admit("192.0.2.9", options(i), 0.0) for i in range(25)]
    assert [ok for ok, _ in verdicts].count(True) == 20
    assert [attack for _, attack in verdicts].count("flood") == 1
    assert guard.admit("198.51.100.1", options(99), 0.0) == (True, None)  # others are not affected


def test_the_block_ends_and_the_bucket_refills() -> None:
    guard = FloodGuard(rate=10, burst=20, block=5)
    for i in range(21):
        guard.admit("192.0.2.9", options(i), 0.0)
    assert guard.admit("192.0.2.9", options(50), 4.0)[0] is False
    assert guard.admit("192.0.2.9", options(51), 6.0) == (True, None)


def test_a_provider_is_never_throttled() -> None:
    guard = FloodGuard(rate=1, burst=1, exempt=lambda ip: ip == "203.0.113.5")
    assert all(guard.admit("203.0.113.5", options(i), 0.0)[0] for i in range(100))


def test_a_scanner_is_dropped_without_an_answer_and_reported_once() -> None:
    guard = FloodGuard()
    first = guard.admit("192.0.2.66", options(1, b"User-Agent: friendly-scanner\r\n"), 0.0)
    second = guard.admit("192.0.2.66", options(2, b"User-Agent: sipvicious\r\n"), 1.0)
    assert first == (False, "scan") and second == (False, None)
    assert guard.admit("192.0.2.67", options(3, b"User-Agent: baresip v1.0.0\r\n"), 1.0) == (True, None)


def test_engine_stops_answering_a_flood_and_logs_the_attack() -> None:
    async def scenario() -> tuple[int, list[str]]:
        engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], advertise="127.0.0.1",
                        rtp_ports=(37600, 37699))
        engine.guard = FloodGuard(rate=5, burst=10, block=60, exempt=engine.guard.exempt)
        engine.bus.history = []
        await engine.start()
        port = engine.ports["udp"]

        def flood() -> int:
            answers = 0
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("127.0.0.1", 0))
                s.settimeout(0.3)
                for i in range(30):
                    s.sendto(options(i), ("127.0.0.1", port))
                try:
                    for _ in range(60):
                        s.recv(65535)
                        answers += 1
                except TimeoutError:
                    pass
            return answers

        answers = await asyncio.get_running_loop().run_in_executor(None, flood)
        events = [f"{e.name}:{e.fields.get('kind')}" for e in engine.bus.history]
        await engine.stop()
        return answers, events

    answers, events = asyncio.run(scenario())
    assert answers == 10  # the burst, then nothing
    assert events.count("attack_detected:flood") == 1
