"""Every .flow the project ships (flows/office.flow, flows/examples/) is already in `callflow fmt`'s
layout, so `callflow fmt --check` passes on them in CI, and passes `callflow check`. `fmt --check`
changes nothing and exits 1 when a file would change, naming it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted([*(ROOT / "flows").glob("*.flow"), *(ROOT / "flows" / "examples").glob("*.flow")])
# the passwords the examples read from the environment (`password env NAME`)
ENV = {name: f"{name.lower()}-secret" for name in (
    "RECEPTION_PASSWORD", "ALICE_PASSWORD", "BOB_PASSWORD", "SALES_TRUNK_PASSWORD", "TILL1_PASSWORD",
    "TILL2_PASSWORD", "OFFICE_PASSWORD", "DESK_PASSWORD", "ITSP_PASSWORD")}


def callflow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runtime.cli", *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env={**os.environ, **ENV})


def test_the_project_ships_flows() -> None:
    assert ROOT / "flows" / "office.flow" in SHIPPED and len(SHIPPED) >= 2


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_a_shipped_flow_is_stable_under_fmt(path: Path) -> None:
    result = callflow("fmt", "--check", str(path))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_a_shipped_flow_passes_check(path: Path) -> None:
    result = callflow("check", str(path))
    assert result.returncode == 0, result.stderr


def test_fmt_check_names_a_file_that_would_change_exits_1_and_leaves_it_alone(tmp_path: Path) -> None:
    text = 'user alice   password "alice-pw"\n'
    path = tmp_path / "loose.flow"
    path.write_text(text)
    result = callflow("fmt", "--check", str(tmp_path))
    assert result.returncode == 1 and f"{path}: would be reformatted" in result.stderr
    assert path.read_text() == text and result.stdout == ""
