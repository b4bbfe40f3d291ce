"""DreamBench++ M-H: the published figures from the shared ratings, and a hand-made ratings folder."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from nearid.eval.dbpp import alignment, format_table, normalise_key, read_scores
from nearid.io.errors import NearIDError


def _shared_ratings() -> Path | None:
    for candidate in (
        os.environ.get("NEARID_DBPP_RATINGS"),
        Path(__file__).resolve().parents[2] / "shared" / "data" / "dreambench_plus" / "ratings",
    ):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="module")
def published():
    ratings = _shared_ratings()
    if ratings is None:
        pytest.skip(
            "DreamBench++ ratings not found: set NEARID_DBPP_RATINGS or put them in ../shared/data/dreambench_plus/ratings"
        )
    return alignment(ratings)


PUBLISHED_OBJECT = {
    "human": 0.648,
    "gpt": 0.597,
    "qwen3vl_30b": 0.549,
    "nearid": 0.545,
    "backbone": 0.515,
    "clipi": 0.493,
    "dino": 0.492,
    "backbone_maphead": 0.489,
    "vsm": 0.190,
}


def test_published_object_figures(published):
    assert set(published) == {"object", "live_subject_animal", "live_subject_human", "style", "all", "_details"}
    assert {s: round(r, 3) for s, r in published["object"].items()} == PUBLISHED_OBJECT


@pytest.mark.parametrize(
    "scorer, animal, human_subject, style, all_",
    [
        ("nearid", 0.435, 0.440, 0.349, 0.445),
        ("backbone", 0.333, 0.376, 0.441, 0.419),
        ("backbone_maphead", 0.369, 0.397, 0.398, 0.415),
        ("gpt", 0.488, 0.432, 0.466, None),
        ("dino", 0.434, 0.248, 0.374, None),
        ("clipi", 0.364, 0.413, 0.418, None),
        ("vsm", 0.183, 0.148, 0.236, None),
        ("qwen3vl_30b", 0.477, 0.485, 0.472, None),
    ],
)
def test_published_category_figures(published, scorer, animal, human_subject, style, all_):
    got = [published[c][scorer] for c in ("live_subject_animal", "live_subject_human", "style")]
    assert [round(r, 3) for r in got] == [animal, human_subject, style]
    if all_ is not None:
        assert round(published["all"][scorer], 3) == all_


def test_published_nearid_per_method_object(published):
    expected = {  # mean r, half the gap between the two human groups
        "textual_inversion_sd": (0.675, 0.007),
        "dreambooth_sd": (0.655, 0.023),
        "dreambooth_lora_sdxl": (0.546, 0.006),
        "blip_diffusion": (0.382, 0.002),
        "emu2": (0.768, 0.028),
        "ip_adapter_plus_vit_h_sdxl": (0.306, 0.018),
        "ip_adapter_vit_g_sdxl": (0.316, 0.041),
    }
    methods = published["_details"]["scorers"]["nearid"]["methods"]
    for method, (mean, half_gap) in expected.items():
        row = methods[method]["categories"]["object"]
        assert row["n"] == 585
        assert (round(row["r"], 3), round(abs(row["r1"] - row["r2"]) / 2, 3)) == (mean, half_gap), method


def test_published_every_item_pairs(published):
    details = published["_details"]
    for scorer, info in details["scorers"].items():
        assert info["missing_methods"] == [], scorer
        for method, row in info["methods"].items():
            if scorer != "human":
                assert row["n_paired"] == 1350, (scorer, method)
                assert row["unpaired"]["metric_only"] == row["unpaired"]["human_only"] == 0, (scorer, method)
    counts = {c: row["n"] for c, row in details["scorers"]["nearid"]["methods"]["emu2"]["categories"].items()}
    assert counts == {"object": 585, "live_subject_animal": 405, "live_subject_human": 180, "style": 180}


# --- a hand-made ratings folder ------------------------------------------------------------------

OBJ = ["object_00_mug-0", "object_00_mug-1", "object_20_magic_cube-0"]
STY = ["style_00_pencil_sketch-0", "style_00_pencil_sketch-1", "style_00_pencil_sketch-2"]
# Both methods get the same humans: object h1 = [1, 2, 3], h2 = [1, 3, 2] (r = 0.5); style h2 = 2 * h1 (r = 1).
GROUP1 = dict(zip(OBJ + STY, [1, 2, 3, 1, 2, 3]))
GROUP2 = dict(zip(OBJ + STY, [1, 3, 2, 2, 4, 6]))
# textual_inversion: object r1 = 1, r2 = 0.5 -> 0.75; style r1 = r2 = 1.
# emu2: object metric [2, 1, 3] -> r1 = 0.5, r2 = -0.5 -> 0; style metric [2, 1, 2] -> r = 0.
METRIC = {
    "textual_inversion_sd": {  # listed out of order, with the per-image `_0` suffix
        "style_00_pencil_sketch-2_0": 30.0,
        "object_20_magic_cube-0_0": 3.0,
        "object_00_mug-0_0": 1.0,
        "style_00_pencil_sketch-0_0": 10.0,
        "object_00_mug-1_0": 2.0,
        "style_00_pencil_sketch-1_0": 20.0,
    },
    "emu2": {
        "object_00_mug-0_0": 2.0,
        "object_00_mug-1_0": 1.0,
        "object_20_rubik's_cube-0_0": 3.0,  # the emu2 files' name for magic_cube
        "object_99_ghost-0_0": 50.0,  # no human rating: reported, not paired
        "style_00_pencil_sketch-0_0": 2.0,
        "style_00_pencil_sketch-1_0": 1.0,
        "style_00_pencil_sketch-2_0": 2.0,
    },
}
METHODS = ("textual_inversion_sd", "emu2")


def _z(*rs):
    """Fisher-z mean with DreamBench++'s clip, written out."""
    return math.tanh(sum(math.atanh(max(-0.9999, min(0.9999, r))) for r in rs) / len(rs))


