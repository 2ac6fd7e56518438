"""The state folder: a default that works on a fresh machine, root or not, outside the script's folder."""

from __future__ import annotations

import argparse
import os
import stat
from pathlib import Path

import pytest

from runtime.records.setup import RunState, RunStateError
from runtime.records.state import StateDirError, default_state_dir, prepare_state_dir


def test_root_keeps_state_in_var_lib() -> None:
    assert default_state_dir(env={"HOME": "/root"}, euid=0) == Path("/var/lib/callflow")


def test_a_user_keeps_state_under_xdg_state_home() -> None:
    assert default_state_dir(env={"XDG_STATE_HOME": "/home/ann/.st", "HOME": "/home/ann"}, euid=1000) == \
        Path("/home/ann/.st/callflow")


def test_a_user_without_xdg_state_home_keeps_state_in_dot_local_state() -> None:
    assert default_state_dir(env={"HOME": "/home/ann"}, euid=1000) == Path("/home/ann/.local/state/callflow")
    assert default_state_dir(env={"HOME": "/home/ann", "XDG_STATE_HOME": "relative"}, euid=1000) == \
        Path("/home/ann/.local/state/callflow")  # the XDG spec: relative values are ignored


def test_the_environment_variable_chooses_the_folder_for_anyone(tmp_path: Path) -> None:
    assert default_state_dir(env={"CALLFLOW_STATE_DIR": str(tmp_path)}, euid=0) == tmp_path


def test_the_folder_is_created_private(tmp_path: Path) -> None:
    folder = prepare_state_dir(tmp_path / "a" / "callflow")
    assert folder.is_dir() and stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_a_folder_inside_the_watched_script_folder_is_refused(tmp_path: Path) -> None:
    script = tmp_path / "flows" / "main.flow"
    script.parent.mkdir()
    script.write_text("")
    with pytest.raises(StateDirError, match="inside the script's folder .* --state-dir"):
        prepare_state_dir(tmp_path / "flows" / "state", script)
    assert prepare_state_dir(tmp_path / "state", script) == tmp_path / "state"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_an_unwritable_folder_says_to_pass_state_dir(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(StateDirError, match="--state-dir"):
        prepare_state_dir(locked / "callflow")


def run_args(**kw: object) -> argparse.Namespace:
    base = dict(path="/nonexistent/main.flow", state_dir=None, location_db=None, cdr_dsn=None, no_cdr=False,
                hep=None, hep_id=2001)
    base.update(kw)
    return argparse.Namespace(**base)


def test_by_default_records_and_registrations_live_in_the_state_folder(tmp_path: Path) -> None:
    state = RunState.open(run_args(state_dir=str(tmp_path)))
    try:
        assert state.location_db == str(tmp_path / "registrations.sqlite")
        assert state.writer is not None and state.writer.store.name == str(tmp_path / "cdr.sqlite")
    finally:
        state.close()


def test_location_db_still_chooses_the_registrations_file(tmp_path: Path) -> None:
    state = RunState.open(run_args(state_dir=str(tmp_path / "st"), location_db=str(tmp_path / "loc.db"), no_cdr=True))
    assert state.location_db == str(tmp_path / "loc.db") and state.writer is None
    assert not (tmp_path / "st").exists()  # nothing to keep there: no folder made


def test_an_unreachable_postgresql_is_a_startup_error_without_the_password(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(RunStateError, match=r"postgresql://cdr:\*\*\*@127.0.0.1:1/calls") as info:
        RunState.open(run_args(state_dir=str(tmp_path), cdr_dsn="postgresql://cdr:s3cret@127.0.0.1:1/calls"))
    assert "s3cret" not in str(info.value)
