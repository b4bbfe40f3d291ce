"""Issue 21 (items 10, 13, 16, 22, acceptance): distract refuses meaningless settings before any model
loads, flags a view with no background left, says what --filter kept, and runs into one --out (again,
after changed inputs, at the same time) equal a fresh --out or are refused with one line."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytest.importorskip("diffusers")
pytest.importorskip("sklearn")

from nearid.cli.app import main
from nearid.data.synth import SynthConfig, generate
from nearid.distract import DistractConfig, distract
from nearid.io.errors import NearIDError

FAST = dict(generator="tiny-flux-fill", steps=2, resolution=32, dilate=2, feather=2, progress=False, split="test")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("trust-distract") / "synth"
    config = SynthConfig(
        identities=4, size=48, seed=5, val=0, test=2, mtg_train=0, mtg_test=0, workers=1, sources=("Instance",)
    )
    generate(root, config, progress=False)
    return root


BAD = [
    ("--strength", "2"),
    ("--strength", "0"),
    ("--strength", "nan"),
    ("--limit", "-3"),
    ("--limit", "0"),
    ("--change-threshold", "nan"),
    ("--guidance", "nan"),
    ("--guidance", "-1"),
    ("--true-cfg", "inf"),
    ("--steps", "0"),
    ("--resolution", "8"),
    ("--band", "0.9", "0.1"),
    ("--band", "nan", "0.5"),
    ("--dilate", "-1"),
]


@pytest.mark.parametrize("bad", BAD, ids=[" ".join(b) for b in BAD])
def test_every_numeric_option_is_checked_before_any_model_loads(synth, tmp_path, capsys, bad):
    argv = ["distract", "--data", str(synth), "--generator", "tiny-flux-fill", "--source", "G"]
    with pytest.raises(SystemExit) as stop:
        code = main([*argv, "--out", str(tmp_path / "o"), *bad])
        raise SystemExit(code)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert bad[0] in err and "Traceback" not in err and len(err.strip().splitlines()) <= 2  # usage + one line
    assert not (tmp_path / "o").exists() and not (tmp_path / ".o.shards").exists()


@pytest.mark.parametrize(
    "field, value",
    [("strength", 2.0), ("limit", -3), ("limit", 0), ("change_threshold", math.nan), ("guidance", math.nan)],
)
def test_the_library_call_refuses_too(synth, tmp_path, field, value):
    config = DistractConfig(data=str(synth), source="G", out=str(tmp_path / "o"), **{**FAST, field: value})
    with pytest.raises(NearIDError, match=field.replace("_", "-")):
        distract(config)
    assert not (tmp_path / "o").exists()


def test_outside_measures_are_na_when_the_region_covers_the_image():
    from nearid.distract import compositing

    original = np.zeros((4, 4, 3), np.uint8)
    result = original + 50
    everything = np.ones((4, 4), bool)
    assert compositing.outside_difference(original, result, everything) is None  # not a perfect 0.0
    assert compositing.seam_strength(original, result, everything) is None  # no border to measure


def test_verdict_no_background():
    from nearid.distract.quality import NO_BACKGROUND, Verdict

    assert Verdict(0, changed=50.0, background=False).label == NO_BACKGROUND
    assert not Verdict(0, changed=50.0, background=False).ok
    assert Verdict(0, changed=50.0, background=True).label == "ok"


def test_a_view_with_no_background_left_is_flagged_and_filtered(synth, tmp_path, capsys):
    from nearid.data import open_table
    from nearid.distract.quality import parse_quality

    out = tmp_path / "whole"
    argv = ["distract", "--data", str(synth), "--generator", "tiny-flux-fill", "--source", "W", "--split", "test"]
    argv += ["--steps", "2", "--resolution", "32", "--dilate", "100", "--feather", "2", "--out", str(out)]
    assert main([*argv, "--filter"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "distract.json").read_text())
    assert summary["measurements"]["outside_mean_abs"]["with_paste_back"] is None
    assert summary["quality"] == {"no-background": summary["distractors"]} and summary["kept"] == 0
    assert "outside-mask mean abs difference n/a" in printed
    table = open_table(out)
    labels = {label for q in table.values("quality") if q for label in parse_quality(q).values()}
    assert labels == {"no-background"}
    # item 22: --filter keeping none says so, not "wrote N distractors"
    assert f"generated {summary['distractors']} distractors" in printed and "kept 0" in printed
    assert "wrote" not in printed


def test_a_second_distract_into_an_out_being_written_is_refused_with_one_line(synth, tmp_path, capsys):
    from nearid.io.locks import output_lock

    out = tmp_path / "busy"
    argv = ["distract", "--data", str(synth), "--generator", "tiny-flux-fill", "--source", "B", "--split", "test"]
    argv += ["--steps", "2", "--resolution", "32", "--dilate", "2", "--feather", "2", "--out", str(out)]
    with output_lock(out, "nearid distract"):  # as a first run holds it while it generates
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert "another nearid distract" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not (tmp_path / ".busy.shards").exists() and not (tmp_path / "busy.partial").exists()
    assert main(argv) == 0  # released: the run goes through


def _distract_bytes(folder):
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        # distract.json and quality.md hold the seconds taken, the ownership marker its time
        if p.is_file() and p.name not in {"distract.json", "quality.md", ".nearid-output.json"}
    }


@pytest.mark.slow
def test_distract_concurrently_with_itself_equals_a_fresh_out_or_is_refused(synth, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    import nearid

    argv = [sys.executable, "-m", "nearid", "distract", "--data", str(synth), "--generator", "tiny-flux-fill"]
    argv += ["--source", "C", "--split", "test", "--steps", "2", "--resolution", "32", "--dilate", "2"]
    argv += ["--feather", "2", "--overwrite"]
    env = {**os.environ, "PYTHONPATH": str(Path(nearid.__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    out, fresh = tmp_path / "c", tmp_path / "fresh"
    runs = [subprocess.Popen([*argv, "--out", str(out)], env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [run.communicate()[1] for run in runs]
    codes = sorted(run.returncode for run in runs)
    assert codes in ([0, 0], [0, 2]), errors
    if codes == [0, 2]:
        refusal = next(e for run, e in zip(runs, errors) if run.returncode == 2)
        assert "Traceback" not in refusal and "another nearid distract" in refusal
    assert subprocess.run([*argv, "--out", str(fresh)], env=env).returncode == 0
    assert _distract_bytes(out) == _distract_bytes(fresh)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".c.lock", ".fresh.lock", "c", "fresh"])


def test_distract_again_after_changed_inputs_equals_a_fresh_out(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(2)
    root = tmp_path / "photos"
    for name, description in (("mug", "a red mug"), ("cup", "a blue cup"), ("bowl", "a green bowl")):
        (root / name).mkdir(parents=True)
        (root / name / "meta.json").write_text(json.dumps({"description": description}))
        for j in (1, 2):
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / name / f"view{j}.png")
            mask = np.zeros((40, 48), np.uint8)
            mask[10:30, 12:36] = 255
            Image.fromarray(mask).save(root / name / f"view{j}_mask.png")
    config = dict(FAST, split="all", data=str(root), source="Mine", overwrite=True)
    distract(DistractConfig(**config, out=str(tmp_path / "again")))
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / "cup" / "view2.png")
    distract(DistractConfig(**config, out=str(tmp_path / "again")))
    distract(DistractConfig(**config, out=str(tmp_path / "fresh")))
    assert _distract_bytes(tmp_path / "again") == _distract_bytes(tmp_path / "fresh")


def test_bench_on_a_source_whose_slots_were_all_filtered_is_one_line(synth, tmp_path, capsys):
    out = tmp_path / "filtered"
    distract(DistractConfig(data=str(synth), source="F", out=str(out), change_threshold=256.0, filter=True, **FAST))
    argv = ["bench", "--model", "histogram", "--data", str(synth), "--sources", f"F={out}", "--split", "test"]
    assert main([*argv, "--out", str(tmp_path / "bench")]) == 2
    err = capsys.readouterr().err
    assert "F" in err and "no distractor" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------ distract joins the shared output checks
def test_an_out_inside_the_input_dataset_is_refused_before_any_model_loads(synth, tmp_path, capsys, monkeypatch):
    """`--out DATA/NearID/sub` writes into the positives being read: refused in one line like every other
    writer. (A new source folder beside them, `DATA/NearID-<source>`, is the default output on purpose.)"""
    monkeypatch.setattr("nearid.distract.run.load_generator", lambda *a, **k: pytest.fail("a model loaded"))
    argv = ["distract", "--data", str(synth), "--generator", "tiny-flux-fill", "--source", "G", "--split", "test"]
    assert main([*argv, "--out", str(synth / "NearID" / "inside")]) == 2
    err = capsys.readouterr().err
    assert "inside the input folder" in err and len(err.strip().splitlines()) == 1
    assert not (synth / "NearID" / "inside").exists()


def test_overwrite_never_deletes_a_file_distract_did_not_write(synth, tmp_path, capsys):
    """A user's note put into a distract output: `--overwrite` (other settings) refuses in one line naming
    the note, before any model loads, and the output and the note stay; once the note is moved out the
    run replaces the output."""
    out = tmp_path / "out"
    assert distract(DistractConfig(data=str(synth), source="G", out=str(out), **FAST)) is not None
    (out / "notes.txt").write_text("mine")
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    argv = ["distract", "--data", str(synth), "--generator", "tiny-flux-fill", "--source", "G", "--split", "test"]
    argv += ["--steps", "2", "--resolution", "32", "--dilate", "3", "--feather", "2", "--overwrite", "--out", str(out)]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "notes.txt" in err and len(err.strip().splitlines()) == 1
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before
    (out / "notes.txt").unlink()
    assert main(argv) == 0
    assert json.loads((out / "distract.json").read_text())["config"]["dilate"] == 3
