"""Hub-schema loaders, splits, alignment, bad rows, MTG oracles and the folder layout.

The datasets are built here, in exactly the hub schemas, and read back through the same code that
reads the hub: ``load_from_disk`` folders and parquet files.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from datasets import Dataset, DatasetDict
from PIL import Image

from nearid.data import DatasetError, edit_oracle, load_folder, load_mtg, load_nearid
from nearid.data.schema import distractors_features, mtg_features, positives_features
from nearid.images.decode import load_image, load_masked
from nearid.io.errors import MaskError


def png(value, size=(8, 8), mode="RGB") -> dict:
    image = Image.new(mode, size, value)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def colour(row: int, slot: int, source: int = 0) -> tuple[int, int, int]:
    """Every image's colour encodes where it came from, so a test can tell any two apart."""
    return (10 * row + 1, 10 * slot + 1, 50 * source + 1)


IDS = [10, 25, 31, 47]
SPLITS = ["test", "test", "val", "test"]
VIEWS = [(0, 1, 2), (0, 1), (1,), (0, 2)]  # row 2 has one view; row 3 misses its middle view


def positives_rows():
    rows = {name: [] for name in positives_features()}
    for row, (identity, split, slots) in enumerate(zip(IDS, SPLITS, VIEWS)):
        values = dict.fromkeys(rows)
        values.update(id=identity, split=split, category="mug", category_description=f"mug {identity}")
        values.update(n_images=len(slots), quality="good", id_safe=True, objaverse_id=f"obj{identity}")
        for j in slots:
            values[f"images{j + 1}"] = png(colour(row, j))
            values[f"masks{j + 1}"] = png(255, mode="L")
        for name in rows:
            rows[name].append(values[name])
    return Dataset.from_dict(rows, features=positives_features())


def distractor_rows(source: int, ids=IDS, extra=None):
    rows = {name: [] for name in distractors_features()}
    for row, (identity, slots) in enumerate(zip(ids, VIEWS)):
        values = dict.fromkeys(rows)
        values.update(id=identity, n_images=len(slots))
        for j in slots + tuple(extra.get(row, ()) if extra else ()):
            values[f"nimg{j + 1}"] = png(colour(row, j, source))
        for name in rows:
            rows[name].append(values[name])
    return Dataset.from_dict(rows, features=distractors_features())


@pytest.fixture(params=["arrow", "parquet"])
def bench_root(request, tmp_path):
    datasets = {
        "NearID": positives_rows(),
        "NearID-A": distractor_rows(1, extra={1: (2,)}),  # row 1 has a distractor for its missing view 3
        "NearID-B": distractor_rows(2),
        "NearID-Shifted": distractor_rows(3, ids=[10, 25, 47, 31]),
        "NearID-Short": distractor_rows(4).select(range(3)),
    }
    for name, dataset in datasets.items():
        if request.param == "arrow":
            DatasetDict({"train": dataset}).save_to_disk(tmp_path / name)
        else:
            dataset.to_parquet(tmp_path / name / "data" / "train-00000-of-00001.parquet")
    return tmp_path


def decoded_colour(ref):
    return tuple(int(v) for v in np.asarray(load_image(ref))[0, 0])


def test_identities_keep_their_slots(bench_root):
    bench = load_nearid(bench_root, ["A", "B"], split="test")
    assert [identity.id for identity in bench] == [10, 25, 47]  # sparse ids, not row numbers
    assert [identity.row for identity in bench] == [0, 1, 3]
    last = bench[2]
    assert last.view_slots == [0, 2] and last.views[1] is None
    assert decoded_colour(last.views[2].image) == colour(3, 2)
    # distractor of slot 2 is row 3's nimg3 from each source: never shifted into slot 1
    assert decoded_colour(last.distractor("A", 2)) == colour(3, 2, 1)
    assert decoded_colour(last.distractor("B", 2)) == colour(3, 2, 2)
    assert last.distractor("A", 1) is None
    assert last.category == "mug" and last.description == "mug 47" and last.split == "test"
    assert last.views[0].image.key == "NearID[row 3].images1"


