"""The rig over SIP/TCP and SIP/TLS, real software only (Kamailio + baresip, no Callflow): if these
fail, the rig's TCP/TLS set-up or the installed peers (kamailio-tls-modules) are broken, not Callflow.
"""

from __future__ import annotations

import time

import pytest

from tests.integration.test_rig_selfcheck import FAR_NUMBER, assert_media_flowed, start_pstn
from tests.rig import (
    CALL_CLOSED,
    CALL_ESTABLISHED,
    CALL_INCOMING,
    PSTN_USER,
    TRUNK_DID,
    TRUNK_USER,
    Certs,
    Kamailio,
    Phone,
    PhoneFactory,
    options_ping,
)

pytestmark = pytest.mark.integration

TALK_S = 1.5


def start_phone(kamailio: Kamailio, phone_factory: PhoneFactory, user: str, transport: str,
                answermode: str = "auto") -> Phone:
    phone = phone_factory(kamailio.account_line(user, transport=transport, answermode=answermode),
                          name=f"{user}_{transport}")
    assert phone.wait_registered(timeout=10)["param"] == "200 OK"
    return phone


def test_provider_answers_options_on_every_transport(kamailio_tls: Kamailio, rig_certs: Certs) -> None:
    assert kamailio_tls.transports == ("udp", "tcp", "tls")
    assert kamailio_tls.tcp_hostport == kamailio_tls.hostport != kamailio_tls.tls_hostport
    assert options_ping(kamailio_tls.port, transport="tcp", timeout=2) == 200
    # the provider's certificate verifies against the rig CA for the IP 127.0.0.1
    assert options_ping(kamailio_tls.tls_port, transport="tls", cafile=rig_certs.ca_cert, timeout=2) == 200


@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_pstn_registers_over(transport: str, kamailio_tls: Kamailio, phone_factory: PhoneFactory) -> None:
    mark = kamailio_tls.log_mark()
    pstn = start_phone(kamailio_tls, phone_factory, PSTN_USER, transport)
    assert pstn.transport == transport
    kamailio_tls.wait_log(rf"auth: challenge REGISTER from {PSTN_USER}\b", timeout=5, since=mark)
    contact = kamailio_tls.wait_registered(PSTN_USER, timeout=5, since=mark)
    # baresip listens for TCP on its SIP port and for TLS on the port above
    port = pstn.sip_port + (1 if transport == "tls" else 0)
    assert f"@127.0.0.1:{port};transport={transport}>" in contact, contact


def test_trunk_over_tls_calls_pstn_over_udp(kamailio_tls: Kamailio, phone_factory: PhoneFactory) -> None:
    pstn = start_pstn(kamailio_tls, phone_factory, answermode="auto")
    trunk = start_phone(kamailio_tls, phone_factory, TRUNK_USER, "tls", answermode="manual")
    mark = kamailio_tls.log_mark()

    trunk.dial(kamailio_tls.uri(FAR_NUMBER, transport="tls"))
    trunk.wait_event(CALL_ESTABLISHED, timeout=10)
    pstn.wait_event(CALL_ESTABLISHED, timeout=10)
    kamailio_tls.wait_log(rf"auth: challenge INVITE from {TRUNK_USER}\b", timeout=2, since=mark)  # 407
    kamailio_tls.wait_log(rf"trunk call to \{FAR_NUMBER} -> pstn phone sip:\S+@127\.0\.0\.1:{pstn.sip_port}\b",
                          timeout=2, since=mark)

    time.sleep(TALK_S)
    trunk.hangup()  # the BYE goes TLS -> Kamailio -> UDP along the double Record-Route
    assert trunk.wait_event(CALL_CLOSED, timeout=5)["param"] == "Connection reset by user"
    assert pstn.wait_event(CALL_CLOSED, timeout=5)["param"] == "Connection reset by peer"
    sent, got = assert_media_flowed(trunk), assert_media_flowed(pstn)
    assert sent.tx_packets >= 30 and got.rx_packets >= 30, (sent, got)


def test_pstn_over_udp_calls_did_on_tls_trunk(kamailio_tls: Kamailio, phone_factory: PhoneFactory) -> None:
    """Kamailio opens a TLS connection to the trunk's Contact (its TLS port): needs the phone's cert."""
    trunk = start_phone(kamailio_tls, phone_factory, TRUNK_USER, "tls", answermode="manual")
    pstn = start_pstn(kamailio_tls, phone_factory)

    pstn.dial(f"sip:{TRUNK_DID}@{kamailio_tls.hostport}")
    incoming = trunk.wait_event(CALL_INCOMING, timeout=10)
    assert incoming["peeruri"] == f"sip:{PSTN_USER}@{kamailio_tls.hostport}"
    trunk.accept()
    trunk.wait_event(CALL_ESTABLISHED, timeout=10)
    pstn.wait_event(CALL_ESTABLISHED, timeout=10)

    time.sleep(TALK_S)
    pstn.hangup()
    trunk.wait_event(CALL_CLOSED, timeout=5)
    pstn.wait_event(CALL_CLOSED, timeout=5)
    assert_media_flowed(trunk)
    assert_media_flowed(pstn)
