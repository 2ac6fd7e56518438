"""The lease pump on a real engine (runtime/lines/lease_pump.py) with a scripted lease store: a line
registers only while this node holds its lease, stops without un-registering when the lease is lost,
registers again when it is taken back, and the status view names the holder."""

from __future__ import annotations

import asyncio

from runtime.control import make_state
from runtime.control.views import lines_view
from runtime.engine import Engine
from runtime.lines import LineConfig
from runtime.lines.lease import StoreAnswer
from runtime.lines.lease_pump import LeasePump
from runtime.transport import ListenSpec


class ScriptedStore:
    """A lease store whose answers the test sets: `holder` holds the line (None: free)."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.holder: str | None = "node-b"
        self.released: list[str] = []

    def acquire(self, line: str, period: float) -> StoreAnswer:
        if self.holder in (None, self.node):
            self.holder = self.node
            return StoreAnswer(True, self.node, 1_800_000_000.0)
        return StoreAnswer(False, self.holder, 1_800_000_000.0)

    def renew(self, line: str, period: float) -> StoreAnswer:
        return StoreAnswer(self.holder == self.node, self.holder, 1_800_000_000.0)

    def release(self, line: str) -> StoreAnswer:
        self.released.append(line)
        if self.holder == self.node:
            self.holder = None
        return StoreAnswer(True)

    def close(self) -> None:
        pass


class Provider(asyncio.DatagramProtocol):
    """Counts the REGISTERs it gets (and answers none: the line stays `trying`)."""

    def __init__(self) -> None:
        self.registers: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data.startswith(b"REGISTER"):
            self.registers.append(data)


async def until(check, steps: int = 200) -> bool:  # type: ignore[no-untyped-def]
    for _ in range(steps):  # bounded: 200 x 20 ms
        if check():
            return True
        await asyncio.sleep(0.02)
    return False


def test_a_line_registers_only_while_this_node_holds_its_lease() -> None:
    async def main() -> None:
        engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], advertise="127.0.0.1",
                        rtp_ports=(36720, 36739), admission_control=False)
        await engine.start()
        loop = asyncio.get_running_loop()
        transport, provider = await loop.create_datagram_endpoint(Provider, local_addr=("127.0.0.1", 0))
        port = transport.get_extra_info("sockname")[1]
        store = ScriptedStore("node-a")
        engine.leases = LeasePump(engine, store, period=3.0)
        events: list[tuple[str, dict[str, object]]] = []
        engine.bus.subscribe(lambda e: events.append((e.name, dict(e.fields))))
        try:
            engine.add_line(LineConfig("itsp1", "127.0.0.1", port, "trunk1", "s3cret"))
            engine.register_line("itsp1")
            # another node holds it: the line's provider is known (its calls are recognised), nothing is sent
            assert await until(lambda: engine.lines["itsp1"].address is not None)
            assert await until(lambda: engine.leases.holding()["itsp1"]["holder"] == "node-b")
            assert provider.registers == []
            [view] = lines_view(make_state(engine))
            assert view["lease"]["holder"] == "node-b" and not view["lease"]["held_here"]

            store.holder = None  # node-b died and its row ran out: we take it at the next try
            assert await until(lambda: bool(provider.registers))
            assert [name for name, _ in events if name.startswith("line_lease")] == ["line_lease_acquired"]

            store.holder = "node-b"  # the row is another node's now: we stop, without Expires: 0
            assert await until(lambda: any(name == "line_lease_lost" for name, _ in events))
            assert engine.lines["itsp1"].stopped
            assert not [r for r in provider.registers if b"Expires: 0" in r]

            store.holder = None  # free again: a fresh line client registers
            sent = len(provider.registers)
            assert await until(lambda: len(provider.registers) > sent)
            assert not engine.lines["itsp1"].stopped
            await engine.leases.close()
            assert store.released and store.holder is None
        finally:
            transport.close()
            await engine.stop()

    asyncio.run(main())


def test_a_line_another_node_registers_still_carries_calls_from_this_node() -> None:
    """Issue 13: a provider takes an INVITE with the account's credentials from any node; only the
    REGISTER is the lease holder's. So the phones on a node without the lease still call out."""
    async def main() -> None:
        engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], advertise="127.0.0.1",
                        rtp_ports=(36740, 36759), admission_control=False)
        await engine.start()
        loop = asyncio.get_running_loop()
        transport, provider = await loop.create_datagram_endpoint(Provider, local_addr=("127.0.0.1", 0))
        port = transport.get_extra_info("sockname")[1]
        store = ScriptedStore("node-a")
        engine.leases = LeasePump(engine, store, period=3.0)
        try:
            engine.add_line(LineConfig("itsp1", "127.0.0.1", port, "trunk1", "s3cret"))
            engine.register_line("itsp1")
            assert await until(lambda: engine.lines["itsp1"].carries_calls)
            line = engine.lines["itsp1"]
            assert line.registered_by == "node-b" and line.state == "unregistered"
            assert provider.registers == []  # carrying calls is not registering
            [view] = lines_view(make_state(engine))
            assert view["lease"]["carried"] and view["lease"]["holder"] == "node-b"
            from runtime.control.client import render_status
            text = render_status({"program": {}, "lines": [view], "users": [], "calls": []})
            assert "carried, registered by node-b" in text

            store.holder = None  # node-b gone: this node takes the line and registers it itself
            assert await until(lambda: bool(provider.registers))
            [view] = lines_view(make_state(engine))
            assert engine.lines["itsp1"].registered_by is None and not view["lease"]["carried"]
            await engine.leases.close()
        finally:
            transport.close()
            await engine.stop()

    asyncio.run(main())
