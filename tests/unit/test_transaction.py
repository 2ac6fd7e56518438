"""RFC 3261 section 17 transactions on a fake clock: retransmissions, timeouts, absorption, late answers."""

from __future__ import annotations

from runtime.sip.message import Headers, Request, create_response, parse_message
from runtime.sip.transaction import (
    MessageDiscarded,
    RequestReceived,
    ResponseReceived,
    State,
    TransactionLayer,
    TransactionTimeout,
    new_branch,
)

PEER = ("127.0.0.1", 5062)
ME = "127.0.0.1:5060"


def request(method: str = "INVITE", branch: str | None = None, cseq: int = 1) -> Request:
    h = Headers()
    h.add("Via", f"SIP/2.0/UDP 127.0.0.1:5062;rport;branch={branch or new_branch()}")
    h.add("Max-Forwards", "70")
    h.add("From", "<sip:alice@example.com>;tag=a1")
    h.add("To", "<sip:bob@example.com>")
    h.add("Call-ID", "call-1@test")
    h.add("CSeq", f"{cseq} {method}")
    h.add("Content-Length", "0")
    return Request(method, "sip:bob@example.com", h)


def events(layer: TransactionLayer) -> list:
    out = []
    while (e := layer.next_event()) is not None:
        out.append(e)
    return out


def sent(layer: TransactionLayer) -> list[bytes]:
    return [data for _, _, data in layer.datagrams_to_send()]


def run_until(layer: TransactionLayer, end: float) -> list[bytes]:
    """Fire every timer up to `end` (bounded), collecting what was sent."""
    out: list[bytes] = []
    for _ in range(1000):
        t = layer.get_timer()
        if t is None or t > end:
            break
        layer.handle_timer(t)
        out.extend(sent(layer))
    return out


# ---- client INVITE ---------------------------------------------------------------------------------
def test_client_invite_retransmits_with_timer_a_doubling_until_timer_b() -> None:
    layer = TransactionLayer()
    txn = layer.send_request(request(), PEER, 0.0)
    assert len(sent(layer)) == 1
    retransmits = run_until(layer, 31.9)
    # A fires at 0.5, 1.5, 3.5, 7.5, 15.5, 31.5: six retransmissions before B at 32 s
    assert len(retransmits) == 6
    run_until(layer, 32.0)
    assert txn.state is State.TERMINATED
    assert any(isinstance(e, TransactionTimeout) for e in events(layer))


def test_client_invite_stops_retransmitting_after_a_provisional() -> None:
    layer = TransactionLayer()
    req = request()
    txn = layer.send_request(req, PEER, 0.0)
    sent(layer)
    layer.receive(bytes(create_response(req, 180, "Ringing", to_tag="b1")), PEER, 0.1)
    assert run_until(layer, 60.0) == []
    assert txn.state is State.PROCEEDING  # no transaction timeout while ringing: the TU decides


def test_client_invite_acks_a_failure_itself_and_absorbs_its_retransmissions() -> None:
    layer = TransactionLayer()
    req = request()
    txn = layer.send_request(req, PEER, 0.0)
    sent(layer)
    busy = bytes(create_response(req, 486, "Busy Here", to_tag="b1"))
    layer.receive(busy, PEER, 0.2)
    acks = sent(layer)
    assert len(acks) == 1 and acks[0].startswith(b"ACK sip:bob@example.com SIP/2.0")
    ack = parse_message(acks[0])
    assert ack.top_via.branch == req.top_via.branch and ack.to.tag == "b1"
    assert [type(e) for e in events(layer)] == [ResponseReceived]
    layer.receive(busy, PEER, 0.4)  # the 486 again: ACK again, TU not bothered
    assert len(sent(layer)) == 1 and events(layer) == []
    assert txn.state is State.COMPLETED
    run_until(layer, 33.0)  # timer D
    assert txn.state is State.TERMINATED


def test_client_invite_passes_2xx_retransmissions_to_the_dialog() -> None:
    layer = TransactionLayer()
    req = request()
    layer.send_request(req, PEER, 0.0)
    ok = bytes(create_response(req, 200, "OK", to_tag="b1"))
    layer.receive(ok, PEER, 0.1)
    layer.receive(ok, PEER, 0.6)
    evs = events(layer)
    assert [type(e) for e in evs] == [ResponseReceived, ResponseReceived]
    assert evs[0].transaction is not None and evs[1].transaction is None
    run_until(layer, 40.0)  # timer M ends the Accepted state
    layer.receive(ok, PEER, 41.0)  # still delivered (stray 2xx): the dialog re-ACKs
    assert [type(e) for e in events(layer)] == [ResponseReceived]


