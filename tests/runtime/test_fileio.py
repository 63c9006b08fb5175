"""mats_jax.runtime.fileio: outputs appear whole or not at all, and never replace what they may
not: a folder only when free, empty or a previous output of the same command (with overwrite),
a file only with overwrite; a refusal touches nothing and leaves nothing behind."""

import json

import pytest

from mats_jax.runtime.fileio import (
    MARKER,
    OutputExistsError,
    atomic_directory,
    atomic_file,
    check_directory,
    check_file,
    output_command,
)
from tests.support.outputs import fake_workdir, other_files, snapshot


def write(path, text="new", **kwargs):
    with atomic_directory(path, command="cmd", **kwargs) as tmp:
        (tmp / "out.txt").write_text(text)


def test_a_new_folder_is_marked_with_its_command(tmp_path):
    write(tmp_path / "a" / "b")
    marker = json.loads((tmp_path / "a" / "b" / MARKER).read_text())
    assert marker["command"] == "cmd" and marker["written"][:2] == "20"
    assert (tmp_path / "a" / "b" / "out.txt").read_text() == "new"
    assert output_command(tmp_path / "a" / "b") == "cmd"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # no temporary left


def test_an_empty_folder_is_filled(tmp_path):
    (tmp_path / "out").mkdir()
    write(tmp_path / "out")
    assert (tmp_path / "out" / "out.txt").read_text() == "new"


@pytest.mark.parametrize("make", [other_files, fake_workdir], ids=["other-files", "workdir"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_a_folder_that_is_not_this_commands_output_is_never_replaced(tmp_path, make, overwrite):
    target = make(tmp_path / "out")
    before = snapshot(target)
    with pytest.raises(OutputExistsError) as refused:
        write(target, overwrite=overwrite)
    assert str(refused.value) == (
        f"{target} exists and is not a previous `cmd` output; choose another --out"
    )
    assert isinstance(refused.value, FileExistsError)
    assert snapshot(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_another_commands_output_is_not_replaced(tmp_path):
    with atomic_directory(tmp_path / "out", command="other") as tmp:
        (tmp / "x").write_text("other's")
    before = snapshot(tmp_path / "out")
    with pytest.raises(OutputExistsError, match="not a previous `cmd` output"):
        write(tmp_path / "out", overwrite=True)
    assert snapshot(tmp_path / "out") == before


def test_a_previous_output_is_replaced_only_with_overwrite(tmp_path):
    write(tmp_path / "out", "old")
    (tmp_path / "out" / "stale.txt").write_text("from the old output")
    before = snapshot(tmp_path / "out")
    with pytest.raises(OutputExistsError) as refused:
        write(tmp_path / "out")
    assert str(refused.value) == (
        f"{tmp_path / 'out'} is a previous `cmd` output; pass --overwrite to replace it"
    )
    assert snapshot(tmp_path / "out") == before
    write(tmp_path / "out", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [MARKER, "out.txt"]
    assert (tmp_path / "out" / "out.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_corrupt_marker_is_no_ones(tmp_path):
    write(tmp_path / "out")
    (tmp_path / "out" / MARKER).write_text("{broken")
    with pytest.raises(OutputExistsError, match="not a previous"):
        write(tmp_path / "out", overwrite=True)


def test_recognise_accepts_an_unmarked_previous_output(tmp_path):
    other_files(tmp_path / "out")
    write(tmp_path / "out", overwrite=True, recognise=lambda f: (f / "notes.txt").is_file())
    assert (tmp_path / "out" / "out.txt").read_text() == "new"
    assert not (tmp_path / "out" / "notes.txt").exists()


def test_a_file_where_the_folder_goes_is_refused(tmp_path):
    (tmp_path / "out").write_text("a file")
    with pytest.raises(OutputExistsError, match="exists and is not a folder; choose another"):
        write(tmp_path / "out", overwrite=True)
    assert (tmp_path / "out").read_text() == "a file"


def test_a_failure_keeps_the_old_output_and_leaves_nothing_behind(tmp_path):
    write(tmp_path / "out", "old")
    before = snapshot(tmp_path / "out")
    with pytest.raises(RuntimeError):
        with atomic_directory(tmp_path / "out", command="cmd", overwrite=True) as tmp:
            (tmp / "half").write_text("half")
            raise RuntimeError("disk on fire")
    assert snapshot(tmp_path / "out") == before
    with pytest.raises(RuntimeError):
        with atomic_directory(tmp_path / "new" / "deeper" / "out", command="cmd"):
            raise RuntimeError("disk on fire")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no parents, no temporary


def test_what_appears_during_the_work_is_not_replaced(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(OutputExistsError):
        with atomic_directory(target, command="cmd", overwrite=True) as tmp:
            (tmp / "out.txt").write_text("new")
            other_files(target)  # someone else's, meanwhile
    assert (target / "notes.txt").read_text() == "do not delete\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_check_directory_is_what_atomic_directory_checks(tmp_path):
    check_directory(tmp_path / "absent", command="cmd")
    write(tmp_path / "out")
    with pytest.raises(OutputExistsError, match="pass --overwrite"):
        check_directory(tmp_path / "out", command="cmd")
    check_directory(tmp_path / "out", command="cmd", overwrite=True)
    with pytest.raises(OutputExistsError, match="; move it away"):
        check_directory(tmp_path / "out", command="else", hint="move it away")


def test_atomic_file_replaces_a_file_only_with_overwrite(tmp_path):
    path = tmp_path / "sub" / "x.txt"
    with atomic_file(path) as tmp:
        tmp.write_text("one")
    with pytest.raises(OutputExistsError) as refused:
        with atomic_file(path) as tmp:
            tmp.write_text("two")
    assert str(refused.value) == f"{path} exists; pass --overwrite to replace it"
    assert path.read_text() == "one"
    with atomic_file(path, overwrite=True) as tmp:
        tmp.write_text("two")
    assert path.read_text() == "two"
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.txt"]


def test_atomic_file_never_replaces_a_folder(tmp_path):
    folder = other_files(tmp_path / "x.npy")
    before = snapshot(folder)
    with pytest.raises(OutputExistsError, match="exists and is not a file; choose another --out"):
        with atomic_file(folder, overwrite=True) as tmp:
            tmp.write_text("never")
    assert snapshot(folder) == before
    with pytest.raises(OutputExistsError, match="not a file"):
        check_file(folder, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]


def test_atomic_file_failure_leaves_nothing_behind(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_file(tmp_path / "new" / "x.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk on fire")
    assert list(tmp_path.iterdir()) == []


def test_a_link_where_the_folder_goes_is_refused(tmp_path):
    write(tmp_path / "real")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    before = snapshot(tmp_path / "real")
    with pytest.raises(OutputExistsError, match="link is a symbolic link; choose another --out"):
        write(tmp_path / "link", overwrite=True)
    assert snapshot(tmp_path / "real") == before and (tmp_path / "link").is_symlink()
