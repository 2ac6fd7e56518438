"""The latching rule on its own (runtime.media.latch): sans-IO, packets as bytes, no sockets."""

from __future__ import annotations

import struct

import pytest

from runtime.media.latch import REPLACE_WINDOW, WEAK_PROBATION, Latch, LatchState

PHONE = ("198.51.100.7", 4000)
NAT_PUBLIC = ("203.0.113.9", 61000)
STRANGER = ("192.0.2.66", 4000)


def rtp(seq: int, ssrc: int = 7) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, 0, ssrc) + b"x" * 160


def test_before_any_address_is_known_every_packet_is_a_strangers() -> None:
    latch = Latch()
    assert not latch.admit(PHONE, rtp(1))
    assert latch.state is LatchState.UNKNOWN and latch.strangers == 1


def test_three_in_order_packets_of_one_ssrc_from_a_nat_phones_public_address_lock_on_it() -> None:
    latch = Latch(probation=3)
    latch.set_sdp_remote(("10.0.0.7", 4000))
    latch.expect(NAT_PUBLIC[0])
    assert [latch.admit(NAT_PUBLIC, rtp(seq)) for seq in (65534, 65535)] == [True, True]  # relayed meanwhile
    assert latch.state is LatchState.PROBATION
    assert latch.admit(NAT_PUBLIC, rtp(0))  # the sequence wraps
    assert latch.state is LatchState.LOCKED and latch.remote == latch.dest == NAT_PUBLIC and latch.locked_ssrc == 7


def test_another_port_of_a_phones_public_host_is_relayed_only_after_a_second_of_stream() -> None:
    latch = Latch(probation=3)
    latch.set_sdp_remote(PHONE)
    latch.expect(PHONE[0])
    other_port = (PHONE[0], 4010)
    assert [latch.admit(other_port, rtp(seq), now=t) for seq, t in ((1, 0.0), (2, 0.02), (3, 0.04))] == [False] * 3
    assert latch.state is LatchState.PROBATION
    assert latch.admit(other_port, rtp(4), now=WEAK_PROBATION)
    assert latch.remote == other_port and latch.locked
    assert latch.dest == PHONE  # the far end's audio still goes where its SDP says it receives


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
    latch.set_sdp_remote(("10.0.0.7", 4001))
    latch.expect(PHONE[0])
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


# ---- the exact SDP address first (issue 9, attacks 1c and 1e) ------------------------------------
PROVIDER = ("203.0.113.50", 30000)


def test_a_packet_from_the_exact_sdp_address_locks_at_once() -> None:
    latch = Latch(probation=3)
    latch.set_sdp_remote(PHONE)
    assert latch.admit(PHONE, rtp(1), now=0.0)
    assert latch.state is LatchState.LOCKED and latch.remote == PHONE and latch.exact


def test_the_exact_sdp_address_takes_over_a_lock_forged_from_another_port_of_the_phones_host() -> None:
    latch = Latch(probation=3)
    latch.set_sdp_remote(PHONE)
    latch.expect(PHONE[0])
    forged = (PHONE[0], 4666)
    for seq in (1, 2, 3, 4):  # in-order packets forged for a second before the phone speaks
        assert not latch.admit(forged, rtp(seq, ssrc=0xBAD), now=1.0 + (seq - 1) * 0.4) or seq == 4
    assert latch.remote == forged and latch.locked
    assert latch.dest == PHONE  # the far end's audio never went to the forger
    assert latch.admit(PHONE, rtp(100), now=2.5)  # the phone's first packet, after the answer
    assert latch.remote == PHONE and latch.locked_ssrc == 7 and latch.exact
    assert not latch.admit(forged, rtp(4, ssrc=0xBAD), now=2.6)  # the forger is a stranger from now on


def test_once_locked_on_the_exact_sdp_address_no_other_port_of_its_host_moves_it() -> None:
    latch = Latch(probation=1)
    latch.set_sdp_remote(PHONE)
    latch.expect(PHONE[0])
    latch.admit(PHONE, rtp(1), now=0.0)
    assert not latch.admit((PHONE[0], 4666), rtp(1, ssrc=0xBAD), now=0.1)
    assert latch.remote == PHONE and latch.strangers == 1


def test_a_nat_phone_keeps_its_lock_when_its_private_sdp_address_speaks_after_the_window() -> None:
    latch = Latch(probation=3)
    latch.set_sdp_remote(("10.0.0.7", 4000))
    latch.expect(NAT_PUBLIC[0])
    for seq in (1, 2, 3):
        latch.admit(NAT_PUBLIC, rtp(seq), now=0.0)
    assert latch.remote == NAT_PUBLIC
    assert not latch.admit(("10.0.0.7", 4000), rtp(1, ssrc=0xBAD), now=REPLACE_WINDOW + 1)
    assert latch.remote == NAT_PUBLIC


def test_a_providers_leg_takes_only_its_exact_sdp_address() -> None:
    latch = Latch(probation=1)
    latch.set_sdp_remote(PROVIDER)  # a LINE leg: no signalling host is expected
    assert not latch.admit((PROVIDER[0], 30002), rtp(1, ssrc=0xBAD))  # forged from the provider's IP
    assert latch.state is LatchState.PROBATION and latch.strangers == 1
    assert latch.admit(PROVIDER, rtp(1)) and latch.remote == PROVIDER


def test_a_providers_leg_with_an_unusable_sdp_address_takes_another_port_of_that_host() -> None:
    latch = Latch(probation=1)
    latch.set_sdp_remote(("192.168.5.5", 30000))  # the provider's media server behind NAT
    assert latch.admit(("192.168.5.5", 30002), rtp(1)) and latch.locked
    held = Latch(probation=1)
    held.set_sdp_remote(("0.0.0.0", 30000))  # RFC 3264 hold: nobody is expected
    assert not held.admit(PROVIDER, rtp(1))
