"""The transaction layer of RFC 3261 section 17 (with RFC 6026's Accepted state), sans-IO.

Shaped like aioquic's connection: every input carries `now`; the layer never reads a clock or
touches a socket. The asyncio adapter on top feeds `receive()`, sends what `datagrams_to_send()`
returns, arms one timer at `get_timer()` and calls `handle_timer()` when it fires; the transaction
user (the engine) takes `next_event()` and answers through `respond()` / `send_request()`.
"""

from __future__ import annotations

import heapq
import itertools
import os
from collections import deque
from collections.abc import Callable
from enum import Enum

from .errors import SipSyntaxError
from .message import Headers, Request, Response, create_response, parse_message
from .uri import split_quoted

T1 = 0.5
T2 = 4.0
T4 = 5.0
MAGIC = "z9hG4bK"
UDP_SIZE_LIMIT = 1300  # RFC 3261 18.1.1: path MTU 1500 minus 200
# A request larger than this is refused with 513 (RFC 3261 21.5.14), statelessly, before it is parsed:
# no honest phone or provider sends 32 KiB of SIP, and each kept request is memory a stranger chose
MAX_REQUEST_SIZE = 32 * 1024
# what a completed non-INVITE server transaction keeps of its request: enough to match and answer
_SLIM_KEYS = ("via", "from", "to", "call-id", "cseq")

Address = tuple[str, int]


class _Entropy:
    """Random hex from the OS's CSPRNG, read 4 KiB at a time: branches, tags and Call-IDs are made
    for every message we originate, and one getrandom(2) call each showed in profiles."""

    __slots__ = ("_buf", "_pos")

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0

    def token_hex(self, nbytes: int) -> str:
        pos = self._pos
        if pos + nbytes > len(self._buf):
            self._buf = os.urandom(4096)
            pos = 0
        self._pos = pos + nbytes
        return self._buf[pos : pos + nbytes].hex()


token_hex = _Entropy().token_hex


def new_branch() -> str:
    return MAGIC + token_hex(8)


def new_tag() -> str:
    return token_hex(6)


class State(Enum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


# ---- events handed to the transaction user --------------------------------------------------
class Event:
    __slots__ = ()


class RequestReceived(Event):
    """A new request; `transaction` is None for an ACK to a 2xx (it belongs to the dialog)."""

    __slots__ = ("request", "source", "transport", "transaction")

    def __init__(self, request: Request, source: Address, transport: str,
                 transaction: ServerTransaction | None) -> None:
        self.request = request
        self.source = source
        self.transport = transport
        self.transaction = transaction


class ResponseReceived(Event):
    """A response for one of our requests; `transaction` is None for a 2xx retransmission that
    arrived after the INVITE transaction ended (the dialog must ACK it again)."""

    __slots__ = ("response", "transaction", "source")

    def __init__(self, response: Response, transaction: ClientTransaction | None, source: Address) -> None:
        self.response = response
        self.transaction = transaction
        self.source = source


class TransactionTimeout(Event):
    """Timer B or F fired (no final response: act as on 408), or H (the ACK never came); or, with
    `transport_error`, the destination could not be reached at all (ICMP unreachable, a refused or
    broken connection), which RFC 3261 8.1.3.1 says to treat as a 503."""

    __slots__ = ("transaction", "transport_error")

    def __init__(self, transaction: Transaction, transport_error: bool = False) -> None:
        self.transaction = transaction
        self.transport_error = transport_error


class MessageDiscarded(Event):
    """A message we could not use; the layer already answered 4xx where it could. For the log."""

    __slots__ = ("source", "reason", "answered")

    def __init__(self, source: Address, reason: str, answered: int | None) -> None:
        self.source = source
        self.reason = reason
        self.answered = answered


# ---- transactions ------------------------------------------------------------------------
class Transaction:
    __slots__ = ("layer", "key", "request", "transport", "peer", "state", "timers", "last_response",
                 "retransmit_interval", "user_data")

    def __init__(self, layer: TransactionLayer, key: tuple, request: Request, transport: str,
                 peer: Address) -> None:
        self.layer = layer
        self.key = key
        self.request = request
        self.transport = transport
        self.peer = peer
        self.state = State.TRYING
        self.timers: dict[str, int] = {}
        self.last_response: Response | None = None
        self.retransmit_interval = layer.t1
        self.user_data: object = None  # the transaction user's own state (the call leg, say)

    @property
    def reliable(self) -> bool:
        return self.transport not in ("udp", "UDP")

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.request.method} {self.state.value}>"