def test_bad_rows_are_skipped_and_counted(bench_root):
    bench = load_nearid(bench_root, ["A"], split="all")
    assert len(bench) == 3 and bench.report.rows_selected == 4
    assert bench.report.skipped_rows == {"fewer than 2 views": 1}
    assert bench.report.dropped_distractors == {"A": 1}
    assert bench[1].distractor("A", 2) is None  # the orphan distractor of row 1 is not used
    summary = bench.report.summary()
    assert "skipped 1 rows (fewer than 2 views)" in summary and "dropped 1 A distractors" in summary


def test_split_file_lists_row_positions(bench_root, tmp_path):
    (tmp_path / "rows.json").write_text("[3, 0]")
    (tmp_path / "dict.json").write_text('{"indices": [1]}')
    assert [i.id for i in load_nearid(bench_root, ["A"], split_file=tmp_path / "rows.json")] == [47, 10]
    assert [i.id for i in load_nearid(bench_root, ["A"], split_file=tmp_path / "dict.json")] == [25]


@pytest.mark.parametrize(
    "content, message",
    [
        ("[0, 3, 0]", r"rows\.json: row 0 appears more than once"),
        ("[0, 4]", r"rows\.json: row 4 is outside the dataset's 4 rows"),
        ('{"rows": [1]}', r"rows\.json: a split file is a JSON list"),
    ],
)
def test_bad_split_files(bench_root, tmp_path, content, message):
    (tmp_path / "rows.json").write_text(content)
    with pytest.raises(DatasetError, match=message):
        load_nearid(bench_root, [], split_file=tmp_path / "rows.json")


def test_unknown_split(bench_root):
    with pytest.raises(DatasetError, match=r"NearID: no row has split 'train' \(splits present: test, val\)"):
        load_nearid(bench_root, [], split="train")


def test_misaligned_distractors_are_refused(bench_root):
    with pytest.raises(
        DatasetError, match=r"NearID-Shifted\[row 2\]\.id is 47 but NearID\[row 2\]\.id is 31 \(2 rows differ\)"
    ):
        load_nearid(bench_root, ["Shifted"])
    with pytest.raises(DatasetError, match=r"NearID-Short: 3 rows but NearID has 4"):
        load_nearid(bench_root, ["Short"])


def test_missing_column(tmp_path):
    DatasetDict({"train": positives_rows().remove_columns("masks2")}).save_to_disk(tmp_path / "NearID")
    with pytest.raises(DatasetError, match=r"NearID: missing column 'masks2' \(a NearID positives dataset needs"):
        load_nearid(tmp_path, [])


def test_explicit_source_location(bench_root):
    bench = load_nearid(bench_root / "NearID", [f"Mine={bench_root / 'NearID-B'}"], split="test")
    assert bench.source_names == ["Mine"]
    assert decoded_colour(bench[0].distractor("Mine", 0)) == colour(0, 0, 2)


def test_missing_dataset_and_offline_hub(tmp_path):
    with pytest.raises(DatasetError, match=r"NearID-Nope: no such dataset folder"):
        load_nearid(tmp_path / "NearID-Nope", [])
    with pytest.raises(
        DatasetError, match=r"dataset 'Aleksandar/NearID' is not available on this machine.*--repo-type dataset"
    ):
        load_nearid("Aleksandar/NearID", [])


def test_mask_of_wrong_shape_names_dataset_row_and_column(tmp_path):
    rows = positives_rows()
    bad = rows.to_dict()
    bad["masks1"][0] = png(255, size=(4, 8), mode="L")
    DatasetDict({"train": Dataset.from_dict(bad, features=positives_features())}).save_to_disk(tmp_path / "NearID")
    view = load_nearid(tmp_path, [], split="test")[0].views[0]
    with pytest.raises(MaskError, match=r"NearID\[row 0\]\.masks1: mask is 4x8 but its image is 8x8"):
        load_masked(view.image, view.mask)


