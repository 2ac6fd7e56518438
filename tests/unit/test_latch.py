"""The latching rule on its own (runtime.media.latch): sans-IO, packets as bytes, no sockets."""

from __future__ import annotations

import struct

import pytest

from runtime.media.latch import Latch, LatchState

PHONE = ("198.51.100.7", 4000)
NAT_PUBLIC = ("203.0.113.9", 61000)
STRANGER = ("192.0.2.66", 4000)


def rtp(seq: int, ssrc: int = 7) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, 0, ssrc) + b"x" * 160


def test_before_any_address_is_known_every_packet_is_a_strangers() -> None:
    latch = Latch()
    assert not latch.admit(PHONE, rtp(1))
    assert latch.state is LatchState.UNKNOWN and latch.strangers == 1


def test_three_in_order_packets_of_one_ssrc_lock_on_their_source() -> None:
    latch = Latch(probation=3)
    latch.set_sdp_remote(PHONE)
    assert [latch.admit(PHONE, rtp(seq)) for seq in (65534, 65535, 0)] == [True, True, True]  # wraps
    assert latch.state is LatchState.LOCKED and latch.remote == PHONE and latch.locked_ssrc == 7


def test_the_signalling_source_host_is_acceptable_on_any_port() -> None:
    latch = Latch(probation=1)
    latch.set_sdp_remote(("10.0.0.7", 4000))
    latch.expect(NAT_PUBLIC[0])
    assert latch.admit(NAT_PUBLIC, rtp(1)) and latch.remote == NAT_PUBLIC


def test_a_stranger_never_passes_in_any_state() -> None:
    latch = Latch(probation=1)
    latch.set_sdp_remote(PHONE)
    assert not latch.admit(STRANGER, rtp(1))
    latch.admit(PHONE, rtp(1))
    assert not latch.admit(STRANGER, rtp(2))
    assert latch.strangers == 2 and latch.remote == PHONE


def test_rtcp_locks_on_its_sender_ssrc_and_refuses_rtp() -> None:
    latch = Latch(rtcp=True, probation=2)
    latch.set_sdp_remote((PHONE[0], 4001))
    assert not latch.admit(PHONE, rtp(1))  # not RTCP
    report = struct.pack("!BBHI", 0x80, 201, 1, 9)
    assert latch.admit(PHONE, report) and latch.admit(PHONE, report)
    assert latch.locked and latch.locked_ssrc == 9


def test_after_a_reset_the_locked_stream_is_refused_but_a_new_one_from_its_host_is_not() -> None:
    latch = Latch(probation=1)
    latch.set_sdp_remote(PHONE)
    latch.admit(PHONE, rtp(1, ssrc=7))
    latch.reset_latch()
    latch.set_sdp_remote(PHONE)
    assert not latch.admit(PHONE, rtp(2, ssrc=7))
    assert latch.admit(PHONE, rtp(1, ssrc=8)) and latch.locked


def test_an_expected_host_that_is_not_an_address_is_refused() -> None:
    with pytest.raises(ValueError):
        Latch().expect("phone.example.com")


def test_an_illegal_move_raises_instead_of_relaying() -> None:
    latch = Latch()
    with pytest.raises(RuntimeError, match="UNKNOWN --lock--> LOCKED"):
        latch._move("lock", LatchState.LOCKED)
