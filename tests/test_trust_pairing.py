"""Issue 21 (items 11, 12, 24): nothing `score` is given is ignored without a word, and `auto`
accepts a layout both rules read the same way."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from nearid.io.errors import NearIDError
from nearid.score.inputs import prepare
from nearid.score.plan import plan_pairs


def _image(path, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)


def _subject_tree(root):
    _image(root / "refs" / "dog" / "a.png")
    _image(root / "refs" / "cat" / "a.png", 1)
    _image(root / "gens" / "dog" / "a.png", 2)
    _image(root / "gens" / "cat" / "a.png", 3)


def test_auto_accepts_a_layout_where_both_rules_give_the_same_pairs(tmp_path):
    _subject_tree(tmp_path)  # one file per subject on each side: paths and subjects pair it identically
    plan = plan_pairs(tmp_path / "refs", tmp_path / "gens")
    assert sorted((p.reference.name, p.reference.parent.name, p.generated.parent.name) for p in plan.pairs) == [
        ("a.png", "cat", "cat"),
        ("a.png", "dog", "dog"),
    ]
    assert "same" in plan.how
    _image(tmp_path / "refs" / "dog" / "b.png", 4)  # now they differ: still refused, asking for --pairing
    with pytest.raises(NearIDError, match="--pairing paths"):
        plan_pairs(tmp_path / "refs", tmp_path / "gens")


@pytest.mark.parametrize("side", ["refs", "gens"])
def test_subjects_refuses_loose_files_beside_the_subject_folders(tmp_path, side):
    _subject_tree(tmp_path)
    _image(tmp_path / side / "stray.png", 9)
    with pytest.raises(NearIDError, match=r"stray\.png"):
        plan_pairs(tmp_path / "refs", tmp_path / "gens", "subjects")


def test_an_unknown_subfolder_of_the_mask_folder_is_an_error_naming_the_expected(tmp_path):
    _subject_tree(tmp_path)
    plan = plan_pairs(tmp_path / "refs", tmp_path / "gens", "paths")
    masks = tmp_path / "masks"
    for side in ("references", "gens"):  # the reference side misspelt
        for subject in ("dog", "cat"):
            _image(masks / side / subject / "a.png", 5)
    with pytest.raises(NearIDError, match=r"references.*refs/ and gens/"):
        prepare(plan, masks)


@pytest.mark.parametrize(
    "name, text, found, delimiter",
    [
        ("p.csv", "Reference,Generated\na.png,b.png\n", "Reference, Generated", ","),
        ("p.csv", "reference;generated\na.png;b.png\n", "reference, generated", ";"),
        ("p.tsv", "reference\tgenerated\na.png\tb.png\n", "reference, generated", "tab"),
    ],
)
def test_a_pairs_csv_with_other_columns_lists_the_columns_found(tmp_path, name, text, found, delimiter):
    (tmp_path / name).write_text(text)
    with pytest.raises(NearIDError) as refusal:
        plan_pairs(tmp_path / name)
    message = str(refusal.value)
    assert f"found: {found}" in message and f"delimiter {delimiter!r}" in message.replace("'tab'", "'tab'")


def test_gens_that_is_a_file_says_so(tmp_path):
    _subject_tree(tmp_path)
    (tmp_path / "g.csv").write_text("x")
    with pytest.raises(NearIDError, match="is a file"):
        plan_pairs(tmp_path / "refs", tmp_path / "g.csv")
