"""No unauthenticated call ever leaves through a line: the engine on real loopback sockets, with a
UDP socket standing in for the provider and a router that sends every call to the line."""

from __future__ import annotations

import asyncio
import socket

from runtime.calls import Target
from runtime.engine import Engine
from runtime.lines import LineConfig
from runtime.sip.digest import DigestClient, parse_challenge
from runtime.sip.message import parse_message
from runtime.transport import ListenSpec


def invite(port: int, caller_port: int, branch: str, cseq: int = 1, auth: str | None = None,
           number: str = "+15557654321", call_id: str = "fraud-1", host: str = "127.0.0.1") -> bytes:
    lines = [f"INVITE sip:{number}@127.0.0.1:{port} SIP/2.0",
             f"Via: SIP/2.0/UDP {host}:{caller_port};rport;branch={branch}",
             "Max-Forwards: 70", "From: <sip:alice@127.0.0.1>;tag=a1", f"To: <sip:{number}@127.0.0.1>",
             f"Call-ID: {call_id}", f"CSeq: {cseq} INVITE", f"Contact: <sip:alice@{host}:{caller_port}>"]
    if auth:
        lines.append(f"Proxy-Authorization: {auth}")
    return ("\r\n".join(lines + ["Content-Length: 0", "", ""])).encode()


def recv_final(sock: socket.socket) -> bytes:
    for _ in range(10):
        data = sock.recv(65535)
        if not data.startswith(b"SIP/2.0 1"):
            return data
    raise AssertionError("no final response")


async def scenario() -> dict[str, object]:
    provider = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    provider.bind(("127.0.0.1", 0))
    provider.setblocking(False)
    engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], advertise="127.0.0.1", rtp_ports=(36400, 36499))
    await engine.start()
    engine.add_user("alice", "alice-pw")
    engine.add_line(LineConfig("itsp1", "127.0.0.1", provider.getsockname()[1], "trunk1", "x", register_every=None))
    engine.register_line("itsp1")
    engine.router = lambda call: call.accept([Target("LINE", "itsp1")], None, lambda failure: None)
    await asyncio.sleep(0.05)
    port = engine.ports["udp"]
    loop = asyncio.get_running_loop()
    out: dict[str, object] = {}

    def caller() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(2)
            me = s.getsockname()[1]
            s.sendto(invite(port, me, "z9hG4bKf1"), ("127.0.0.1", port))
            challenge_resp = parse_message(recv_final(s))
            out["no_credentials"] = challenge_resp.status
            challenge = parse_challenge(challenge_resp.headers.get("proxy-authenticate") or "")
            wrong = DigestClient("alice", "guess").authorize(challenge, "INVITE", f"sip:+15557654321@127.0.0.1:{port}")
            s.sendto(invite(port, me, "z9hG4bKf2", 2, wrong), ("127.0.0.1", port))
            out["wrong_password"] = parse_message(recv_final(s)).status
            right = DigestClient("alice", "alice-pw").authorize(challenge, "INVITE",
                                                                f"sip:+15557654321@127.0.0.1:{port}")
            s.sendto(invite(port, me, "z9hG4bKf3", 3, right), ("127.0.0.1", port))

    await loop.run_in_executor(None, caller)
    await asyncio.sleep(0.3)
    received = []
    while True:
        try:
            received.append(provider.recv(65535))
        except BlockingIOError:
            break
    out["provider_got"] = [d.split(b" ", 1)[0].decode() for d in received]
    out["created"] = list(engine.calls)
    await engine.stop()
    provider.close()
    return out


def test_only_the_authenticated_invite_reaches_the_line() -> None:
    out = asyncio.run(scenario())
    assert out["no_credentials"] == 407
    assert out["wrong_password"] == 403
    # the provider saw exactly one INVITE (within timer A's first 500 ms): the authenticated one
    assert out["provider_got"] == ["INVITE"]
    assert len(out["created"]) == 1  # type: ignore[arg-type]


