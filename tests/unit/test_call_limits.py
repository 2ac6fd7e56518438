"""Call limits and timers an operator sets in the script (issue 8 behaviour 11, issue 9 "Calls"): the
engine on real loopback sockets, UDP sockets scripted as the providers of the lines, the script compiled
by flowlang and loaded by the dialplan, as `callflow run` does."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field

from callflow.flowrun.dialplan import Dialplan
from callflow.sdk import SipServer
from flowlang import compile_source
from runtime.engine import Engine
from runtime.sip.message import Request, Response, create_response, parse_message
from runtime.transport import ListenSpec

RTP = (37800, 37899)
SDP = ("v=0\r\no=p 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


@dataclass
class Provider:
    """A provider's SIP socket, scripted from its side: what it sent and what it received."""

    sock: socket.socket
    received: list[Request | Response] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def requests(self, method: str) -> list[Request]:
        return [m for m in self.received if isinstance(m, Request) and m.method == method]

    def statuses(self, call_id: str) -> list[int]:
        return [m.status for m in self.received if isinstance(m, Response) and m.call_id == call_id]


def provider() -> Provider:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return Provider(s)


def invite(server: int, peer: Provider, call_id: str) -> bytes:
    body = SDP.encode()
    return (f"INVITE sip:+15557654321@127.0.0.1:{server} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{peer.port};rport;branch=z9hG4bK{call_id}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:+15550001111@127.0.0.1>;tag=f{call_id}\r\n"
            f"To: <sip:+15557654321@127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:p@127.0.0.1:{peer.port}>\r\nContent-Type: application/sdp\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


class Rig:
    """An engine running `script`, whose `{P1}`, `{P2}`... are the ports of providers p[1], p[2]..."""

    def __init__(self, script: str, providers: int = 3, overrides: dict[str, object] | None = None) -> None:
        self.script = script
        self.p = {n: provider() for n in range(1, providers + 1)}
        self.overrides = overrides
        self.engine: Engine | None = None
        self.dialplan: Dialplan | None = None
        self.events: list[tuple[str, dict[str, object]]] = []

    async def __aenter__(self) -> Rig:
        engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], advertise="127.0.0.1", rtp_ports=RTP)
        await engine.start()
        engine.bus.subscribe(lambda e: self.events.append((e.name, dict(e.fields))))
        self.engine = engine
        self.dialplan = Dialplan(SipServer(engine=engine), server_overrides=self.overrides)
        self.load(self.script)
        for _ in range(100):  # bounded: the lines' addresses are resolved in tasks of their own
            if all(line.address is not None for line in engine.lines.values()):
                break
            await asyncio.sleep(0.01)
        return self

    def load(self, script: str) -> None:
        text = script
        for n, p in self.p.items():
            text = text.replace(f"{{P{n}}}", str(p.port))
        assert self.dialplan is not None
        self.dialplan.load(compile_source(text))

    async def __aexit__(self, *exc: object) -> None:
        assert self.engine is not None
        await self.engine.stop()
        for p in self.p.values():
            p.sock.close()

    async def send(self, n: int, data: bytes) -> None:
        assert self.engine is not None
        await asyncio.get_running_loop().sock_sendto(self.p[n].sock, data, ("127.0.0.1", self.engine.ports["udp"]))

    async def call(self, n: int, call_id: str) -> None:
        """Provider n places a call to the server (an INVITE with SDP)."""
        assert self.engine is not None
        await self.send(n, invite(self.engine.ports["udp"], self.p[n], call_id))

    async def until(self, done, seconds: float = 3.0) -> bool:  # type: ignore[no-untyped-def]
        """Read every provider's socket until `done()` holds (bounded by `seconds`)."""
        for _ in range(int(seconds / 0.02)):
            if done():
                return True
            for p in self.p.values():
                for _ in range(50):
                    try:
                        data = p.sock.recv(65535)
                    except BlockingIOError:
                        break
                    p.received.append(parse_message(data))
            await asyncio.sleep(0.02)
        return done()

    async def answer(self, n: int, req: Request, status: int, body: bytes = b"") -> None:
        resp = create_response(req, status, "OK" if status == 200 else "Ringing", to_tag=f"t{n}",
                               headers=[("Contact", f"<sip:p@127.0.0.1:{self.p[n].port}>")])
        if body:
            resp.set_body(body, "application/sdp")
        else:
            resp.headers.add("Content-Length", "0")
        await self.send(n, bytes(resp))


LINES = """line itsp1 {{ server "127.0.0.1:{{P1}}" register never {one} }}
line itsp2 {{ server "127.0.0.1:{{P2}}" register never {two} }}
line itsp3 {{ server "127.0.0.1:{{P3}}" register never }}
"""


def lines(one: str = "", two: str = "") -> str:
    return LINES.format(one=one, two=two)


