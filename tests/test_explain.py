"""nearid.explain: the similarity is the encoder's own, maps are in the input's pixels (resize and centre
crop undone, masks as in embed), what has no patch tokens is refused, and the maps are faithful
(restoring the map's top 12% of a replaced-region pair recovers most of the lost similarity)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import nearid
from nearid.images.geometry import InputGeometry, input_geometry
from nearid.images.processors import DinoEvalProcessor
from nearid.models.explain import ExplainError, explain_pairs


@pytest.fixture(scope="module")
def tiny():
    return nearid.load_encoder("tiny", device="cpu")


def scene(rng, size=96, width=None):
    """Blocks of random colour with noise: structure at the scale of a few patches."""
    width = width or size
    cells = rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(cells).resize((width, size), Image.Resampling.NEAREST)).astype(np.int16)
    img += rng.integers(-20, 20, img.shape).astype(np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


def replaced_region_pairs(count, seed=0, size=96):
    """The reference, and the reference with one square region (35% of the side) from another scene."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(count):
        ref, other = scene(rng, size), scene(rng, size)
        side = int(size * 0.35)
        y, x = rng.integers(0, size - side, 2)
        gen = ref.copy()
        gen[y : y + side, x : x + side] = other[y : y + side, x : x + side]
        pairs.append((Image.fromarray(ref), Image.fromarray(gen)))
    return pairs


def test_similarity_is_the_encoders_own_and_maps_have_the_input_shape(tiny):
    rng = np.random.default_rng(1)
    ref, gen = Image.fromarray(scene(rng, 80, 120)), Image.fromarray(scene(rng, 50, 70))
    result = nearid.explain(tiny, ref, gen)
    expected = nearid.similarity(nearid.embed(tiny, [ref, gen]))[0, 1].item()
    assert abs(result.similarity - expected) < 1e-5
    assert result.reference_map.shape == (80, 120) and result.generated_map.shape == (50, 70)
    assert result.generated_patches.shape == (8, 8)
    assert (result.generated_map >= 0).all() and result.generated_map.max() > 0


def test_a_replaced_region_is_where_the_map_is_highest(tiny):
    rng = np.random.default_rng(2)
    ref = scene(rng, 64)
    gen = ref.copy()
    gen[0:24, 0:24] = scene(rng, 64)[0:24, 0:24]  # patches (rows 0-2, cols 0-2) of the 8x8 grid
    patches = nearid.explain(tiny, Image.fromarray(ref), Image.fromarray(gen)).generated_patches
    assert patches[:3, :3].mean() > 2 * patches[3:, 3:].mean()


def test_geometry_square_resize_by_hand():
    # a 20 x 40 image squashed to 8 x 8 pixels, 2 x 2 patches of 4 pixels: pixel (y, x) -> patch
    # row floor((y + .5) * 8 / 20 / 4), column floor((x + .5) * 8 / 40 / 4)
    geometry = InputGeometry((20, 40), (8, 8), (0, 0, 8, 8))
    index = geometry.patch_index((2, 2))
    assert index[9, 19] == 0 and index[10, 19] == 2 and index[9, 20] == 1 and index[19, 39] == 3
    pixels = geometry.to_pixels(np.array([[1, 2], [3, 4]]))
    assert pixels.shape == (20, 40) and pixels[0, 0] == 1 and pixels[19, 39] == 4


