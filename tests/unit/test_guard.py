"""Floods and scanners are stopped before a message costs a parse, and reported once."""

from __future__ import annotations

import asyncio
import socket

from runtime.engine import Engine
from runtime.security.flood import FloodGuard
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


UNAUTHENTICATED_INVITE = (
    "INVITE sip:+15557654321@127.0.0.1:{port} SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKamp{n}\r\nMax-Forwards: 70\r\n"
    "From: <sip:100@127.0.0.1>;tag=a{n}\r\nTo: <sip:+15557654321@127.0.0.1>\r\nCall-ID: amp-{n}\r\n"
    "CSeq: 1 INVITE\r\nContact: <sip:100@127.0.0.1:{me}>\r\nContent-Length: 0\r\n\r\n")


def answers_to(engine_setup, requests: int,  # type: ignore[no-untyped-def]
               template: str = UNAUTHENTICATED_INVITE) -> tuple[list[bytes], int]:
    """Send `requests` unauthenticated INVITEs (or other `template`s) to a running Engine (from one
    socket, never ACKing) and collect every datagram that comes back until timer H would have ended
    their transactions."""

    async def scenario() -> tuple[list[bytes], int]:
        engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], advertise="127.0.0.1",
                        rtp_ports=(37700, 37799), **engine_setup)
        # RFC 3261's timers scaled down 25x, so a final response resent until timer H (64*T1) all
        # arrives within 1.3 s: the same ten retransmissions as the real 32 s
        engine.layer.t1, engine.layer.t2 = 0.02, 0.16
        await engine.start()
        port = engine.ports["udp"]

        def attack() -> tuple[list[bytes], int]:
            got, sent = [], 0
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("127.0.0.1", 0))
                s.settimeout(1.5)
                me = s.getsockname()[1]
                for n in range(requests):
                    data = template.format(port=port, me=me, n=n).encode()
                    sent += len(data)
                    s.sendto(data, ("127.0.0.1", port))
                try:
                    for _ in range(50 * requests):
                        got.append(s.recv(65535))
                except TimeoutError:
                    pass
            return got, sent

        result = await asyncio.get_running_loop().run_in_executor(None, attack)
        await engine.stop()
        return result

    return asyncio.run(scenario())


def test_an_unanswered_challenge_is_sent_once_so_it_amplifies_nothing() -> None:
    got, sent = answers_to({}, requests=3)
    ratio = sum(len(d) for d in got) / sent
    print(f"\nunacknowledged 407s: {len(got)} datagrams out for 3 in; bytes out/in {ratio:.2f}")
    assert [d.split(b"\r\n", 1)[0] for d in got] == [b"SIP/2.0 407 Proxy Authentication Required"] * 3
    assert ratio < 1.5


def test_answers_do_not_name_the_software_by_default() -> None:
    (answer,) = answers_to({}, requests=1)[0]
    assert b"\r\nServer:" not in answer and b"Callflow" not in answer


def test_the_server_header_is_sent_when_configured() -> None:
    (answer,) = answers_to({"user_agent": "PBX"}, requests=1)[0]
    assert b"\r\nServer: PBX\r\n" in answer


def test_a_challenge_leaves_no_transaction_behind() -> None:
    from runtime.sip.message import create_response, parse_message
    from runtime.sip.transaction import TransactionLayer

    layer = TransactionLayer(trying_after_tu=True)
    layer.receive(UNAUTHENTICATED_INVITE.format(port=5060, me=5062, n=1).encode(), ("192.0.2.7", 5062), 0.0)
    event = layer.next_event()
    txn = event.transaction  # type: ignore[union-attr]
    layer.respond_statelessly(txn, create_response(txn.request, 407, "Proxy Authentication Required", to_tag="t"))
    out = [parse_message(d).status for _, _, d in layer.datagrams_to_send()]  # type: ignore[union-attr]
    assert out == [407] and not layer.server
    layer.handle_timer(40.0)
    assert layer.datagrams_to_send() == []


def test_an_invite_the_tu_does_not_answer_at_once_still_gets_100_trying() -> None:
    from runtime.sip.message import parse_message
    from runtime.sip.transaction import TransactionLayer

    layer = TransactionLayer(trying_after_tu=True)
    layer.receive(UNAUTHENTICATED_INVITE.format(port=5060, me=5062, n=1).encode(), ("192.0.2.7", 5062), 0.0)
    assert layer.next_event() is not None
    assert [parse_message(d).status for _, _, d in layer.datagrams_to_send()] == [100]  # type: ignore[union-attr]


def test_a_flood_from_new_addresses_does_not_lift_an_active_block() -> None:
    guard = FloodGuard(rate=10, burst=20, block=60, max_sources=100)
    for i in range(21):
        guard.admit("192.0.2.9", options(i), 0.0)
    assert guard.admit("192.0.2.9", options(99), 0.5)[0] is False
    for i in range(10_000):  # one packet each from ten thousand (spoofed) addresses
        guard.admit(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", options(i), 1.0)
    assert guard.admit("192.0.2.9", options(100), 2.0)[0] is False
    assert len(guard._buckets) <= 100


INVITE_FOR_NO_DIALOG = UNAUTHENTICATED_INVITE.replace("To: <sip:+15557654321@127.0.0.1>",
                                                      "To: <sip:+15557654321@127.0.0.1>;tag=gone{n}")
OPTIONS_FROM = UNAUTHENTICATED_INVITE.replace("INVITE", "OPTIONS")
PUBLISH_FROM = UNAUTHENTICATED_INVITE.replace("INVITE", "PUBLISH")
FOO_FROM = UNAUTHENTICATED_INVITE.replace("INVITE", "FOO")


def test_an_invite_for_an_unknown_dialog_gets_one_481_each_and_amplifies_nothing() -> None:
    got, sent = answers_to({}, requests=5, template=INVITE_FOR_NO_DIALOG)
    ratio = sum(len(d) for d in got) / sent
    print(f"\nINVITEs with a To tag for no dialog: {len(got)} datagrams out for 5 in; bytes out/in {ratio:.2f}")
    assert [d.split(b"\r\n", 1)[0] for d in got] == [b"SIP/2.0 481 Call/Transaction Does Not Exist"] * 5
    assert ratio < 1.5


def test_options_405_and_501_are_answered_once_each() -> None:
    for template, status in ((OPTIONS_FROM, b"200"), (PUBLISH_FROM, b"405"), (FOO_FROM, b"501")):
        got, _ = answers_to({}, requests=2, template=template)
        assert [d.split(b" ", 2)[1] for d in got] == [status] * 2


def test_answers_that_create_no_state_leave_no_transaction_behind() -> None:
    async def scenario() -> int:
        engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], advertise="127.0.0.1", rtp_ports=(37800, 37899))
        await engine.start()
        for n, template in enumerate((INVITE_FOR_NO_DIALOG, OPTIONS_FROM, PUBLISH_FROM, FOO_FROM)):
            engine.layer.receive(template.format(port=5060, me=5062, n=n).encode(), ("127.0.0.1", 5062), 0.0)
        engine.pump()
        held = len(engine.layer.server)
        await engine.stop()
        return held

    assert asyncio.run(scenario()) == 0
