"""What a program is made of, as an operator checks it: a version id that `callflow check` and a
running server give alike for the same files, a bound on a script's size, and a warning for a
`play` file that is not there (issue 10)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from flowspec import SLICE

from flowlang import FlowError, load_program
from flowlang.loader import MAX_SCRIPT_BYTES, play_files, version_id

PLAYS = ('line itsp1 { server "127.0.0.1:5080" }\n'
         'on incoming from line itsp1 {\n    play "prompts/closed.wav" answered\n    hangup\n}\n')


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_the_version_id_is_twelve_hex_digits_and_the_same_however_the_path_is_spelled(tmp_path, monkeypatch):
    write(tmp_path / "office.flow", SLICE)
    absolute = version_id(tmp_path / "office.flow")
    monkeypatch.chdir(tmp_path)
    assert len(absolute) == 12 and int(absolute, 16) >= 0
    assert version_id("office.flow") == absolute == version_id("./office.flow")
    assert load_program("office.flow").version == absolute


def test_the_same_files_in_another_folder_have_the_same_version_id(tmp_path):
    a = write(tmp_path / "a" / "office.flow", SLICE)
    b = write(tmp_path / "b" / "office.flow", SLICE)
    assert version_id(a) == version_id(b)


def test_an_edit_changes_the_version_id_and_undoing_it_restores_it(tmp_path):
    f = write(tmp_path / "office.flow", SLICE)
    before = version_id(f)
    write(f, SLICE + "# a comment\n")
    assert version_id(f) != before
    write(f, SLICE)
    assert version_id(f) == before


def test_a_play_file_is_part_of_the_version_and_of_what_the_program_reads(tmp_path):
    f = write(tmp_path / "office.flow", PLAYS)
    prompt = tmp_path / "prompts" / "closed.wav"
    missing = load_program(f)
    prompt.parent.mkdir()
    prompt.write_bytes(b"RIFF one")
    one = load_program(f)
    prompt.write_bytes(b"RIFF two")
    two = load_program(f)
    assert len({missing.version, one.version, two.version}) == 3
    assert os.path.realpath(prompt) in one.reads and os.path.realpath(f) in one.reads
    assert play_files(one) == (str(tmp_path / "prompts" / "closed.wav"),)


def test_check_warns_about_a_play_file_that_does_not_exist_naming_the_resolved_path(tmp_path, monkeypatch):
    write(tmp_path / "office.flow", PLAYS)
    monkeypatch.chdir(tmp_path)
    warnings = [w for w in load_program("office.flow").warnings if "play" in w.message]
    assert len(warnings) == 1 and (warnings[0].line, warnings[0].col) == (3, 5)
    assert str(tmp_path / "prompts" / "closed.wav") in warnings[0].message


def test_no_warning_once_the_play_file_exists(tmp_path):
    f = write(tmp_path / "office.flow", PLAYS)
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "closed.wav").write_bytes(b"RIFF")
    assert not [w for w in load_program(f).warnings if "play" in w.message]


def test_a_script_over_the_size_limit_is_refused_with_a_clear_error(tmp_path):
    f = tmp_path / "huge.flow"
    f.write_text(SLICE + "#" * MAX_SCRIPT_BYTES + "\n", encoding="utf-8")
    with pytest.raises(FlowError) as info:
        load_program(f)
    d = info.value.diagnostics[0]
    assert d.file == str(f) and "too large" in d.message and f"{MAX_SCRIPT_BYTES:,}" in d.message


def test_the_size_limit_counts_every_file_of_a_folder(tmp_path):
    write(tmp_path / "a.flow", SLICE)
    for i in range(3):
        write(tmp_path / f"pad{i}.flow", "#" * (MAX_SCRIPT_BYTES // 3) + "\n")
    with pytest.raises(FlowError) as info:
        load_program(tmp_path)
    assert "too large" in info.value.diagnostics[0].message
