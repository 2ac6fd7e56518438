"""An operator compares the nodes of a cluster by the program each one runs: `/metrics` carries the
running program's version id as a label, the same one `callflow status` and `/api/program` show."""

from __future__ import annotations

from typing import Any

import aiohttp

from runtime.engine import Engine
from tests.unit.test_control import get_json, with_server


def test_metrics_label_the_running_program_with_the_version_id_status_shows() -> None:
    async def scenario(engine: Engine, base: str, state: Any) -> None:
        program = await get_json(base + "/api/program")
        version = program["version"]
        assert version
        async with aiohttp.ClientSession() as session, session.get(base + "/metrics") as response:
            text = await response.text()
        assert f'callflow_program_version{{version="{version}"}} 1.0' in text
        assert text.count("callflow_program_version{") == 1  # one running program, one sample

    with_server(scenario)
