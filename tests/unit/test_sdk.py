"""The Python SDK (callflow.sdk.SipServer) on real loopback sockets: a UDP socket plays the provider of
a line (its calls are recognised by address, no digest needed) and sees what a caller would see."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest

from callflow.sdk import Channel, ChatMessage, Event, Failure, SipServer, Target, _hostport, _listen_specs
from runtime.sip.message import Request, Response, parse_message
from tests.rig.ports import ports
from tests.unit.test_chat import Peer


def invite(port: int, me: int, call_id: str) -> bytes:
    return (f"INVITE sip:+15551230000@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};rport;branch=z9hG4bK{call_id}\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:+15550001111@127.0.0.1>;tag=p1\r\nTo: <sip:+15551230000@127.0.0.1>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:p@127.0.0.1:{me}>\r\n"
            "Content-Length: 0\r\n\r\n").encode()


async def provider_call(setup: Callable[[SipServer], None],
                        during: Callable[[SipServer], Awaitable[None]] | None = None) -> tuple[int, list[Event]]:
    """A provider's call on line itsp1 to a server `setup` prepared: the caller's final status, and
    every event an `events()` stream saw until the call closed."""
    provider = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    provider.bind(("127.0.0.1", 0))
    provider.setblocking(False)
    server = SipServer(listen="udp:127.0.0.1:0", advertise="127.0.0.1", rtp_ports=ports.rtp_range(20))
    server.add_user("alice", "alice-pw")
    server.add_line("itsp1", server=f"127.0.0.1:{provider.getsockname()[1]}", username="trunk1",
                    register_every=None)
    setup(server)
    loop = asyncio.get_running_loop()
    async with server:
        stream = server.events() if during is None else None
        server.register_line("itsp1")  # register_every=None: resolves the provider, sends nothing
        for _ in range(100):  # bounded: the address is resolved in a task
            if server.engine.lines["itsp1"].address is not None:
                break
            await asyncio.sleep(0.01)
        port = server.ports["udp"]
        await loop.sock_sendto(provider, invite(port, provider.getsockname()[1], "sdk1"), ("127.0.0.1", port))
        if during is not None:
            await during(server)
        status = 0
        for _ in range(100):  # bounded: 5 s
            try:
                data = await asyncio.wait_for(loop.sock_recv(provider, 65535), 0.05)
            except TimeoutError:
                continue
            msg = parse_message(data)
            if isinstance(msg, Response) and msg.status >= 200:
                status = msg.status
                break
        seen: list[Event] = []
        if stream is not None:
            for _ in range(20):  # bounded: created, incoming, failed, closed and line events
                event = await asyncio.wait_for(stream.__anext__(), 2)
                seen.append(event)
                if event.name == "closed":
                    break
    provider.close()
    return status, seen


def test_a_provider_call_reaches_the_incoming_handler_with_its_session_and_peer() -> None:
    got: list[Event] = []

    def setup(server: SipServer) -> None:
        @server.on("incoming")
        def incoming(event: Event) -> None:
            got.append(event)
            server.reject_call_session(event.session, 486)

    status, _ = asyncio.run(provider_call(setup))
    assert status == 486
    (event,) = got
    assert (event["peer_type"], event["peer"], event["to"]) == ("LINE", "itsp1", "+15551230000")
    assert event.session is not None and event.session.id == event.call


def test_the_event_stream_gives_the_call_events_in_order_with_the_session() -> None:
    def setup(server: SipServer) -> None:
        server.on("incoming")(lambda event: server.reject_call_session(event.session, 403, "Not today"))

    status, seen = asyncio.run(provider_call(setup))
    assert status == 403
    calls = [e for e in seen if e.call is not None]
    assert [e.name for e in calls] == ["created", "incoming", "failed", "closed"]
    assert calls[2]["code"] == 403 and calls[2]["reason"] == "Not today"
    assert calls[1].session is not None  # the incoming event carries the session to decide


def test_accepting_to_a_user_with_no_phone_refuses_the_caller_with_the_reason() -> None:
    results: list[Failure | None] = []

    def setup(server: SipServer) -> None:
        @server.on("incoming")
        async def incoming(event: Event) -> None:
            results.append(await server.accept_call_session(event.session, to_user="alice", timeout=5))

    status, _ = asyncio.run(provider_call(setup))
    assert status == 480
    assert results and results[0] is not None and results[0].code == 480


def test_with_fallback_a_failed_accept_leaves_the_decision_to_the_program() -> None:
    def setup(server: SipServer) -> None:
        @server.on("incoming")
        async def incoming(event: Event) -> None:
            failure = await server.accept_call_session(event.session, to_user="alice", fallback=True)
            assert failure is not None and failure.code == 480
            server.reject_call_session(event.session, 600)  # busy everywhere: the voicemail is full

    status, _ = asyncio.run(provider_call(setup))
    assert status == 600


def test_a_call_with_no_incoming_handler_and_no_event_stream_is_refused_with_404() -> None:
    async def nothing(server: SipServer) -> None:
        return None

    status, _ = asyncio.run(provider_call(lambda server: None, during=nothing))
    assert status == 404


def test_a_stream_of_other_events_does_not_hold_a_call_waiting_for_a_decision() -> None:
    async def hangups_only(server: SipServer) -> None:
        server.events("hangup", "closed")

    status, _ = asyncio.run(provider_call(lambda server: None, during=hangups_only))
    assert status == 404


def test_accepting_a_closed_session_gives_a_487_failure_at_once() -> None:
    async def scenario() -> Failure | None:
        server = SipServer(listen="udp:127.0.0.1:0", rtp_ports=ports.rtp_range(10))
        return await server.accept_call_session("no-such-call", to_user="alice")

    result = asyncio.run(scenario())
    assert result is not None and result.code == 487


def offline(check: Callable[[SipServer], None]) -> None:
    """Run `check` on a server built (as the engine must be) inside an event loop, never started."""
    async def scenario() -> None:
        check(SipServer(listen="udp:127.0.0.1:0", rtp_ports=ports.rtp_range(10)))

    asyncio.run(scenario())


def test_accept_needs_exactly_one_target() -> None:
    offline(accept_with_two_or_no_targets)


def accept_with_two_or_no_targets(server: SipServer) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        server.accept_call_session("x", to_user="alice", to_line="itsp1")
    with pytest.raises(ValueError, match="exactly one"):
        server.accept_call_session("x")


def test_an_unknown_event_name_is_refused_with_the_list_of_events() -> None:
    offline(watch_unknown_events)


def watch_unknown_events(server: SipServer) -> None:
    with pytest.raises(ValueError, match="no event 'incomming'; events: .*incoming"):
        server.on("incomming")
    with pytest.raises(ValueError, match="no event 'hangups'"):
        server.events("hangups")


def test_an_unknown_line_is_named_with_the_known_ones() -> None:
    def check(server: SipServer) -> None:
        server.add_line("itsp1", server="127.0.0.1:5080", username="trunk1")
        with pytest.raises(KeyError, match="no line 'itsp2'.*lines: itsp1"):
            server.register_line("itsp2")

    offline(check)


def test_unregister_line_keeps_the_line_and_its_settings() -> None:
    async def scenario() -> tuple[str, int | None]:
        server = SipServer(listen="udp:127.0.0.1:0", rtp_ports=ports.rtp_range(10))
        server.add_line("itsp1", server="127.0.0.1:5080", username="trunk1", register_every=120)
        server.unregister_line("itsp1")
        return server.line_state("itsp1"), server.engine.lines["itsp1"].config.register_every

    assert asyncio.run(scenario()) == ("unregistered", 120)


def test_event_channel_is_the_sdk_channel() -> None:
    assert Event("hangup", {"call": "c1", "channel": "ONE"}).channel is Channel.ONE
    assert Event("hangup", {"call": "c1"}).channel is None


def test_event_fields_left_out_show_their_documented_default_and_unknown_ones_are_named() -> None:
    event = Event("hangup", {"call": "c1", "channel": "ZERO"})
    assert event["channel"] == "ZERO"
    with pytest.raises(KeyError, match="not a field of the hangup event"):
        event["nope"]


@pytest.mark.parametrize("text,default,expected", [
    ("127.0.0.1:5080", 5060, ("127.0.0.1", 5080)), ("sip.example.com", 5060, ("sip.example.com", 5060)),
    ("[::1]:5090", 5060, ("::1", 5090)), ("[::1]", 5061, ("::1", 5061))])
def test_server_addresses_are_host_and_port(text: str, default: int, expected: tuple[str, int]) -> None:
    assert _hostport(text, default) == expected


def test_a_bare_listen_address_is_udp_and_tcp_and_a_bad_one_is_named() -> None:
    assert [s.transport for s in _listen_specs(["127.0.0.1:5060"])] == ["udp", "tcp"]
    assert [s.transport for s in _listen_specs(["tls:127.0.0.1:5061"])] == ["tls"]
    with pytest.raises(ValueError, match="'127.0.0.1': HOST:PORT expected"):
        _listen_specs(["127.0.0.1"])


def test_docs_sdk_maps_every_sdk_event_and_every_public_method() -> None:
    from pathlib import Path

    from flowlang.events import EVENTS

    text = (Path(__file__).resolve().parents[2] / "docs" / "sdk.md").read_text()
    missing = [e.sdk for e in EVENTS if e.sdk and e.sdk not in text and f"`{e.name}`" not in text]
    missing += [name for name in vars(SipServer) if not name.startswith("_") and f"{name}(" not in text
                and name not in ("engine", "ports", "users", "lines", "program")]
    assert not missing, f"docs/sdk.md does not map: {missing}"


# ---- chat ----------------------------------------------------------------------------------------------

async def chat_office() -> tuple[SipServer, Peer, Peer]:
    """A started server with users alice and bob, both with a raw-SIP phone registered."""
    server = SipServer(listen="udp:127.0.0.1:0", advertise="127.0.0.1", rtp_ports=ports.rtp_range(10))
    server.add_user("alice", "alice-pw")
    server.add_user("bob", "bob-pw")
    await server.start()
    port = server.ports["udp"]
    phones = Peer("alice", "alice-pw"), Peer("bob", "bob-pw")
    for p in phones:
        assert (await p.send(port, "REGISTER", f"sip:127.0.0.1:{port}", f"sip:{p.name}@127.0.0.1")).status == 200
    return server, *phones


def test_send_chat_reaches_the_users_phone_from_the_sender_named() -> None:
    async def scenario() -> tuple[tuple[int, str], Request | None]:
        server, alice, bob = await chat_office()
        result = await asyncio.wait_for(server.send_chat("the build is green", to_user="bob", sender="ci"), 5)
        got = await bob.wait_request("MESSAGE")
        await server.stop()
        alice.stop()
        bob.stop()
        return result, got

    result, got = asyncio.run(scenario())
    assert result == (200, "OK")
    assert got is not None and got.body == b"the build is green" and got.from_.uri.user == "ci"


def test_send_chat_to_a_user_without_a_phone_gives_480() -> None:
    async def scenario() -> tuple[int, str]:
        server, alice, bob = await chat_office()
        server.add_user("carol", "c")
        result = await asyncio.wait_for(server.send_chat("hello", to_user="carol"), 5)
        await server.stop()
        alice.stop()
        bob.stop()
        return result

    assert asyncio.run(scenario())[0] == 480


def test_a_chat_router_decides_where_a_users_message_goes_and_the_stream_sees_the_message_event() -> None:
    async def scenario() -> tuple[int, Request | None, list[Event]]:
        server, alice, bob = await chat_office()
        stream = server.events("message")

        @server.route_chat
        def everything_to_bob(message: ChatMessage) -> Target:
            return Target("USER", "bob")

        port = server.ports["udp"]
        resp = await alice.send(port, "MESSAGE", f"sip:helpdesk@127.0.0.1:{port}", "sip:helpdesk@127.0.0.1", "help")
        got = await bob.wait_request("MESSAGE")
        event = await asyncio.wait_for(stream.__anext__(), 2)
        await server.stop()
        alice.stop()
        bob.stop()
        return resp.status, got, [event]

    status, got, events = asyncio.run(scenario())
    assert status == 200
    assert got is not None and got.body == b"help"
    assert (events[0]["from"], events[0]["to"], events[0]["text"], events[0]["target"]) == (
        "alice", "helpdesk", "help", "user bob")


def test_send_chat_needs_exactly_one_target_and_a_number_for_a_line() -> None:
    def check(server: SipServer) -> None:
        with pytest.raises(ValueError, match="exactly one"):
            server.send_chat("x")
        with pytest.raises(ValueError, match="number"):
            server.send_chat("x", to_line="itsp1")

    offline(check)