# ---- per line, both directions ----------------------------------------------------------------------
def test_a_call_from_a_line_at_its_limit_is_refused_busy_and_the_provider_is_not_dialled_again() -> None:
    async def scenario() -> tuple[list[int], int]:
        async with Rig(lines(one="max calls 1") + "on incoming from line itsp1 accept to line itsp2\n") as rig:
            await rig.call(1, "first")
            assert await rig.until(lambda: rig.p[2].requests("INVITE"))  # the first call rings the far line
            await rig.call(1, "second")
            await rig.until(lambda: any(s >= 200 for s in rig.p[1].statuses("second")))
            return rig.p[1].statuses("second"), len(rig.p[2].requests("INVITE"))

    statuses, dialled = asyncio.run(scenario())
    assert statuses[-1] == 486
    assert dialled == 1


def test_an_accept_to_a_line_at_its_limit_fails_with_503_and_the_plan_goes_on_with_otherwise(caplog) -> None:  # type: ignore[no-untyped-def]
    script = lines(two="max calls 1") + """
on incoming from line itsp1 {
    accept to line itsp2
    otherwise log "itsp2 refused: {code} {reason}"
    accept to line itsp3
}
"""

    async def scenario() -> tuple[int, int]:
        async with Rig(script) as rig:
            await rig.call(1, "first")
            assert await rig.until(lambda: rig.p[2].requests("INVITE"))
            await rig.call(1, "second")
            await rig.until(lambda: rig.p[3].requests("INVITE"))
            return len(rig.p[2].requests("INVITE")), len(rig.p[3].requests("INVITE"))

    caplog.set_level("INFO", logger="callflow.dialplan")
    to_two, to_three = asyncio.run(scenario())
    assert (to_two, to_three) == (1, 1)
    assert "itsp2 refused: 503 Service Unavailable (line itsp2 call limit reached)" in caplog.text


def test_a_calls_limit_counts_the_calls_that_came_in_on_the_line_as_well_as_those_sent_to_it() -> None:
    script = lines(two="max calls 1") + """
on incoming from line itsp2 accept to line itsp3
on incoming from line itsp1 { accept to line itsp2 }
"""

    async def scenario() -> list[int]:
        async with Rig(script) as rig:
            await rig.call(2, "inbound")          # the provider of itsp2 calls in: itsp2 holds one call
            assert await rig.until(lambda: rig.p[3].requests("INVITE"))
            await rig.call(1, "outbound")         # ... so a call out through itsp2 finds it full
            await rig.until(lambda: any(s >= 200 for s in rig.p[1].statuses("outbound")))
            assert not rig.p[2].requests("INVITE")
            return rig.p[1].statuses("outbound")

    assert asyncio.run(scenario())[-1] == 503


def test_a_line_under_its_limit_takes_the_call() -> None:
    async def scenario() -> int:
        async with Rig(lines(one="max calls 2") + "on incoming from line itsp1 accept to line itsp2\n") as rig:
            await rig.call(1, "first")
            await rig.call(1, "second")
            await rig.until(lambda: len(rig.p[2].requests("INVITE")) == 2)
            return len(rig.p[2].requests("INVITE"))

    assert asyncio.run(scenario()) == 2


# ---- the whole server ----------------------------------------------------------------------------------
def test_a_new_call_beyond_the_servers_max_calls_gets_503_with_retry_after() -> None:
    script = "server { max calls 1 }\n" + lines() + "on incoming from line any accept to line itsp3\n"

    async def scenario() -> Response:
        async with Rig(script) as rig:
            await rig.call(1, "first")
            assert await rig.until(lambda: rig.p[3].requests("INVITE"))
            await rig.call(2, "second")
            await rig.until(lambda: any(s >= 200 for s in rig.p[2].statuses("second")))
            return [m for m in rig.p[2].received if isinstance(m, Response) and m.status >= 200][-1]

    final = asyncio.run(scenario())
    assert final.status == 503
    assert final.headers.get("retry-after")


def test_the_command_lines_max_calls_wins_over_the_scripts_and_survives_a_reload() -> None:
    script = "server { max calls 5 }\n" + lines() + "on incoming from line any accept to line itsp3\n"

    async def scenario() -> list[int]:
        async with Rig(script, overrides={"max_calls": 1}) as rig:
            rig.load(script.replace("max calls 5", "max calls 7"))  # a reload: the command line still wins
            await rig.call(1, "first")
            assert await rig.until(lambda: rig.p[3].requests("INVITE"))
            await rig.call(2, "second")
            await rig.until(lambda: any(s >= 200 for s in rig.p[2].statuses("second")))
            return rig.p[2].statuses("second")

    assert asyncio.run(scenario())[-1] == 503


