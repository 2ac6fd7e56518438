"""What an INVITE transaction keeps while it waits out RFC 3261's timers once it has its final
response (issue 8): under load thousands of ended calls' transactions wait at once (Timers L and M
for a 2xx, D and H/I for a failure: up to 32 s over UDP), so each keeps only the headers that match
it and the bytes it may have to resend, never the parsed INVITE with its body nor the response.
Sans-IO, fake clock; memory measured with tracemalloc."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable

from runtime.sip.message import Request, create_response, parse_message
from runtime.sip.transaction import RequestReceived, ResponseReceived, State, TransactionLayer

PAD = "".join(f"X-Pad-{k}: {'p' * 1000}\r\n" for k in range(30))  # 30 KB: under the 32 KiB limit
CALLS = 100
PEER = ("192.0.2.7", 5060)


def invite(n: int) -> bytes:
    return (f"INVITE sip:+15551234567@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK{n}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:x@example.com>;tag={n}\r\nTo: <sip:+15551234567@example.com>\r\n"
            f"Call-ID: keep-{n}\r\nCSeq: 1 INVITE\r\nContact: <sip:x@192.0.2.7>\r\n{PAD}Content-Length: 0\r\n\r\n"
            ).encode()


def held_after(feed: Callable[[], TransactionLayer]) -> tuple[int, TransactionLayer]:
    """Bytes still allocated once `feed()` returned (its layer kept alive), by tracemalloc."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    layer = feed()
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return held, layer


def answer_invites(code: int) -> TransactionLayer:
    layer = TransactionLayer()
    for n in range(CALLS):
        layer.receive(invite(n), PEER, 0.0)
        event = layer.next_event()
        assert isinstance(event, RequestReceived) and event.transaction is not None
        layer.respond(event.transaction, create_response(event.request, code, "Answer", to_tag=f"t{n}"), 0.0)
        del event
    layer.datagrams_to_send()
    return layer


def send_invites(code: int) -> TransactionLayer:
    layer = TransactionLayer()
    for n in range(CALLS):
        req = parse_message(invite(n))
        assert isinstance(req, Request)
        layer.send_request(req, PEER, 0.0)
        layer.receive(bytes(create_response(req, code, "Answer", to_tag=f"t{n}")), PEER, 0.1)
        while layer.next_event() is not None:
            pass
        del req
    layer.datagrams_to_send()
    return layer


def test_an_answered_invite_waiting_out_timer_l_keeps_neither_the_invite_nor_the_2xx() -> None:
    held, layer = held_after(lambda: answer_invites(200))
    print(f"\n{CALLS} INVITEs of 30 KB answered 200: {held // 1024} KiB held for Timer L ({held // CALLS} B each)")
    assert {t.state for t in layer.server.values()} == {State.ACCEPTED} and len(layer.server) == CALLS
    assert held < CALLS * 4096


def test_a_refused_invite_waiting_for_its_ack_keeps_only_its_answer() -> None:
    held, layer = held_after(lambda: answer_invites(486))
    print(f"\n{CALLS} INVITEs of 30 KB answered 486: {held // 1024} KiB held for Timer H ({held // CALLS} B each)")
    assert {t.state for t in layer.server.values()} == {State.COMPLETED}
    assert held < CALLS * 4096


def test_a_refused_invite_still_resends_the_same_answer_to_a_retransmitted_invite() -> None:
    layer = TransactionLayer()
    layer.receive(invite(1), PEER, 0.0)
    event = layer.next_event()
    assert isinstance(event, RequestReceived) and event.transaction is not None
    layer.respond(event.transaction, create_response(event.request, 486, "Busy Here", to_tag="t"), 0.0)
    answer = layer.datagrams_to_send()[-1]
    layer.receive(invite(1), PEER, 0.3)
    assert layer.datagrams_to_send() == [answer] and layer.next_event() is None


def test_an_invite_we_sent_that_was_answered_2xx_keeps_nothing_of_it_for_timer_m() -> None:
    held, layer = held_after(lambda: send_invites(200))
    print(f"\n{CALLS} INVITEs of 30 KB sent and answered 200: {held // 1024} KiB held for Timer M")
    assert {t.state for t in layer.client.values()} == {State.ACCEPTED} and len(layer.client) == CALLS
    assert held < CALLS * 4096


def test_a_retransmitted_2xx_after_the_invite_was_let_go_still_reaches_the_transaction_user() -> None:
    layer = TransactionLayer()
    req = parse_message(invite(1))
    assert isinstance(req, Request)
    layer.send_request(req, PEER, 0.0)
    ok = bytes(create_response(req, 200, "OK", to_tag="t"))
    layer.receive(ok, PEER, 0.1)
    assert isinstance(layer.next_event(), ResponseReceived)
    layer.receive(ok, PEER, 0.6)
    again = layer.next_event()
    assert isinstance(again, ResponseReceived) and again.transaction is None and again.response.status == 200


def test_an_invite_we_sent_that_failed_keeps_only_its_ack_and_resends_it() -> None:
    held, layer = held_after(lambda: send_invites(486))
    assert {t.state for t in layer.client.values()} == {State.COMPLETED}
    assert held < CALLS * 4096
    txn = next(iter(layer.client.values()))
    ack = txn.ack
    assert ack is not None and ack.startswith(b"ACK ")
    busy = bytes(create_response(parse_message(invite(0)), 486, "Answer", to_tag="t0"))  # type: ignore[arg-type]
    layer.receive(busy, PEER, 1.0)
    assert layer.datagrams_to_send() == [("udp", PEER, ack)]
