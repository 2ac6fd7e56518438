"""An ended call's media leaves nothing for the collector (issue 8): once a relay session is closed
and its ports are released, the session, its legs and their sockets' protocol objects are freed by
reference counting alone. Reference cycles would make the server's memory depend on when the
collector runs (RSS growing per call, long pauses)."""

from __future__ import annotations

import asyncio
import gc
import weakref

from runtime.media.endpoint import MediaLeg, RelayEndpoint
from runtime.media.relay import MediaRelay, RelaySession
from tests.rig.ports import ports


def _media_objects() -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, (MediaLeg, RelayEndpoint, RelaySession)))


def test_a_closed_session_and_its_closed_legs_are_freed_without_the_collector() -> None:
    async def scenario() -> None:
        relay = MediaRelay("127.0.0.1", ports.rtp_range(8), max_idle_legs=0)  # no resting: legs close
        try:
            session = await relay.allocate("call-1")
            assert _media_objects() == before + 7  # a session, two legs, four sockets' endpoints
            session.close()
            await asyncio.wait_for(session.wait_closed(), 5)
            del session
            assert _media_objects() == before
        finally:
            await relay.close()

    gc.collect()
    gc.disable()
    try:
        before = _media_objects()
        asyncio.run(scenario())
    finally:
        gc.enable()


def test_a_resting_leg_drops_its_last_session() -> None:
    async def scenario() -> None:
        relay = MediaRelay("127.0.0.1", ports.rtp_range(8))
        try:
            session = await relay.allocate("call-2")
            ref = weakref.ref(session)
            session.close()
            await asyncio.wait_for(session.wait_closed(), 5)
            del session
            assert relay.idle_legs == 2
            assert ref() is None
        finally:
            await relay.close()

    gc.disable()
    try:
        asyncio.run(scenario())
    finally:
        gc.enable()
