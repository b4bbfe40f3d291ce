"""Issue 21 (items 4, 19): a command deletes only a folder that same command made, never files it did
not write, and an output spelled `.` or `..` is one line, not a ValueError traceback."""

from __future__ import annotations

import pytest

from nearid.cli.app import main
from nearid.io.ownership import OutputFolderError, create_owned, remove_owned, seal_owned

SYNTH = ["--identities", "3", "--size", "32", "--test", "1", "--val", "0", "--mtg-train", "0", "--mtg-test", "0"]


def _train_run(folder):
    create_owned(folder, "train")
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "step-7.safetensors").write_bytes(b"weights")
    (folder / "config.json").write_text("{}")
    (folder / "notes.txt").write_text("lr 1e-4 looked best")
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def test_remove_owned_deletes_only_what_that_command_made(tmp_path):
    run = tmp_path / "run"
    listing = _train_run(run)
    with pytest.raises(OutputFolderError, match="nearid train"):
        remove_owned(run, "synth")
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*")) == listing
    remove_owned(run, "train")
    assert not run.exists()


def test_files_added_to_an_owned_folder_after_the_command_are_named_and_kept(tmp_path):
    out = tmp_path / "out"
    create_owned(out, "synth")
    (out / "synth.json").write_text("{}")
    seal_owned(out, "synth")  # the command finished: what it wrote is recorded
    (out / "my notes.md").write_text("keep me")
    with pytest.raises(OutputFolderError, match=r"my notes\.md"):
        remove_owned(out, "synth")
    assert (out / "my notes.md").read_text() == "keep me" and (out / "synth.json").exists()


@pytest.mark.parametrize("command", ["synth", "demo"])
def test_synth_overwrite_and_demo_refuse_a_train_run_folder(tmp_path, capsys, command):
    run = tmp_path / "RUN"
    listing = _train_run(run)
    argv = ["synth", str(run), *SYNTH, "--overwrite"] if command == "synth" else ["demo", "--out", str(run)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "nearid train" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*")) == listing


def test_synth_overwrite_keeps_a_users_notes(tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["synth", str(out), *SYNTH]) == 0
    (out / "notes.txt").write_text("mine")
    assert main(["synth", str(out), *SYNTH, "--overwrite"]) == 2
    assert "notes.txt" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    assert main(["synth", str(out), *SYNTH, "--overwrite"]) == 0  # its own output alone is replaced


@pytest.mark.parametrize("spelling", [".", "..", "sub/.."])
def test_an_output_spelled_dot_is_one_line(tmp_path, monkeypatch, capsys, spelling):
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    monkeypatch.chdir(work / "sub" if spelling == ".." else work)
    assert main(["synth", spelling, *SYNTH]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "name the folder" in err and len(err.strip().splitlines()) == 1