# ---- timers ------------------------------------------------------------------------------------------------
def test_the_scripts_max_call_duration_ends_a_connected_call_with_bye_to_both_providers() -> None:
    script = "server { max call duration 1s }\n" + lines() + "on incoming from line itsp1 accept to line itsp2\n"

    async def scenario() -> tuple[int, int, list[dict[str, object]]]:
        async with Rig(script) as rig:
            await rig.call(1, "timed")
            assert await rig.until(lambda: rig.p[2].requests("INVITE"))
            await rig.answer(2, rig.p[2].requests("INVITE")[0], 200, SDP.encode())
            assert await rig.until(lambda: 200 in rig.p[1].statuses("timed"))
            ok = [m for m in rig.p[1].received if isinstance(m, Response) and m.status == 200][0]
            to_tag = ok.to_tag
            port = rig.engine.ports["udp"] if rig.engine else 0
            await rig.send(1, (f"ACK sip:x@127.0.0.1:{port} SIP/2.0\r\n"
                               f"Via: SIP/2.0/UDP 127.0.0.1:{rig.p[1].port};branch=z9hG4bKack1\r\n"
                               f"Max-Forwards: 70\r\nFrom: <sip:+15550001111@127.0.0.1>;tag=ftimed\r\n"
                               f"To: <sip:+15557654321@127.0.0.1>;tag={to_tag}\r\nCall-ID: timed\r\n"
                               "CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n").encode())
            await rig.until(lambda: rig.p[1].requests("BYE") and rig.p[2].requests("BYE"), seconds=5)
            return len(rig.p[1].requests("BYE")), len(rig.p[2].requests("BYE")), \
                [f for name, f in rig.events if name == "hangup"]

    byes_one, byes_two, hangups = asyncio.run(scenario())
    assert (byes_one, byes_two) == (1, 1)
    assert "maximum call duration" in str(hangups[0]["reason"])


def test_loading_a_script_gives_new_calls_its_timers_and_limits() -> None:
    script = ("server { max call duration 4h rtp timeout 60s max calls 500 }\n" + lines(one="max calls 3")
              + "on incoming from line itsp1 accept to line itsp2\n")

    async def scenario() -> tuple[object, ...]:
        async with Rig(script) as rig:
            e = rig.engine
            assert e is not None
            return e.max_call_duration, e.rtp_timeout, e.max_calls, e.line_max_calls

    duration, rtp, total, per_line = asyncio.run(scenario())
    assert (duration, rtp, total) == (4 * 3600, 60, 500)
    assert per_line == {"itsp1": 3, "itsp2": 100, "itsp3": 100}  # 100: the default per line


# ---- the command line ------------------------------------------------------------------------------------
def test_run_takes_limits_and_timers_that_override_the_script() -> None:
    from runtime.cli import _server_overrides, build_parser

    args = build_parser().parse_args(["run", "x.flow", "--max-calls", "40", "--max-call-duration", "2h",
                                      "--rtp-timeout", "off"])
    assert _server_overrides(args) == {"max_calls": 40, "max_call_duration": 7200.0, "rtp_timeout": None}
    assert _server_overrides(build_parser().parse_args(["run", "x.flow"])) == {}


def test_run_refuses_a_limit_of_zero_and_a_duration_without_unit(capsys) -> None:  # type: ignore[no-untyped-def]
    import pytest

    from runtime.cli import build_parser

    for option, value in (("--max-calls", "0"), ("--max-call-duration", "3600"), ("--rtp-timeout", "0.5s")):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["run", "x.flow", option, value])
        assert value in capsys.readouterr().err


# ---- ring timeout ------------------------------------------------------------------------------------
def test_an_accept_without_timeout_rings_three_minutes_by_default() -> None:
    from callflow.flowrun import dialplan

    assert dialplan.RING_TIMEOUT == 180.0  # RFC 3261 16.6's Timer C is "greater than 3 minutes"


def test_an_accept_without_timeout_gives_up_on_a_callee_that_rings_forever(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from callflow.flowrun import dialplan

    # the default scaled down (180 s -> 0.3 s) so that the spec runs in a moment
    monkeypatch.setattr(dialplan, "RING_TIMEOUT", 0.3)
    script = lines() + "on incoming from line itsp1 accept to line itsp2\n"

    async def scenario() -> tuple[list[int], int]:
        async with Rig(script) as rig:
            await rig.call(1, "rings-forever")
            assert await rig.until(lambda: rig.p[2].requests("INVITE"))
            await rig.send(2, bytes(create_response(rig.p[2].requests("INVITE")[0], 180, "Ringing", to_tag="t2")))
            await rig.until(lambda: rig.p[2].requests("CANCEL") and any(
                s >= 300 for s in rig.p[1].statuses("rings-forever")), seconds=3)
            return rig.p[1].statuses("rings-forever"), len(rig.p[2].requests("CANCEL"))

    statuses, cancels = asyncio.run(scenario())
    assert cancels == 1  # the callee stops ringing
    assert statuses[-1] == 480  # the caller hears "no answer", and the call's slots are free
