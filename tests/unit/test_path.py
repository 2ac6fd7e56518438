"""Path (RFC 3327): a phone registered through an edge proxy is reached through that edge.

The registrar keeps the REGISTER's Path with the binding (in memory, SQLite and, in
tests/integration/test_location_postgres.py, PostgreSQL), echoes it to a UA that supports it, and
requests to the phone carry it as a pre-loaded Route set, sent to its first hop. The engine specs run
on real loopback sockets with a raw-SIP "edge" that forwards a phone's REGISTER with a Path.
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
from pathlib import Path

from callflow.flowrun.dialplan import Dialplan
from callflow.sdk import SipServer
from flowlang import compile_source
from runtime.engine import Engine
from runtime.registrar import Binding, Registrar
from runtime.registrar.sqlite import SqliteLocationStore
from runtime.sip.digest import DigestClient, select_challenge
from runtime.sip.message import Headers, Request, Response, create_response, parse_message
from runtime.transport import ListenSpec
from tests.rig.ports import ports
from tests.unit.test_chat import Peer

EDGE = ("192.0.2.1", 5060)
PATH = "<sip:192.0.2.1:5060;lr;received=sip:198.51.100.7:40123>"


def register(path: list[str], supported: str | None = None, call_id: str = "reg-1", cseq: int = 1) -> Request:
    h = Headers()
    h.add("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKedge1")
    h.add("Via", "SIP/2.0/UDP 10.0.0.7:5062;received=198.51.100.7;rport=40123;branch=z9hG4bKr1")
    h.add("From", "<sip:alice@pbx>;tag=f1")
    h.add("To", "<sip:alice@pbx>")
    h.add("Call-ID", call_id)
    h.add("CSeq", f"{cseq} REGISTER")
    h.add("Contact", "<sip:alice@10.0.0.7:5062>")
    h.add("Expires", "600")
    for value in path:
        h.add("Path", value)
    if supported is not None:
        h.add("Supported", supported)
    h.add("Content-Length", "0")
    return Request("REGISTER", "sip:pbx", h)


def test_the_path_of_a_register_is_kept_with_the_binding_and_names_where_requests_go() -> None:
    reg = Registrar()
    resp, _, _ = reg.register("alice", register([PATH]), EDGE, "udp", 0)
    (binding,) = reg.lookup("alice", 1)
    assert resp.status == 200 and binding.path == (PATH,)
    assert binding.next_hop() == (("192.0.2.1", 5060), "udp")
    assert binding.route_headers() == [("Route", PATH)]


def test_several_path_entries_become_the_route_set_in_their_order_and_the_first_is_the_next_hop() -> None:
    reg = Registrar()
    reg.register("alice", register(["<sip:192.0.2.1:5070;lr>", "<sip:203.0.113.9;lr;transport=tcp>"]),
                 EDGE, "udp", 0)
    (binding,) = reg.lookup("alice", 1)
    assert [v for _, v in binding.route_headers()] == ["<sip:192.0.2.1:5070;lr>", "<sip:203.0.113.9;lr;transport=tcp>"]
    assert binding.next_hop() == (("192.0.2.1", 5070), "udp")


def test_a_path_in_one_header_with_commas_is_read_as_several_entries() -> None:
    reg = Registrar()
    reg.register("alice", register(["<sip:192.0.2.1;lr>, <sip:192.0.2.2;lr>"]), EDGE, "udp", 0)
    assert reg.lookup("alice", 1)[0].path == ("<sip:192.0.2.1;lr>", "<sip:192.0.2.2;lr>")


def test_a_binding_without_path_is_reached_at_its_source_with_no_route() -> None:
    reg = Registrar()
    reg.register("alice", register([]), ("198.51.100.7", 40123), "udp", 0)
    (binding,) = reg.lookup("alice", 1)
    assert binding.next_hop() == (("198.51.100.7", 40123), "udp") and binding.route_headers() == []


def test_a_path_naming_a_host_by_name_falls_back_to_the_registers_source() -> None:
    reg = Registrar()
    reg.register("alice", register(["<sip:edge.example.net;lr>"]), EDGE, "udp", 0)
    assert reg.lookup("alice", 1)[0].next_hop() == (EDGE, "udp")


def test_the_200_echoes_the_path_only_to_a_ua_that_supports_path() -> None:
    reg = Registrar()
    plain, _, _ = reg.register("alice", register([PATH]), EDGE, "udp", 0)
    aware, _, _ = reg.register("alice", register([PATH], supported="replaces, path", cseq=2), EDGE, "udp", 0)
    assert plain.headers.get_all("path") == []
    assert aware.headers.get_all("path") == [PATH]


def test_a_refresh_without_path_replaces_the_stored_path() -> None:
    reg = Registrar()
    reg.register("alice", register([PATH]), EDGE, "udp", 0)
    reg.register("alice", register([], cseq=2), ("198.51.100.7", 40123), "udp", 10)
    (binding,) = reg.lookup("alice", 11)
    assert binding.path == () and binding.next_hop() == (("198.51.100.7", 40123), "udp")


def test_a_path_beyond_the_bound_is_refused_and_changes_nothing() -> None:
    reg = Registrar()
    resp, added, _ = reg.register("alice", register([f"<sip:192.0.2.{i};lr>" for i in range(1, 8)]), EDGE, "udp", 0)
    assert resp.status == 400 and "Path" in resp.reason and added == [] and reg.lookup("alice", 1) == []


def test_the_path_survives_a_restart_in_sqlite(tmp_path: Path) -> None:
    clock = [100.0]
    first = SqliteLocationStore(tmp_path / "reg.sqlite", clock=lambda: clock[0])
    first.put(Binding("alice", "sip:alice@10.0.0.7:5062", EDGE, "udp", 700.0, "c1", 1, None,
                      (PATH, "<sip:192.0.2.2;lr>")))
    first.close()
    second = SqliteLocationStore(tmp_path / "reg.sqlite", clock=lambda: clock[0])
    assert second.restore() == (1, 0)
    assert second.bindings("alice")[0].path == (PATH, "<sip:192.0.2.2;lr>")


def test_a_location_file_from_before_path_is_upgraded_and_its_bindings_kept(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "reg.sqlite")
    db.execute("CREATE TABLE binding (user TEXT NOT NULL, contact TEXT NOT NULL, source_host TEXT NOT NULL, "
               "source_port INTEGER NOT NULL, transport TEXT NOT NULL, expires REAL NOT NULL, call_id TEXT NOT NULL, "
               "cseq INTEGER NOT NULL, user_agent TEXT, PRIMARY KEY (user, contact))")
    db.execute("INSERT INTO binding VALUES ('alice', 'sip:alice@198.51.100.7', '198.51.100.7', 5060, 'udp', "
               "4000000000, 'c1', 1, NULL)")
    db.commit()
    db.close()
    store = SqliteLocationStore(tmp_path / "reg.sqlite", clock=lambda: 100.0)
    assert store.restore() == (1, 0)
    assert store.bindings("alice")[0].path == ()


# ---- the engine: requests to a phone behind an edge ------------------------------------------------

def _udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


class FakeEdge:
    """A raw-SIP edge proxy on one UDP socket: forwards a phone's REGISTER with its own Via on top and
    a Path naming itself (the phone's NAT address as `received`), answers whatever it is sent with 486
    and keeps it in `requests`."""

    def __init__(self) -> None:
        self.sock = _udp()
        self.requests: list[Request] = []
        self.responses: list[Response] = []
        self.reader: asyncio.Task[None] | None = None
        self.cseq = 0

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    @property
    def path(self) -> str:
        return f"<sip:127.0.0.1:{self.port};lr;received=sip:198.51.100.7:40123>"

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
                if msg.method != "ACK":
                    resp = create_response(msg, 486, "Busy Here", to_tag="e1")
                    await loop.sock_sendto(self.sock, bytes(resp), source)
            else:
                self.responses.append(msg)

    async def register(self, server: int, user: str, password: str, phone: str = "198.51.100.7") -> Response:
        """A REGISTER from the phone at `phone` (its NAT address, written as `received`) forwarded to
        the server at 127.0.0.1:`server`, answering the challenge; the final response."""
        loop = asyncio.get_running_loop()
        client = DigestClient(user, password)
        auth = ""
        self.cseq += 2
        for cseq in (self.cseq - 1, self.cseq):
            data = (f"REGISTER sip:127.0.0.1:{server} SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bKedge{cseq}\r\n"
                    f"Via: SIP/2.0/UDP 10.0.0.7:5062;received={phone};rport=40123;branch=z9hG4bKph{cseq}\r\n"
                    f"Max-Forwards: 69\r\nFrom: <sip:{user}@127.0.0.1>;tag=t1\r\nTo: <sip:{user}@127.0.0.1>\r\n"
                    f"Call-ID: reg-{user}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@10.0.0.7:5062>\r\n"
                    f"Path: {self.path}\r\n{auth}Content-Length: 0\r\n\r\n").encode()
            await loop.sock_sendto(self.sock, data, ("127.0.0.1", server))
            resp = await self._final(cseq)
            if resp.status != 401 or auth:
                return resp
            challenge = select_challenge(resp.headers.get_all("www-authenticate"))
            assert challenge is not None
            auth = f"Authorization: {client.authorize(challenge, 'REGISTER', f'sip:127.0.0.1:{server}')}\r\n"
        raise AssertionError("the REGISTER was challenged twice")

    async def _final(self, cseq: int) -> Response:
        for _ in range(100):  # bounded: 5 s
            for resp in self.responses:
                if resp.status >= 200 and resp.cseq[0] == cseq:
                    self.responses.remove(resp)
                    return resp
            await asyncio.sleep(0.05)
        raise AssertionError("no final response to the REGISTER")

    async def wait(self, method: str) -> Request:
        for _ in range(100):  # bounded: 5 s
            for req in self.requests:
                if req.method == method:
                    return req
            await asyncio.sleep(0.05)
        raise AssertionError(f"the edge got no {method}")


async def _office(edge: FakeEdge) -> Engine:
    """Callflow with alice (registered through `edge`) and bob, who may message and call her."""
    engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], advertise="127.0.0.1", rtp_ports=ports.rtp_range(10))
    await engine.start()
    Dialplan(SipServer(engine=engine)).load(compile_source(
        'user alice password "alice-pw"\nuser bob password "bob-pw"\n'
        'on incoming from user bob to "alice" accept to user alice\n'))
    edge.start()
    resp = await edge.register(engine.ports["udp"], "alice", "alice-pw")
    assert resp.status == 200
    return engine


def _reaches_alice(method: str) -> tuple[Request, Response, int]:
    async def scenario() -> tuple[Request, Response, int]:
        edge, bob = FakeEdge(), Peer("bob", "bob-pw")
        engine = await _office(edge)
        try:
            port = engine.ports["udp"]
            answer = await bob.send(port, method, f"sip:alice@127.0.0.1:{port}", "sip:alice@127.0.0.1",
                                    "hello" if method == "MESSAGE" else "")
            return await edge.wait(method), answer, edge.port
        finally:
            await engine.stop()
            edge.stop()
            bob.stop()

    return asyncio.run(scenario())


def test_a_call_to_a_phone_registered_through_an_edge_goes_to_the_edge_with_the_path_as_route() -> None:
    invite, answer, edge_port = _reaches_alice("INVITE")
    assert invite.uri == "sip:alice@10.0.0.7:5062"  # the phone's Contact stays the Request-URI
    assert invite.headers.values("route") == [f"<sip:127.0.0.1:{edge_port};lr;received=sip:198.51.100.7:40123>"]
    assert answer.status == 486  # the edge's answer came back to the caller


def test_a_message_to_a_phone_registered_through_an_edge_goes_to_the_edge_with_the_path_as_route() -> None:
    message, answer, edge_port = _reaches_alice("MESSAGE")
    assert message.uri == "sip:alice@10.0.0.7:5062" and message.body == b"hello"
    assert message.headers.values("route") == [f"<sip:127.0.0.1:{edge_port};lr;received=sip:198.51.100.7:40123>"]
    assert answer.status == 486
