"""Chat (SIP MESSAGE outside a dialog, RFC 3428) through the engine on real loopback sockets: scripted
raw-SIP phones that register with digest auth, and a UDP socket as a line's provider. The script is
compiled by flowlang, so the routes are the ones a call would take."""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field

import pytest

from callflow.flowrun.dialplan import Dialplan
from callflow.sdk import SipServer
from flowlang import compile_source
from runtime.engine import Engine
from runtime.events import EngineEvent
from runtime.sip.digest import DigestClient, select_challenge
from runtime.sip.message import Request, Response, create_response, parse_message
from runtime.transport import ListenSpec
from tests.rig.ports import ports


@dataclass
class Peer:
    """A raw-SIP phone or provider on one UDP socket: one reader task answers the requests it gets
    (kept in `requests`) and hands responses to `send`."""

    name: str
    password: str = ""
    sock: socket.socket = field(default_factory=lambda: _udp())
    requests: list[Request] = field(default_factory=list)
    responses: list[Response] = field(default_factory=list)
    cseq: int = 0
    reader: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def start(self) -> None:
        self.reader = asyncio.ensure_future(self._read())

    def stop(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
        self.sock.close()

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(100_000):  # bounded; cancelled by stop()
            data, source = await loop.sock_recvfrom(self.sock, 65535)
            msg = parse_message(data)
            if isinstance(msg, Request):
                self.requests.append(msg)
                await self.answer(msg, source)
            else:
                self.responses.append(msg)

    async def send(self, server: int, method: str, ruri: str, to: str, body: str = "") -> Response:
        """Send a request, answering one 401/407 with the password; the final response."""
        if self.reader is None:
            self.start()
        loop = asyncio.get_running_loop()
        call_id = f"{self.name}-{method}-{self.cseq}"
        auth = ""
        client = DigestClient(self.name, self.password)
        for _ in range(2):
            self.cseq += 1
            data = (f"{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{self.port};rport;branch=z9hG4bK{call_id}"
                    f"{self.cseq}\r\nMax-Forwards: 70\r\nFrom: <sip:{self.name}@127.0.0.1>;tag=t{self.name}\r\n"
                    f"To: <{to}>\r\nCall-ID: {call_id}\r\nCSeq: {self.cseq} {method}\r\n"
                    f"Contact: <sip:{self.name}@127.0.0.1:{self.port}>\r\n{auth}"
                    + (f"Content-Type: text/plain\r\nContent-Length: {len(body.encode())}\r\n\r\n{body}"
                       if body else "Content-Length: 0\r\n\r\n")).encode()
            await loop.sock_sendto(self.sock, data, ("127.0.0.1", server))
            resp = await self.final(call_id, self.cseq)
            if resp.status not in (401, 407) or not self.password or auth:
                return resp
            header = "www-authenticate" if resp.status == 401 else "proxy-authenticate"
            name = "Authorization" if resp.status == 401 else "Proxy-Authorization"
            challenge = select_challenge(resp.headers.get_all(header))
            assert challenge is not None
            auth = f"{name}: {client.authorize(challenge, method, ruri)}\r\n"
        raise AssertionError("unreachable")

    async def final(self, call_id: str, cseq: int) -> Response:
        for _ in range(100):  # bounded: 5 s
            for resp in self.responses:
                if resp.status >= 200 and resp.call_id == call_id and resp.cseq[0] == cseq:
                    return resp
            await asyncio.sleep(0.05)
        raise AssertionError(f"{self.name}: no final response")

    async def answer(self, req: Request, source: tuple[str, int]) -> None:
        """A phone takes every MESSAGE with 200 (RFC 3428 7)."""
        resp = create_response(req, 200, "OK", to_tag="r1")
        await asyncio.get_running_loop().sock_sendto(self.sock, bytes(resp), source)

    async def wait_request(self, method: str, timeout: float = 2.0) -> Request | None:
        for _ in range(int(timeout / 0.05)):  # bounded
            found = [r for r in self.requests if r.method == method]
            if found:
                return found[0]
            await asyncio.sleep(0.05)
        return None


class ChallengingProvider(Peer):
    """A provider that asks for the line's credentials (407) before taking a MESSAGE."""

    async def answer(self, req: Request, source: tuple[str, int]) -> None:
        if req.headers.get("proxy-authorization") is None:
            resp = create_response(req, 407, "Proxy Authentication Required", to_tag="p1", headers=[
                ("Proxy-Authenticate", 'Digest realm="itsp", nonce="n1", qop="auth"')])
        else:
            resp = create_response(req, 202, "Accepted", to_tag="p1")
        await asyncio.get_running_loop().sock_sendto(self.sock, bytes(resp), source)


def _udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


@dataclass
class Office:
    engine: Engine
    port: int
    alice: Peer
    bob: Peer
    provider: Peer
    events: list[EngineEvent]


async def office(rules: str, provider: Peer | None = None) -> Office:
    """Callflow with users alice and bob (both phones registered) and line itsp1 (`register never`)."""
    provider = provider or Peer("itsp")
    provider.start()
    engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], advertise="127.0.0.1", rtp_ports=ports.rtp_range(10))
    events: list[EngineEvent] = []
    engine.bus.subscribe(events.append)
    await engine.start()
    script = (f'user alice password "alice-pw"\nuser bob password "bob-pw"\n'
              f'line itsp1 {{\n server "127.0.0.1:{provider.port}"\n username "trunk1"\n password "s3cret"\n'
              f' register never\n}}\n{rules}\n')
    Dialplan(SipServer(engine=engine)).load(compile_source(script))
    for _ in range(100):  # bounded: the line's address is resolved in a task
        if engine.lines["itsp1"].address is not None:
            break
        await asyncio.sleep(0.01)
    port = engine.ports["udp"]
    alice, bob = Peer("alice", "alice-pw"), Peer("bob", "bob-pw")
    for phone in (alice, bob):
        phone.start()
        resp = await phone.send(port, "REGISTER", f"sip:127.0.0.1:{port}", f"sip:{phone.name}@127.0.0.1")
        assert resp.status == 200
    return Office(engine, port, alice, bob, provider, events)


