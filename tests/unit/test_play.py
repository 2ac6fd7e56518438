"""`play` in the dialplan: the caller hears the file, as early media or after we answer, and the
plan goes on when it has played. The engine runs on loopback sockets; UDP sockets stand in for the
provider (whose calls arrive on the line) and for the caller's RTP port."""

from __future__ import annotations

import asyncio
import math
import socket
import struct
import time
import wave
from pathlib import Path

import pytest

from callflow.flowrun.dialplan import Dialplan
from callflow.sdk import SipServer
from flowlang import compile_source
from runtime.engine import Engine
from runtime.sip.message import Request, Response, parse_message
from runtime.sip.sdp import parse_sdp
from runtime.transport import ListenSpec

pytest.importorskip("av")


def tone(path: Path, seconds: float = 0.5, rate: int = 16000) -> Path:
    """A 440 Hz tone; 16 kHz on purpose, so the 8 kHz resampling is exercised too."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(9000 * math.sin(2 * math.pi * 440 * i / rate)))
                               for i in range(int(rate * seconds))))
    return path


def offer(rtp_port: int, formats: str = "0 8 101") -> bytes:
    lines = ["v=0", "o=gw 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
             f"m=audio {rtp_port} RTP/AVP {formats}"]
    if "101" in formats.split():
        lines += ["a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-15"]
    return ("\r\n".join(lines) + "\r\n").encode()


class Provider:
    """The provider's signalling socket (the line's server address) and a caller's RTP socket."""

    def __init__(self) -> None:
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind(("127.0.0.1", 0))
        self.sip.settimeout(3)
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", 0))
        self.rtp.settimeout(3)
        self.port = self.sip.getsockname()[1]
        self.rtp_port = self.rtp.getsockname()[1]

    def invite(self, server: int, formats: str | None = "0 8 101") -> None:
        """An INVITE offering `formats` on our RTP port; None sends no offer (late offer)."""
        body = offer(self.rtp_port, formats) if formats is not None else b""
        content_type = "Content-Type: application/sdp\r\n" if body else ""
        self.sip.sendto((
            f"INVITE sip:+15551230000@127.0.0.1:{server} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bKplay1\r\nMax-Forwards: 70\r\n"
            f"From: <sip:+15557654321@127.0.0.1>;tag=p1\r\nTo: <sip:+15551230000@127.0.0.1>\r\n"
            f"Call-ID: play-1\r\nCSeq: 1 INVITE\r\nContact: <sip:gw@127.0.0.1:{self.port}>\r\n"
            f"{content_type}Content-Length: {len(body)}\r\n\r\n").encode() + body,
            ("127.0.0.1", server))

    def next_message(self) -> Request | Response:
        return parse_message(self.sip.recv(65535))

    def responses_until_final(self) -> list[Response]:
        out: list[Response] = []
        for _ in range(20):
            msg = self.next_message()
            if isinstance(msg, Response):
                out.append(msg)
                if msg.status >= 200:
                    return out
        raise AssertionError(f"no final response, got {[r.status for r in out]}")

    def ack(self, server: int, ok: Response, body: bytes = b"") -> None:
        content_type = "Content-Type: application/sdp\r\n" if body else ""
        self.sip.sendto((
            f"ACK sip:x@127.0.0.1:{server} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bKplay2\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:+15557654321@127.0.0.1>;tag=p1\r\nTo: {ok.headers.get('to')}\r\n"
            f"Call-ID: play-1\r\nCSeq: 1 ACK\r\n{content_type}Content-Length: {len(body)}\r\n\r\n").encode()
            + body, ("127.0.0.1", server))

    def rtp_packets(self, quiet: float = 0.3) -> list[bytes]:
        packets = []
        self.rtp.settimeout(2)
        while True:
            try:
                packets.append(self.rtp.recv(2048))
            except TimeoutError:
                return packets
            self.rtp.settimeout(quiet)

    def close(self) -> None:
        self.sip.close()
        self.rtp.close()


async def with_engine(flow: str, tmp_path: Path, provider: Provider, scenario) -> object:  # type: ignore[no-untyped-def]
    engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], advertise="127.0.0.1", rtp_ports=(37600, 37699))
    await engine.start()
    Dialplan(SipServer(engine=engine)).load(compile_source(flow, str(tmp_path / "main.flow")))
    await asyncio.sleep(0.05)
    try:
        return await asyncio.get_running_loop().run_in_executor(None, scenario, engine.ports["udp"])
    finally:
        await asyncio.sleep(0.1)
        await engine.stop()


def line(provider: Provider) -> str:
    return f'line itsp1 {{ server "127.0.0.1:{provider.port}" }}\n'


