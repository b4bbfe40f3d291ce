"""Issue 21 (items 10, 13, 16, 22, acceptance): distract refuses meaningless settings before any model
loads, flags a view with no background left, says what --filter kept, and runs into one --out (again,
after changed inputs, at the same time) equal a fresh --out or are refused with one line."""

from __future__ import annotations

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
    summary = __import__("json").loads((out / "distract.json").read_text())
    assert summary["measurements"]["outside_mean_abs"]["with_paste_back"] is None
    assert summary["quality"] == {"no-background": summary["distractors"]} and summary["kept"] == 0
    assert "outside-mask mean abs difference n/a" in printed
    table = open_table(out)
    labels = {label for q in table.values("quality") if q for label in parse_quality(q).values()}
    assert labels == {"no-background"}
    # item 22: --filter keeping none says so, not "wrote N distractors"
    assert f"generated {summary['distractors']} distractors" in printed and "kept 0" in printed
    assert "wrote" not in printed
