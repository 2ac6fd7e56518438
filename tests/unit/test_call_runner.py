"""The call runner on loopback sockets: a finished call leaves nothing behind, and a media backend
that waits, or never answers, neither loses nor wedges a call. Two UDP sockets play the providers
(line `a` calls in, line `b` is dialled)."""

from __future__ import annotations

import asyncio
import gc
import socket
import weakref

from runtime.calls import CallSession, Target
from runtime.engine import Engine
from runtime.lines import LineConfig
from runtime.media.base import MediaBackend, MediaSession
from runtime.sip.message import create_response, parse_message
from runtime.transport import ListenSpec

SDP = (b"v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


class SlowSession(MediaSession):
    """Answers every step after a loop turn or more (a backend doing I/O), or never."""

    def __init__(self, call_id: str, delay: float | None) -> None:
        self.call_id = call_id
        self.delay = delay

    async def anchor(self, from_leg: int, sdp: bytes) -> bytes:
        await self._wait()
        return sdp

    async def _wait(self) -> None:
        if self.delay is None:
            await asyncio.get_running_loop().create_future()  # never done
        await asyncio.sleep(self.delay)

    def close(self) -> None:
        pass


class SlowBackend(MediaBackend):
    def __init__(self, delay: float | None) -> None:
        self.delay = delay

    async def allocate(self, call_id: str) -> MediaSession:
        session = SlowSession(call_id, self.delay)
        await session._wait()
        return session

    async def close(self) -> None:
        pass


def sock() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(3)
    return s


def recv(s: socket.socket, start: bytes):  # type: ignore[no-untyped-def]
    for _ in range(20):
        data = s.recv(65535)
        if data.startswith(start):
            return parse_message(data)
    raise AssertionError(f"nothing starting {start!r}")


def invite(port: int, me: int) -> bytes:
    return (f"INVITE sip:+15551234567@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};rport;branch=z9hG4bKrun1\r\nMax-Forwards: 70\r\n"
            f"From: <sip:a@127.0.0.1>;tag=a1\r\nTo: <sip:+15551234567@127.0.0.1>\r\nCall-ID: run-1\r\n"
            f"CSeq: 1 INVITE\r\nContact: <sip:a@127.0.0.1:{me}>\r\nContent-Type: application/sdp\r\n"
            f"Content-Length: {len(SDP)}\r\n\r\n").encode() + SDP


def whole_call(port: int, a: socket.socket, b: socket.socket) -> None:
    """a calls, b answers, a ACKs, a hangs up, b confirms."""
    me = a.getsockname()[1]
    a.sendto(invite(port, me), ("127.0.0.1", port))
    b_invite = recv(b, b"INVITE")
    contact = f"<sip:b@127.0.0.1:{b.getsockname()[1]}>"
    ok = create_response(b_invite, 200, "OK", to_tag="b1", headers=[("Contact", contact)], body=SDP,
                         content_type="application/sdp")
    b.sendto(bytes(ok), ("127.0.0.1", port))
    a_ok = recv(a, b"SIP/2.0 200")
    recv(b, b"ACK")
    to = a_ok.headers.get("to")
    for method, branch, cseq in (("ACK", "z9hG4bKrun2", 1), ("BYE", "z9hG4bKrun3", 2)):
        a.sendto((f"{method} sip:x@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};rport;"
                  f"branch={branch}\r\nMax-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=a1\r\nTo: {to}\r\n"
                  f"Call-ID: run-1\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n").encode(),
                 ("127.0.0.1", port))
    bye = recv(b, b"BYE")
    b.sendto(bytes(create_response(bye, 200, "OK")), ("127.0.0.1", port))
    recv(a, b"SIP/2.0 200")


def cancelled_call(port: int, a: socket.socket, b: socket.socket) -> None:
    """a calls, b rings, a cancels: b gets CANCEL, answers it and 487s the INVITE."""
    me = a.getsockname()[1]
    a.sendto(invite(port, me), ("127.0.0.1", port))
    b_invite = recv(b, b"INVITE")
    b.sendto(bytes(create_response(b_invite, 180, "Ringing", to_tag="b1")), ("127.0.0.1", port))
    recv(a, b"SIP/2.0 180")
    a.sendto((f"CANCEL sip:+15551234567@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};rport;"
              f"branch=z9hG4bKrun1\r\nMax-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=a1\r\n"
              f"To: <sip:+15551234567@127.0.0.1>\r\nCall-ID: run-1\r\nCSeq: 1 CANCEL\r\n"
              f"Content-Length: 0\r\n\r\n").encode(), ("127.0.0.1", port))
    cancel = recv(b, b"CANCEL")
    b.sendto(bytes(create_response(cancel, 200, "OK", to_tag="b1")), ("127.0.0.1", port))
    b.sendto(bytes(create_response(b_invite, 487, "Request Terminated", to_tag="b1")), ("127.0.0.1", port))
    recv(b, b"ACK")  # the 487 is ACKed by the transaction layer


def first_final(port: int, a: socket.socket, b: socket.socket) -> int:
    a.sendto(invite(port, a.getsockname()[1]), ("127.0.0.1", port))
    for _ in range(10):
        resp = recv(a, b"SIP/2.0")
        if resp.status >= 200:
            return resp.status
    raise AssertionError("no final response")


async def run(scenario, media: MediaBackend | None = None, media_timeout: float = 10.0) -> dict[str, object]:  # type: ignore[no-untyped-def]
    a, b = sock(), sock()
    engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], advertise="127.0.0.1", rtp_ports=(37300, 37399),
                    media=media)
    engine.call_runner.media_timeout = media_timeout
    await engine.start()
    for name, s in (("a", a), ("b", b)):
        engine.add_line(LineConfig(name, "127.0.0.1", s.getsockname()[1], register_every=None))
        engine.register_line(name)
    await asyncio.sleep(0.05)
    seen: list[weakref.ref[CallSession]] = []

    def route(call: CallSession) -> None:
        seen.append(weakref.ref(call))
        call.accept([Target("LINE", "b")], None, lambda failure: None)

    engine.router = route
    out: dict[str, object] = {}
    try:
        out["result"] = await asyncio.get_running_loop().run_in_executor(None, scenario, engine.ports["udp"], a, b)
        for _ in range(100):  # bounded: the closing steps run on the loop
            if not engine.call_runner.sessions:
                break
            await asyncio.sleep(0.01)
        out["tables"] = (dict(engine.calls), dict(engine.dialogs), dict(engine.call_runner.sessions))
        out["seen"] = seen
    finally:
        await engine.stop()
        a.close()
        b.close()
    return out


def test_a_finished_call_leaves_nothing_in_any_table_and_no_reference_cycle() -> None:
    gc.disable()
    try:
        out = asyncio.run(run(whole_call))
        refs = out.pop("seen")
        assert out["tables"] == ({}, {}, {})
        assert [ref() for ref in refs] == [None]  # freed by reference counting alone: no cycle holds it
    finally:
        gc.enable()


def test_a_cancelled_call_leaves_nothing_behind_once_its_fork_has_settled() -> None:
    gc.disable()
    try:
        out = asyncio.run(run(cancelled_call))
        refs = out.pop("seen")
        assert out["tables"] == ({}, {}, {})
        assert [ref() for ref in refs] == [None]
    finally:
        gc.enable()


def test_a_media_backend_that_waits_still_connects_the_call() -> None:
    out = asyncio.run(run(whole_call, SlowBackend(0.01)))
    assert out["tables"] == ({}, {}, {})


def test_a_media_backend_that_never_answers_fails_the_call_instead_of_wedging_it() -> None:
    out = asyncio.run(run(first_final, SlowBackend(None), media_timeout=0.2))
    assert out["result"] == 503 and out["tables"] == ({}, {}, {})
