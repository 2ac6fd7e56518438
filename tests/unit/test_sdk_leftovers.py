"""An ended call leaves nothing in the SDK (issue 8): the futures of transfer_call_session and
dial_call_session(route=) are settled by the call's events and forgotten when it closes, whatever
came first. A server that grows per call is broken."""

from __future__ import annotations

import asyncio

from callflow.sdk import Failure, SipServer
from runtime.calls import Channel, Target
from tests.rig.ports import ports


class _TransferringCall:
    """Stands for a connected call session that accepts a transfer (fakes only in unit tests)."""

    def __init__(self, call_id: str) -> None:
        self.id = call_id
        self.transfers: list[tuple[Channel, list[Target], str]] = []

    def transfer(self, channel: Channel, targets: list[Target], shown: str) -> None:
        self.transfers.append((channel, targets, shown))


def _server_with_call(call_id: str) -> tuple[SipServer, _TransferringCall]:
    server = SipServer(listen="udp:127.0.0.1:0", rtp_ports=ports.rtp_range(10))
    server.add_user("bob", "bob-pw")
    call = _TransferringCall(call_id)
    server.engine.calls[call_id] = call  # type: ignore[assignment]
    return server, call


def test_a_transfer_pending_when_its_connected_call_closes_fails_with_487_and_is_forgotten() -> None:
    async def scenario() -> None:
        server, call = _server_with_call("c1")
        future = server.transfer_call_session("c1", to_user="bob")
        assert call.transfers and not future.done()
        # the call had connected before the transfer was asked; then it closes mid-transfer
        server.engine.bus.emit("connected", call="c1", peer_type="USER", peer="bob")
        assert not future.done()
        del server.engine.calls["c1"]
        server.engine.bus.emit("closed", call="c1", reason="hangup")
        assert future.done() and future.result() == Failure(487, "Request Terminated (the call closed)")
        assert not server._transfers and not server._routed and not server._pending_incoming

    asyncio.run(scenario())


def test_a_transfer_that_connects_leaves_nothing_once_the_call_closes() -> None:
    async def scenario() -> None:
        server, _ = _server_with_call("c2")
        future = server.transfer_call_session("c2", to_user="bob")
        server.engine.bus.emit("transfer", call="c2", transferor="alice", target="bob", kind="blind", channel="ONE",
                               outcome="connected")
        assert future.done() and future.result() is None
        del server.engine.calls["c2"]
        server.engine.bus.emit("closed", call="c2", reason="transferred")
        assert not server._transfers and not server._routed and not server._pending_incoming

    asyncio.run(scenario())


def test_an_incoming_call_that_closes_before_its_decision_leaves_nothing() -> None:
    async def scenario() -> None:
        server, _ = _server_with_call("c3")
        server.engine.bus.emit("incoming", call="c3", peer_type="USER", peer="bob", caller="bob", to="+1555",
                               ip="127.0.0.1", port=5062)
        server.engine.bus.emit("closed", call="c3", reason="cancelled")
        assert not server._pending_incoming

    asyncio.run(scenario())


def test_a_second_transfer_while_one_is_under_way_is_refused_with_491_and_the_first_still_settles() -> None:
    async def scenario() -> None:
        server, call = _server_with_call("c1")
        first = server.transfer_call_session("c1", to_user="bob")
        second = server.transfer_call_session("c1", to_user="bob")
        assert second.done() and second.result() == Failure(491, "Request Pending (a transfer of this call is "
                                                                  "under way)")
        assert len(call.transfers) == 1 and not first.done()
        server.engine.bus.emit("closed", call="c1", reason="hangup")
        assert first.done()

    asyncio.run(scenario())