async def replay_scenario(legacy: bool, marked: bool | None = None) -> dict[str, object]:
    """A phone's call is captured on the wire; its Proxy-Authorization is then replayed from another
    host to other numbers, from the same host to the same number, and from another host to the same
    number. `legacy`: the phone answers without qop (RFC 2069), the worst case of issue 9; `marked`:
    the user is marked legacy-digest (by default, as the phone needs)."""
    provider = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    provider.bind(("127.0.0.1", 0))
    provider.setblocking(False)
    engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], advertise="127.0.0.1", rtp_ports=(36500, 36599))
    await engine.start()
    engine.add_user("alice", "alice-pw", legacy_digest=legacy if marked is None else marked)
    engine.add_line(LineConfig("itsp1", "127.0.0.1", provider.getsockname()[1], "trunk1", "x", register_every=None))
    engine.register_line("itsp1")
    engine.router = lambda call: call.accept([Target("LINE", "itsp1")], None, lambda failure: None)
    await asyncio.sleep(0.05)
    port = engine.ports["udp"]
    out: dict[str, object] = {}

    def attack() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
            phone.bind(("127.0.0.1", 0))
            attacker.bind(("127.0.0.2", 0))
            for s in (phone, attacker):
                s.settimeout(2)
            me, them = phone.getsockname()[1], attacker.getsockname()[1]
            phone.sendto(invite(port, me, "z9hG4bKr1"), ("127.0.0.1", port))
            challenge = parse_challenge(parse_message(recv_final(phone)).headers.get("proxy-authenticate") or "")
            if legacy:  # the phone ignores qop
                challenge = type(challenge)(challenge.scheme, challenge.realm, challenge.nonce)
            captured = DigestClient("alice", "alice-pw").authorize(challenge, "INVITE",
                                                                    f"sip:+15557654321@127.0.0.1:{port}")
            phone.sendto(invite(port, me, "z9hG4bKr2", 2, captured, call_id="real-1"), ("127.0.0.1", port))
            answers = []
            for i in range(8):  # from another host, to other numbers
                attacker.sendto(invite(port, them, f"z9hG4bKx{i}", 1, captured, number=f"+1900555010{i}",
                                       call_id=f"replay-{i}", host="127.0.0.2"), ("127.0.0.1", port))
                answers.append(parse_message(recv_final(attacker)).status)
            attacker.sendto(invite(port, them, "z9hG4bKy1", 1, captured, call_id="replay-same-number",
                                   host="127.0.0.2"), ("127.0.0.1", port))
            answers.append(parse_message(recv_final(attacker)).status)
            # from the phone's own address (spoofed, or on its host), to the same number
            phone.sendto(invite(port, me, "z9hG4bKy2", 1, captured, call_id="replay-same-host"), ("127.0.0.1", port))
            answers.append(parse_message(recv_final(phone)).status)
            out["replay_answers"] = answers

    await asyncio.get_running_loop().run_in_executor(None, attack)
    await asyncio.sleep(0.3)
    call_ids = set()
    while True:
        try:
            data = parse_message(provider.recv(65535))
        except BlockingIOError:
            break
        if getattr(data, "method", None) == "INVITE":
            call_ids.add(data.call_id)
    out["calls_through_line"] = len(call_ids)
    await engine.stop()
    provider.close()
    return out


def test_a_captured_legacy_answer_replayed_places_no_call() -> None:
    out = asyncio.run(replay_scenario(legacy=True))
    replays = len(out["replay_answers"])  # type: ignore[arg-type]
    print(f"\nreplayed credentials (no qop): {replays} attempts, calls through the line: "
          f"{out['calls_through_line']} (the phone's own: 1)")
    assert out["calls_through_line"] == 1  # the phone's real call, nothing else
    assert all(status in (403, 407) for status in out["replay_answers"])  # type: ignore[attr-defined]


def test_a_captured_qop_answer_replayed_places_no_call() -> None:
    out = asyncio.run(replay_scenario(legacy=False))
    print(f"\nreplayed credentials (qop=auth): calls through the line: {out['calls_through_line']} "
          "(the phone's own: 1)")
    assert out["calls_through_line"] == 1
    assert all(status in (403, 407) for status in out["replay_answers"])  # type: ignore[attr-defined]


def test_an_answer_without_qop_places_no_call_for_a_user_not_marked_legacy() -> None:
    out = asyncio.run(replay_scenario(legacy=True, marked=False))
    print(f"\nqop-less answer, user not marked legacy: calls through the line: {out['calls_through_line']}")
    assert out["calls_through_line"] == 0