def rtp_fields(packet: bytes) -> tuple[int, int, int, int, int]:
    first, second, seq, stamp, ssrc = struct.unpack("!BBHII", packet[:12])
    return first >> 6, second & 0x7F, seq, stamp, ssrc


def test_play_answered_answers_plays_the_file_then_the_plan_hangs_up(tmp_path: Path) -> None:
    tone(tmp_path / "closed.wav")
    provider = Provider()
    flow = line(provider) + 'on incoming from line itsp1 { play "closed.wav" answered\n hangup }\n'

    def scenario(server: int) -> dict[str, object]:
        provider.invite(server)
        responses = provider.responses_until_final()
        ok = responses[-1]
        provider.ack(server, ok)
        started = time.monotonic()
        packets = provider.rtp_packets()
        bye = provider.next_message()
        return {"ok": ok, "packets": packets, "bye": bye, "took": time.monotonic() - started}

    try:
        out = asyncio.run(with_engine(flow, tmp_path, provider, scenario))
    finally:
        provider.close()
    ok = out["ok"]
    assert ok.status == 200
    answer = parse_sdp(ok.body)
    assert answer.media[0].formats == ["0", "101"]  # PCMU, the offer's first choice, and DTMF events
    packets = out["packets"]
    assert 24 <= len(packets) <= 26  # 0.5 s in 20 ms packets
    fields = [rtp_fields(p) for p in packets]
    assert {f[0] for f in fields} == {2} and {f[1] for f in fields} == {0}
    assert len({f[4] for f in fields}) == 1  # one SSRC
    assert [f[2] - fields[0][2] for f in fields] == list(range(len(fields)))
    assert [f[3] - fields[0][3] for f in fields] == [160 * i for i in range(len(fields))]
    assert packets[0][1] & 0x80  # marker on the first packet of the talk spurt
    assert all(len(p) == 12 + 160 for p in packets)
    assert isinstance(out["bye"], Request) and out["bye"].method == "BYE"


def test_play_without_answered_is_early_media_and_the_plan_goes_on(tmp_path: Path) -> None:
    tone(tmp_path / "sorry.wav", seconds=0.3)
    provider = Provider()
    flow = line(provider) + 'on incoming from line itsp1 { play "sorry.wav"\n reject 480 "Closed" }\n'

    def scenario(server: int) -> dict[str, object]:
        provider.invite(server)
        early = [r for r in [provider.next_message(), provider.next_message()] if isinstance(r, Response)]
        packets = provider.rtp_packets()
        final = provider.responses_until_final()[-1]
        return {"early": early, "packets": packets, "final": final}

    try:
        out = asyncio.run(with_engine(flow, tmp_path, provider, scenario))
    finally:
        provider.close()
    progress = [r for r in out["early"] if r.status == 183]
    assert progress and parse_sdp(progress[0].body).media[0].port != 0
    assert 14 <= len(out["packets"]) <= 16
    assert (out["final"].status, out["final"].reason) == (480, "Closed")


