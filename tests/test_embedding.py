"""nearid.embed and nearid.similarity: batching, order, masks, input kinds, progress."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import nearid
from nearid.io.errors import NearIDError


@pytest.fixture(scope="module")
def tiny():
    return nearid.load_encoder("tiny", device="cpu")


def test_batching_does_not_change_results(tiny, rgb_images):
    images = rgb_images * 3
    reference = nearid.embed(tiny, images, batch_size=len(images))
    for batch_size in (1, 2, 4):
        torch.testing.assert_close(nearid.embed(tiny, images, batch_size=batch_size), reference)
    assert reference.shape == (9, tiny.dim) and reference.dtype == torch.float32
    torch.testing.assert_close(reference.norm(dim=-1), torch.ones(9))
    torch.testing.assert_close(reference[0], reference[3])


def test_paths_pil_and_arrays_agree(tiny, rgb_images):
    pil = [Image.open(p) for p in rgb_images]
    arrays = [np.asarray(Image.open(p)) for p in rgb_images]
    expected = nearid.embed(tiny, rgb_images)
    torch.testing.assert_close(nearid.embed(tiny, pil), expected)
    torch.testing.assert_close(nearid.embed(tiny, arrays), expected)


def test_masks_black_out_the_background(tiny, rgb_images, tmp_path):
    mask = np.zeros((40, 48), dtype=np.uint8)
    mask[8:30, 10:30] = 255
    mask_path = tmp_path / "mask.png"
    Image.fromarray(mask).save(mask_path)
    masked = nearid.embed(tiny, rgb_images, [mask_path, None, mask_path])
    by_hand = []
    for path in rgb_images:
        pixels = np.asarray(Image.open(path)).copy()
        pixels[mask == 0] = 0
        by_hand.append(Image.fromarray(pixels))
    expected = nearid.embed(tiny, by_hand)
    torch.testing.assert_close(masked[0], expected[0])
    torch.testing.assert_close(masked[2], expected[2])
    torch.testing.assert_close(masked[1], nearid.embed(tiny, rgb_images[1:2])[0])
    assert not torch.allclose(masked[0], nearid.embed(tiny, rgb_images[:1])[0])


def test_empty_input(tiny):
    assert nearid.embed(tiny, []).shape == (0, tiny.dim)


def test_argument_errors(tiny, rgb_images):
    with pytest.raises(NearIDError, match="3 images but 1 masks"):
        nearid.embed(tiny, rgb_images, [None])
    with pytest.raises(NearIDError, match="batch_size"):
        nearid.embed(tiny, rgb_images, batch_size=0)


def test_progress_bar_when_asked(tiny, rgb_images, capsys):
    nearid.embed(tiny, rgb_images, batch_size=1, progress=True)
    assert "embedding [tiny:0 (untrained)]" in capsys.readouterr().err
    nearid.embed(tiny, rgb_images, batch_size=1, progress=False)
    assert capsys.readouterr().err == ""


def test_similarity_is_cosine():
    a = np.array([[3.0, 4.0], [1.0, 0.0]])
    b = np.array([[0.0, 2.0]])
    np.testing.assert_allclose(nearid.similarity(a, b).numpy(), [[0.8], [0.0]], atol=1e-7)
    np.testing.assert_allclose(nearid.similarity(a).numpy(), [[1.0, 0.6], [0.6, 1.0]], atol=1e-7)


def test_failures_are_collected_in_order(tiny, rgb_images, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    images = [rgb_images[0], bad, rgb_images[1], rgb_images[2]]
    failures = {}
    vectors = nearid.embed(tiny, images, batch_size=3, failures=failures)
    assert list(failures) == [1] and "bad.png: not an image file" in failures[1]
    assert torch.isnan(vectors[1]).all()
    torch.testing.assert_close(vectors[[0, 2, 3]], nearid.embed(tiny, rgb_images))
    with pytest.raises(nearid.NearIDError, match=r"bad\.png"):
        nearid.embed(tiny, images)
