"""rtpengine's DTMF reports (its --dtmf-log-dest JSON) as the calls receive them: runtime/media/rtpengine_dtmf.py.
The datagrams are rtpengine 10.5's, as seen in tests/trial/test_trial_rtpengine_menu.py."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from runtime.media.rtpengine import KEYS_UNHEARD, RtpengineBackend, RtpengineSession
from runtime.media.rtpengine_dtmf import DtmfReport, DtmfReports, deliver, listen, parse_report

RTPENGINE = ("127.0.0.1", 2223)


def report(call_id: str, tag: str = "zero", event: int = 1, duration: int = 180, **extra: object) -> bytes:
    body = {"callid": call_id, "source_tag": tag, "tags": ["one", "zero"], "type": "DTMF",
            "timestamp": 1796009350, "source_ip": "127.0.0.1", "event": event, "duration": duration, "volume": 10}
    return json.dumps({**body, **extra}).encode()


class Heard:
    """What the engine's dtmf_listener is handed: (call id, leg, digit, duration in ms)."""

    def __init__(self) -> None:
        self.digits: list[tuple[str, int, str, int]] = []

    def __call__(self, call_id: str, leg: int, digit: str, duration: int) -> None:
        self.digits.append((call_id, leg, digit, duration))


@pytest.fixture
def backend() -> tuple[RtpengineBackend, Heard]:
    media = RtpengineBackend(RTPENGINE)
    media.sessions["c1"] = RtpengineSession(media, "c1")
    heard = Heard()
    media.dtmf_listener = heard
    return media, heard


def test_a_report_names_the_call_the_party_the_digit_and_how_long_it_was_held() -> None:
    assert parse_report(report("abcd-c1", "one", 11, 240)) == DtmfReport("abcd-c1", "one", "#", 240)


def test_star_and_the_letter_keys_are_digits_too() -> None:
    assert [parse_report(report("x", event=e)).digit for e in (10, 12, 15)] == ["*", "A", "D"]  # type: ignore[union-attr]


def test_an_event_that_is_not_a_digit_is_no_report() -> None:
    assert parse_report(report("x", event=16)) is None  # flash


@pytest.mark.parametrize("data, why", [
    (b"not json", "not JSON"),
    (b"[1, 2]", "not an object"),
    (report("x", type="RTCP"), "not DTMF"),
    (json.dumps({"source_tag": "zero", "event": 1}).encode(), "no callid"),
    (report("x", event="1"), "no event number"),
])
def test_a_datagram_that_is_not_a_dtmf_report_is_refused_saying_why(data: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_report(data)


def test_a_key_of_a_live_call_reaches_the_engine_on_the_leg_of_its_tag(
        backend: tuple[RtpengineBackend, Heard]) -> None:
    media, heard = backend
    prefix = media.client.prefix
    assert deliver(media, DtmfReport(f"{prefix}-c1", "zero", "1", 180))
    assert deliver(media, DtmfReport(f"{prefix}-c1", "one", "#", 90))
    assert heard.digits == [("c1", 0, "1", 180), ("c1", 1, "#", 90)]


def test_a_key_of_another_nodes_call_or_of_a_call_no_longer_here_is_dropped(
        backend: tuple[RtpengineBackend, Heard]) -> None:
    media, heard = backend
    prefix = media.client.prefix
    assert not deliver(media, DtmfReport("0000ffff-c1", "zero", "1", 180))   # another prefix: another node
    assert not deliver(media, DtmfReport(f"{prefix}-c2", "zero", "1", 180))  # no such call
    media.sessions["c1"].closed = True
    assert not deliver(media, DtmfReport(f"{prefix}-c1", "zero", "1", 180))
    assert heard.digits == []


def test_reports_are_taken_only_from_rtpengines_address(backend: tuple[RtpengineBackend, Heard],
                                                         caplog: pytest.LogCaptureFixture) -> None:
    media, heard = backend
    receiver = DtmfReports(media, "127.0.0.1")
    with caplog.at_level(logging.WARNING, logger="callflow.media"):
        receiver.datagram_received(report(f"{media.client.prefix}-c1"), ("192.0.2.66", 4000))
        receiver.datagram_received(b"garbage", ("127.0.0.1", 4000))
        receiver.datagram_received(report(f"{media.client.prefix}-c1"), ("127.0.0.1", 4000))
    assert heard.digits == [("c1", 0, "1", 180)]
    assert (receiver.refused, receiver.delivered) == (2, 1)
    assert "event=rtpengine_dtmf_refused" in caplog.text and "source=192.0.2.66:4000" in caplog.text


def test_a_backend_without_key_reports_says_why_keys_go_unheard(backend: tuple[RtpengineBackend, Heard]) -> None:
    media, _ = backend
    assert media.keys_unheard == KEYS_UNHEARD and "--dtmf-log-dest" in KEYS_UNHEARD
    media.dtmf_reports = DtmfReports(media, "127.0.0.1")
    assert media.keys_unheard is None


def test_a_report_address_without_rtpengine_is_refused_saying_it_goes_with_rtpengine() -> None:
    with pytest.raises(ValueError, match="goes with --media rtpengine"):
        asyncio.run(listen(None, ("127.0.0.1", 0)))


def test_listening_attaches_the_socket_to_the_backend_which_closes_it() -> None:
    async def main() -> tuple[str | None, bool]:
        media = RtpengineBackend(RTPENGINE)
        receiver = await listen(media, ("127.0.0.1", 0))
        assert receiver is not None and media.dtmf_reports is receiver
        unheard = media.keys_unheard
        await media.close()
        return unheard, receiver.transport is None

    assert asyncio.run(main()) == (None, True)