# ------------------------------------------------------------------------------------------- MTG
def mtg_dataset(n: int, part_pixels: list[int]):
    rows = {name: [] for name in mtg_features()}
    for i in range(n):
        obj = np.zeros((10, 10), dtype=np.uint8)
        obj[:4, :] = 255  # 40 object pixels
        part = np.zeros((10, 10), dtype=np.uint8)
        part.flat[: part_pixels[i]] = 255
        for k in (1, 2):
            rows[f"image_{k}_original"].append(png(colour(i, k)))
            rows[f"image_{k}_inpainted"].append(png(colour(i, k, 1)))
            rows[f"image_{k}_object_mask"].append(_encode(obj))
            rows[f"image_{k}_part_mask"].append(_encode(part) if k == 1 else None)
    return Dataset.from_dict(rows, features=mtg_features())


def _encode(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def test_mtg_oracles_by_hand(tmp_path):
    DatasetDict({"train": mtg_dataset(1, [4]), "test": mtg_dataset(2, [10, 30])}).save_to_disk(tmp_path / "mtg")
    test = load_mtg(tmp_path / "mtg", split="test")
    assert len(test) == 2 and len(load_mtg(tmp_path / "mtg", split="train")) == 1
    assert test[0].oracle(0) == pytest.approx(1 - 10 / 40)
    assert test[1].oracle(0) == pytest.approx(1 - 30 / 40)
    assert test[1].oracle(1) == 0.0  # missing part mask: oracle 0, as in the reference code
    assert test[1].part_masks[1] is None
    assert decoded_colour(test[1].edited[1]) == colour(1, 2, 1)
    assert test[0].originals[0].key == "mtg:test[row 0].image_1_original"


def test_edit_oracle_edge_cases():
    obj = np.zeros((4, 4), bool)
    assert edit_oracle(obj, obj) == 0.0  # empty object
    obj[:2] = True
    big_part = np.ones((4, 4), bool)
    assert edit_oracle(obj, big_part) == 0.0  # an edit larger than the object is clipped, not negative
    small = np.zeros((8, 8), bool)
    small[0, :2] = True  # 2/64 of its image vs an object covering 8/16 of its image
    assert edit_oracle(obj, small) == pytest.approx(1 - (2 / 64) / (8 / 16))


def test_mtg_missing_column(tmp_path):
    DatasetDict({"test": mtg_dataset(1, [1]).remove_columns("image_2_inpainted")}).save_to_disk(tmp_path / "mtg")
    with pytest.raises(DatasetError, match=r"mtg:test: missing column 'image_2_inpainted'"):
        load_mtg(tmp_path / "mtg")


# ------------------------------------------------------------------------------ folder layout
def test_folder_layout(tmp_path):
    def save(path, value):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), value).save(path)

    save(tmp_path / "mug" / "view1.png", (1, 0, 0))
    save(tmp_path / "mug" / "view3.jpg", (3, 0, 0))
    Image.new("L", (8, 8), 255).save(tmp_path / "mug" / "view3_mask.png")
    save(tmp_path / "mug" / "distractors" / "flux" / "view3.png", (0, 0, 3))
    save(tmp_path / "mug" / "distractors" / "flux" / "view2.png", (0, 0, 2))  # no view 2: dropped
    (tmp_path / "mug" / "meta.json").write_text(json.dumps({"category": "mug", "split": "test"}))
    save(tmp_path / "lonely" / "view1.png", (9, 9, 9))  # one view: skipped
    bench = load_folder(tmp_path)
    assert bench.source_names == ["flux"] and len(bench) == 1
    mug = bench[0]
    assert mug.id == "mug" and mug.view_slots == [0, 2] and mug.category == "mug"
    assert mug.views[0].mask is None and mug.views[2].mask is not None
    assert decoded_colour(mug.distractor("flux", 2)) == (0, 0, 3)
    assert mug.distractor("flux", 1) is None
    assert bench.report.skipped_rows == {"fewer than 2 views": 1} and bench.report.dropped_distractors == {"flux": 1}
    assert len(load_folder(tmp_path, split="val")) == 0


def test_folder_two_files_for_one_slot(tmp_path):
    for name in ("view1.png", "view1.jpg", "view2.png"):
        (tmp_path / "x").mkdir(exist_ok=True)
        Image.new("RGB", (4, 4)).save(tmp_path / "x" / name)
    with pytest.raises(DatasetError, match=r"view1\.jpg and .*view1\.png: two files for the same slot"):
        load_folder(tmp_path)