def test_a_file_that_cannot_be_played_is_logged_and_the_plan_goes_on(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    provider = Provider()
    flow = line(provider) + 'on incoming from line itsp1 { play "missing.wav" answered\n reject 486 }\n'

    def scenario(server: int) -> int:
        provider.invite(server)
        return provider.responses_until_final()[-1].status

    with caplog.at_level("WARNING", logger="callflow"):
        try:
            status = asyncio.run(with_engine(flow, tmp_path, provider, scenario))
        finally:
            provider.close()
    assert status == 486  # not answered: the plan's reject still reaches the caller
    failed = [r.getMessage() for r in caplog.records if "event=play_failed" in r.getMessage()]
    assert failed and "missing.wav" in failed[0] and "No such file" in failed[0]


def test_a_caller_offering_no_g711_hears_nothing_and_the_plan_goes_on(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    tone(tmp_path / "closed.wav")
    provider = Provider()
    flow = line(provider) + 'on incoming from line itsp1 { play "closed.wav" answered\n reject 488 }\n'

    def scenario(server: int) -> int:
        provider.invite(server, formats="18")  # G.729 only
        return provider.responses_until_final()[-1].status

    with caplog.at_level("WARNING", logger="callflow"):
        try:
            status = asyncio.run(with_engine(flow, tmp_path, provider, scenario))
        finally:
            provider.close()
    assert status == 488
    assert any("PCMU or PCMA" in r.getMessage() for r in caplog.records)


def test_after_play_answered_an_accept_bridges_without_a_second_answer(tmp_path: Path) -> None:
    """The caller already has our 200 and our codec: the dialled leg is offered that codec only,
    and its answer connects the call without anything new for the caller."""
    tone(tmp_path / "wait.wav", seconds=0.2)
    provider = Provider()
    far = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    far.bind(("127.0.0.1", 0))
    far.settimeout(3)
    far_port = far.getsockname()[1]
    flow = (line(provider) + f'line far {{ server "127.0.0.1:{far_port}" }}\n'
            'on incoming from line itsp1 { play "wait.wav" answered\n accept to line far number "100" }\n')

    def scenario(server: int) -> dict[str, object]:
        provider.invite(server, formats="8 0 101")  # PCMA first
        ok = provider.responses_until_final()[-1]
        provider.ack(server, ok)
        invite = parse_message(far.recv(65535))
        assert isinstance(invite, Request)
        body = offer(40000, "8 101")
        reply = (f"SIP/2.0 200 OK\r\nVia: {invite.headers.get('via')}\r\nFrom: {invite.headers.get('from')}\r\n"
                 f"To: {invite.headers.get('to')};tag=far1\r\nCall-ID: {invite.call_id}\r\n"
                 f"CSeq: {invite.headers.get('cseq')}\r\nContact: <sip:far@127.0.0.1:{far_port}>\r\n"
                 f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        far.sendto(reply, ("127.0.0.1", server))
        ack = parse_message(far.recv(65535))
        provider.sip.settimeout(0.5)
        extra = []
        try:
            while True:
                extra.append(provider.next_message())
        except TimeoutError:
            pass
        return {"ok": ok, "invite": invite, "ack": ack, "extra": extra}

    try:
        out = asyncio.run(with_engine(flow, tmp_path, provider, scenario))
    finally:
        provider.close()
        far.close()
    assert parse_sdp(out["ok"].body).media[0].formats == ["8", "101"]
    assert parse_sdp(out["invite"].body).media[0].formats == ["8", "101"]  # pinned to the caller's codec
    assert isinstance(out["ack"], Request) and out["ack"].method == "ACK"
    assert not [m for m in out["extra"] if isinstance(m, Response) and m.status == 200]


def test_a_caller_cancelling_during_early_media_stops_the_file(tmp_path: Path) -> None:
    tone(tmp_path / "long.wav", seconds=3.0)
    provider = Provider()
    flow = line(provider) + 'on incoming from line itsp1 { play "long.wav"\n reject 480 }\n'

    def scenario(server: int) -> dict[str, object]:
        provider.invite(server)
        provider.rtp.settimeout(2)
        provider.rtp.recv(2048)  # the file has started
        time.sleep(0.2)
        provider.sip.sendto((
            f"CANCEL sip:+15551230000@127.0.0.1:{server} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{provider.port};branch=z9hG4bKplay1\r\nMax-Forwards: 70\r\n"
            f"From: <sip:+15557654321@127.0.0.1>;tag=p1\r\nTo: <sip:+15551230000@127.0.0.1>\r\n"
            f"Call-ID: play-1\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n").encode(), ("127.0.0.1", server))
        statuses = []
        for _ in range(10):
            msg = provider.next_message()
            if isinstance(msg, Response):
                statuses.append((msg.status, msg.cseq[1]))
                if msg.status == 487:
                    break
        time.sleep(0.1)
        return {"statuses": statuses, "after": provider.rtp_packets(quiet=0.2)}

    try:
        out = asyncio.run(with_engine(flow, tmp_path, provider, scenario))
    finally:
        provider.close()
    assert (200, "CANCEL") in out["statuses"] and (487, "INVITE") in out["statuses"]
    assert len(out["after"]) < 20  # the 3 s file (150 packets) stopped with the call


def test_a_caller_hanging_up_after_our_answer_cancels_the_leg_still_ringing(tmp_path: Path) -> None:
    tone(tmp_path / "wait.wav", seconds=0.1)
    provider = Provider()
    far = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    far.bind(("127.0.0.1", 0))
    far.settimeout(3)
    far_port = far.getsockname()[1]
    flow = (line(provider) + f'line far {{ server "127.0.0.1:{far_port}" }}\n'
            'on incoming from line itsp1 { play "wait.wav" answered\n accept to line far number "100" }\n')

    def scenario(server: int) -> list[str]:
        provider.invite(server)
        ok = provider.responses_until_final()[-1]
        provider.ack(server, ok)
        invite = parse_message(far.recv(65535))
        assert isinstance(invite, Request)
        ringing = (f"SIP/2.0 180 Ringing\r\nVia: {invite.headers.get('via')}\r\nFrom: {invite.headers.get('from')}\r\n"
                   f"To: {invite.headers.get('to')};tag=far1\r\nCall-ID: {invite.call_id}\r\n"
                   f"CSeq: {invite.headers.get('cseq')}\r\nContent-Length: 0\r\n\r\n").encode()
        far.sendto(ringing, ("127.0.0.1", server))
        time.sleep(0.1)
        provider.sip.sendto((
            f"BYE sip:callflow@127.0.0.1:{server} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{provider.port};branch=z9hG4bKplay3\r\nMax-Forwards: 70\r\n"
            f"From: <sip:+15557654321@127.0.0.1>;tag=p1\r\nTo: {ok.headers.get('to')}\r\n"
            f"Call-ID: play-1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n").encode(), ("127.0.0.1", server))
        seen = []
        for _ in range(5):
            msg = parse_message(far.recv(65535))
            seen.append(msg.method if isinstance(msg, Request) else str(msg.status))
            if seen[-1] == "CANCEL":
                break
        return seen

    try:
        seen = asyncio.run(with_engine(flow, tmp_path, provider, scenario))
    finally:
        provider.close()
        far.close()
    assert "CANCEL" in seen


def test_a_caller_without_an_offer_gets_ours_in_the_200_and_hears_the_file_after_its_ack(tmp_path: Path) -> None:
    tone(tmp_path / "closed.wav", seconds=0.3)
    provider = Provider()
    flow = line(provider) + 'on incoming from line itsp1 { play "closed.wav" answered\n hangup }\n'

    def scenario(server: int) -> dict[str, object]:
        provider.invite(server, formats=None)
        ok = provider.responses_until_final()[-1]
        provider.ack(server, ok, offer(provider.rtp_port, "8 101"))  # the answer: PCMA
        packets = provider.rtp_packets()
        bye = provider.next_message()
        return {"ok": ok, "packets": packets, "bye": bye}

    try:
        out = asyncio.run(with_engine(flow, tmp_path, provider, scenario))
    finally:
        provider.close()
    assert out["ok"].status == 200
    assert parse_sdp(out["ok"].body).media[0].formats == ["0", "8", "101"]  # our offer
    assert 14 <= len(out["packets"]) <= 16
    assert {rtp_fields(p)[1] for p in out["packets"]} == {8}  # the codec the caller answered with
    assert isinstance(out["bye"], Request) and out["bye"].method == "BYE"


def test_early_media_without_an_offer_is_skipped_and_the_plan_goes_on(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    tone(tmp_path / "sorry.wav", seconds=0.2)
    provider = Provider()
    flow = line(provider) + 'on incoming from line itsp1 { play "sorry.wav"\n reject 480 }\n'

    def scenario(server: int) -> int:
        provider.invite(server, formats=None)
        return provider.responses_until_final()[-1].status

    with caplog.at_level("WARNING", logger="callflow"):
        try:
            status = asyncio.run(with_engine(flow, tmp_path, provider, scenario))
        finally:
            provider.close()
    assert status == 480
    assert any("early media needs one" in r.getMessage() for r in caplog.records)


def test_after_a_late_offer_answer_the_dialled_leg_is_offered_the_callers_codec(tmp_path: Path) -> None:
    tone(tmp_path / "wait.wav", seconds=0.1)
    provider = Provider()
    far = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    far.bind(("127.0.0.1", 0))
    far.settimeout(3)
    far_port = far.getsockname()[1]
    flow = (line(provider) + f'line far {{ server "127.0.0.1:{far_port}" }}\n'
            'on incoming from line itsp1 { play "wait.wav" answered\n accept to line far number "100" }\n')

    def scenario(server: int) -> dict[str, object]:
        provider.invite(server, formats=None)
        ok = provider.responses_until_final()[-1]
        provider.ack(server, ok, offer(provider.rtp_port, "8 101"))
        invite = parse_message(far.recv(65535))
        assert isinstance(invite, Request)
        body = offer(40000, "8 101")
        reply = (f"SIP/2.0 200 OK\r\nVia: {invite.headers.get('via')}\r\nFrom: {invite.headers.get('from')}\r\n"
                 f"To: {invite.headers.get('to')};tag=far1\r\nCall-ID: {invite.call_id}\r\n"
                 f"CSeq: {invite.headers.get('cseq')}\r\nContact: <sip:far@127.0.0.1:{far_port}>\r\n"
                 f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        far.sendto(reply, ("127.0.0.1", server))
        ack = parse_message(far.recv(65535))
        return {"invite": invite, "ack": ack}

    try:
        out = asyncio.run(with_engine(flow, tmp_path, provider, scenario))
    finally:
        provider.close()
        far.close()
    assert parse_sdp(out["invite"].body).media[0].formats == ["8", "101"]
    assert isinstance(out["ack"], Request) and out["ack"].method == "ACK" and not out["ack"].body