def test_centre_crop_pixels_outside_get_zero(tiny):
    """A CLIP-style processor (shortest side 64, centre crop 64) on a 64 x 128 image: the crop keeps
    columns 32..95, the map is 0 left and right of it and is the patch map, 8 x 8 pixels per patch, inside."""
    from transformers import CLIPImageProcessorPil

    from nearid.models.encoders import TransformersEncoder, nearid_readout

    processor = CLIPImageProcessorPil(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    encoder = TransformersEncoder(
        "tiny-crop", tiny.model, processor, nearid_readout, device="cpu", dtype=torch.float32, dim=tiny.dim
    )
    rng = np.random.default_rng(3)
    ref, gen = Image.fromarray(scene(rng, 64, 128)), Image.fromarray(scene(rng, 64, 128))
    result = nearid.explain(encoder, ref, gen)
    assert result.generated_map.shape == (64, 128)
    assert (result.generated_map[:, :32] == 0).all() and (result.generated_map[:, 96:] == 0).all()
    expected = np.kron(result.generated_patches, np.ones((8, 8), dtype=np.float32))
    np.testing.assert_array_equal(result.generated_map[:, 32:96], expected)
    assert abs(result.similarity - nearid.similarity(nearid.embed(encoder, [ref, gen]))[0, 1].item()) < 1e-5


def test_dino_geometry_uses_torchvision_rounding():
    # resize 73 -> short side 73, long int(73 * 100 / 50) = 146; crop 64 at round((146 - 64) / 2) = 41
    split = DinoEvalProcessor(resize=73, crop=64).split()
    geometry = input_geometry(split, 100, 50)
    assert geometry.resized == (146, 73) and geometry.crop == (41, round((73 - 64) / 2), 64, 64)


def test_masks_work_as_in_embed(tiny, tmp_path):
    rng = np.random.default_rng(4)
    ref, gen = Image.fromarray(scene(rng, 64)), Image.fromarray(scene(rng, 64))
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[16:48, 16:48] = 255
    mask_path = tmp_path / "mask.png"
    Image.fromarray(mask).save(mask_path)
    masked = nearid.explain(tiny, ref, gen, masks=(mask_path, None))
    blacked = np.asarray(ref).copy()
    blacked[mask == 0] = 0
    by_hand = nearid.explain(tiny, Image.fromarray(blacked), gen)
    np.testing.assert_allclose(masked.reference_map, by_hand.reference_map, atol=1e-6)
    expected = nearid.similarity(nearid.embed(tiny, [ref, gen], [mask_path, None]))[0, 1].item()
    assert abs(masked.similarity - expected) < 1e-5


def test_cls_readout_encoder_uses_the_cls_attention():
    from transformers import ViTConfig, ViTModel

    from nearid.models.encoders import TransformersEncoder, cls_token_readout
    from nearid.models.explain import read_images

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    )
    model = ViTModel(config, add_pooling_layer=False)
    encoder = TransformersEncoder(
        "vit", model, DinoEvalProcessor.for_image_size(32), cls_token_readout, device="cpu", dtype=torch.float32
    )
    rng = np.random.default_rng(5)
    ref, gen = Image.fromarray(scene(rng, 40, 60)), Image.fromarray(scene(rng, 40, 60))
    reading = read_images(encoder, [ref])[0]
    assert reading.tokens.shape == (16, 32) and not torch.allclose(reading.weights, torch.full((16,), 1 / 16))
    result = nearid.explain(encoder, ref, gen)
    assert abs(result.similarity - nearid.similarity(nearid.embed(encoder, [ref, gen]))[0, 1].item()) < 1e-5
    assert result.generated_map.shape == (40, 60)
    assert model.config._attn_implementation == "sdpa" and not model.config.output_attentions  # put back


def test_encoders_without_patch_tokens_are_refused(tiny):
    from nearid.models.pair_scorers import EncoderPairScorer

    image = Image.new("RGB", (32, 32))
    with pytest.raises(ExplainError, match="no patch tokens"):
        nearid.explain(nearid.load_encoder("histogram"), image, image)
    with pytest.raises(ExplainError, match="pair scorer"):
        nearid.explain(EncoderPairScorer(tiny), image, image)
    with pytest.raises(ExplainError, match="method"):
        nearid.explain(tiny, image, image, method="occlusion")


def test_each_image_is_read_once_per_batch(tiny, monkeypatch):
    calls = []
    original = tiny.embed
    monkeypatch.setattr(tiny, "embed", lambda pixels: calls.append(len(pixels)) or original(pixels))
    pairs = replaced_region_pairs(3)
    shared = [(pairs[0][0], gen) for _, gen in pairs]  # one reference, three generated images
    explain_pairs(tiny, shared, batch_size=8)
    assert calls == [4]


def test_restoring_the_top_12_percent_recovers_most_of_the_lost_similarity(tiny):
    """Acceptance, smaller case: 8 pairs (the benchmark runs more)."""
    from nearid.eval.faithfulness import restoration_test

    result = restoration_test(tiny, replaced_region_pairs(8, seed=7), qs=(0.12,))
    assert result.by_map[0] >= 0.5, result
    assert result.by_map[0] >= 3 * result.by_random[0], result


def test_pointing_score_by_hand():
    from nearid.eval.faithfulness import pointing_score, top_area

    pixel_map = np.zeros((4, 4))
    pixel_map[0, :2] = [3.0, 1.0]  # mass 4, 3 of it in the part
    part = np.zeros((4, 4), bool)
    part[0, 0] = True
    obj = np.zeros((4, 4), bool)
    obj[0, :] = True  # the part is 1/4 of the object: 3/4 of the mass in it -> 3.0 x chance
    assert pointing_score(pixel_map, part, obj) == pytest.approx(3.0)
    assert np.isnan(pointing_score(np.zeros((4, 4)), part, obj))
    assert top_area(pixel_map, 2 / 16).sum() == 2 and top_area(pixel_map, 2 / 16)[0, :2].all()


def test_gradient_method_localises_on_a_map_head_and_is_refused_elsewhere(tiny):
    rng = np.random.default_rng(2)
    ref = scene(rng, 64)
    gen = ref.copy()
    gen[0:24, 0:24] = scene(rng, 64)[0:24, 0:24]
    result = nearid.explain(tiny, Image.fromarray(ref), Image.fromarray(gen), method="gradient")
    assert result.method == "gradient" and (result.generated_patches >= 0).all()
    assert result.generated_patches[:3, :3].mean() > result.generated_patches[3:, 3:].mean()
    from nearid.models.encoders import TransformersEncoder, mean_token_readout

    mean = TransformersEncoder(
        "mean", tiny.model, tiny.processor, mean_token_readout, device="cpu", dtype=torch.float32
    )
    with pytest.raises(ExplainError, match="MAP-head"):
        nearid.explain(mean, Image.fromarray(ref), Image.fromarray(gen), method="gradient")