class ClientTransaction(Transaction):
    __slots__ = ("encoded", "ack", "size_switched")

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.encoded = b""
        self.ack: bytes | None = None
        self.size_switched = False


class ServerTransaction(Transaction):
    __slots__ = ("encoded_response",)

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.encoded_response: bytes | None = None


class TransactionLayer:
    """Matches messages to transactions, runs their timers, and queues what must be sent."""

    def __init__(self, *, t1: float = T1, t2: float = T2, t4: float = T4,
                 screen: Callable[[Request], tuple[int, str, list[tuple[str, str]]] | None] | None = None,
                 server_header: str | None = None, max_transactions: int = 200_000,
                 trying_after_tu: bool = False, max_request_size: int = MAX_REQUEST_SIZE) -> None:
        self.t1, self.t2, self.t4 = t1, t2, t4
        self.max_request_size = max_request_size
        # An INVITE's 100 Trying waits until the TU has taken the request's event and is dropped if
        # the TU answered it by then: RFC 3261 17.2.1 needs no 100 when a final response follows
        # within 200 ms, and a challenged INVITE from a possibly spoofed source then gets one
        # datagram back, not two. False: the 100 leaves as the INVITE arrives.
        self.trying_after_tu = trying_after_tu
        self._trying_due: list[ServerTransaction] = []
        self.screen = screen
        self.server_header = server_header
        self.tcp_for_large = False  # set when a TCP transport is listening (RFC 3261 18.1.1)
        self.max_transactions = max_transactions
        self.server: dict[tuple, ServerTransaction] = {}
        self.client: dict[tuple, ClientTransaction] = {}
        self._timers: list[tuple[float, int, Transaction, str]] = []
        self._seq = itertools.count()
        self._out: list[tuple[str, Address, bytes]] = []
        self._events: deque[Event] = deque()

    # ---- outputs ---------------------------------------------------------------------------
    def datagrams_to_send(self) -> list[tuple[str, Address, bytes]]:
        """(transport, destination, bytes) in the order they must leave."""
        if self._trying_due:
            self._send_trying_due()
        out = self._out
        self._out = []
        return out

    def next_event(self) -> Event | None:
        if self._trying_due:
            self._send_trying_due()
        if not self._events:
            return None
        event = self._events.popleft()
        if self.trying_after_tu and type(event) is RequestReceived:
            txn = event.transaction
            if txn is not None and txn.request.method == "INVITE":
                self._trying_due.append(txn)
        return event

    def _send_trying_due(self) -> None:
        """The 100 Trying of INVITEs whose event the TU has taken and not yet answered."""
        due, self._trying_due = self._trying_due, []
        for txn in due:
            if txn.encoded_response is None and txn.state is State.PROCEEDING:
                self.respond(txn, create_response(txn.request, 100, "Trying"), 0.0)  # a 1xx arms no timer

    def get_timer(self) -> float | None:
        timers = self._timers
        while timers:
            deadline, seq, txn, name = timers[0]
            if txn.timers.get(name) == seq:
                return deadline
            heapq.heappop(timers)
        return None

    def handle_timer(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            deadline, seq, txn, name = heapq.heappop(timers)
            if txn.timers.get(name) != seq:
                continue
            del txn.timers[name]
            self._fire(txn, name, now)

    # ---- input -----------------------------------------------------------------------------
    def receive(self, data: bytes, source: Address, now: float, transport: str = "udp") -> None:
        """One datagram (or one framed stream message) from `source`."""
        if not data.strip(b"\r\n"):
            return  # keep-alive
        if len(data) > self.max_request_size and not data.startswith(b"SIP/"):
            self._refuse_too_large(data, source, transport)
            return
        try:
            msg = parse_message(data)  # stream transports frame by Content-Length before this
            if isinstance(msg, Request) and self.screen is not None:
                # the screen validates first thing, so a request is checked once, not twice
                verdict = self.screen(msg)
                if verdict is not None:
                    self._refuse(msg, verdict, source, transport)
                    return
            else:
                msg.validate()
        except SipSyntaxError as exc:
            self._reject_unreadable(data, exc, source, transport)
            return
        except (ValueError, IndexError) as exc:  # belt and braces: nothing but a log line escapes
            self._events.append(MessageDiscarded(source, f"unreadable message: {exc}", None))
            return
        if isinstance(msg, Request):
            self.receive_request(msg, source, now, transport)
        else:
            self.receive_response(msg, source, now)

    def receive_request(self, req: Request, source: Address, now: float, transport: str = "udp") -> None:
        via = req.top_via
        if _stamp_received(via, source):
            _rewrite_top_via(req.headers, via)
        key = self._server_key(req, via)
        txn = self.server.get(key)
        method = req.method
        if txn is not None:
            if method == "ACK":
                if txn.state is State.COMPLETED:
                    self._cancel_timer(txn, "G")
                    self._cancel_timer(txn, "H")
                    txn.state = State.CONFIRMED
                    txn.encoded_response = None  # Timer I only absorbs ACKs: nothing is resent
                    self._set_timer(txn, "I", now, 0 if txn.reliable else self.t4)
                # an ACK matching an Accepted INVITE transaction is the TU's (RFC 6026 8.1)
                elif txn.state is State.ACCEPTED:
                    self._events.append(RequestReceived(req, source, transport, None))
                return
            # a retransmission: resend whatever we last said
            if txn.encoded_response is not None and txn.state is not State.ACCEPTED:
                self._out.append((txn.transport, txn.peer, txn.encoded_response))
            return
        if method == "ACK":
            self._events.append(RequestReceived(req, source, transport, None))
            return
        if len(self.server) >= self.max_transactions:
            self._send_stateless_response(create_response(req, 503, "Service Unavailable",
                                                          headers=[("Retry-After", "5")]), transport, source)
            return
        txn = ServerTransaction(self, key, req, transport, source)
        self.server[key] = txn
        if method == "INVITE":
            txn.state = State.PROCEEDING
            # 100 Trying at once (RFC 3261 17.2.1 asks for it within 200 ms): stops the caller's timer A
            if not self.trying_after_tu:
                self.respond(txn, create_response(req, 100, "Trying"), now)
        self._events.append(RequestReceived(req, source, transport, txn))

    def receive_response(self, resp: Response, source: Address, now: float) -> None:
        via = resp.top_via
        method = resp.cseq[1]
        txn = self.client.get((via.branch, method))
        if txn is None:
            if method == "INVITE" and 200 <= resp.status < 300:
                self._events.append(ResponseReceived(resp, None, source))
            return
        status = resp.status
        state = txn.state
        if method == "INVITE":
            if state in (State.CALLING, State.PROCEEDING):
                self._cancel_timer(txn, "A")
                if status < 200:
                    txn.state = State.PROCEEDING
                    self._cancel_timer(txn, "B")
                elif status < 300:
                    txn.state = State.ACCEPTED
                    self._cancel_timer(txn, "B")
                    self._set_timer(txn, "M", now, 64 * self.t1)
                else:
                    txn.state = State.COMPLETED
                    self._cancel_timer(txn, "B")
                    txn.ack = bytes(_ack_for(txn.request, resp))
                    self._out.append((txn.transport, txn.peer, txn.ack))
                    self._set_timer(txn, "D", now, 0 if txn.reliable else 32.0)
                if status < 200:
                    txn.last_response = resp
                else:
                    _linger(txn)  # Timer M or D: the TU has the response in the event
                self._events.append(ResponseReceived(resp, txn, source))
            elif state is State.ACCEPTED and 200 <= status < 300:
                self._events.append(ResponseReceived(resp, None, source))
            elif state is State.COMPLETED and status >= 300 and txn.ack is not None:
                self._out.append((txn.transport, txn.peer, txn.ack))
            return
        if state in (State.TRYING, State.PROCEEDING):
            txn.last_response = resp
            if status < 200:
                txn.state = State.PROCEEDING
            else:
                txn.state = State.COMPLETED
                self._cancel_timer(txn, "E")
                self._cancel_timer(txn, "F")
                self._set_timer(txn, "K", now, 0 if txn.reliable else self.t4)
                _linger(txn)
            self._events.append(ResponseReceived(resp, txn, source))

    # ---- the transaction user's calls --------------------------------------------------------
    def send_request(self, req: Request, destination: Address, now: float,
                     transport: str = "udp") -> ClientTransaction:
        """Start a client transaction. The request must carry its own top Via with a fresh branch."""
        via = req.top_via
        if not (via.branch or "").startswith(MAGIC):
            raise ValueError("a client transaction needs a top Via with an RFC 3261 branch")
        method = req.method
        if method == "ACK":
            raise ValueError("ACK for a 2xx is sent with send_stateless, not in a transaction")
        encoded = bytes(req)
        switched = False
        if transport == "udp" and self.tcp_for_large and len(encoded) > UDP_SIZE_LIMIT:
            # RFC 3261 18.1.1: a request this close to the path MTU goes over a congestion-controlled
            # transport, and its Via says so; if that connection fails we fall back to UDP
            _rewrite_top_via_transport(req, "TCP")
            transport, switched = "tcp", True
            encoded = bytes(req)
        txn = ClientTransaction(self, (via.branch, method), req, transport, destination)
        txn.size_switched = switched
        self.client[txn.key] = txn
        txn.encoded = encoded
        self._out.append((transport, destination, txn.encoded))
        if method == "INVITE":
            txn.state = State.CALLING
            if not txn.reliable:
                self._set_timer(txn, "A", now, self.t1)
            self._set_timer(txn, "B", now, 64 * self.t1)
        else:
            txn.state = State.TRYING
            if not txn.reliable:
                self._set_timer(txn, "E", now, self.t1)
            self._set_timer(txn, "F", now, 64 * self.t1)
        return txn

    def respond(self, txn: ServerTransaction, resp: Response, now: float) -> None:
        """Send a response within a server transaction (retransmissions are the layer's job)."""
        if txn.state in (State.COMPLETED, State.CONFIRMED, State.TERMINATED, State.ACCEPTED):
            if not (txn.state is State.ACCEPTED and 200 <= resp.status < 300):
                return  # a final response was already sent: RFC 3261 allows only one
        if self.server_header and "server" not in resp.headers:
            resp.headers.add("Server", self.server_header)
        data = bytes(resp)
        txn.last_response = resp
        txn.encoded_response = data
        self._out.append((txn.transport, txn.peer, data))
        status = resp.status
        if status < 200:
            if txn.method != "INVITE":
                txn.state = State.PROCEEDING
            return
        if txn.method == "INVITE":
            if status < 300:
                if txn.state is not State.ACCEPTED:  # the first 2xx (the TU retransmits it here too)
                    _linger(txn)
                txn.state = State.ACCEPTED
                self._set_timer(txn, "L", now, 64 * self.t1)
                # RFC 6026 8.1: in Accepted, INVITE retransmissions are absorbed and the TU's own
                # 2xx retransmissions pass; the layer resends nothing, so it keeps nothing to resend
                txn.encoded_response = txn.last_response = None
            else:
                txn.state = State.COMPLETED
                if not txn.reliable:
                    txn.retransmit_interval = self.t1
                    self._set_timer(txn, "G", now, self.t1)
                self._set_timer(txn, "H", now, 64 * self.t1)
                _linger(txn)
        else:
            txn.state = State.COMPLETED
            self._set_timer(txn, "J", now, 0 if txn.reliable else 64 * self.t1)
            # for Timer J (32 s) only a retransmission is answered, from `encoded_response`: the
            # request's other headers and body (and the response, which shares the request's
            # parsed lines) are let go, so what a stranger sent is not held that long
            txn.request = _slim(txn.request)
            txn.last_response = None

    def respond_statelessly(self, txn: ServerTransaction, resp: Response) -> None:
        """Send one final response and forget the transaction, as a stateless server would (RFC 3261
        8.2.7, 16.11): nothing is retransmitted and nothing is held. For challenges and refusals to
        requests that may come from a spoofed source, so that one datagram in makes at most one out
        (an INVITE's 407 is otherwise resent ten times until an ACK that never comes). A
        retransmission of the request is then a new request and gets its own single answer; the
        ACK for a non-2xx answered this way matches nothing and is dropped by the TU."""
        if self.server_header and "server" not in resp.headers:
            resp.headers.add("Server", self.server_header)
        self._out.append((txn.transport, txn.peer, bytes(resp)))
        self.terminate(txn)

    def send_stateless(self, msg: Request | Response, destination: Address, transport: str = "udp") -> None:
        """ACKs for 2xx and the UAS core's 2xx retransmissions live outside transactions."""
        self._out.append((transport, destination, bytes(msg)))

    def transport_failed(self, transport: str, destination: Address, now: float) -> None:
        """A connection could not be made or broke: its client transactions fail at once, as on a
        timeout (RFC 3261 8.1.3.1 says treat it as 503), instead of waiting 32 s for timer B/F."""
        for txn in [t for t in self.client.values() if t.transport == transport and t.peer == destination]:
            if txn.state not in (State.CALLING, State.TRYING, State.PROCEEDING):
                continue
            if txn.size_switched:  # RFC 3261 18.1.1: TCP for size failed, so UDP after all
                txn.size_switched = False
                _rewrite_top_via_transport(txn.request, "UDP")
                txn.transport = "udp"
                txn.encoded = bytes(txn.request)
                self._out.append(("udp", destination, txn.encoded))
                txn.retransmit_interval = self.t1
                self._set_timer(txn, "A" if txn.method == "INVITE" else "E", now, self.t1)
                continue
            self.terminate(txn)
            self._events.append(TransactionTimeout(txn, transport_error=True))

    def find_invite(self, cancel: Request) -> ServerTransaction | None:
        """The INVITE server transaction a CANCEL refers to (RFC 3261 9.2)."""
        via = cancel.top_via
        key = self._server_key(cancel, via, method="INVITE")
        return self.server.get(key)

    def terminate(self, txn: Transaction) -> None:
        txn.state = State.TERMINATED
        txn.timers.clear()
        if isinstance(txn, ServerTransaction):
            self.server.pop(txn.key, None)
        else:
            self.client.pop(txn.key, None)

    # ---- internals ---------------------------------------------------------------------------
    def _server_key(self, req: Request, via, method: str | None = None) -> tuple:  # type: ignore[no-untyped-def]
        m = method or req.method
        if m == "ACK":
            m = "INVITE"
        branch = via.branch
        if branch and branch.startswith(MAGIC):
            return (branch, via.host, via.port, m)
        # RFC 2543 peers: match on the request's identity (RFC 3261 17.2.3)
        return ("2543", req.uri, req.from_tag, req.call_id, req.cseq[0], via.host, via.port, m)

    def _set_timer(self, txn: Transaction, name: str, now: float, delay: float) -> None:
        seq = next(self._seq)
        txn.timers[name] = seq
        heapq.heappush(self._timers, (now + delay, seq, txn, name))

    def _cancel_timer(self, txn: Transaction, name: str) -> None:
        txn.timers.pop(name, None)

    def _fire(self, txn: Transaction, name: str, now: float) -> None:
        if name in ("A", "E", "G"):
            if name == "A":
                interval = txn.retransmit_interval = txn.retransmit_interval * 2
            elif name == "E":
                if txn.state is State.PROCEEDING:
                    interval = self.t2
                else:
                    interval = txn.retransmit_interval = min(txn.retransmit_interval * 2, self.t2)
            else:
                interval = txn.retransmit_interval = min(txn.retransmit_interval * 2, self.t2)
            data = txn.encoded if isinstance(txn, ClientTransaction) else txn.encoded_response
            if data:
                self._out.append((txn.transport, txn.peer, data))
            self._set_timer(txn, name, now, interval)
        elif name in ("B", "F", "H"):
            self.terminate(txn)
            self._events.append(TransactionTimeout(txn))
        else:  # D, I, J, K, L, M: the transaction's lingering time is over
            self.terminate(txn)

    def _send_stateless_response(self, resp: Response, transport: str, destination: Address) -> None:
        if self.server_header:
            resp.headers.add("Server", self.server_header)
        self._out.append((transport, destination, bytes(resp)))

    def _refuse(self, req: Request, verdict: tuple, source: Address, transport: str) -> None:  # type: ignore[type-arg]
        """A request the screen refused: answered statelessly (an ACK is never answered)."""
        code, reason, extra = verdict
        if req.method != "ACK":
            self._send_stateless_response(create_response(req, code, reason, to_tag=new_tag(), headers=extra),
                                          transport, source)
        self._events.append(MessageDiscarded(source, f"{req.method} refused: {code} {reason}",
                                             code if req.method != "ACK" else None))

    def _refuse_too_large(self, data: bytes, source: Address, transport: str) -> None:
        """513 Message Too Large (RFC 3261 21.5.14), once and statelessly, built from the raw text;
        an ACK is never answered."""
        size = len(data)
        resp = None if data.startswith(b"ACK ") else _raw_error_response(data, 513, "Message Too Large")
        if resp is not None:
            self._out.append((transport, source, resp))
        self._events.append(MessageDiscarded(
            source, f"request of {size} octets over the {self.max_request_size} limit", 513 if resp else None))

    def _reject_unreadable(self, data: bytes, exc: SipSyntaxError, source: Address, transport: str) -> None:
        """Answer a bad request with 400 (or the code the error names) when a response can be formed;
        drop bad responses and anything without the headers a response needs."""
        resp = _raw_error_response(data, exc.status, exc.reason)
        if resp is not None:
            self._out.append((transport, source, resp))
        self._events.append(MessageDiscarded(source, str(exc), exc.status if resp else None))


def _rewrite_top_via(headers: Headers, via) -> None:  # type: ignore[no-untyped-def]
    """Put the stamped top Via back, touching no other header line; the cached Via list stays valid
    because `via` is the object in it."""
    items = headers._items
    for i, (k, n, v) in enumerate(items):
        if k == "via":
            parts = split_quoted(v, ",")
            if len(parts) == 1:
                items[i] = (k, n, str(via))
            else:
                items[i : i + 1] = [(k, n, str(via)), (k, n, ",".join(parts[1:]).strip())]
            return


def _rewrite_top_via_transport(req: Request, transport: str) -> None:
    via = req.top_via
    via.transport = transport
    _rewrite_top_via(req.headers, via)


def _stamp_received(via, source: Address) -> bool:  # type: ignore[no-untyped-def]
    """RFC 3261 18.2.1 and RFC 3581: note where the request really came from, so responses find the
    sender behind a NAT. True when the Via changed."""
    params = via.params
    changed = False
    if via.host.strip("[]") != source[0] or "rport" in params:
        params["received"] = source[0]
        changed = True
    if "rport" in params and not params["rport"]:
        params["rport"] = str(source[1])
    return changed


def _ack_for(req: Request, resp: Response) -> Request:
    """The ACK for a non-2xx final response (RFC 3261 17.1.1.3): part of the INVITE transaction."""
    h = Headers()
    h.add("Via", req.headers.values("via")[0])
    for name in ("max-forwards", "from"):
        value = req.headers.get(name)
        if value is not None:
            h.add(name.title() if name != "max-forwards" else "Max-Forwards", value)
    h.add("To", resp.headers.get("to") or "")
    h.add("Call-ID", req.call_id)
    h.add("CSeq", f"{req.cseq[0]} ACK")
    for route in req.headers.get_all("route"):
        h.add("Route", route)
    h.add("Content-Length", "0")
    return Request("ACK", req.uri, h)


def _linger(txn: Transaction) -> None:
    """A transaction entering its RFC 3261 wait state (Timers D, H/I, K, L, M: up to 64*T1 = 32 s over
    UDP) keeps only what that wait needs: the matching headers of its request and the bytes it may
    resend (a client's ACK for a non-2xx, a server's non-2xx), not the parsed messages with their
    bodies. Thousands of transactions wait at once under load, each one an ended call's. The
    transaction user never reads them from here: it got the response in its event and keeps its
    own copy of what it sent (issue 8)."""
    txn.request = _slim(txn.request)
    txn.last_response = None
    if isinstance(txn, ClientTransaction):
        txn.encoded = b""  # Timers A and E are over: no request retransmission


def _slim(req: Request) -> Request:
    """A copy of `req` holding only what matching and answering it need (its Request-URI, Via, From,
    To, Call-ID and CSeq), none of the received text."""
    h = Headers([(name, value) for key, name, value in req.headers._items if key in _SLIM_KEYS])
    return Request(req.method, req.uri, h)


def _raw_error_response(data: bytes, status: int, reason: str) -> bytes | None:
    """Build an error response from a request we could not parse, copying its headers verbatim."""
    try:
        text = data.decode("utf-8", "surrogateescape")
    except Exception:  # pragma: no cover - surrogateescape cannot fail
        return None
    if text.startswith("SIP/"):
        return None
    lines = text.replace("\r\n", "\n").split("\n\n", 1)[0].split("\n")
    wanted = {"via": [], "v": [], "from": [], "f": [], "to": [], "t": [], "call-id": [], "i": [], "cseq": []}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        key = name.strip().lower()
        if colon and key in wanted:
            wanted[key].append(line.strip())
    vias = wanted["via"] + wanted["v"]
    froms = wanted["from"] + wanted["f"]
    tos = wanted["to"] + wanted["t"]
    cids = wanted["call-id"] + wanted["i"]
    if not vias:
        return None  # nowhere a response could be routed back to
    # copy what there is: RFC 4475 3.3.1 (insuf) wants a 400 even when From, To or Call-ID is missing
    out = [f"SIP/2.0 {status} {reason}", *vias, *froms[:1]]
    if tos:
        to_line = tos[0]
        out.append(to_line if "tag=" in to_line.lower() else f"{to_line};tag={new_tag()}")
    out += [*cids[:1], *wanted["cseq"][:1], "Content-Length: 0", "", ""]
    return "\r\n".join(out).encode("utf-8", "surrogateescape")