def _write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def _human(root: Path) -> None:
    for method in METHODS:
        _write(root / "data_human_rating" / "merged_data" / "group1" / f"{method}-cp.json", GROUP1)
        _write(
            root / "data_human_rating" / "merged_data" / "group2" / f"{method}-cp.json", dict(reversed(GROUP2.items()))
        )


@pytest.fixture
def tiny(tmp_path) -> Path:
    root = tmp_path / "ratings"
    _human(root)
    for method in METHODS:
        _write(root / "data_full_rating" / f"{method}.json", METRIC[method])
    # like GPT-4o's folder: an aspect subfolder, and only one of the two methods
    _write(
        root / "data_partial_rating" / "concept_preservation_full" / "textual_inversion_sd.json",
        METRIC["textual_inversion_sd"],
    )
    return root


def test_key_normalisation():
    assert normalise_key("object_20_rubik's_cube-3_0") == "object_20_magic_cube-3"
    assert (
        normalise_key("live_subject_animal_26_cotton-top_tamarin-4_12") == "live_subject_animal_26_cotton-top_tamarin-4"
    )
    assert normalise_key("style_10_ukiyo-e-8") == "style_10_ukiyo-e-8"  # human keys are left alone


def test_several_images_of_one_prompt_are_averaged(tmp_path):
    path = tmp_path / "emu2.json"
    _write(path, {"object_00_mug-0_0": 1.0, "object_00_mug-0_1": 3.0, "object_00_mug-1_0": 5.0})
    scores = read_scores(path)
    assert scores.scores == {"object_00_mug-0": 2.0, "object_00_mug-1": 5.0} and scores.merged == 1


def test_tiny_by_hand(tiny):
    result = alignment(tiny)
    assert set(result) == {"object", "live_subject_animal", "live_subject_human", "style", "all", "_details"}
    expected = {
        "full": {"object": _z(0.75, 0.0), "style": _z(1.0, 0.0)},
        "partial": {"object": 0.75, "style": 0.9999},
        "human": {"object": 0.5, "style": 0.9999},
    }
    for scorer, figures in expected.items():
        for category, value in figures.items():
            assert result[category][scorer] == pytest.approx(value, abs=1e-9), (scorer, category)
        assert math.isnan(result["live_subject_animal"][scorer])  # no items: no correlation
        assert result["all"][scorer] == pytest.approx(_z(figures["object"], figures["style"]), abs=1e-9)
    assert result["object"]["full"] == pytest.approx(0.4514, abs=1e-4)  # tanh(atanh(0.75) / 2)

    details = result["_details"]["scorers"]
    assert details["partial"]["missing_methods"] == ["emu2"] and details["full"]["missing_methods"] == []
    emu2 = details["full"]["methods"]["emu2"]
    assert emu2["categories"]["object"] == {
        "n": 3,
        "r1": pytest.approx(0.5),
        "r2": pytest.approx(-0.5),
        "r": pytest.approx(0.0),
    }
    assert emu2["n_paired"] == 6
    assert emu2["unpaired"] == {"metric_only": 1, "human_only": 0, "examples": ["object_99_ghost-0"]}
    assert details["human"]["methods"]["emu2"]["categories"]["object"]["r"] == pytest.approx(0.5)


