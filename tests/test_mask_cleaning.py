"""Evaluation-time mask cleaning (spec 12.2): OpenCV's result, hand-made cases, dilation."""

from __future__ import annotations

import io
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from nearid.images.decode import ImageRef, apply_mask, load_mask
from nearid.images.mask_cleaning import MaskDilationError, clean_mask, cleaned_mask_ref, dilate_mask
from nearid.io.errors import NearIDError


def _reference(grey: np.ndarray) -> np.ndarray:
    """The authors' call sequence, written out independently of ``clean_mask``."""
    blurred = cv2.GaussianBlur(grey, (5, 5), 0)
    binary = np.where(blurred > 10, 255, 0).astype(np.uint8)
    kernel = np.ones((5, 5), np.uint8)
    binary = cv2.morphologyEx(cv2.morphologyEx(binary, cv2.MORPH_CLOSE, kernel), cv2.MORPH_OPEN, kernel)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    out = np.zeros_like(binary)
    if contours:
        areas = [cv2.contourArea(c) for c in contours]
        cv2.drawContours(out, contours, int(np.argmax(areas)), 255, cv2.FILLED)
    return out


def _blobby(seed: int, shape=(71, 93)) -> np.ndarray:
    """Random smooth blobs with ragged grey edges, specks and pinholes."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=rng.uniform(3, 8))
    grey = np.clip((field - field.mean()) / field.std() * 120 + rng.uniform(-60, 60), 0, 255)
    noise = rng.random(shape)
    grey[noise < 0.01] = 255  # specks
    grey[noise > 0.99] = 0  # pinholes
    return grey.astype(np.uint8)


def _disk(shape, centre, radius) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


@pytest.mark.parametrize("seed", range(12))
def test_equals_opencv_on_random_blobby_masks(seed):
    grey = _blobby(seed)
    out = clean_mask(grey)
    assert out.mode == "L" and out.size == (grey.shape[1], grey.shape[0])
    array = np.asarray(out)
    assert set(np.unique(array)) <= {0, 255}
    np.testing.assert_array_equal(array, _reference(grey))


def test_greyscale_conversion_is_pils_L():
    rgb = np.zeros((40, 40, 3), np.uint8)
    rgb[5:35, 5:35] = (0, 0, 90)  # L = 90 * 114 / 1000 = 10.26 -> 10: not > 10, so nothing survives ...
    rgb[10:30, 10:30] = (0, 60, 0)  # ... but L = 60 * 587 / 1000 = 35 does
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    np.testing.assert_array_equal(np.asarray(clean_mask(rgb)), _reference(grey))
    assert np.asarray(clean_mask(rgb))[6, 6] == 0 and np.asarray(clean_mask(rgb))[20, 20] == 255


def test_opencv_sigma_zero_blur_is_the_binomial_kernel():
    """OpenCV's 5x5 blur with sigma 0 is [1 4 6 4 1]/16 (its small-kernel table, not sigma 1.1),
    reflect-101 borders, rounded half up: checked against numpy so the doc's claim stays true."""
    grey = _blobby(99)
    k = np.array([1, 4, 6, 4, 1], np.int64)
    padded = np.pad(grey.astype(np.int64), 2, mode="reflect")
    rows = sum(k[i] * padded[:, i : i + grey.shape[1]] for i in range(5))
    both = sum(k[i] * rows[i : i + grey.shape[0]] for i in range(5))
    np.testing.assert_array_equal(cv2.GaussianBlur(grey, (5, 5), 0), (both + 128) >> 8)


def test_a_speck_of_noise_is_removed():
    mask = np.zeros((60, 60), np.uint8)
    mask[40, 40] = 255
    # alone: the blur spreads it to 3x3 above the threshold, the 5x5 opening removes it
    assert not np.asarray(clean_mask(mask)).any()
    mask[_disk(mask.shape, (20, 20), 10)] = 255
    out = np.asarray(clean_mask(mask))
    assert out[20, 20] == 255 and not out[35:, 35:].any()


def test_a_pinhole_is_filled():
    mask = np.where(_disk((60, 60), (30, 30), 15), 255, 0).astype(np.uint8)
    mask[29:31, 29:31] = 0
    out = np.asarray(clean_mask(mask))
    assert (out[29:31, 29:31] == 255).all()
    assert (out[_disk(mask.shape, (30, 30), 15)] == 255).all()


def test_only_the_largest_of_two_blobs_is_kept():
    mask = np.zeros((60, 90), np.uint8)
    mask[_disk(mask.shape, (30, 25), 14)] = 255  # area ~615
    mask[20:40, 60:80] = 255  # area 400
    out = np.asarray(clean_mask(mask))
    assert (out[_disk(mask.shape, (30, 25), 14)] == 255).all()
    assert not out[:, 50:].any()
    mask[15:45, 55:85] = 255  # now the square (900) is the larger
    out = np.asarray(clean_mask(mask))
    assert not out[:, :45].any() and (out[15:45, 55:85] == 255).all()


