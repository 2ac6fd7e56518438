"""The seed flows over TCP and TLS, between Callflow and real peers (Kamailio, baresip)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.callflow_server import CallflowServer
from tests.integration.test_seed_flows import (
    DID,
    OUT_NUMBER,
    SEED_RULES,
    assert_voice_both_ways,
    expected_events,
    talk_then_hang_up,
)
from tests.rig import Kamailio, PhoneFactory, account_line, ports
from tests.rig.certs import Certs, issue_cert


def flow(provider: str, transport: str) -> str:
    return f"""
user alice password "alice-pw"

line itsp1 {{
    server    "{provider}"
    transport {transport}
    username  "trunk1"
    password  "s3cret"
    register every 60s
}}

{SEED_RULES}
"""


@pytest.fixture
def callflow_on(tmp_path: Path) -> Iterator[Callable[..., CallflowServer]]:
    servers: list[CallflowServer] = []

    def start(flow_text: str, *extra: str) -> CallflowServer:
        server = CallflowServer(flow_text, tmp_path / f"callflow{len(servers)}", ports.sip_port(),
                                ports.rtp_range(40), extra_args=list(extra))
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


def test_line_registered_over_tls_carries_an_outgoing_call(
        kamailio_tls: Kamailio, rig_certs: Certs, phone_factory: PhoneFactory,
        callflow_on: Callable[..., CallflowServer]) -> None:
    server = callflow_on(flow(kamailio_tls.tls_hostport, "tls"), "--tls-ca", str(rig_certs.ca_cert))
    registered = server.wait_event("line_registered", line="itsp1")
    assert registered["code"] == "200"
    pstn = phone_factory(kamailio_tls.account_line("pstn"), name="pstn")
    pstn.wait_registered()
    alice = phone_factory(account_line("alice", server.hostport, auth_pass="alice-pw"), name="alice")
    alice.wait_registered()
    alice.dial(f"sip:{OUT_NUMBER}@{server.hostport}")
    call = talk_then_hang_up(server, alice, pstn, alice)
    assert server.call_events(call) == expected_events("ZERO")
    assert_voice_both_ways(alice, pstn)
    server.assert_alive()


def test_line_over_tls_refuses_a_provider_certificate_it_cannot_verify(
        kamailio_tls: Kamailio, callflow_on: Callable[..., CallflowServer]) -> None:
    server = callflow_on(flow(kamailio_tls.tls_hostport, "tls"))  # the system CAs do not know the rig's CA
    failed = server.wait_event("line_register_failed", line="itsp1")
    assert failed["code"] == "408" or failed["code"] == "503"
    assert "event=connect_failed transport=tls" in server.log_text()
    server.assert_alive()


def test_phone_over_tcp_calls_out_and_takes_a_provider_call(
        kamailio: Kamailio, phone_factory: PhoneFactory, callflow_on: Callable[..., CallflowServer]) -> None:
    server = callflow_on(flow(kamailio.hostport, "udp"))
    server.wait_event("line_registered", line="itsp1")
    pstn = phone_factory(kamailio.account_line("pstn"), name="pstn")
    pstn.wait_registered()
    alice = phone_factory(account_line("alice", server.hostport, auth_pass="alice-pw", transport="tcp"),
                          name="alice")
    alice.wait_registered()
    registered = server.wait_event("user_registered", user="alice")
    assert "transport=tcp" in registered["contact"]

    alice.dial(f"sip:{OUT_NUMBER}@{server.hostport}")
    call = talk_then_hang_up(server, alice, pstn, pstn)
    assert server.call_events(call) == expected_events("ONE")

    pstn.dial(f"sip:{DID}@{kamailio.hostport}")
    call = talk_then_hang_up(server, pstn, alice, alice)
    assert server.call_events(call) == expected_events("ONE")
    assert_voice_both_ways(alice, pstn)
    server.assert_alive()


def test_phone_over_tls_takes_a_provider_call(
        kamailio: Kamailio, rig_certs: Certs, phone_factory: PhoneFactory,
        callflow_on: Callable[..., CallflowServer]) -> None:
    own = issue_cert(rig_certs, "callflow")
    tls_port = ports.port()
    server = callflow_on(flow(kamailio.hostport, "udp"), "--listen", f"tls:127.0.0.1:{tls_port}",
                         "--tls-cert", str(own.cert), "--tls-key", str(own.key))
    server.wait_event("line_registered", line="itsp1")
    pstn = phone_factory(kamailio.account_line("pstn"), name="pstn")
    pstn.wait_registered()
    alice = phone_factory(account_line("alice", f"127.0.0.1:{tls_port}", auth_pass="alice-pw", transport="tls"),
                          name="alice", certs=rig_certs)
    alice.wait_registered()
    pstn.dial(f"sip:{DID}@{kamailio.hostport}")
    call = talk_then_hang_up(server, pstn, alice, pstn)
    assert server.call_events(call) == expected_events("ZERO")
    assert_voice_both_ways(alice, pstn)
    server.assert_alive()
