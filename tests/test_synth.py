"""The synthetic benchmark, read back through the very loaders that read the hub."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from nearid.data import load_mtg, load_nearid
from nearid.data.synth import SynthConfig, generate
from nearid.images.decode import load_image, load_mask
from nearid.io.errors import NearIDError

SMALL = SynthConfig(identities=16, size=64, seed=3, val=2, test=6, mtg_train=3, mtg_test=4, workers=1)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "bench"
    summary = generate(root, SMALL, progress=False)
    return root, summary


def pixels(ref):
    return np.asarray(load_image(ref)).astype(np.int16)


def test_layout_and_summary(synth_root):
    root, summary = synth_root
    assert sorted(p.name for p in root.iterdir()) == [
        ".nearid-output.json",  # the marker that lets --overwrite delete this folder later
        "MTG",
        "NearID",
        "NearID-Instance",
        "NearID-Part",
        "NearID-Recolor",
        "NearID-Shape",
        "NearID-Texture",
        "contact_sheet.png",
        "splits",
        "synth.json",
    ]
    assert summary["splits"] == {"train": 8, "val": 2, "test": 6}
    assert json.loads((root / "synth.json").read_text())["identities"] == 16
    assert not (root.parent / "bench.partial").exists()
    from PIL import Image

    assert Image.open(root / "contact_sheet.png").size == (8 * 128, 14 + 6 * 128)  # 3 view columns + 5 sources


def test_splits_match_the_split_column(synth_root):
    root, _ = synth_root
    for split in ("train", "val", "test"):
        by_column = load_nearid(root, [], split=split)
        by_file = load_nearid(root, [], split_file=root / "splits" / f"{split}.json")
        assert by_column.rows == sorted(by_file.rows)
    everything = load_nearid(root, [], split="all")
    assert len(everything) == 16 and everything.report.skipped_rows == {}
    ids = [identity.id for identity in everything]
    assert ids == sorted(ids) and ids != list(range(16))  # sparse, increasing, not row numbers


def test_distractors_share_the_view_background(synth_root):
    root, _ = synth_root
    bench = load_nearid(root, ["Part", "Recolor", "Texture", "Shape", "Instance"], split="all")
    for identity in bench:
        assert len(identity.view_slots) in (2, 3)
        for j in identity.view_slots:
            view = pixels(identity.views[j].image)
            mask = load_mask(identity.views[j].mask)
            assert 0.03 < mask.mean() < 0.8
            far = ~ndimage.binary_dilation(mask, iterations=6)
            for source in bench.source_names:
                distractor = pixels(identity.distractor(source, j))
                assert np.abs(distractor - view)[far].mean() < 3, "the background must be the view's own"
                changed = np.abs(distractor - view).max(-1) > 25  # a part may be added just outside the mask
                assert changed[~far].sum() >= 4, f"{source} distractor must differ on the object"
        other = [pixels(identity.views[j].image) for j in identity.view_slots]
        assert np.abs(other[0] - other[1]).mean() > 10, "views use different backgrounds"


def test_mtg_oracles_and_masks(synth_root):
    root, _ = synth_root
    test = load_mtg(root / "MTG", split="test")
    assert len(test) == 4 and len(load_mtg(root / "MTG", split="train")) == 3
    for sample in test:
        for k in (0, 1):
            assert 0.0 < sample.oracle(k) < 1.0
            part, obj = load_mask(sample.part_masks[k]), load_mask(sample.object_masks[k])
            assert part.any() and (part & ~ndimage.binary_dilation(obj, iterations=8)).sum() < 0.1 * part.sum()
            diff = np.abs(pixels(sample.edited[k]) - pixels(sample.originals[k])).max(-1)
            assert diff[~ndimage.binary_dilation(part, iterations=4)].mean() < 3, "the edit stays in its part"


def test_parquet_with_two_workers_gives_the_same_images(synth_root, tmp_path):
    root, _ = synth_root
    other = tmp_path / "pq"
    generate(other, SynthConfig(**{**SMALL.__dict__, "output_format": "parquet", "workers": 2}), progress=False)
    assert (other / "NearID" / "data" / "train-00000-of-00001.parquet").is_file()
    a = load_nearid(root, ["Shape"], split="test")
    b = load_nearid(other, ["Shape"], split="test")
    assert [i.id for i in a] == [i.id for i in b]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(pixels(x.distractor("Shape", 0)), pixels(y.distractor("Shape", 0)))


def _every_image(root) -> dict[str, bytes]:
    """The encoded bytes of every view, mask, distractor and MTG image, by ``ImageRef`` key."""

    def read(ref):
        fetched = ref.fetch()
        return fetched if isinstance(fetched, bytes) else open(fetched, "rb").read()

    refs = {}
    for identity in load_nearid(root, ["Part", "Recolor", "Texture", "Shape", "Instance"], split="all"):
        for j in identity.view_slots:
            refs.update({r.key: r for r in (identity.views[j].image, identity.views[j].mask)})
            refs.update(
                {
                    r.key: r
                    for r in (identity.distractor(s, j) for s in ("Part", "Recolor", "Texture", "Shape", "Instance"))
                }
            )
    for split in ("train", "test"):
        for sample in load_mtg(root / "MTG", split=split):
            for k in (0, 1):
                refs.update(
                    {
                        r.key: r
                        for r in (sample.originals[k], sample.edited[k], sample.part_masks[k], sample.object_masks[k])
                    }
                )
    return {key: read(ref) for key, ref in refs.items()}


def test_seed_fixes_every_image_and_changes_every_image(tmp_path):
    config = SynthConfig(identities=6, size=32, seed=1, val=1, test=1, mtg_train=2, mtg_test=2, workers=1)
    generate(tmp_path / "a", config, progress=False)
    generate(tmp_path / "b", config, progress=False)
    generate(tmp_path / "c", SynthConfig(**{**config.__dict__, "seed": 2}), progress=False)
    a, b, c = (_every_image(tmp_path / name) for name in "abc")
    assert len(a) > 100 and a.keys() == b.keys()
    assert a == b  # the same seed: byte for byte, every image
    pictures = [
        key for key in a.keys() & c.keys() if "mask" not in key.rsplit(".", 1)[-1]
    ]  # (which rows have 3 views changes too)
    assert len(pictures) > 60
    same = [key for key in pictures if a[key] == c[key]]
    assert not same, f"{len(same)} of {len(pictures)} images did not change with the seed, e.g. {same[:3]}"


def test_refuses_to_overwrite_and_unknown_sources(synth_root, tmp_path):
    root, _ = synth_root
    with pytest.raises(NearIDError, match=r"already exists and is not empty.*--overwrite"):
        generate(root, SMALL, progress=False)
    with pytest.raises(
        NearIDError, match=r"unknown synthetic source 'Blur'; choose from Part, Recolor, Texture, Shape, Instance"
    ):
        generate(tmp_path / "x", SynthConfig(**{**SMALL.__dict__, "sources": ("Blur",)}), progress=False)