# ---- client non-INVITE -----------------------------------------------------------------------------
def test_client_non_invite_retransmits_capped_at_t2_and_times_out_with_timer_f() -> None:
    layer = TransactionLayer()
    txn = layer.send_request(request("REGISTER"), PEER, 0.0)
    sent(layer)
    out = run_until(layer, 31.99)
    # E: 0.5, 1.5, 3.5, 7.5, then every 4 s: 11.5 ... 31.5
    assert len(out) == 4 + 6
    run_until(layer, 32.0)
    assert txn.terminated
    assert any(isinstance(e, TransactionTimeout) for e in events(layer))


def test_client_non_invite_retransmits_every_t2_once_proceeding() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS")
    layer.send_request(req, PEER, 0.0)
    sent(layer)
    layer.receive(bytes(create_response(req, 100, "Trying")), PEER, 0.1)
    out = run_until(layer, 12.0)
    assert len(out) == 3  # 0.5 then every T2 (4 s): 4.5, 8.5 (the 0.5 one was armed before)


def test_response_after_the_transaction_ended_is_dropped() -> None:
    layer = TransactionLayer()
    req = request("BYE")
    layer.send_request(req, PEER, 0.0)
    run_until(layer, 40.0)
    events(layer)
    layer.receive(bytes(create_response(req, 200, "OK", to_tag="b1")), PEER, 41.0)
    assert events(layer) == [] and sent(layer) == []


# ---- server INVITE ---------------------------------------------------------------------------------
def test_server_invite_sends_100_trying_at_once_and_absorbs_retransmissions() -> None:
    layer = TransactionLayer()
    data = bytes(request())
    layer.receive(data, PEER, 0.0)
    out = sent(layer)
    assert len(out) == 1 and out[0].startswith(b"SIP/2.0 100 Trying")
    assert [type(e) for e in events(layer)] == [RequestReceived]
    layer.receive(data, PEER, 0.5)
    assert sent(layer)[0].startswith(b"SIP/2.0 100 Trying")  # the last response, resent
    assert events(layer) == []  # the TU sees the INVITE once


def test_server_invite_failure_retransmits_with_timer_g_until_ack() -> None:
    layer = TransactionLayer()
    req = request()
    layer.receive(bytes(req), PEER, 0.0)
    (ev,) = events(layer)
    sent(layer)
    layer.respond(ev.transaction, create_response(ev.request, 486, "Busy Here", to_tag="x"), 0.1)
    assert sent(layer)[0].startswith(b"SIP/2.0 486")
    assert len(run_until(layer, 1.7)) == 2  # G at 0.6, 1.6
    ack = request("ACK", branch=req.top_via.branch)
    ack.headers.set("To", "<sip:bob@example.com>;tag=x")
    layer.receive(bytes(ack), PEER, 1.8)
    assert ev.transaction.state is State.CONFIRMED
    assert events(layer) == []  # the ACK for a failure belongs to the transaction
    assert run_until(layer, 10.0) == []
    assert ev.transaction.terminated


def test_server_invite_without_ack_times_out_with_timer_h() -> None:
    layer = TransactionLayer()
    layer.receive(bytes(request()), PEER, 0.0)
    (ev,) = events(layer)
    layer.respond(ev.transaction, create_response(ev.request, 404, "Not Found", to_tag="x"), 0.0)
    run_until(layer, 32.0)
    assert ev.transaction.terminated
    assert any(isinstance(e, TransactionTimeout) for e in events(layer))


def test_ack_for_a_2xx_goes_to_the_transaction_user() -> None:
    layer = TransactionLayer()
    layer.receive(bytes(request()), PEER, 0.0)
    (ev,) = events(layer)
    layer.respond(ev.transaction, create_response(ev.request, 200, "OK", to_tag="x"), 0.0)
    ack = request("ACK")  # a 2xx ACK has a branch of its own
    layer.receive(bytes(ack), PEER, 0.1)
    (ack_ev,) = events(layer)
    assert isinstance(ack_ev, RequestReceived) and ack_ev.transaction is None


# ---- server non-INVITE -----------------------------------------------------------------------------
def test_server_non_invite_resends_its_final_response_to_a_retransmission() -> None:
    layer = TransactionLayer()
    data = bytes(request("OPTIONS"))
    layer.receive(data, PEER, 0.0)
    (ev,) = events(layer)
    layer.respond(ev.transaction, create_response(ev.request, 200, "OK"), 0.0)
    sent(layer)
    layer.receive(data, PEER, 1.0)
    assert sent(layer)[0].startswith(b"SIP/2.0 200 OK") and events(layer) == []
    run_until(layer, 32.0)  # timer J
    assert ev.transaction.terminated


