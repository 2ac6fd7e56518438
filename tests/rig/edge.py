"""The shipped Kamailio edge (deploy/kamailio-edge.cfg) in front of Callflow nodes, on 127.0.0.1.

The config is used as shipped: the listen address and the nodes list come in as -A defines, the list
is written into the run folder. `start` returns once the edge answers an OPTIONS for itself; start the
nodes first (the dispatcher takes every node as up until its probes say otherwise).

    edge = Edge(ports.port(), ["127.0.0.1:5071", "127.0.0.1:5072"], tmp_path / "edge").start()
    edge.hostport                 # where phones register and call
    edge.log_text()               # "edge: INVITE ... -> node sip:127.0.0.1:5071", failover lines
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from runtime.sip.digest import DigestClient, select_challenge
from runtime.sip.message import Request, Response, create_response, parse_message

from .kamailio import kamailio_binary
from .proc import describe, reap_group, stop_process, wait_until
from .sipping import ensure_loopback, options_ping

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "kamailio-edge.cfg"
HOST = "127.0.0.1"
T = TypeVar("T")


class Edge:
    """`provider_port`: also listen for providers on `provider_host`:provider_port (EDGE_PROVIDER_LISTEN;
    the phones' socket's address by default: the nodes tell the two apart by port, a line trusting
    "IP:PORT"), serving there only `provider_nets` (PROVIDER_NETS, comma-separated) and the nodes."""

    def __init__(self, port: int, nodes: list[str], run_dir: Path, provider_port: int | None = None,
                 provider_nets: str = "127.0.0.1/32", provider_host: str = HOST) -> None:
        self.port = port
        self.nodes = nodes
        self.provider_port = provider_port
        self.provider_host = provider_host
        self.provider_nets = provider_nets
        self.run_dir = run_dir
        self.log_path = run_dir / "edge.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def hostport(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def provider_hostport(self) -> str:
        """The providers' socket: the lines' --line-contact."""
        assert self.provider_port is not None, "this edge was started without a providers' socket"
        return f"{self.provider_host}:{self.provider_port}"

    def start(self, timeout: float = 15.0) -> Edge:
        binary = kamailio_binary()
        assert binary is not None, "kamailio is not installed"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        nodes = self.run_dir / "nodes.list"
        nodes.write_text("".join(f"1 sip:{node}\n" for node in self.nodes))
        defines = ["-A", f"EDGE_LISTEN=udp:{HOST}:{self.port}", "-A", f'DISPATCHER_LIST="{nodes}"']
        if self.provider_port is not None:
            ensure_loopback(self.provider_host)
            defines += ["-A", f"EDGE_PROVIDER_LISTEN=udp:{self.provider_host}:{self.provider_port}",
                        "-A", f'PROVIDER_NETS="{self.provider_nets}"']
        check = subprocess.run([binary, "-c", "-f", str(CONFIG), *defines], capture_output=True, text=True,
                               timeout=30)
        if check.returncode != 0:
            raise AssertionError(f"kamailio rejected {CONFIG}:\n{check.stdout}{check.stderr}")
        cmd = [binary, "-f", str(CONFIG), *defines, "-DD", "-E", "-n", "2", "-m", "64", "-M", "8",
               "-P", str(self.run_dir / "edge.pid"), "-Y", str(self.run_dir)]
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.run_dir,
                                          start_new_session=True)
        proc = self._proc
        if not wait_until(lambda: proc.poll() is not None or options_ping(self.port, HOST, timeout=0.5) == 200,
                          timeout) or proc.poll() is not None:
            self.stop()
            raise AssertionError("the edge did not answer OPTIONS" + describe("edge", self.log_path))
        return self

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc)
            reap_group(self._proc)
            self._proc = None


class RawPhone:
    """A scripted SIP phone on one UDP socket of 127.0.0.1, for what baresip cannot show: it writes a
    Contact nobody listens on (as a phone behind NAT writes its private address), so a request reaches
    it only through the edge that saw its real source (the Path's `received`). It answers with digest
    credentials when challenged; a reader thread takes every request it is sent with `answer` (200 by
    default) and keeps it.

        phone = RawPhone("alice", "alice-pw")
        phone.request(edge.hostport, "REGISTER", f"sip:{edge.hostport}")   # -> 200
        phone.wait_request("MESSAGE")                                     # a MESSAGE the edge relayed
        phone.close()
    """

    def __init__(self, user: str, password: str, contact_port: int | None = None, answer: int = 200,
                 bind: str = HOST, via_params: str = "") -> None:
        """`bind`: the loopback address it sends from (127.0.0.x: phones with addresses of their own,
        while its Via always says 127.0.0.1, as a phone behind NAT writes its private address);
        `via_params`: appended to its Via (e.g. a forged `;received=...`)."""
        ensure_loopback(bind)
        self.user, self.password, self.answer = user, password, answer
        self.via_params = via_params
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((bind, 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        # where the Contact points: a port nothing listens on, unless told
        self.contact_port = contact_port or _dead_port()
        self._requests: list[Request] = []
        self._responses: list[Response] = []
        self._seen = threading.Condition()
        self._cseq = 0
        self._closed = False
        self._reader = threading.Thread(target=self._read, name=f"rawphone-{user}", daemon=True)
        self._reader.start()

    def close(self) -> None:
        self._closed = True
        self._reader.join(2)
        self.sock.close()

    def request(self, hostport: str, method: str, ruri: str, to: str | None = None, body: str = "",
                call_id: str | None = None, timeout: float = 5.0, answer_to: str | None = None) -> Response:
        """Send `method` to `hostport`, answer one 401/407 with the password (to `answer_to` when given:
        another node); the final response."""
        host, _, port = hostport.rpartition(":")
        ensure_loopback(host)
        call_id = call_id or f"{self.user}-{secrets.token_hex(6)}"
        to = to or f"sip:{self.user}@{hostport}"
        client = DigestClient(self.user, self.password)
        auth = ""
        for _ in range(2):  # the request, then once with credentials
            self._cseq += 1
            data = (f"{method} {ruri} SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP {HOST}:{self.port};rport{self.via_params};branch=z9hG4bK{secrets.token_hex(6)}"
                    "\r\n"
                    f"Max-Forwards: 70\r\nFrom: <sip:{self.user}@{hostport}>;tag=t{self.user}\r\nTo: <{to}>\r\n"
                    f"Call-ID: {call_id}\r\nCSeq: {self._cseq} {method}\r\n"
                    f"Contact: <sip:{self.user}@{HOST}:{self.contact_port}>\r\n{auth}"
                    + (f"Content-Type: text/plain\r\nContent-Length: {len(body.encode())}\r\n\r\n{body}"
                       if body else "Content-Length: 0\r\n\r\n")).encode()
            self.sock.sendto(data, (host, int(port)))
            resp = self._final(call_id, self._cseq, timeout)
            if resp.status not in (401, 407) or auth:
                return resp
            register = resp.status == 401
            challenge = select_challenge(resp.headers.get_all("www-authenticate" if register else
                                                              "proxy-authenticate"))
            assert challenge is not None, resp
            name = "Authorization" if register else "Proxy-Authorization"
            auth = f"{name}: {client.authorize(challenge, method, ruri)}\r\n"
            if answer_to is not None:
                host, _, port = answer_to.rpartition(":")
                ensure_loopback(host)
        raise AssertionError("unreachable")

    def _final(self, call_id: str, cseq: int, timeout: float) -> Response:
        return self._wait(lambda: next((r for r in self._responses if r.status >= 200 and r.call_id == call_id
                                        and r.cseq[0] == cseq), None), timeout, f"a final response to CSeq {cseq}")

    def wait_request(self, method: str, timeout: float = 5.0) -> Request:
        """The first request of `method` received and not yet taken (it was answered already)."""
        req = self._wait(lambda: next((r for r in self._requests if r.method == method), None), timeout, method)
        with self._seen:
            self._requests.remove(req)
        return req

    def _wait(self, find: Callable[[], T | None], timeout: float, what: str) -> T:
        with self._seen:
            found = self._seen.wait_for(find, timeout)
        if found is None:
            raise AssertionError(f"{self.user}: no {what} within {timeout}s")
        return found

    def _read(self) -> None:
        for _ in range(1_000_000):  # bounded; ends with close()
            if self._closed:
                return
            try:
                data, source = self.sock.recvfrom(65535)
            except (TimeoutError, ConnectionRefusedError):
                continue
            except OSError:
                return
            msg = parse_message(data)
            if isinstance(msg, Request) and msg.method != "ACK":
                reason = "OK" if self.answer == 200 else "Busy Here"
                self.sock.sendto(bytes(create_response(msg, self.answer, reason, to_tag="raw1")), source)
            with self._seen:
                (self._requests if isinstance(msg, Request) else self._responses).append(msg)  # type: ignore[arg-type]
                self._seen.notify_all()


def _dead_port() -> int:
    """A loopback UDP port nothing listens on (bound, noted, released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])
