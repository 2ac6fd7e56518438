"""A line registered to a real provider (Kamailio) through what an operator meets: a short grant,
a wrong password, the provider going away and coming back, and a shutdown that must leave the
provider with no binding routing our number to a dead contact.

The provider's side is read from its own log ("REGISTER ok trunk1 contact ... hdr-expires N") and
from how it routes a call to the line's number (480 "Trunk Not Registered" once our binding is
gone); Callflow's side from its event lines.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import tests.rig.kamailio as rig_kamailio
from tests.integration.callflow_server import CallflowServer
from tests.rig import Kamailio, ports
from tests.rig.sipping import ensure_loopback

SHORT_GRANT = 12  # Kamailio's max_expires in these tests: a line asking 300 s gets 12


def line_flow(provider: str, password: str = "s3cret", every: str = "300s") -> str:
    return f"""
user alice password "alice-pw"

line itsp1 {{
    server   "{provider}"
    username "trunk1"
    password "{password}"
    register every {every}
}}

on incoming from line itsp1 accept to user alice
"""


@pytest.fixture
def callflow(tmp_path: Path) -> Iterator[Callable[[str], CallflowServer]]:
    servers: list[CallflowServer] = []

    def start(flow_text: str) -> CallflowServer:
        server = CallflowServer(flow_text, tmp_path / f"callflow{len(servers)}", ports.sip_port(), ports.rtp_range(20))
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def short_grant(monkeypatch: pytest.MonkeyPatch) -> None:
    """Providers started by kamailio_factory in this test grant at most SHORT_GRANT seconds."""
    render = rig_kamailio.render_config

    def rendered(*args, **kwargs) -> str:  # type: ignore[no-untyped-def]
        text = render(*args, **kwargs)
        old = 'modparam("registrar", "max_expires", 3600)'
        assert old in text, "the rig's Kamailio config no longer sets max_expires as expected"
        return text.replace(old, f'modparam("registrar", "max_expires", {SHORT_GRANT})')

    monkeypatch.setattr(rig_kamailio, "render_config", rendered)


def did_call_status(provider: Kamailio, did: str = rig_kamailio.TRUNK_DID, timeout: float = 3.0) -> str | None:
    """Send the provider an INVITE for the line's number, as a carrier's caller would, and return its
    first final status line ("480 Trunk Not Registered" when it holds no binding for the line)."""
    ensure_loopback(provider.host)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(timeout)
        port = sock.getsockname()[1]
        sdp = (f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
               f"m=audio {port + 2} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
        msg = (f"INVITE sip:{did}@{provider.hostport} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bK{secrets.token_hex(6)}\r\n"
               f"Max-Forwards: 70\r\nFrom: <sip:caller@127.0.0.1>;tag={secrets.token_hex(4)}\r\n"
               f"To: <sip:{did}@{provider.hostport}>\r\nCall-ID: {secrets.token_hex(8)}@127.0.0.1\r\n"
               f"CSeq: 1 INVITE\r\nContact: <sip:caller@127.0.0.1:{port}>\r\n"
               f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}")
        sock.sendto(msg.encode(), (provider.host, provider.port))
        for _ in range(10):  # bounded: skip provisionals
            try:
                data = sock.recv(65535)
            except TimeoutError:
                return None
            status_line = data.split(b"\r\n", 1)[0].decode(errors="replace").split(" ", 1)[1]
            if int(status_line[:3]) >= 200:
                return status_line
    return None


def test_a_line_registers_and_a_shutdown_leaves_the_provider_no_binding(
        kamailio: Kamailio, callflow: Callable[[str], CallflowServer]) -> None:
    mark = kamailio.log_mark()
    server = callflow(line_flow(kamailio.hostport))
    registered = server.wait_event("line_registered", line="itsp1")
    assert registered["code"] == "200"
    contact = kamailio.wait_registered("trunk1", since=mark)
    assert f":{server.port}" in contact
    server.stop()
    unregistered = server.wait_event("line_unregistered", line="itsp1")
    assert unregistered["code"] == "200"
    # the provider's last word on our binding is its removal, and a call to our number finds nobody
    assert kamailio.registrations("trunk1", since=mark)[-1][1] == 0
    assert did_call_status(kamailio) == "480 Trunk Not Registered"


def test_a_short_grant_is_refreshed_before_it_ends(
        short_grant: None, kamailio_factory: Callable[..., Kamailio],
        callflow: Callable[[str], CallflowServer]) -> None:
    provider = kamailio_factory()
    server = callflow(line_flow(provider.hostport, every="300s"))
    registered = server.wait_event("line_registered", line="itsp1")
    assert registered["expires"] == str(SHORT_GRANT)  # we asked 300; the provider's grant counts
    for count in range(2, 5):  # three refreshes, each before the 12 s grant ran out
        provider.wait_log(rf"(?s)(REGISTER ok trunk1 contact .*){{{count}}}", timeout=SHORT_GRANT + 5)
    assert server.events("line_register_failed") == []
    assert [e["state"] for e in server.events("line_state", line="itsp1")] == ["trying", "registered"]
    server.assert_alive()


def test_a_wrong_password_ends_rejected_with_slow_retries(
        kamailio: Kamailio, callflow: Callable[[str], CallflowServer]) -> None:
    server = callflow(line_flow(kamailio.hostport, password=rig_kamailio.WRONG_PASSWORD))
    rejected = server.wait_event("line_register_failed", line="itsp1", state="rejected", timeout=15)
    assert rejected["code"] == "403" and "password" in rejected["action"]
    assert int(rejected["retry_in"].rstrip("s")) >= 400   # minutes, not a loop a fail2ban would ban
    first = server.events("line_register_failed", line="itsp1")[0]
    assert first["state"] == "failed_waiting"            # one refusal may be a glitch: retried soon
    server.assert_alive()


def test_a_provider_that_stops_is_reported_at_once_and_the_line_recovers_when_it_returns(
        short_grant: None, kamailio_factory: Callable[..., Kamailio],
        callflow: Callable[[str], CallflowServer]) -> None:
    provider = kamailio_factory()
    server = callflow(line_flow(provider.hostport))
    server.wait_event("line_registered", line="itsp1")
    provider.stop()
    # the next refresh meets a closed port: ICMP says so, no 32 s wait
    failed = server.wait_event("line_register_failed", line="itsp1", timeout=SHORT_GRANT + 5)
    assert failed["code"] == "503" and "unreachable" in failed["reason"]
    server.wait_event("line_state", line="itsp1", state="expired", timeout=SHORT_GRANT + 5)
    mark = provider.log_mark()
    provider.start()  # a restarted provider: its location table is empty
    provider.wait_registered("trunk1", since=mark, timeout=45)
    server.wait_event("line_registered", line="itsp1", since=1)
    mark = provider.log_mark()
    assert did_call_status(provider) != "480 Trunk Not Registered"  # the number routes to us again
    provider.wait_log(rf"DID call for \+15551230000 .* -> sip:trunk1@127\.0\.0\.1:{server.port}", since=mark)
    server.assert_alive()
