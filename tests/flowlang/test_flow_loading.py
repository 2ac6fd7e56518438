"""Files, folders and includes: one program, loaded all or nothing."""

import pytest
from flowspec import SLICE, call

from flowlang import FlowError, check_paths, load_program


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_load_program_reads_one_file(tmp_path):
    p = load_program(write(tmp_path / "office.flow", SLICE))
    assert p.files == (str(tmp_path / "office.flow"),)
    assert p.decide(call(to="+15551234567")) is not None


def test_a_folder_is_one_program_of_its_flow_files_in_sorted_order(tmp_path):
    write(tmp_path / "b-rules.flow", 'on incoming from line itsp1 accept to user alice')
    write(tmp_path / "a-decls.flow", 'user alice password "x"\nline itsp1 { server "h" }')
    write(tmp_path / "notes.txt", "not a flow")
    p = load_program(tmp_path)
    assert [f.rsplit("/", 1)[1] for f in p.files] == ["a-decls.flow", "b-rules.flow"]
    assert p.decide(call("line:itsp1")).rule.endswith("b-rules.flow:1:1")


def test_an_error_in_any_file_of_a_folder_fails_the_whole_program(tmp_path):
    write(tmp_path / "a.flow", SLICE)
    write(tmp_path / "b.flow", "on incoming accept to user nobody")
    with pytest.raises(FlowError) as info:
        load_program(tmp_path)
    assert info.value.diagnostics[0].file.endswith("b.flow")


def test_include_splices_a_file_relative_to_the_including_file(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "users.flow", 'user alice password "x"')
    write(tmp_path / "main.flow", 'include "sub/users.flow"\non incoming accept to user alice')
    p = load_program(tmp_path / "main.flow")
    assert "alice" in p.users
    assert len(p.files) == 2


def test_a_file_included_twice_or_in_a_cycle_is_loaded_once(tmp_path):
    write(tmp_path / "a.flow", 'include "b.flow"\nuser alice password "x"')
    write(tmp_path / "b.flow", 'include "a.flow"\non incoming accept to user alice')
    p = load_program(tmp_path)
    assert len(p.files) == 2


def test_a_missing_include_is_an_error_at_the_include(tmp_path):
    write(tmp_path / "main.flow", 'user a password "x"\ninclude "gone.flow"')
    with pytest.raises(FlowError) as info:
        load_program(tmp_path / "main.flow")
    d = info.value.diagnostics[0]
    assert (d.line, d.col) == (2, 9)
    assert 'cannot include "' in d.message


def test_errors_in_an_included_file_name_that_file(tmp_path):
    write(tmp_path / "inc.flow", "user a password")
    write(tmp_path / "main.flow", 'include "inc.flow"')
    with pytest.raises(FlowError) as info:
        load_program(tmp_path / "main.flow")
    assert info.value.diagnostics[0].file.endswith("inc.flow")


def test_a_missing_path_is_a_flow_error(tmp_path):
    with pytest.raises(FlowError, match="no such file or folder"):
        load_program(tmp_path / "nope.flow")


def test_an_empty_folder_is_a_flow_error(tmp_path):
    with pytest.raises(FlowError, match="no .flow files"):
        load_program(tmp_path)


def test_a_file_that_is_not_utf8_is_a_flow_error(tmp_path):
    (tmp_path / "bin.flow").write_bytes(b"user a password \"\xff\"")
    with pytest.raises(FlowError, match="not UTF-8"):
        load_program(tmp_path / "bin.flow")


def test_env_defaults_to_the_process_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOW_TEST_PW", "pw")
    p = load_program(write(tmp_path / "a.flow", 'user a password env FLOW_TEST_PW on incoming accept to user a'))
    assert p.users["a"].password == "pw"


def test_check_paths_returns_errors_and_warnings_of_every_path(tmp_path):
    good = write(tmp_path / "good.flow", SLICE + 'line spare { server "x" }')
    bad = write(tmp_path / "bad.flow", "user")
    diags = check_paths([good, bad])
    assert [(d.file.rsplit("/", 1)[1], d.severity) for d in diags] == [
        ("good.flow", "warning"), ("bad.flow", "error")]


def test_check_paths_of_a_clean_script_is_empty(tmp_path):
    assert check_paths([write(tmp_path / "ok.flow", SLICE)]) == []


def test_the_hash_covers_every_file_of_a_folder(tmp_path):
    write(tmp_path / "a.flow", SLICE)
    write(tmp_path / "b.flow", "# nothing yet")
    h1 = load_program(tmp_path).source_hash
    write(tmp_path / "b.flow", "# something")
    assert load_program(tmp_path).source_hash != h1
