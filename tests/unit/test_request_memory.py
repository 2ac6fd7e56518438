"""What a stranger's large requests can make the server hold (issue 9, bench attack 4): a request
over 32 KiB is refused with 513 (RFC 3261 21.5.14) once and statelessly; OPTIONS is answered
statelessly; a completed non-INVITE server transaction keeps for Timer J only what answering a
retransmission needs. Sans-IO (the transaction layer, fake clock) and the engine's layer, memory
measured with tracemalloc."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc

from runtime.engine import Engine
from runtime.sip.message import create_response, parse_message
from runtime.sip.transaction import MessageDiscarded, RequestReceived, TransactionLayer
from runtime.transport import ListenSpec

PAD = "".join(f"X-Pad-{k}: {'p' * 1000}\r\n" for k in range(30))  # 30 KB: under the limit


def request(method: str, n: int, pad: str = PAD) -> bytes:
    return (f"{method} sip:127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.1.{n // 250}.{n % 250 + 1}:5060;branch=z9hG4bK{n}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:x@example.com>;tag={n}\r\nTo: <sip:x@example.com>\r\n"
            f"Call-ID: mem-{n}\r\nCSeq: 1 {method}\r\n{pad}Content-Length: 0\r\n\r\n").encode()


def held_after(feed) -> tuple[int, object]:  # type: ignore[no-untyped-def]
    """Bytes still allocated after `feed()` ran (its result kept alive), by tracemalloc."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    keep = feed()
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return held, keep


def test_a_request_over_32_kib_gets_one_513_and_leaves_no_transaction() -> None:
    layer = TransactionLayer()
    layer.receive(request("REGISTER", 1, PAD * 2), ("192.0.2.7", 5060), 0.0)
    out = layer.datagrams_to_send()
    assert [parse_message(d).status for _, _, d in out] == [513]  # type: ignore[union-attr]
    event = layer.next_event()
    assert isinstance(event, MessageDiscarded) and "over the 32768 limit" in event.reason
    assert not layer.server and layer.next_event() is None
    layer.handle_timer(40.0)
    assert layer.datagrams_to_send() == []


def test_a_completed_non_invite_transaction_keeps_its_answer_not_the_request() -> None:
    def feed() -> TransactionLayer:
        layer = TransactionLayer()
        for n in range(200):
            layer.receive(request("REGISTER", n), ("192.0.2.7", 5060 + n), 0.0)
            event = layer.next_event()
            assert isinstance(event, RequestReceived) and event.transaction is not None
            layer.respond(event.transaction, create_response(event.request, 401, "Unauthorized", to_tag="t"), 0.0)
            del event
        layer.datagrams_to_send()
        return layer

    held, layer = held_after(feed)
    print(f"\n200 REGISTERs of 30 KB answered statefully: {held // 1024} KiB held for Timer J "
          f"({held // 200} B each)")
    assert len(layer.server) == 200  # type: ignore[attr-defined]
    assert held < 200 * 4096  # each kept its answer (under 1 KB) and its identity, not its 30 KB


def test_a_retransmitted_request_still_gets_the_same_answer_after_the_request_was_let_go() -> None:
    layer = TransactionLayer()
    layer.receive(request("REGISTER", 1), ("192.0.2.7", 5060), 0.0)
    event = layer.next_event()
    assert isinstance(event, RequestReceived) and event.transaction is not None
    layer.respond(event.transaction, create_response(event.request, 200, "OK", to_tag="t"), 0.0)
    (first,) = layer.datagrams_to_send()
    layer.receive(request("REGISTER", 1), ("192.0.2.7", 5060), 1.0)
    assert layer.datagrams_to_send() == [first] and layer.next_event() is None


def test_large_unauthenticated_options_from_many_sources_leave_nothing_held() -> None:
    async def scenario() -> tuple[int, int]:
        engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], advertise="127.0.0.1", rtp_ports=(37900, 37999))
        await engine.start()

        def feed() -> int:
            for n in range(500):
                engine.layer.receive(request("OPTIONS", n), (f"127.1.{n // 250}.{n % 250 + 1}", 5060), 0.0)
                engine.pump()
            engine.layer.datagrams_to_send()
            return len(engine.layer.server)

        held, kept = held_after(feed)
        await engine.stop()
        return held, kept  # type: ignore[return-value]

    held, transactions = asyncio.run(scenario())
    print(f"\n500 unauthenticated OPTIONS of 30 KB from 500 sources: {transactions} transactions, "
          f"{held // 1024} KiB held (15 MiB received)")
    assert transactions == 0
    assert held < 2 * 1024 * 1024