def test_a_clean_mask_is_unchanged_up_to_its_blurred_border():
    """A rectangle grows by the blur's reach (2 px: 255/16 > 10 at distance 2, 0 at 3); at each
    corner the three pixels whose blurred value is <= 10 ((2,2): 1, (1,2) and (2,1): 5) stay off."""
    mask = np.zeros((40, 50), np.uint8)
    mask[10:30, 12:40] = 255
    expected = np.zeros_like(mask)
    expected[8:32, 10:42] = 255
    for y0, x0, sy, sx in [(8, 10, 1, 1), (8, 41, 1, -1), (31, 10, -1, 1), (31, 41, -1, -1)]:
        for dy, dx in [(0, 0), (0, 1), (1, 0)]:
            expected[y0 + sy * dy, x0 + sx * dx] = 0
    np.testing.assert_array_equal(np.asarray(clean_mask(mask)), expected)
    # a disk: every change lies within 2 px of its edge
    disk = _disk((64, 64), (32, 32), 20)
    out = np.asarray(clean_mask(np.where(disk, 255, 0).astype(np.uint8))) > 0
    near_edge = ndimage.binary_dilation(disk, iterations=2) & ~ndimage.binary_erosion(disk, iterations=2)
    assert (out != disk).any() and not ((out != disk) & ~near_edge).any()


def test_every_input_kind_gives_the_same_result(tmp_path):
    grey = _blobby(3)
    expected = _reference(grey)
    path = tmp_path / "mask.png"
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(path)
    data = path.read_bytes()
    for source in (grey, Image.fromarray(grey), path, str(path), data, ImageRef("m", fetch=lambda: data)):
        np.testing.assert_array_equal(np.asarray(clean_mask(source)), expected)
    boolean = grey > 128
    np.testing.assert_array_equal(np.asarray(clean_mask(boolean)), _reference(boolean.astype(np.uint8) * 255))
    with pytest.raises(NearIDError, match="float64"):
        clean_mask(grey.astype(np.float64))
    with pytest.raises(NearIDError, match=r"missing\.png"):
        clean_mask(tmp_path / "missing.png")
    with pytest.raises(NearIDError, match="not an image"):
        clean_mask(io.BytesIO(b"abc").getvalue())


@pytest.mark.parametrize("k", [1, 3, 5, 9])
def test_dilation_is_a_max_filter_on_the_binarised_mask(k):
    grey = _blobby(k)
    grey[grey > 0] //= 4  # values 1..63: binarisation (> 0), not the 10 threshold, decides
    expected = ndimage.maximum_filter((grey > 0).astype(np.uint8) * 255, size=k, mode="constant", cval=0)
    out = dilate_mask(grey, k)
    assert out.mode == "L"
    np.testing.assert_array_equal(np.asarray(out), expected)


def test_clean_mask_dilates_after_cleaning():
    grey = _blobby(5)
    cleaned = _reference(grey)
    expected = ndimage.maximum_filter(cleaned, size=7, mode="constant", cval=0)
    np.testing.assert_array_equal(np.asarray(clean_mask(grey, dilate=7)), expected)
    np.testing.assert_array_equal(np.asarray(clean_mask(grey, dilate=1)), cleaned)


@pytest.mark.parametrize("k", [0, 2, 4, -1, -3, True, 2.0])
def test_dilation_size_must_be_odd_and_positive(k):
    with pytest.raises(MaskDilationError, match="odd number"):
        dilate_mask(np.zeros((8, 8), np.uint8), k)
    assert issubclass(MaskDilationError, NearIDError) and issubclass(MaskDilationError, ValueError)


@pytest.mark.parametrize("k", [2, -1])
def test_clean_mask_refuses_an_even_or_negative_dilation(k):
    with pytest.raises(MaskDilationError):
        clean_mask(np.zeros((8, 8), np.uint8), dilate=k)


def test_cleaned_mask_ref_feeds_the_masked_loading_path(tmp_path):
    grey = _blobby(8)
    path = tmp_path / "m.png"
    Image.fromarray(grey).save(path)
    raw = ImageRef("NearID[row 2].masks1", fetch=path.read_bytes)
    ref = cleaned_mask_ref(raw)
    assert ref.key == "NearID[row 2].masks1|clean" and ref != raw
    assert cleaned_mask_ref(raw, dilate=3).key == "NearID[row 2].masks1|clean,dilate=3"
    assert cleaned_mask_ref(path).key == f"{path}|clean"
    np.testing.assert_array_equal(load_mask(ref), _reference(grey) > 0)
    image = Image.new("RGB", (grey.shape[1], grey.shape[0]), (200, 100, 50))
    masked = np.asarray(apply_mask(image, ref, name=ref.key))
    np.testing.assert_array_equal(masked.any(axis=-1), _reference(grey) > 0)
    with pytest.raises(MaskDilationError):
        cleaned_mask_ref(raw, dilate=2)


def test_importing_the_cli_and_images_does_not_import_opencv():
    code = "import sys, nearid.cli.app, nearid.images.decode; assert 'cv2' not in sys.modules, 'cv2 imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
