"""Header injection through %-escapes (issue 9, bench attack 11): a URI user part may carry `%0D%0A`
(RFC 3261 19.1.2); unescaped and pasted into the INVITE the B2BUA builds, it would become header lines
the far side reads (a forged P-Asserted-Identity). A dialled number or caller id with control
characters is refused at the INVITE; every user part we build is re-escaped (RFC 3261 25.1). The
engine on loopback sockets, two UDP sockets as the providers of two lines, a rule between them."""

from __future__ import annotations

import asyncio
import socket

from callflow.flowrun.dialplan import Dialplan
from callflow.sdk import SipServer
from flowlang import compile_source
from runtime.engine import Engine
from runtime.events import logfmt_value
from runtime.sip.message import Request, parse_message
from runtime.sip.uri import escape_user
from runtime.transport import ListenSpec

EVIL = "%0D%0AP-Asserted-Identity%3A%20%3Csip%3A+19998887777%40evil.example%3E%0D%0AX-Injected%3A%20yes"


def invite(port: int, me: int, from_user: str, number: str) -> bytes:
    return (f"INVITE sip:{number}@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};rport;branch=z9hG4bKinj1\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{from_user}@127.0.0.1>;tag=p1\r\nTo: <sip:{number}@127.0.0.1>\r\n"
            f"Call-ID: injection-1\r\nCSeq: 1 INVITE\r\nContact: <sip:p@127.0.0.1:{me}>\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def provider() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


async def line_to_line(from_user: str, number: str) -> tuple[list[bytes], list[bytes]]:
    """Provider one calls `number` as `from_user`; a rule sends it out through line two. What
    provider one got back and what provider two received, as raw datagrams."""
    one, two = provider(), provider()
    engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], advertise="127.0.0.1", rtp_ports=(36600, 36699))
    await engine.start()
    script = "".join(f'line itsp{n} {{\n server "127.0.0.1:{s.getsockname()[1]}"\n register never\n}}\n'
                     for n, s in ((1, one), (2, two)))
    plan = Dialplan(SipServer(engine=engine))
    plan.load(compile_source(script + "on incoming from line itsp1 accept to line itsp2\n"))
    for _ in range(100):  # bounded: the lines' addresses are resolved in tasks of their own
        if all(line.address is not None for line in engine.lines.values()):
            break
        await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    port = engine.ports["udp"]
    await loop.sock_sendto(one, invite(port, one.getsockname()[1], from_user, number), ("127.0.0.1", port))
    got: dict[int, list[bytes]] = {1: [], 2: []}

    async def read(n: int, sock: socket.socket) -> None:
        for _ in range(20):  # bounded: 1 s
            try:
                got[n].append(await asyncio.wait_for(loop.sock_recv(sock, 65535), 0.05))
            except TimeoutError:
                continue
            if n == 2 and isinstance(parse_message(got[2][-1]), Request):
                # the far side refuses, so the call ends and nothing lingers
                req = parse_message(got[2][-1])
                assert isinstance(req, Request)
                if req.method == "INVITE":
                    resp = (f"SIP/2.0 486 Busy Here\r\n{_dialog_headers(got[2][-1])}"
                            "Content-Length: 0\r\n\r\n").encode()
                    await loop.sock_sendto(sock, resp, ("127.0.0.1", port))

    await asyncio.gather(read(1, one), read(2, two))
    await engine.stop()
    one.close()
    two.close()
    return got[1], got[2]


def _dialog_headers(data: bytes) -> str:
    lines = data.decode("utf-8", "replace").split("\r\n")
    keep = [ln for ln in lines if ln.split(":", 1)[0].lower() in ("via", "from", "call-id", "cseq")]
    to = next(ln for ln in lines if ln.lower().startswith("to:"))
    return "\r\n".join(keep + [to + ";tag=far"]) + "\r\n"


def _statuses(datagrams: list[bytes]) -> list[int]:
    return [int(d.split(b" ", 2)[1]) for d in datagrams if d.startswith(b"SIP/2.0 ")]


def test_a_caller_id_with_escaped_crlf_is_refused_and_no_invite_reaches_the_other_peer() -> None:
    back, out = asyncio.run(line_to_line("+1444" + EVIL, "+15551234567"))
    assert not out
    assert _statuses(back)[-1] == 400
    assert b"control characters" in back[-1]


def test_a_dialled_number_with_escaped_crlf_is_refused_with_484_and_no_invite_leaves() -> None:
    back, out = asyncio.run(line_to_line("+14441234567", "+15551" + EVIL))
    assert not out
    assert _statuses(back)[-1] == 484
    assert not any(b"\r\nX-Injected" in d for d in back)  # the 484 echoes To, still escaped


def test_a_dialled_number_with_characters_outside_the_user_part_leaves_escaped() -> None:
    back, out = asyncio.run(line_to_line("+14441234567", "*31%23%3C%22+1555"))
    invites = [d for d in out if d.startswith(b"INVITE ")]
    assert invites and invites[0].startswith(b"INVITE sip:*31%23%3C%22+1555@")


def test_escape_user_writes_every_character_outside_rfc3261_user_as_pct_hh() -> None:
    assert escape_user("+1555;x=1&y") == "+1555;x=1&y"
    assert escape_user("a\r\nX: y") == "a%0D%0AX%3A%20y"
    assert escape_user("#<>\"@%") == "%23%3C%3E%22%40%25"
    assert escape_user("zoë") == "zo%C3%AB"


def test_a_log_value_from_a_peer_cannot_split_the_line_or_reach_the_terminal() -> None:
    value = logfmt_value("a\r\nlevel=error event=forged\x1b[2J\x00")
    assert "\r" not in value and "\n" not in value and "\x1b" not in value and "\x00" not in value
    assert value == '"a\\r\\nlevel=error event=forged\\x1b[2J\\x00"'
