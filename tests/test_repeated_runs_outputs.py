"""Issue 12, outputs side: no output over an input, side files from the whole output name, and every bad
`nearid score` invocation found before embedding as one line + exit 2 (items 7, 9, 10, 11, 13, 14, 15, 17, 18)."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
from PIL import Image, ImageDraw

from nearid.cli.app import main
from nearid.io.outputs import OutputError, check_outputs, check_writable


def draw(path, seed: int, size=(40, 40)):
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 255, 3)))
    ImageDraw.Draw(image).ellipse((8, 8, 30, 30), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def one_line_exit_2(argv, capsys, *needles) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture
def folders(tmp_path):
    for i in range(3):
        draw(tmp_path / "refs" / f"{i}.png", i)
        draw(tmp_path / "gens" / f"{i}.png", 10 + i)
    return tmp_path


def score(tmp_path, *extra):
    return ["score", "--refs", str(tmp_path / "refs"), "--gens", str(tmp_path / "gens"), "--model", "tiny", *extra]


# ------------------------------------------------------------------------------- the library helper
def test_check_outputs_refuses_inputs_and_inside_input_folders(tmp_path):
    data = tmp_path / "data"
    draw(data / "a.png", 0)
    (tmp_path / "pairs.csv").write_text("x")
    with pytest.raises(OutputError, match=r"pairs\.csv: is also an input"):
        check_outputs([tmp_path / "pairs.csv"], [tmp_path / "pairs.csv"])
    os.symlink(tmp_path / "pairs.csv", tmp_path / "link.csv")
    with pytest.raises(OutputError, match="is also an input"):
        check_outputs([tmp_path / "link.csv"], [tmp_path / "pairs.csv"])
    with pytest.raises(OutputError, match=r"lies inside the input folder .*data"):
        check_outputs([data / "sub" / "new.csv"], [data])
    with pytest.raises(OutputError, match="lies inside the input folder"):
        check_outputs([], [data], folders=[data / "out"])
    check_outputs([tmp_path / "out.csv"], [data, tmp_path / "pairs.csv", "hub/id-not-a-path", None])
    # a folder whose old contents the command may delete (rank's stale selections) must hold no input
    with pytest.raises(OutputError, match=r"holds the input .*a\.png; choose an output outside the inputs"):
        check_outputs([], [data / "a.png"], replaced=[tmp_path])
    check_outputs([], [data / "a.png"], folders=[tmp_path])  # written into, nothing deleted: allowed


def test_check_writable(tmp_path, monkeypatch):
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a folder, but a file is written here"):
        check_writable(tmp_path / "dir")
    with pytest.raises(OutputError, match="is a file, but a folder is written here"):
        check_writable(tmp_path / "file", folder=True)
    with pytest.raises(OutputError, match="is a file, so nothing can be created inside it"):
        check_writable(tmp_path / "file" / "x.csv")
    with pytest.raises(OutputError, match="longer than the"):
        check_writable(tmp_path / ("x" * 250 + ".csv"))  # fits 255, but not with the atomic temporary name
    with pytest.raises(OutputError, match="longer than the"):
        check_writable(tmp_path / ("d" * 300) / "x.csv")
    check_writable(tmp_path / "new" / "deeper" / "x.csv")
    check_writable(tmp_path / "dir", folder=True)
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if str(p) == str(tmp_path / "dir") else real_access(p, mode)
    )
    with pytest.raises(OutputError, match=r"the folder .*dir is not writable"):
        check_writable(tmp_path / "dir" / "x.csv")


# ------------------------------------------------------------------------------- item 7: never over an input
def test_score_refuses_out_over_its_pairs_csv(tmp_path, capsys):
    draw(tmp_path / "a.png", 0), draw(tmp_path / "b.png", 1)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("reference,generated\na.png,b.png\n")
    before = pairs.read_bytes()
    one_line_exit_2(["score", "--refs", str(pairs), "--model", "tiny", "--out", str(pairs)], capsys, "is also an input")
    assert pairs.read_bytes() == before
    one_line_exit_2(
        ["score", "--refs", str(pairs), "--model", "tiny", "--out", str(tmp_path / "a.png")],
        capsys,
        "a.png: is also an input",
    )


def test_score_refuses_out_inside_an_input_folder(folders, capsys):
    before = (folders / "refs" / "0.png").read_bytes()
    one_line_exit_2(score(folders, "--out", str(folders / "refs" / "0.png")), capsys, "lies inside the input folder")
    assert (folders / "refs" / "0.png").read_bytes() == before
    one_line_exit_2(score(folders, "--out", str(folders / "gens" / "s.csv")), capsys, "lies inside the input folder")


def test_report_refuses_out_over_its_results(tmp_path, capsys, folders):
    assert main(score(folders, "--out", str(tmp_path / "s.csv"))) == 0
    summary = tmp_path / "s.csv.summary.json"
    before = summary.read_bytes()
    one_line_exit_2(["report", str(summary), "--out", str(summary)], capsys, "is also an input")
    one_line_exit_2(["report", str(summary), "--out", str(tmp_path / "s.csv")], capsys, "is also an input")
    assert summary.read_bytes() == before


def test_embed_refuses_out_over_an_image(tmp_path, capsys):
    image = draw(tmp_path / "a.png", 0)
    one_line_exit_2(["embed", str(image), "--model", "tiny", "--out", str(tmp_path)], capsys, "is a folder")
    os.symlink(image, tmp_path / "a.npz")
    one_line_exit_2(
        ["embed", str(image), "--model", "tiny", "--out", str(tmp_path / "a.npz")], capsys, "is also an input"
    )


def test_export_refuses_out_inside_the_checkpoint(tmp_path, capsys):
    checkpoint = tmp_path / "run" / "checkpoints" / "step-1"
    checkpoint.mkdir(parents=True)
    (checkpoint / "head.safetensors").write_bytes(b"x")
    one_line_exit_2(
        ["export", str(checkpoint), str(checkpoint / "model"), "--backbone", "tiny"],
        capsys,
        "lies inside the input folder",
    )


# ------------------------------------------------------------------------------- item 9: side files
def test_side_files_derive_from_the_whole_output_name(folders):
    assert main(score(folders, "--out", str(folders / "s.csv"))) == 0
    assert main(score(folders, "--out", str(folders / "s.jsonl"))) == 0
    csv_summary = json.loads((folders / "s.csv.summary.json").read_text())
    jsonl_summary = json.loads((folders / "s.jsonl.summary.json").read_text())
    assert csv_summary["pairs_file"] == "s.csv" and jsonl_summary["pairs_file"] == "s.jsonl"
    assert not (folders / "s.summary.json").exists()
    lines = (folders / "s.jsonl").read_text().splitlines()  # format inferred from the extension
    assert len(lines) == 3 and json.loads(lines[0])["similarity"]


def test_format_contradicting_the_extension_is_refused(folders, capsys):
    one_line_exit_2(
        score(folders, "--format", "jsonl", "--out", str(folders / "x.csv")), capsys, "--format jsonl", "x.csv"
    )
    one_line_exit_2(score(folders, "--out", str(folders / "x.txt")), capsys, "x.txt", ".csv or .jsonl")
    assert not (folders / "x.csv").exists()


# ------------------------------------------------------------------------------- item 10: masks
def test_masks_folder_missing_or_wrong_layout(folders, capsys):
    out = str(folders / "o.csv")
    one_line_exit_2(score(folders, "--out", out, "--masks", str(folders / "nope")), capsys, "nope", "no such folder")
    draw(folders / "flat" / "0.png", 1)
    one_line_exit_2(score(folders, "--out", out, "--masks", str(folders / "flat")), capsys, "refs/", "gens/")
    assert not (folders / "o.csv").exists()


def test_masks_missing_for_some_images(folders, capsys):
    mask = np.zeros((40, 40), np.uint8)
    mask[5:30, 5:30] = 255
    (folders / "m" / "refs").mkdir(parents=True)
    for i in (0, 2):
        Image.fromarray(mask).save(folders / "m" / "refs" / f"{i}.png")
    out = folders / "o.csv"
    one_line_exit_2(score(folders, "--out", str(out), "--masks", str(folders / "m")), capsys, "refs/1.png", "no mask")
    assert main(score(folders, "--out", str(out), "--masks", str(folders / "m"), "--skip-errors")) == 0
    with open(folders / "o.csv.errors.csv", newline="") as handle:
        errors = list(csv.DictReader(handle))
    assert [e["path"] for e in errors] == [str(folders / "refs" / "1.png")]
    summary = json.loads((folders / "o.csv.summary.json").read_text())
    assert summary["masks"] == str(folders / "m") and summary["masked_images"] == 2 and summary["n_pairs"] == 2


# ------------------------------------------------------------------------------- item 11: pairing
def test_ambiguous_automatic_pairing_is_refused(tmp_path, capsys):
    for subject in ("dog", "cat"):
        for i in range(2):
            draw(tmp_path / "refs" / subject / f"{i}.png", i)
            draw(tmp_path / "gens" / subject / f"{i}.png", 5 + i)
    out = str(tmp_path / "o.csv")
    one_line_exit_2(
        score(tmp_path, "--out", out), capsys, "--pairing paths", "--pairing subjects", "4 pairs", "8 pairs"
    )
    assert main(score(tmp_path, "--out", out, "--pairing", "subjects")) == 0
    assert "pairing: subjects (given)" in capsys.readouterr().out
    assert json.loads((tmp_path / "o.csv.summary.json").read_text())["pairing"] == "subjects"


def test_automatic_rule_is_printed(folders, capsys):
    assert main(score(folders, "--out", str(folders / "o.csv"))) == 0
    assert "pairing: paths (chosen automatically" in capsys.readouterr().out


# ------------------------------------------------------------------------------- item 13: DreamBench++
def test_dbpp_reads_the_folder_score_wrote(tmp_path, capsys):
    from tests.test_dbpp import GROUP1, GROUP2, _write  # the tiny ratings of test_dbpp

    ratings = tmp_path / "ratings"
    for group, values in (("group1", GROUP1), ("group2", GROUP2)):
        _write(ratings / "data_human_rating" / "merged_data" / group / "emu2-cp.json", values)
    keys = sorted(GROUP1)  # written below category subfolders: object/object_00_mug-0.png
    for i, key in enumerate(keys):
        category = next(
            c for c in ("object", "live_subject_animal", "live_subject_human", "style") if key.startswith(c)
        )
        draw(tmp_path / "samples" / "src_image" / category / f"{key}.png", i)
        draw(tmp_path / "samples" / "tgt_image" / category / f"{key}.png", 50 + i)
    scores = tmp_path / "scores"
    assert (
        main(["score", "--refs", str(tmp_path / "samples"), "--model", "tiny", "--out", str(scores / "emu2.csv")]) == 0
    )
    capsys.readouterr()
    assert main(["dbpp", "--ratings", str(ratings), "--scores", str(scores), "--name", "mine"]) == 0
    out = capsys.readouterr().out
    assert f"mine: {len(keys)} of {len(keys)} keys paired" in out, out


def test_dbpp_fails_when_no_key_pairs(tmp_path, capsys):
    from tests.test_dbpp import GROUP1, GROUP2, _write

    ratings = tmp_path / "ratings"
    for group, values in (("group1", GROUP1), ("group2", GROUP2)):
        _write(ratings / "data_human_rating" / "merged_data" / group / "emu2-cp.json", values)
    _write(tmp_path / "scores" / "emu2.json", {"unrelated-key": 1.0, "other": 2.0})
    one_line_exit_2(
        ["dbpp", "--ratings", str(ratings), "--scores", str(tmp_path / "scores"), "--name", "mine"],
        capsys,
        "no key",
        "mine",
    )


# ------------------------------------------------------------------------------- item 14: paths from anywhere
def test_report_thumbnails_with_relative_inputs_and_out_in_a_subfolder(folders, monkeypatch):
    monkeypatch.chdir(folders)
    assert main(["score", "--refs", "refs", "--gens", "gens", "--model", "tiny", "--out", "sub/dir/s.csv"]) == 0
    with open(folders / "sub" / "dir" / "s.csv", newline="") as handle:
        pairs = list(csv.DictReader(handle))
    assert all(os.path.isabs(p["reference"]) and os.path.isabs(p["generated"]) for p in pairs)
    monkeypatch.chdir(folders / "sub")
    assert main(["report", "dir/s.csv.summary.json"]) == 0
    page = (folders / "sub" / "dir" / "report.html").read_text()
    assert "image unavailable" not in page and page.count("data:image/jpeg") == 6


# ------------------------------------------------------------------------------- items 15, 17, 18
@pytest.mark.parametrize(
    "case, needles",
    [
        ("row_missing_field", ["line 3", "generated"]),
        ("latin1", ["not UTF-8"]),
        ("image_as_refs", ["is an image", "--refs"]),
        ("csv_on_folder", ["--pairing csv", "folder"]),
        ("out_is_dir", ["is a folder"]),
        ("out_too_long", ["longer than the"]),
        ("threshold_nan", ["--threshold nan"]),
        ("calibration_alone", ["--calibration", "--threshold calibrated"]),
        ("gens_with_csv", ["--gens", "pairs CSV"]),
        ("batch_size_0", ["--batch-size", "at least 1"]),
    ],
)
def test_bad_score_invocations_are_one_line_before_embedding(tmp_path, capsys, monkeypatch, case, needles):
    import nearid.score.compute

    def no_embedding(*args, **kwargs):
        raise AssertionError("embedded before the invocation was checked")

    monkeypatch.setattr(nearid.score.compute, "embed", no_embedding)
    for i in range(2):
        draw(tmp_path / "refs" / f"{i}.png", i)
        draw(tmp_path / "gens" / f"{i}.png", 5 + i)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("reference,generated\nrefs/0.png,gens/0.png\n")
    out = str(tmp_path / "o.csv")
    argv = {
        "row_missing_field": ["--refs", str(pairs), "--out", out],
        "latin1": ["--refs", str(pairs), "--out", out],
        "image_as_refs": ["--refs", str(tmp_path / "refs" / "0.png"), "--gens", str(tmp_path / "gens"), "--out", out],
        "csv_on_folder": [
            "--refs",
            str(tmp_path / "refs"),
            "--gens",
            str(tmp_path / "gens"),
            "--pairing",
            "csv",
            "--out",
            out,
        ],
        "out_is_dir": ["--refs", str(pairs), "--out", str(tmp_path / "refs")],
        "out_too_long": ["--refs", str(pairs), "--out", str(tmp_path / ("x" * 300 + ".csv"))],
        "threshold_nan": ["--refs", str(pairs), "--out", out, "--threshold", "nan"],
        "calibration_alone": ["--refs", str(pairs), "--out", out, "--calibration", str(pairs)],
        "gens_with_csv": ["--refs", str(pairs), "--gens", str(tmp_path / "gens"), "--out", out],
        "batch_size_0": ["--refs", str(pairs), "--out", out, "--batch-size", "0"],
    }[case]
    if case == "row_missing_field":
        pairs.write_text("reference,generated\nrefs/0.png,gens/0.png\nrefs/1.png\n")
    if case == "latin1":
        pairs.write_bytes("reference,generated\nrefs/0.png,gens/caf\xe9.png\n".encode("latin-1"))
    one_line_exit_2(["score", "--model", "tiny", *argv], capsys, *needles)
    assert not (tmp_path / "o.csv").exists()


def test_same_files_as_references_and_generated_warn(tmp_path, capsys):
    for i in range(2):
        draw(tmp_path / "refs" / f"{i}.png", i)
    argv = [
        "score",
        "--refs",
        str(tmp_path / "refs"),
        "--gens",
        str(tmp_path / "refs"),
        "--model",
        "tiny",
        "--out",
        str(tmp_path / "o.csv"),
    ]
    assert main(argv) == 0
    assert "warning: references and generated images are the same 2 files" in capsys.readouterr().err


def test_all_bad_inputs_are_listed_in_one_message(folders, capsys, monkeypatch):
    import nearid.score.compute

    monkeypatch.setattr(
        nearid.score.compute, "embed", lambda *a, **k: (_ for _ in ()).throw(AssertionError("embedded"))
    )
    for i in range(25):
        (folders / "gens" / f"bad{i:02d}.png").write_bytes(b"not an image")
        draw(folders / "refs" / f"bad{i:02d}.png", 100 + i)
    err = one_line_exit_2(
        score(folders, "--out", str(folders / "o.csv")),
        capsys,
        "25 bad inputs",
        "bad00.png",
        "bad19.png",
        "and 5 more",
        "--skip-errors",
    )
    assert "bad20.png" not in err


def test_bench_report_from_another_directory_finds_relative_data(tmp_path, monkeypatch):
    """`nearid bench --data synth` (relative) records where the data is, so the report finds it from anywhere."""
    from nearid.data.synth import SynthConfig, generate

    generate(
        tmp_path / "synth",
        SynthConfig(identities=8, size=32, seed=2, val=1, test=5, mtg_train=0, mtg_test=0, workers=1),
        progress=False,
    )
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--encoder", "histogram", "--data", "synth", "--sources", "Part", "--out", "runs/b"]) == 0
    results = json.loads((tmp_path / "runs" / "b" / "results.json").read_text())
    assert results["benchmark"]["data"] == str(tmp_path / "synth")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["report", str(tmp_path / "runs" / "b" / "results.json")]) == 0
    page = (tmp_path / "runs" / "b" / "report.html").read_text()
    assert "Gallery unavailable" not in page and "image unavailable" not in page