async def close(o: Office) -> None:
    await o.engine.stop()
    for peer in (o.alice, o.bob, o.provider):
        peer.stop()


def messages(o: Office) -> list[dict[str, object]]:
    return [e.fields for e in o.events if e.name == "message"]


USERS = 'on incoming from user any to /^[a-z]+$/ accept to user \\0'


def test_a_message_from_one_user_reaches_the_other_users_phone_and_the_sender_gets_200() -> None:
    async def scenario() -> tuple[int, Request | None, list[dict[str, object]]]:
        o = await office('on incoming from user any to "bob" accept to user bob')
        resp = await o.alice.send(o.port, "MESSAGE", f"sip:bob@127.0.0.1:{o.port}", "sip:bob@127.0.0.1",
                                  "lunch at noon?")
        got = await o.bob.wait_request("MESSAGE")
        await close(o)
        return resp.status, got, messages(o)

    status, got, events = asyncio.run(scenario())
    assert status == 200
    assert got is not None and got.body == b"lunch at noon?" and got.from_.uri.user == "alice"
    assert events == [{"from": "alice", "from_type": "user", "user": "alice", "to": "bob", "text": "lunch at noon?",
                       "target": "user bob", "code": 200, "reason": "OK"}]


def test_a_message_without_credentials_is_challenged_and_never_relayed() -> None:
    async def scenario() -> tuple[int, int, Request | None]:
        o = await office('on incoming to "bob" accept to user bob')
        stranger = Peer("mallory")  # no password: does not answer the challenge
        first = await stranger.send(o.port, "MESSAGE", f"sip:bob@127.0.0.1:{o.port}", "sip:bob@127.0.0.1", "hi")
        liar = Peer("alice", "guess")
        second = await liar.send(o.port, "MESSAGE", f"sip:bob@127.0.0.1:{o.port}", "sip:bob@127.0.0.1", "hi")
        got = await o.bob.wait_request("MESSAGE", timeout=0.5)
        stranger.stop()
        liar.stop()
        await close(o)
        return first.status, second.status, got

    first, second, got = asyncio.run(scenario())
    assert (first, second) == (407, 403)
    assert got is None


