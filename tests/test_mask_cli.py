"""`nearid mask` with a tiny OWLv2 detector and a tiny SAM built from configs (random weights, offline)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from nearid.cli.app import main
from nearid.data import load_folder
from nearid.distract.masking import MaskConfig, find_images, make_masks, mask_path, parse_box
from nearid.io.errors import NearIDError


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from nearid.tiny.detectors import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("mask-models"))


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    for name, size in (("mug", (48, 64)), ("cup", (40, 40))):
        (root / name).mkdir(parents=True)
        for j in (1, 2):
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / name / f"view{j}.png")
    return root


def _read(path):
    return np.asarray(Image.open(path))


def test_box_to_sam_in_the_folder_layout_that_load_folder_reads(models, photos, capsys):
    _, sam = models
    argv = ["mask", str(photos), "--box", "4,4,30,30", "--sam", str(sam), "--out", str(photos), "--layout", "folder"]
    assert main(argv) == 0
    assert "wrote 4 masks" in capsys.readouterr().out
    for name, shape in (("mug", (48, 64)), ("cup", (40, 40))):
        for j in (1, 2):
            mask = _read(photos / name / f"view{j}_mask.png")
            assert mask.shape == shape and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
    bench = load_folder(photos, [])
    assert all(view.mask is not None for identity in bench for view in identity.views if view is not None)
    assert main(argv) == 2 and "already exists" in capsys.readouterr().err  # no silent overwrite
    assert main([*argv, "--overwrite"]) == 0


def test_text_prompt_through_the_detector_in_the_score_layout(models, photos, tmp_path):
    detector, sam = models
    out = tmp_path / "masks" / "refs"
    result = make_masks(
        MaskConfig(
            inputs=[str(photos)], out=str(out), prompt="a red mug", detector=str(detector), sam=str(sam), threshold=0.0
        )
    )
    images = find_images([str(photos)])
    assert len(result.written) + len(result.failures) == len(images) == 4
    for path, relative in images:
        target = out / relative.with_suffix(".png")
        if str(path) in result.failures:
            assert not target.exists()
        else:
            assert _read(target).shape == _read(path).shape[:2]  # MASKS/refs/<relative path> for `score --masks`
    # an impossible threshold finds nothing: every image is reported, none written
    nothing = make_masks(
        MaskConfig(
            inputs=[str(photos / "cup")],
            out=str(tmp_path / "none"),
            prompt="a mug",
            detector=str(detector),
            sam=str(sam),
            threshold=1.1,
        )
    )
    assert not nothing.written and len(nothing.failures) == 2
    assert "lower --detector-threshold" in next(iter(nothing.failures.values()))


def test_input_errors(photos, tmp_path, capsys):
    with pytest.raises(NearIDError, match="exactly one"):
        make_masks(MaskConfig(inputs=[str(photos)], out=str(tmp_path)))
    with pytest.raises(NearIDError, match="four numbers"):
        parse_box("1,2,3")
    with pytest.raises(NearIDError, match="x1 must exceed"):
        parse_box("5,0,1,9")
    assert main(["mask", str(tmp_path / "nowhere"), "--box", "0,0,4,4", "--out", str(tmp_path / "o")]) == 2
    assert "no such image or folder" in capsys.readouterr().err
    assert (
        main(["mask", str(photos), "--box", "0,0,4,4", "--sam", "facebook/sam-vit-base", "--out", str(tmp_path / "o")])
        == 2
    )
    assert "hf download facebook/sam-vit-base" in capsys.readouterr().err


def test_mask_paths():
    from pathlib import Path

    assert mask_path(Path("M/refs"), Path("a/b.jpg"), "score") == Path("M/refs/a/b.png")
    assert mask_path(Path("R"), Path("mug/view1.jpg"), "folder") == Path("R/mug/view1_mask.png")


def test_no_torchvision_import(models, photos, tmp_path):
    import sys

    _, sam = models
    make_masks(MaskConfig(inputs=[str(photos / "cup")], out=str(tmp_path / "m"), box="1,1,20,20", sam=str(sam)))
    assert "torchvision" not in sys.modules
