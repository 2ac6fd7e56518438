"""A call's RTP counters when Callflow is the only other party (issue 12, trial bug 4): a voicemail or a
menu has no far leg, yet the caller's audio reaches us (heard, recorded) and our prompt or beep goes
out. `packets` (what `closed` reports as rtp_in / rtp_out) counts both; `relayed` only what went
from one phone to the other. Real sockets on loopback, each wait bounded."""

from __future__ import annotations

import asyncio

from runtime.media.relay import MediaRelay
from tests.unit.test_media_relay import HOST, free_range, phone, settle


def test_the_callers_audio_and_our_prompt_are_counted_with_no_far_leg() -> None:
    async def scenario() -> None:
        relay = MediaRelay(HOST, free_range(10))
        session = await relay.allocate("voicemail")
        caller = await phone()
        session.set_remote(0, caller.addr)  # ZERO answered by us; there is no channel ONE
        leg0 = session.legs[0]
        for _ in range(3):
            caller.talk(b"hello", leg0.local_port)
        await settle(lambda: session.packets[0] == 3)
        sent = await session.play(0, [b"\xff" * 160] * 2, 0)  # a beep of two packets to the caller
        assert sent == 2
        assert session.packets == (3, 2)       # from the caller, towards the caller
        assert session.relayed == (0, 0)       # nothing went from one phone to another
        session.close()
        assert session.packets == (3, 2)       # as at close: what the call's `closed` reports
        assert relay.stats().packets == 0      # the relay's metric counts relayed packets only
        await relay.close()
        caller.close()

    asyncio.run(scenario())
