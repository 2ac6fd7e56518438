"""Who may call through a line (issue 9): an INVITE from one provider's address, hitting a rule
without `from` that accepts to a line, never becomes an outbound call through a line. The engine on
real loopback sockets, two UDP sockets as the providers of two lines, the script compiled by flowlang."""

from __future__ import annotations

import asyncio
import socket

from callflow.flowrun.dialplan import Dialplan
from callflow.sdk import SipServer
from flowlang import compile_source
from runtime.engine import Engine
from runtime.sip.message import Request, parse_message
from runtime.transport import ListenSpec


def invite(port: int, me: int) -> bytes:
    return (f"INVITE sip:+15557654321@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};rport;branch=z9hG4bKl2l1\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:+15550001111@127.0.0.1>;tag=p1\r\nTo: <sip:+15557654321@127.0.0.1>\r\n"
            f"Call-ID: line-to-line-1\r\nCSeq: 1 INVITE\r\nContact: <sip:p@127.0.0.1:{me}>\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def provider() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


async def call_from_line_one(rules: str) -> tuple[list[int], list[str]]:
    """Provider one sends an INVITE: the statuses it got, and the requests provider two received."""
    one, two = provider(), provider()
    engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], advertise="127.0.0.1", rtp_ports=(36500, 36599))
    await engine.start()
    script = 'user alice password "a"\n' + "".join(
        f'line itsp{n} {{\n server "127.0.0.1:{s.getsockname()[1]}"\n register never\n}}\n'
        for n, s in ((1, one), (2, two)))
    plan = Dialplan(SipServer(engine=engine))
    plan.load(compile_source(script + rules + "\non incoming from line any accept to user alice\n"))
    for _ in range(100):  # bounded: the lines' addresses are resolved in tasks of their own
        if all(line.address is not None for line in engine.lines.values()):
            break
        await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    port = engine.ports["udp"]
    await loop.sock_sendto(one, invite(port, one.getsockname()[1]), ("127.0.0.1", port))
    statuses: list[int] = []
    requests: list[str] = []

    async def read(sock: socket.socket) -> None:
        for _ in range(40):  # bounded: 2 s
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, 65535), 0.05)
            except TimeoutError:
                if any(s >= 200 for s in statuses) or requests:
                    return
                continue
            msg = parse_message(data)
            if isinstance(msg, Request):
                requests.append(msg.method)
            else:
                statuses.append(msg.status)

    await asyncio.gather(read(one), read(two))
    await engine.stop()
    one.close()
    two.close()
    return statuses, requests


def test_a_call_from_a_line_hitting_a_rule_without_from_is_not_sent_out_through_a_line() -> None:
    statuses, requests = asyncio.run(call_from_line_one('on incoming to prefix "+1" accept to line itsp2'))
    assert "INVITE" not in requests
    assert statuses[-1] == 480  # the next rule took it: alice has no phone registered


def test_a_rule_that_says_from_line_sends_it_out_through_the_other_line() -> None:
    statuses, requests = asyncio.run(call_from_line_one(
        'on incoming from line itsp1 to prefix "+1" accept to line itsp2'))
    assert requests[:1] == ["INVITE"]