def test_a_message_to_a_user_with_no_phone_registered_gets_480() -> None:
    async def scenario() -> tuple[int, list[dict[str, object]]]:
        o = await office('user carol password "c"\non incoming from user any to "carol" accept to user carol')
        resp = await o.alice.send(o.port, "MESSAGE", f"sip:carol@127.0.0.1:{o.port}", "sip:carol@127.0.0.1", "hi")
        await close(o)
        return resp.status, messages(o)

    status, events = asyncio.run(scenario())
    assert status == 480
    assert events[0]["code"] == 480 and events[0]["target"] == "user carol"


def test_a_message_no_rule_takes_gets_404() -> None:
    async def scenario() -> int:
        o = await office('on incoming from user any to "bob" accept to user bob')
        resp = await o.alice.send(o.port, "MESSAGE", f"sip:nobody@127.0.0.1:{o.port}", "sip:nobody@127.0.0.1", "hi")
        await close(o)
        return resp.status

    assert asyncio.run(scenario()) == 404


def test_a_lines_message_goes_to_the_user_its_number_routes_to() -> None:
    async def scenario() -> tuple[int, Request | None, Request | None]:
        o = await office('on incoming from line itsp1 to "+15551230000" accept to user bob')
        resp = await o.provider.send(o.port, "MESSAGE", f"sip:+15551230000@127.0.0.1:{o.port}",
                                     "sip:+15551230000@127.0.0.1", "your parcel is here")
        to_bob = await o.bob.wait_request("MESSAGE")
        to_alice = await o.alice.wait_request("MESSAGE", timeout=0.3)
        await close(o)
        return resp.status, to_bob, to_alice

    status, to_bob, to_alice = asyncio.run(scenario())
    assert status == 200
    assert to_bob is not None and to_bob.body == b"your parcel is here"
    assert to_alice is None


def test_a_lines_message_is_never_relayed_back_out_through_a_line() -> None:
    async def scenario() -> tuple[int, Request | None]:
        o = await office('on incoming to prefix "+1" accept to line itsp1')
        resp = await o.provider.send(o.port, "MESSAGE", f"sip:+15557654321@127.0.0.1:{o.port}",
                                     "sip:+15557654321@127.0.0.1", "relay me")
        again = await o.provider.wait_request("MESSAGE", timeout=0.3)
        await close(o)
        return resp.status, again

    status, again = asyncio.run(scenario())
    assert status == 404
    assert again is None


def test_a_users_message_to_a_number_leaves_through_the_line_with_its_credentials() -> None:
    async def scenario() -> tuple[int, list[Request], list[dict[str, object]]]:
        o = await office('on incoming from user any to prefix "+1" accept to line itsp1',
                         provider=ChallengingProvider("itsp"))
        resp = await o.alice.send(o.port, "MESSAGE", f"sip:+15557654321@127.0.0.1:{o.port}",
                                  "sip:+15557654321@127.0.0.1", "call me")
        await close(o)
        return resp.status, o.provider.requests, messages(o)

    status, sent, events = asyncio.run(scenario())
    assert status == 202
    assert [r.request_uri.user for r in sent] == ["+15557654321", "+15557654321"]
    assert sent[0].headers.get("proxy-authorization") is None
    assert 'username="trunk1"' in (sent[1].headers.get("proxy-authorization") or "")
    assert sent[1].body == b"call me"
    assert events[0]["target"] == "line itsp1" and events[0]["code"] == 202


def test_an_on_message_handler_logs_the_sender_the_number_and_the_text(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        o = await office('on incoming from user any to "bob" accept to user bob\n'
                         'on message from user alice { log "{from} -> {to}: {text}" }\n'
                         'on message from user bob { log "never: bob sent nothing" }')
        await o.alice.send(o.port, "MESSAGE", f"sip:bob@127.0.0.1:{o.port}", "sip:bob@127.0.0.1", "hello")
        await o.bob.wait_request("MESSAGE")
        await close(o)

    with caplog.at_level(logging.INFO, logger="callflow.dialplan"):
        asyncio.run(scenario())
    logged = [r.getMessage() for r in caplog.records if r.name == "callflow.dialplan"]
    assert 'event=log handler=message text="alice -> bob: hello"' in logged
    assert not any("never" in line for line in logged)


def test_an_on_message_handler_may_use_only_the_events_fields() -> None:
    from flowlang.diagnostics import FlowError

    with pytest.raises(FlowError, match="body"):
        compile_source('on message { log "{body}" }')
