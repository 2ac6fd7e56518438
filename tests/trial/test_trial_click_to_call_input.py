"""`POST /api/calls` as an operator's script meets it when a field has the wrong type (trial)."""

from __future__ import annotations

from typing import Any

from runtime.engine import Engine
from tests.unit.test_click_to_call import post
from tests.unit.test_control import with_server


def test_a_number_given_as_a_json_number_is_refused_as_not_text_not_as_missing() -> None:
    async def scenario(engine: Engine, base: str, state: Any) -> None:
        status, answer = await post(base, {"from_user": "alice", "to": 15551234567})
        assert status == 400 and '"to"' in answer["error"] and "must be text" in answer["error"]
        assert "missing" not in answer["error"] and "15551234567" in answer["error"]
        status, answer = await post(base, {"from_user": ["alice"], "to": "15551234567"})
        assert status == 400 and '"from_user"' in answer["error"] and "must be text" in answer["error"]
        assert not engine.calls

    with_server(scenario)


def test_a_field_left_out_is_still_reported_as_missing() -> None:
    async def scenario(engine: Engine, base: str, state: Any) -> None:
        status, answer = await post(base, {"to": "15551234567"})
        assert status == 400 and answer["error"] == '"from_user" (the user whose phone rings first) is missing'

    with_server(scenario)
