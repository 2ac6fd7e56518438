"""The rig against real software only (Kamailio + baresip, no Callflow): if these fail, the rig or
the installed peers are broken, not Callflow.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.rig import (
    CALL_CLOSED,
    CALL_ESTABLISHED,
    CALL_INCOMING,
    DEFAULT_PORT,
    PSTN_USER,
    TRUNK_DID,
    TRUNK_USER,
    WRONG_PASSWORD,
    Kamailio,
    Phone,
    PhoneFactory,
    RtpStats,
    account_line,
    parse_rtp_stats,
)

pytestmark = pytest.mark.integration

TALK_S = 2.0
FAR_NUMBER = "+15557654321"


def assert_media_flowed(phone: Phone) -> RtpStats:
    """Both directions carried RTP during the call that just ended."""
    stats = phone.rtp_stats(timeout=5)
    assert stats.rx_packets > 0 and stats.tx_packets > 0, f"{phone.name}: no RTP both ways: {stats}"
    return stats


def start_pstn(kamailio: Kamailio, phone_factory: PhoneFactory, answermode: str = "auto") -> Phone:
    pstn = phone_factory(kamailio.account_line(PSTN_USER, answermode=answermode), name="pstn")
    pstn.wait_registered(timeout=10)
    return pstn


def start_trunk(kamailio: Kamailio, phone_factory: PhoneFactory, answermode: str = "manual") -> Phone:
    trunk = phone_factory(kamailio.account_line(TRUNK_USER, answermode=answermode), name="trunk")
    trunk.wait_registered(timeout=10)
    return trunk


def test_pstn_phone_registers(kamailio: Kamailio, phone_factory: PhoneFactory) -> None:
    mark = kamailio.log_mark()
    pstn = start_pstn(kamailio, phone_factory)
    # 401 first (no credentials), then 200 with digest credentials
    kamailio.wait_log(rf"auth: challenge REGISTER from {PSTN_USER}\b", timeout=5, since=mark)
    contact = kamailio.wait_registered(PSTN_USER, timeout=5, since=mark)
    assert f"127.0.0.1:{pstn.sip_port}" in contact
    assert pstn.event_types()[:2] == ["REGISTERING", "REGISTER_OK"]
    assert pstn.events[1]["param"] == "200 OK"


def test_trunk_calls_pstn_with_407_and_media(kamailio: Kamailio, phone_factory: PhoneFactory) -> None:
    pstn = start_pstn(kamailio, phone_factory, answermode="auto")
    trunk = start_trunk(kamailio, phone_factory)
    mark = kamailio.log_mark()

    trunk.dial(f"sip:{FAR_NUMBER}@{kamailio.hostport}")
    trunk.wait_event(CALL_ESTABLISHED, timeout=10)
    pstn.wait_event(CALL_ESTABLISHED, timeout=10)
    kamailio.wait_log(rf"auth: challenge INVITE from {TRUNK_USER}\b", timeout=2, since=mark)  # the 407
    kamailio.wait_log(rf"trunk call to \{FAR_NUMBER} -> pstn phone", timeout=2, since=mark)

    time.sleep(TALK_S)
    trunk.hangup()
    assert trunk.wait_event(CALL_CLOSED, timeout=5)["param"] == "Connection reset by user"
    assert pstn.wait_event(CALL_CLOSED, timeout=5)["param"] == "Connection reset by peer"
    sent = assert_media_flowed(trunk)
    got = assert_media_flowed(pstn)
    # 20 ms packets for ~2 s: well over 50 each way (generous: CI machines are busy)
    assert sent.tx_packets >= 50 and got.rx_packets >= 50, (sent, got)


def test_pstn_calls_trunk_did(kamailio: Kamailio, phone_factory: PhoneFactory) -> None:
    trunk = start_trunk(kamailio, phone_factory, answermode="manual")
    pstn = start_pstn(kamailio, phone_factory)
    mark = kamailio.log_mark()

    pstn.dial(f"sip:{TRUNK_DID}@{kamailio.hostport}")
    incoming = trunk.wait_event(CALL_INCOMING, timeout=10)
    assert incoming["peeruri"] == f"sip:{PSTN_USER}@{kamailio.hostport}"
    kamailio.wait_log(rf"DID call for \{TRUNK_DID} from", timeout=2, since=mark)
    trunk.accept()
    trunk.wait_event(CALL_ESTABLISHED, timeout=10)
    pstn.wait_event(CALL_ESTABLISHED, timeout=10)

    time.sleep(TALK_S)
    pstn.hangup()
    trunk.wait_event(CALL_CLOSED, timeout=5)
    pstn.wait_event(CALL_CLOSED, timeout=5)
    assert_media_flowed(trunk)
    assert_media_flowed(pstn)


def test_unregistered_phone_calls_did(kamailio: Kamailio, phone_factory: PhoneFactory) -> None:
    """A phone with regint=0 never registers but can call, like a carrier handing over a call."""
    trunk = start_trunk(kamailio, phone_factory, answermode="auto")
    caller = phone_factory(account_line("carrier", "127.0.0.1", regint=0), name="carrier")

    caller.dial(f"sip:{TRUNK_DID}@{kamailio.hostport}")
    caller.wait_event(CALL_ESTABLISHED, timeout=10)
    trunk.wait_event(CALL_ESTABLISHED, timeout=10)
    time.sleep(1.0)
    caller.hangup()
    trunk.wait_event(CALL_CLOSED, timeout=5)
    assert_media_flowed(caller)
    assert not any(t.startswith("REGISTER") for t in caller.event_types()), caller.event_types()


def test_wrong_password_is_403(kamailio: Kamailio, phone_factory: PhoneFactory) -> None:
    bad = phone_factory(kamailio.account_line(TRUNK_USER, WRONG_PASSWORD, regint=60), name="bad")
    event = bad.wait_register_fail(timeout=10)
    assert event["param"].startswith("403"), event
    assert event["param"] == "403 Forbidden (wrong password)"


def test_extra_provider_with_own_accounts(kamailio_factory: Callable[..., Kamailio],
                                          phone_factory: PhoneFactory) -> None:
    """A second provider on its own port, with an extra account, next to the module's one."""
    provider = kamailio_factory(extra_accounts={"trunk2": "pw2"})
    assert provider.port != DEFAULT_PORT
    phone = phone_factory(provider.account_line("trunk2"), name="trunk2")
    assert phone.wait_registered(timeout=10)["param"] == "200 OK"
    assert provider.wait_registered("trunk2", timeout=5).startswith("<sip:trunk2")


def test_rtp_stats_parser_tolerates_partial_tables() -> None:
    """The table baresip 1.0 prints before any RTCP report has arrived has only three rows."""
    log = (
        "sip:pstn@127.0.0.1:5080: Call with sip:+15551230000@127.0.0.1:5080 terminated (duration: 1 sec)\n"
        "\n"
        "audio           Transmit:     Receive:\n"
        "packets:             51           50\n"
        "avg. bitrate:      64.8         64.9  (kbit/s)\n"
        "errors:               0            0\n"
        "ua: stop all (forced=0)\n"
    )
    (stats,) = parse_rtp_stats(log)
    assert (stats.tx_packets, stats.rx_packets, stats.duration_s) == (51, 50, 1)
    assert stats.peer == "sip:+15551230000@127.0.0.1:5080"
