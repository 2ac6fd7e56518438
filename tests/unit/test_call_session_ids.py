"""Call session ids are 8 random bytes (16 hex digits) wherever a call is created, a call from a peer
or one Callflow places itself, so ids of different calls do not meet in logs and call records (with 4
bytes, a collision was as likely as not after about 77,000 calls)."""

from __future__ import annotations

import asyncio
import re
import socket
from typing import Any

from runtime.calls.ids import new_call_session_id
from runtime.engine import Engine
from tests.unit.test_click_to_call import post, register
from tests.unit.test_control import with_server
from tests.unit.test_toll_fraud import scenario as authenticated_call_to_a_line

SIXTEEN_HEX = re.compile(r"[0-9a-f]{16}")


def test_a_minted_call_session_id_is_16_hex_digits_and_fresh_each_time() -> None:
    ids = {new_call_session_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(SIXTEEN_HEX.fullmatch(i) for i in ids)


def test_a_call_from_a_peer_gets_a_16_hex_digit_id() -> None:
    out = asyncio.run(authenticated_call_to_a_line())
    [call_id] = out["created"]  # type: ignore[misc]
    assert SIXTEEN_HEX.fullmatch(call_id)


def test_a_call_callflow_places_itself_gets_a_16_hex_digit_id() -> None:
    async def scenario(engine: Engine, base: str, state: Any) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone:
            phone.bind(("127.0.0.1", 0))
            register(engine, "alice", phone.getsockname())
            status, answer = await post(base, {"from_user": "alice", "to": "15551234567"})
            assert status == 202 and SIXTEEN_HEX.fullmatch(answer["call"])

    with_server(scenario)
