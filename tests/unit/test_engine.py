"""The engine's answers to requests that never become calls, on real loopback sockets."""

from __future__ import annotations

import asyncio
import socket

import pytest

from runtime.engine import Engine
from runtime.transport import ListenSpec


def request(method: str, port: int, branch: str, *, to_tag: str = "", extra: str = "") -> bytes:
    to = "<sip:bob@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    return (f"{method} sip:bob@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:9;rport;branch={branch}\r\nMax-Forwards: 70\r\n"
            f"From: <sip:alice@127.0.0.1>;tag=a1\r\nTo: {to}\r\nCall-ID: {branch}\r\nCSeq: 1 {method}\r\n"
            f"{extra}Content-Length: 0\r\n\r\n").encode()


def final_answer(port: int, data: bytes) -> tuple[int, bytes]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(2)
        s.sendto(data, ("127.0.0.1", port))
        for _ in range(5):
            reply = s.recv(65535)
            code = int(reply.split(b" ", 2)[1])
            if code >= 200:
                return code, reply
    raise AssertionError("no final response")


def answer_to(data_for_port, setup=None) -> tuple[int, bytes]:  # type: ignore[no-untyped-def]
    async def scenario() -> tuple[int, bytes]:
        engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], advertise="127.0.0.1", rtp_ports=(36600, 36699))
        await engine.start()
        if setup:
            setup(engine)
        try:
            port = engine.ports["udp"]
            return await asyncio.get_running_loop().run_in_executor(None, final_answer, port, data_for_port(port))
        finally:
            await engine.stop()

    return asyncio.run(scenario())


def test_options_outside_a_dialog_is_answered_200_with_allow() -> None:
    code, reply = answer_to(lambda port: request("OPTIONS", port, "z9hG4bKo1"))
    assert code == 200 and b"Allow: INVITE" in reply


def test_unknown_method_gets_501() -> None:
    code, _ = answer_to(lambda port: request("FROBNICATE", port, "z9hG4bKu1"))
    assert code == 501


def test_known_but_unserved_method_gets_405_with_allow() -> None:
    code, reply = answer_to(lambda port: request("SUBSCRIBE", port, "z9hG4bKs1", extra="Event: presence\r\n"))
    assert code == 405 and b"Allow:" in reply


def test_bye_for_an_unknown_dialog_gets_481() -> None:
    code, _ = answer_to(lambda port: request("BYE", port, "z9hG4bKb1", to_tag="nope"))
    assert code == 481


def test_cancel_for_an_unknown_invite_gets_481() -> None:
    code, _ = answer_to(lambda port: request("CANCEL", port, "z9hG4bKc1"))
    assert code == 481


def test_overloaded_server_sheds_new_calls_with_503_and_retry_after() -> None:
    def overload(engine: Engine) -> None:
        engine.overloaded = True

    code, reply = answer_to(lambda port: request("INVITE", port, "z9hG4bKi1"), overload)
    assert code == 503 and b"Retry-After: 2" in reply


@pytest.mark.parametrize("method", ["INVITE", "REGISTER"])
def test_requests_without_credentials_are_challenged(method: str) -> None:
    code, _ = answer_to(lambda port: request(method, port, f"z9hG4bK{method}"))
    assert code == (407 if method == "INVITE" else 401)
