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


def invite(port: int, caller_port: int, branch: str, cseq: int = 1, auth: str | None = None) -> bytes:
    lines = [f"INVITE sip:+15557654321@127.0.0.1:{port} SIP/2.0",
             f"Via: SIP/2.0/UDP 127.0.0.1:{caller_port};rport;branch={branch}",
             "Max-Forwards: 70", "From: <sip:alice@127.0.0.1>;tag=a1", "To: <sip:+15557654321@127.0.0.1>",
             "Call-ID: fraud-1", f"CSeq: {cseq} INVITE", f"Contact: <sip:alice@127.0.0.1:{caller_port}>"]
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
