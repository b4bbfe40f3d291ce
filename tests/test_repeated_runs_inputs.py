"""Issue 12, "Trust across repeated runs": what a re-run, a mistyped folder or a user's own files meet.

* Only folders carrying nearid's own marker are ever deleted (``synth --overwrite``, ``demo --out``).
* An RGBA / LA mask whose alpha channel is the mask is read by its alpha.
* A missing *local* folder is reported as such (with what does exist), not as a hub download.
* Users' folders and CSVs are accepted as they come: BOM CSVs, symlinked subfolders, macOS ``._*`` files.

The new helpers are imported inside the tests, so each behaviour fails on its own on the old code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from datasets import DatasetDict
from PIL import Image

from nearid.cli.app import main
from nearid.data import DatasetError, load_folder, load_nearid
from nearid.data.synth import SynthConfig, generate
from nearid.images.decode import load_mask, load_masked
from nearid.io.errors import NearIDError

from .test_data import distractor_rows, positives_rows

TINY = SynthConfig(identities=6, size=32, seed=1, val=1, test=2, mtg_train=0, mtg_test=1, workers=1, sources=("Part",))


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ---------------------------------------------------------------------------------------- item 8: ownership
def test_marker_records_command_time_and_version(tmp_path):
    from nearid import __version__
    from nearid.io.ownership import MARKER, create_owned, is_owned

    folder = create_owned(tmp_path / "a" / "b", "synth")
    marker = json.loads((folder / MARKER).read_text())
    assert marker["created_by"] == "nearid" and marker["command"] == "synth" and marker["version"] == __version__
    assert marker["created"].endswith("Z") and is_owned(folder)
    assert not is_owned(tmp_path) and not is_owned(tmp_path / "nope")


def test_remove_owned_deletes_only_marked_folders(tmp_path):
    from nearid.io.ownership import MARKER, OutputFolderError, create_owned, remove_owned

    remove_owned(tmp_path / "missing")  # nothing to do
    (tmp_path / "empty").mkdir()
    remove_owned(tmp_path / "empty")  # an empty folder holds nothing to lose
    assert not (tmp_path / "empty").exists()

    owned = create_owned(tmp_path / "owned", "demo")
    (owned / "sub").mkdir()
    (owned / "sub" / "x.txt").write_text("old output")
    remove_owned(owned)
    assert not owned.exists()

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(
        OutputFolderError,
        match=r"mine: not made by nearid \(no \.nearid-output\.json\).*choose a new or empty folder, or delete it yourself",
    ):
        remove_owned(mine)
    assert (mine / "thesis.tex").read_text() == "years of work"

    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputFolderError, match=r"file: is a file, not a folder"):
        remove_owned(tmp_path / "file")

    target = create_owned(tmp_path / "target", "synth")
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(OutputFolderError, match=r"link: is a symbolic link"):
        remove_owned(tmp_path / "link")
    assert (target / MARKER).is_file()

    (mine / MARKER).mkdir()  # a folder of that name is not a marker
    with pytest.raises(OutputFolderError, match="not made by nearid"):
        remove_owned(mine)


def test_create_owned_refuses_a_folder_with_contents(tmp_path):
    from nearid.io.ownership import OutputFolderError, create_owned

    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("x")
    with pytest.raises(OutputFolderError, match=r"x: already exists and is not empty"):
        create_owned(tmp_path / "x", "demo")
    (tmp_path / "empty").mkdir()
    assert create_owned(tmp_path / "empty", "demo") == tmp_path / "empty"  # an empty folder is fine


def test_synth_overwrite_refuses_a_folder_it_did_not_make(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(NearIDError, match=r"mine: not made by nearid"):
        generate(mine, TINY, overwrite=True, progress=False)
    assert (mine / "thesis.tex").read_text() == "years of work"
    assert not (tmp_path / "mine.partial").exists()


def test_synth_overwrite_replaces_its_own_output(tmp_path):
    out = tmp_path / "s"
    generate(out, TINY, progress=False)
    marker = json.loads((out / ".nearid-output.json").read_text())
    assert marker["command"] == "synth"
    (out / "NearID" / "stale.txt").write_text("inside a folder synth wrote: part of its output")
    generate(out, TINY, overwrite=True, progress=False)
    assert not (out / "NearID" / "stale.txt").exists() and (out / "NearID").is_dir()
    assert (out / ".nearid-output.json").is_file()
    # a file added beside what synth wrote is not synth's to delete (issue 21 item 4): refused, kept
    (out / "notes.txt").write_text("mine")
    with pytest.raises(NearIDError, match=r"notes\.txt, which nearid synth did not write"):
        generate(out, TINY, overwrite=True, progress=False)
    assert (out / "notes.txt").read_text() == "mine"


def test_synth_into_an_existing_empty_folder(tmp_path):
    (tmp_path / "s").mkdir()
    generate(tmp_path / "s", TINY, progress=False)
    assert (tmp_path / "s" / "synth.json").is_file()


def test_synth_never_deletes_a_partial_folder_it_did_not_make(tmp_path):
    (tmp_path / "s.partial").mkdir()
    (tmp_path / "s.partial" / "notes.txt").write_text("mine")
    with pytest.raises(NearIDError, match=r"s\.partial: not made by nearid"):
        generate(tmp_path / "s", TINY, progress=False)
    assert (tmp_path / "s.partial" / "notes.txt").is_file()


def test_synth_cli_overwrite_of_a_foreign_folder_is_one_line_exit_2(tmp_path, capsys):
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "a.jpg").write_bytes(b"not really")
    argv = [
        "synth",
        str(mine),
        "--identities",
        "6",
        "--size",
        "32",
        "--val",
        "1",
        "--test",
        "2",
        "--mtg-train",
        "0",
        "--mtg-test",
        "1",
        "--workers",
        "1",
        "--sources",
        "part",
        "--overwrite",
    ]
    assert main(argv) == 2
    assert "photos: not made by nearid" in one_error_line(capsys.readouterr().err)
    assert (mine / "a.jpg").read_bytes() == b"not really"


class _Stop(Exception):
    """Raised by a stubbed first demo step: the test is only about what happened to --out before it."""


def _stop(*args, **kwargs):
    raise _Stop


def test_demo_refuses_to_empty_a_folder_it_did_not_make(tmp_path, monkeypatch):
    from nearid.demo import DemoConfig, run_demo

    monkeypatch.setattr("nearid.data.synth.generate", _stop)
    out = tmp_path / "results"
    out.mkdir()
    (out / "paper.pdf").write_text("x")
    with pytest.raises(NearIDError, match=r"results: not made by nearid"):
        run_demo(out, DemoConfig(), log=lambda *a: None)
    assert (out / "paper.pdf").is_file()


def test_demo_empties_its_own_previous_run(tmp_path, monkeypatch):
    from nearid.demo import DemoConfig, run_demo
    from nearid.io.ownership import create_owned

    monkeypatch.setattr("nearid.data.synth.generate", _stop)
    out = create_owned(tmp_path / "demo", "demo")
    (out / "results.json").write_text("{}")
    with pytest.raises(_Stop):
        run_demo(out, DemoConfig(), log=lambda *a: None)
    assert not (out / "results.json").exists()
    assert json.loads((out / ".nearid-output.json").read_text())["command"] == "demo"


# ---------------------------------------------------------------------------------------- item 12: mask alpha
def _alpha_mask(mode: str) -> Image.Image:
    """A mask drawn the way image editors export cut-outs: colour constant, the shape in alpha."""
    alpha = np.zeros((4, 6), np.uint8)
    alpha[1:3, 2:5] = 255
    alpha[0, 0] = 40  # soft edge: any alpha > 0 is foreground
    if mode == "RGBA":
        return Image.fromarray(np.dstack([np.full((4, 6, 3), 255, np.uint8), alpha]), "RGBA")
    return Image.fromarray(np.dstack([np.full((4, 6), 255, np.uint8), alpha]), "LA")


EXPECTED_ALPHA = np.zeros((4, 6), bool)
EXPECTED_ALPHA[1:3, 2:5] = True
EXPECTED_ALPHA[0, 0] = True


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_mask_in_the_alpha_channel(tmp_path, mode):
    image = _alpha_mask(mode)
    np.testing.assert_array_equal(load_mask(image), EXPECTED_ALPHA)
    image.save(tmp_path / "m.png")  # the file path goes through the same rule
    np.testing.assert_array_equal(load_mask(tmp_path / "m.png"), EXPECTED_ALPHA)
    np.testing.assert_array_equal(load_mask(np.asarray(image)), EXPECTED_ALPHA)  # HxWx4 / HxWx2 arrays too


def test_black_cut_out_with_alpha_shape_is_not_empty(tmp_path):
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[1:3, 2:5, 3] = 255  # black pixels everywhere; the object only in alpha
    Image.fromarray(rgba, "RGBA").save(tmp_path / "m.png")
    out = np.asarray(load_masked(Image.new("RGB", (6, 4), (9, 9, 9)), tmp_path / "m.png"))
    assert (out[1:3, 2:5] == 9).all() and out.sum() == 9 * 3 * 6


@pytest.mark.parametrize("alpha", [255, 0, 128])
def test_constant_alpha_falls_back_to_the_colour_channels(alpha):
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., 3] = alpha
    rgba[0, 1, 1] = 7
    np.testing.assert_array_equal(
        load_mask(Image.fromarray(rgba, "RGBA")), [[False, True, False], [False, False, False]]
    )
    np.testing.assert_array_equal(load_mask(rgba), [[False, True, False], [False, False, False]])


def test_palette_mask_with_a_transparent_index():
    palette = Image.new("P", (3, 1))
    palette.putpalette([255, 255, 255, 255, 255, 255] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 0  # index 0 transparent, index 1 opaque; both white
    np.testing.assert_array_equal(load_mask(palette), [[False, True, False]])


# ---------------------------------------------------------------------------------------- item 16: local folders
@pytest.fixture
def local_bench(tmp_path, monkeypatch):
    """``data/NearID`` with sources A and B beside it; the working directory is ``tmp_path``."""
    for name, dataset in {
        "NearID": positives_rows(),
        "NearID-A": distractor_rows(1),
        "NearID-B": distractor_rows(2),
    }.items():
        DatasetDict({"train": dataset}).save_to_disk(tmp_path / "data" / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("data", ["data", "data/NearID", "./data", "ABSOLUTE"])
def test_missing_source_beside_local_data_lists_the_sources_there(local_bench, data):
    data = str(local_bench / "data") if data == "ABSOLUTE" else data
    with pytest.raises(DatasetError) as caught:
        load_nearid(data, ["A", "Flux"])
    message = str(caught.value)
    assert "hf download" not in message and "hub" not in message
    assert "no distractor source 'Flux'" in message and "NearID-Flux" in message
    assert "the sources there are A, B" in message


def test_mistyped_local_data_folder(local_bench):
    for typo in ("data/NearId", "./dat", "data/NearID/x"):
        with pytest.raises(DatasetError) as caught:
            load_nearid(typo, [])
        message = str(caught.value)
        assert "no such dataset folder" in message and "hf download" not in message, message
    with pytest.raises(DatasetError, match=r"data/NearId: no such dataset folder.*did you mean .*data/NearID"):
        load_nearid("data/NearId", [])


@pytest.mark.parametrize("name, close", [("dta", "data"), ("dat/NearID", "data/NearID")])
def test_hub_looking_typo_keeps_the_download_fix_and_names_a_close_local_folder(local_bench, name, close):
    # `dta` and `dat/NearID` are valid hub ids as well as typos: the message says both
    with pytest.raises(
        DatasetError,
        match=rf"{name}: no such local folder; did you mean '{close}'\?.*hub dataset id.*hf download",  # issue 21 item 23
    ):
        load_nearid(name, [])


def test_hub_id_offline_keeps_the_download_fix(local_bench):
    with pytest.raises(DatasetError) as caught:
        load_nearid("Aleksandar/NearID", [])
    message = str(caught.value)
    assert "hf download Aleksandar/NearID --repo-type dataset" in message and "local folder" not in message


def test_missing_local_model_folder_is_not_a_hub_download(tmp_path, monkeypatch):
    from nearid.io.errors import ModelNotAvailableError
    from nearid.io.hub import resolve_model_dir

    (tmp_path / "models" / "tiny-nearid").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotAvailableError) as caught:
        resolve_model_dir("models/tiny-neard")
    message = str(caught.value)
    assert "does not exist" in message and "models/tiny-nearid" in message and "hf download" not in message
    with pytest.raises(ModelNotAvailableError, match=r"hf download google/siglip2"):
        resolve_model_dir("google/siglip2-so400m-patch14-384")


def test_train_on_synthetic_data_with_the_default_sources_names_the_ones_there(tmp_path):
    from nearid.training.trainer import TrainConfig, train

    generate(tmp_path / "s", TINY, progress=False)
    with pytest.raises(DatasetError) as caught:
        train(TrainConfig(data=str(tmp_path / "s"), out=str(tmp_path / "run"), backbone="tiny"))
    message = str(caught.value)
    assert "no distractor source 'Flux'" in message and "the sources there are Part" in message
    assert "--sources Part" in message and "hf download" not in message


@pytest.mark.slow
def test_bench_cli_missing_source_is_one_line_exit_2(local_bench):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "nearid",
            "bench",
            "--encoder",
            "histogram",
            "--data",
            "data",
            "--sources",
            "Flux",
            "--out",
            "o",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=local_bench,
        check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
    )
    assert done.returncode == 2, done.stderr
    line = one_error_line(done.stderr)
    assert "no distractor source 'Flux'" in line and "the sources there are A, B" in line and "hf download" not in line


# ---------------------------------------------------------------------------------------- item 17: users' folders
def _png(path: Path, value=(100, 50, 25)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), value).save(path)
    return path


def test_list_images_follows_links_skips_hidden_and_appledouble(tmp_path):
    from nearid.images.decode import list_images

    root = tmp_path / "root"
    _png(root / "b.png")
    _png(root / "A" / "c.JPG")
    _png(tmp_path / "elsewhere" / "d.webp")
    (root / "linked").symlink_to(tmp_path / "elsewhere")
    (root / "A" / "loop").symlink_to(root)  # a link back up must not loop
    _png(root / "._b.png")  # AppleDouble
    _png(root / ".hidden.png")
    _png(root / ".ipynb_checkpoints" / "b.png")
    _png(root / "__MACOSX" / "A" / "c.JPG")
    (root / "notes.txt").write_text("x")
    (root / "broken.png").symlink_to(tmp_path / "nowhere.png")
    listed = list_images(root)
    assert listed == [root / "A" / "c.JPG", root / "b.png", root / "linked" / "d.webp"]
    assert list_images(root, recursive=False) == [root / "b.png"]


def test_score_follows_symlinked_subfolders_and_ignores_appledouble(tmp_path):
    from nearid.score.run import plan_pairs

    _png(tmp_path / "store" / "dog" / "1.png")
    (tmp_path / "refs").mkdir()
    (tmp_path / "refs" / "dog").symlink_to(tmp_path / "store" / "dog")
    _png(tmp_path / "gens" / "dog" / "1.jpg")
    _png(tmp_path / "gens" / "dog" / "._1.jpg")
    plan = plan_pairs(tmp_path / "refs", tmp_path / "gens", pairing="paths")
    assert [(p.reference, p.generated) for p in plan.pairs] == [
        (tmp_path / "refs" / "dog" / "1.png", tmp_path / "gens" / "dog" / "1.jpg")
    ]
    assert plan.unmatched == []


def test_pairs_csv_with_a_utf8_bom(tmp_path):
    from nearid.score.run import plan_pairs

    _png(tmp_path / "réf.png")
    _png(tmp_path / "gen.png")
    (tmp_path / "pairs.csv").write_bytes("reference,generated\r\nréf.png,gen.png\r\n".encode("utf-8-sig"))
    plan = plan_pairs(tmp_path / "pairs.csv")
    assert [(p.reference.name, p.generated.name) for p in plan.pairs] == [("réf.png", "gen.png")]


def test_pairs_csv_not_in_utf8_is_one_line_naming_the_fix(tmp_path, capsys):
    (tmp_path / "pairs.csv").write_bytes("reference,generated\nréf.png,gen.png\n".encode("latin-1"))
    assert (
        main(["score", "--refs", str(tmp_path / "pairs.csv"), "--model", "tiny", "--out", str(tmp_path / "o.csv")]) == 2
    )
    line = one_error_line(capsys.readouterr().err)
    assert "pairs.csv: not UTF-8 text" in line and "save it as UTF-8" in line


def test_folder_benchmark_ignores_hidden_and_macos_folders_and_follows_links(tmp_path):
    root = tmp_path / "bench"
    for slot in (1, 2):
        _png(root / "mug" / f"view{slot}.png")
        _png(root / "mug" / "distractors" / "flux" / f"view{slot}.png")
        _png(tmp_path / "elsewhere" / "cup" / f"view{slot}.png")
    (root / "cup").symlink_to(tmp_path / "elsewhere" / "cup")
    _png(root / "mug" / "._view3.png")
    _png(root / "mug" / "distractors" / ".ipynb_checkpoints" / "view1.png")
    _png(root / ".ipynb_checkpoints" / "view1.png")
    _png(root / "__MACOSX" / "mug" / "._view1.png")
    bench = load_folder(root)
    assert [identity.id for identity in bench] == ["cup", "mug"]
    assert bench.source_names == ["flux"]
    assert bench.report.skipped_rows == {} and bench.report.rows_selected == 2
    assert bench[1].view_slots == [0, 1]
