"""Click-to-call (issue 12): `POST /api/calls` and `callflow call USER NUMBER` against a running
engine: the user's phone (a UDP socket standing for it) rings with the number it will be connected
to; bad input is a clear HTTP error and a one-line CLI message, never a traceback."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp

from runtime.engine import Engine
from runtime.registrar import Binding
from runtime.sip.message import Request, parse_message
from tests.unit.test_control import callflow, with_server


async def post(base: str, body: object, token: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session, session.post(base + "/api/calls", json=body,
                                                                headers=headers) as response:
        return response.status, await response.json()


def register(engine: Engine, user: str, address: tuple[str, int]) -> None:
    engine.registrar.store.put(Binding(user, f"sip:{user}@{address[0]}:{address[1]}", address, "udp",
                                       engine.now() + 120, "cid", 1, "phone"))


def test_an_unknown_user_is_404_naming_the_users() -> None:
    async def scenario(engine: Engine, base: str, state: Any) -> None:
        status, answer = await post(base, {"from_user": "carol", "to": "15551234567"})
        assert status == 404 and answer["error"] == "no user 'carol' (users: alice, bob)"
        assert not engine.calls

    with_server(scenario)


def test_a_user_with_no_phone_registered_is_409() -> None:
    async def scenario(engine: Engine, base: str, state: Any) -> None:
        status, answer = await post(base, {"from_user": "alice", "to": "15551234567"})
        assert status == 409 and "alice" in answer["error"] and "no phone registered" in answer["error"]

    with_server(scenario)


def test_a_bad_number_or_body_is_400_saying_what_is_expected() -> None:
    async def scenario(engine: Engine, base: str, state: Any) -> None:
        status, answer = await post(base, {"from_user": "alice", "to": "555 1234"})
        assert status == 400 and "bad number '555 1234'" in answer["error"]
        status, answer = await post(base, {"from_user": "alice"})
        assert status == 400 and '"to"' in answer["error"]
        status, answer = await post(base, ["alice", "1"])
        assert status == 400 and "JSON object" in answer["error"]
        status, answer = await post(base, {"from_user": "alice", "to": "1", "ring_timeout": -1})
        assert status == 400 and "ring_timeout" in answer["error"]

    with_server(scenario)


def test_a_number_the_rules_refuse_is_403_before_the_phone_rings() -> None:
    async def scenario(engine: Engine, base: str, state: Any) -> None:
        register(engine, "alice", ("127.0.0.1", 9))
        status, answer = await post(base, {"from_user": "alice", "to": "+15551234567"})  # rules: digits only
        assert status == 403 and answer["error"].startswith("the rules refuse a call from alice to +15551234567: 404")
        assert not engine.calls

    with_server(scenario)


def test_click_to_call_rings_the_users_phone_showing_the_number() -> None:
    async def scenario(engine: Engine, base: str, state: Any) -> None:
        phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        phone.bind(("127.0.0.1", 0))
        phone.setblocking(False)
        try:
            register(engine, "alice", phone.getsockname())
            status, answer = await post(base, {"from_user": "alice", "to": "15551234567"})
            assert status == 202 and answer["from_user"] == "alice" and answer["to"] == "15551234567"
            assert answer["call"] in engine.calls and answer["state"] == "originating"
            data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(phone, 65535), 5)
            invite = parse_message(data)
            assert isinstance(invite, Request) and invite.method == "INVITE"
            assert invite.from_.uri.user == "15551234567" and b"m=audio" in invite.body
        finally:
            phone.close()

    with_server(scenario)


def test_the_call_command_says_what_it_started_or_why_not() -> None:
    async def scenario(engine: Engine, base: str, state: Any) -> None:
        address = base.split("//", 1)[1]
        run = asyncio.get_running_loop().run_in_executor
        refused = await run(None, lambda: callflow("call", "carol", "15551234567", "--control", address))
        assert refused.returncode == 1 and "Traceback" not in refused.stderr
        assert "answered 404: no user 'carol'" in refused.stderr
        register(engine, "bob", ("127.0.0.1", 9))
        started = await run(None, lambda: callflow("call", "bob", "15551234567", "--control", address))
        assert started.returncode == 0, started.stderr
        assert "ringing bob's phone" in started.stdout and "15551234567" in started.stdout

    with_server(scenario)


def test_click_to_call_needs_the_control_token() -> None:
    async def scenario(engine: Engine, base: str, state: Any) -> None:
        status, _ = await post(base, {"from_user": "alice", "to": "15551234567"})
        assert status == 401 and not engine.calls

    with_server(scenario, token="sesame")


def test_metrics_count_originated_calls_by_what_their_first_leg_did() -> None:
    from types import SimpleNamespace

    from runtime.control.metrics import Metrics

    metrics = Metrics()
    for name, fields in (("created", {"call": "a", "origin": "originated"}), ("originated", {"call": "a"}),
                         ("created", {"call": "b", "origin": "originated"}), ("failed", {"call": "b", "code": 480}),
                         ("created", {"call": "c"}), ("failed", {"call": "c", "code": 486})):
        metrics.on_event(SimpleNamespace(name=name, fields=fields))
    counts = metrics.snapshot()
    assert counts["callflow_calls_originated_total{result=answered}"] == 1
    assert counts["callflow_calls_originated_total{result=failed}"] == 1


def test_a_web_page_cannot_make_the_server_place_a_call() -> None:
    async def scenario(engine: Engine, base: str, state: Any) -> None:
        register(engine, "alice", ("127.0.0.1", 9))
        async with aiohttp.ClientSession() as session, session.post(
                base + "/api/calls", json={"from_user": "alice", "to": "15551234567"},
                headers={"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}) as response:
            assert response.status == 403
        assert not engine.calls

    with_server(scenario)
