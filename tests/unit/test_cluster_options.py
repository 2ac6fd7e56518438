"""`callflow run --edge` and the nonce secret: usage mistakes are one line naming the fix, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.unit.test_cli import ROOT, callflow


def test_an_edge_given_by_name_is_a_usage_error_asking_for_an_address() -> None:
    result = callflow("run", "flows/office.flow", "--edge", "edge.example.net")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "an address, not a name" in result.stderr


def test_a_nonce_secret_too_short_stops_the_server_saying_how_long_it_must_be(tmp_path: Path) -> None:
    env = dict(os.environ, CALLFLOW_NONCE_SECRET="short")
    result = subprocess.run([sys.executable, "-m", "runtime.cli", "run", "flows/office.flow", "--listen",
                             "127.0.0.1:0", "--control", "off", "--state-dir", str(tmp_path / "state")],
                            capture_output=True, text=True, timeout=30, cwd=ROOT, env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "--nonce-secret: the nonce secret must be at least 16 bytes long" in result.stderr
