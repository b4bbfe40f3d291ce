"""Issue 21 (items 1, 18, acceptance): `nearid mask` never writes over the photos it reads, refuses an
empty prompt, lists a box outside an image as "no mask", and a second run into one --out equals a fresh one."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from nearid.cli.app import main
from nearid.distract.masking import MaskConfig, make_masks


@pytest.fixture(scope="module")
def sam(tmp_path_factory):
    from nearid.tiny.detectors import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("mask-models"))[1]


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "photos"
    root.mkdir()
    for name in ("a", "b", "c"):
        Image.fromarray(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(root / f"{name}.png")
    return root


def _bytes(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("extra", [[], ["--overwrite"]])
def test_mask_out_is_the_photo_folder_is_refused_with_or_without_overwrite(sam, photos, capsys, extra):
    before = _bytes(photos)
    argv = ["mask", str(photos), "--box", "2,2,20,20", "--sam", str(sam), "--out", str(photos), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "input" in err and len(err.strip().splitlines()) == 1
    assert _bytes(photos) == before  # not one photo replaced


def test_mask_out_inside_the_photo_folder_is_refused(sam, photos, capsys):
    argv = ["mask", str(photos), "--box", "2,2,20,20", "--sam", str(sam), "--out", str(photos / "masks")]
    assert main(argv) == 2
    assert "inside the input folder" in capsys.readouterr().err
    assert not (photos / "masks").exists()


def test_mask_single_file_out_equal_to_an_image_name_is_refused(sam, photos, tmp_path, capsys):
    # the score layout writes OUT/a.png for photos/a.png: with --out photos that is the photo itself
    argv = ["mask", str(photos / "a.png"), "--box", "2,2,20,20", "--sam", str(sam), "--out", str(photos), "--overwrite"]
    before = (photos / "a.png").read_bytes()
    assert main(argv) == 2
    assert "input" in capsys.readouterr().err
    assert (photos / "a.png").read_bytes() == before


@pytest.mark.parametrize("prompt", ["", "   "])
def test_empty_prompt_is_one_line(sam, photos, tmp_path, capsys, prompt):
    argv = ["mask", str(photos), "--prompt", prompt, "--sam", str(sam), "--out", str(tmp_path / "m")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--prompt" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_box_outside_the_image_is_listed_as_no_mask(sam, photos, tmp_path):
    result = make_masks(MaskConfig(inputs=[str(photos)], out=str(tmp_path / "m"), box="100,100,120,130", sam=str(sam)))
    assert not result.written and len(result.failures) == 3
    assert all("outside" in why and "40x32" in why for why in result.failures.values())
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").rglob("*.png"))


def test_mask_twice_after_changed_inputs_and_concurrently_equals_a_fresh_out(sam, photos, tmp_path):
    out, fresh = tmp_path / "m", tmp_path / "fresh"
    config = dict(inputs=[str(photos)], box="2,2,20,20", sam=str(sam), overwrite=True)
    make_masks(MaskConfig(out=str(out), **config))
    rng = np.random.default_rng(7)  # change the inputs: one photo replaced, one removed
    Image.fromarray(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(photos / "a.png")
    (photos / "c.png").unlink()
    make_masks(MaskConfig(out=str(out), **config))
    make_masks(MaskConfig(out=str(fresh), **config))
    got, want = _bytes(out), _bytes(fresh)
    # c.png's mask from the first run is left (mask deletes nothing it did not write this run) ...
    assert set(got) - set(want) == {"c.png"}
    # ... and every mask of the current photos equals a fresh run's bytes
    assert {k: v for k, v in got.items() if k in want} == want


@pytest.mark.slow
def test_mask_concurrently_with_itself_equals_a_fresh_out(sam, photos, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    import nearid

    out, fresh = tmp_path / "m", tmp_path / "fresh"
    argv = [sys.executable, "-m", "nearid", "mask", str(photos), "--box", "2,2,20,20", "--sam", str(sam), "--overwrite"]
    env = {**os.environ, "PYTHONPATH": str(Path(nearid.__file__).parents[1]), "HF_HUB_OFFLINE": "1"}
    runs = [subprocess.Popen([*argv, "--out", str(out)], env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [run.communicate()[1] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], errors
    make_masks(MaskConfig(inputs=[str(photos)], out=str(fresh), box="2,2,20,20", sam=str(sam)))
    assert _bytes(out) == _bytes(fresh)  # each mask is written atomically: no torn or stray file


def test_a_box_partly_outside_the_image_is_clipped_to_it(sam, photos, tmp_path):
    """A --box that runs past the image's edge means the part inside it: SAM is given the clipped box (its
    prompt encoder would otherwise place a corner outside the picture), so the masks equal those of the box
    written inside the image (photos are 40x32)."""
    from nearid.distract.masking import clip_box

    assert clip_box((-5.0, 2.0, 60.0, 50.0), (40, 32)) == (0.0, 2.0, 40.0, 32.0)
    assert clip_box((3.0, 4.0, 10.0, 12.0), (40, 32)) == (3.0, 4.0, 10.0, 12.0)
    past = make_masks(MaskConfig(inputs=[str(photos)], out=str(tmp_path / "past"), box="-5,2,60,50", sam=str(sam)))
    inside = make_masks(MaskConfig(inputs=[str(photos)], out=str(tmp_path / "inside"), box="0,2,40,32", sam=str(sam)))
    assert len(past.written) == len(inside.written) == 3
    assert _bytes(tmp_path / "past") == _bytes(tmp_path / "inside")