def test_only_one_final_response_leaves_a_server_transaction() -> None:
    layer = TransactionLayer()
    layer.receive(bytes(request("BYE")), PEER, 0.0)
    (ev,) = events(layer)
    layer.respond(ev.transaction, create_response(ev.request, 200, "OK"), 0.0)
    layer.respond(ev.transaction, create_response(ev.request, 500, "Oops"), 0.0)
    assert [d[:14] for d in sent(layer)] == [b"SIP/2.0 200 OK"]


def test_rfc2543_request_without_magic_cookie_still_matches_its_retransmission() -> None:
    layer = TransactionLayer()
    data = bytes(request("OPTIONS", branch="old-style-1"))
    layer.receive(data, PEER, 0.0)
    assert len(events(layer)) == 1
    layer.receive(data, PEER, 0.5)
    assert events(layer) == []


def test_received_and_rport_are_stamped_on_the_top_via() -> None:
    layer = TransactionLayer()
    layer.receive(bytes(request("OPTIONS")), ("10.0.0.9", 40000), 0.0)
    (ev,) = events(layer)
    layer.respond(ev.transaction, create_response(ev.request, 200, "OK"), 0.0)
    (dest_data,) = layer.datagrams_to_send()
    _, dest, data = dest_data
    assert dest == ("10.0.0.9", 40000)
    assert b"received=10.0.0.9" in data and b"rport=40000" in data


# ---- bad input -------------------------------------------------------------------------------------
def test_malformed_request_gets_400_and_no_transaction() -> None:
    layer = TransactionLayer()
    bad = bytes(request("OPTIONS")).replace(b"CSeq: 1 OPTIONS", b"CSeq: one OPTIONS")
    layer.receive(bad, PEER, 0.0)
    (out,) = sent(layer)
    assert out.startswith(b"SIP/2.0 400 ")
    assert [type(e) for e in events(layer)] == [MessageDiscarded]
    assert layer.server == {}


def test_malformed_response_is_dropped_silently() -> None:
    layer = TransactionLayer()
    layer.receive(b"SIP/2.0 2000 OK\r\nVia: nonsense\r\n\r\n", PEER, 0.0)
    assert sent(layer) == []
    assert [type(e) for e in events(layer)] == [MessageDiscarded]


def test_keepalive_crlf_is_ignored() -> None:
    layer = TransactionLayer()
    layer.receive(b"\r\n\r\n", PEER, 0.0)
    assert sent(layer) == [] and events(layer) == []


# ---- transports ------------------------------------------------------------------------------------
def big_invite() -> Request:
    req = request()
    req.set_body(b"v=0\r\n" + b"a=x-padding:" + b"x" * 1400 + b"\r\n", "application/sdp")
    return req


def test_request_over_1300_bytes_goes_over_tcp_when_tcp_is_available() -> None:
    layer = TransactionLayer()
    layer.tcp_for_large = True
    txn = layer.send_request(big_invite(), PEER, 0.0)
    ((transport, _, data),) = layer.datagrams_to_send()
    assert transport == "tcp" and txn.transport == "tcp"
    assert b"Via: SIP/2.0/TCP " in data
    assert run_until(layer, 10.0) == []  # reliable transport: no timer A retransmissions


def test_large_request_falls_back_to_udp_when_the_tcp_connection_fails() -> None:
    layer = TransactionLayer()
    layer.tcp_for_large = True
    txn = layer.send_request(big_invite(), PEER, 0.0)
    layer.datagrams_to_send()
    layer.transport_failed("tcp", PEER, 0.1)
    ((transport, _, data),) = layer.datagrams_to_send()
    assert transport == "udp" and b"Via: SIP/2.0/UDP " in data
    assert not txn.terminated and events(layer) == []


def test_small_request_stays_on_udp() -> None:
    layer = TransactionLayer()
    layer.tcp_for_large = True
    layer.send_request(request(), PEER, 0.0)
    ((transport, _, _),) = layer.datagrams_to_send()
    assert transport == "udp"


def test_failed_connection_fails_its_transactions_at_once() -> None:
    layer = TransactionLayer()
    txn = layer.send_request(request("OPTIONS"), PEER, 0.0, "tcp")
    layer.transport_failed("tcp", PEER, 0.2)
    assert txn.terminated
    assert [type(e) for e in events(layer)] == [TransactionTimeout]