def test_tiny_table(tiny):
    table = format_table(alignment(tiny))
    rows = [line.split()[0] for line in table.splitlines()[2:5]]
    assert rows == ["partial", "human", "full"]  # object M-H 0.75, 0.5, 0.451
    assert "partial *" in table
    assert "* partial: averaged over 1 of 2 methods (missing: emu2)" in table
    assert "0.750" in table and "-" in table.splitlines()[2]  # NaN animal column shows as '-'


def test_scores_dir_adds_a_scorer(tiny, tmp_path):
    mine = tmp_path / "data_mine_rating"
    for method in METHODS:
        _write(mine / f"{method}.json", METRIC[method])
    named = alignment(tiny, mine, name="my_metric")
    assert named["object"]["my_metric"] == pytest.approx(named["object"]["full"])
    assert named["all"]["my_metric"] == pytest.approx(named["all"]["full"])
    assert "mine" not in named["object"]
    assert alignment(tiny, mine)["style"]["mine"] == pytest.approx(_z(1.0, 0.0))  # name from the folder


def _error(*args, **kwargs) -> str:
    with pytest.raises(NearIDError) as info:
        alignment(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_ratings_dir(tmp_path):
    message = _error(tmp_path / "nope")
    assert "ratings folder not found" in message and str(tmp_path / "nope") in message


def test_no_human_ratings(tmp_path):
    _write(tmp_path / "data_dino_rating" / "emu2.json", METRIC["emu2"])
    message = _error(tmp_path)
    assert "no human ratings" in message and "group1" in message and "-cp.json" in message


def test_human_group_missing_is_no_human_ratings(tmp_path):
    for method in METHODS:
        _write(tmp_path / "data_human_rating" / "merged_data" / "group1" / f"{method}-cp.json", GROUP1)
    assert "no human ratings" in _error(tmp_path)


@pytest.mark.parametrize(
    "content, why",
    [
        ("{not json", "not a readable JSON file"),
        ("[1, 2, 3]", "not an object"),
        ('{"object_00_mug-0_0": "high"}', "not a number"),
        ('{"object_00_mug-0_0": true}', "not a number"),
    ],
)
def test_bad_score_file(tiny, content, why):
    bad = tiny / "data_full_rating" / "emu2.json"
    bad.write_text(content, encoding="utf-8")
    message = _error(tiny)
    assert str(bad) in message and why in message and "expected a JSON object" in message


def test_scores_dir_without_method_files(tiny, tmp_path):
    empty = tmp_path / "mine"
    _write(empty / "notes.json", {})
    message = _error(tiny, empty, name="mine")
    assert str(empty) in message and "no method score files" in message and "textual_inversion_sd" in message


def test_scores_dir_missing_or_name_taken(tiny, tmp_path):
    assert "scores folder not found" in _error(tiny, tmp_path / "nope", name="x")
    mine = tmp_path / "mine"
    _write(mine / "emu2.json", METRIC["emu2"])
    assert "already taken" in _error(tiny, mine, name="full")
    assert "already taken" in _error(tiny, mine, name="human")


def test_keys_of_images_in_category_subfolders_pair():
    """`nearid score` keys `src_image/object/object_00_mug-0.png` as `object-object_00_mug-0`."""
    assert normalise_key("object-object_00_mug-0") == "object_00_mug-0"
    assert (
        normalise_key("live_subject_animal-live_subject_animal_26_cotton-top_tamarin-4_12")
        == "live_subject_animal_26_cotton-top_tamarin-4"
    )
    assert normalise_key("object-unrelated") == "object-unrelated"  # only a whole key loses the folder


def test_scores_dir_reads_score_outputs_and_refuses_two_files_per_method(tiny, tmp_path):
    mine = tmp_path / "mine"
    _write(mine / "emu2.csv.dbpp.json", METRIC["emu2"])  # what `nearid score --out emu2.csv` writes
    _write(mine / "emu2.csv.summary.json", {"kind": "score"})  # never read as scores
    result = alignment(tiny, mine, name="mine")
    info = result["_details"]["scorers"]["mine"]
    assert set(info["methods"]) == {"emu2"} and info["keys_paired"] == 6 and info["keys_total"] == 7
    assert result["object"]["mine"] == pytest.approx(_z(0.0))  # emu2's object M-H, as for the `full` scorer
    _write(mine / "emu2.jsonl.dbpp.json", METRIC["emu2"])
    message = _error(tiny, mine, name="mine")
    assert "2 score files for emu2" in message and "emu2.csv.dbpp.json" in message
