"""Colour jitter and disalignment (spec 12.5): keyed draws, parameter ranges, PIL application, cache policy."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from nearid.data import Identity, View
from nearid.data.records import MTGSample
from nearid.images.decode import ImageRef, load_masked
from nearid.training import SampleRecipe, Slot, TrainingSet, mtg_sample, nearid_sample
from nearid.training.augment import Augment, adjust_hue, affine_matrix, apply, color_jitter, disalign

SOURCES = ["A", "B", "C"]


def _ref(key: str) -> ImageRef:
    return ImageRef(key, fetch=lambda: b"")


def _identity(row: int, n_views: int = 3) -> Identity:
    views = tuple(
        View(_ref(f"N[row {row}].images{j + 1}"), _ref(f"N[row {row}].masks{j + 1}")) if j < n_views else None
        for j in range(3)
    )
    distractors = {
        s: tuple(_ref(f"N-{s}[row {row}].nimg{j + 1}") if j < n_views else None for j in range(3)) for s in SOURCES
    }
    return Identity(id=row, row=row, views=views, distractors=distractors)


def _mtg(row: int) -> MTGSample:
    return MTGSample(
        row,
        (_ref(f"M[{row}].o1"), _ref(f"M[{row}].o2")),
        (_ref(f"M[{row}].e1"), _ref(f"M[{row}].e2")),
        (_ref(f"M[{row}].m1"), _ref(f"M[{row}].m2")),
        (None, None),
    )


def _augments(recipe: SampleRecipe, rows: int = 200, epochs: int = 2) -> list[Augment | None]:
    return [
        slot.augment
        for epoch in range(epochs)
        for row in range(rows)
        for slot in nearid_sample(_identity(row), SOURCES, recipe, epoch).slots
    ]


# ------------------------------------------------------------------------------------------ draws
def test_defaults_leave_every_sample_as_before():
    """The keys, permutations and sources of the code before augmentations existed (digest taken from
    that code): the new draws have purposes of their own and are not made at probability 0."""
    digest = hashlib.sha256()
    for seed in (0, 7):
        recipe = SampleRecipe(seed=seed)
        for epoch in range(3):
            for row in range(60):
                sample = nearid_sample(_identity(row, 2 + row % 2), SOURCES, recipe, epoch)
                assert all(slot is None or slot.augment is None for slot in sample.slots)
                digest.update(repr((sample.keys, sample.perm, sample.sources)).encode())
            for i in range(30):
                sample = mtg_sample(_mtg(i), i, recipe, epoch, oracle=(0.5, 0.25))
                digest.update(repr((sample.keys, sample.perm)).encode())
    assert digest.hexdigest() == "61c616fa96258c4e990259cfe2fe66d37776e102fbac46346787e90bf8ae989f"


def test_turning_augmentations_on_changes_no_mask_flip_or_pairing():
    plain, augmented = SampleRecipe(seed=5), SampleRecipe(seed=5, jitter_prob=0.7, affine_prob=0.4)
    for epoch, row in itertools.product(range(3), range(40)):
        a = nearid_sample(_identity(row, 2 + row % 2), SOURCES, plain, epoch)
        b = nearid_sample(_identity(row, 2 + row % 2), SOURCES, augmented, epoch)
        assert (a.perm, a.sources) == (b.perm, b.sources)
        for x, y in zip(a.slots, b.slots):
            assert (x is None) == (y is None)
            if x is not None:
                assert (x.image, x.mask, x.flip) == (y.image, y.mask, y.flip)
        m_a, m_b = (
            mtg_sample(_mtg(row), row, plain, epoch, oracle=(1, 1)),
            mtg_sample(_mtg(row), row, augmented, epoch, oracle=(1, 1)),
        )
        assert [(s.image, s.mask, s.flip) if s else None for s in m_a.slots] == [
            (s.image, s.mask, s.flip) if s else None for s in m_b.slots
        ]


def test_parameter_ranges_reach_both_ends():
    augments = _augments(SampleRecipe(seed=1, jitter_prob=1.0, affine_prob=1.0))
    assert len(augments) == 200 * 2 * 6 and all(a is not None and a.jitter and a.affine for a in augments)
    for name, low, high in [
        ("brightness", 0.8, 1.2),
        ("contrast", 0.8, 1.2),
        ("saturation", 0.8, 1.2),
        ("hue", -0.05, 0.05),
        ("dx", -0.1, 0.1),
        ("dy", -0.1, 0.1),
        ("scale", 0.9, 1.1),
    ]:
        values = np.array([getattr(a, name) for a in augments])
        width = high - low
        assert values.min() >= low and values.max() <= high, name
        assert values.min() < low + 0.01 * width and values.max() > high - 0.01 * width, name  # ends reached
        assert abs(values.mean() - (low + high) / 2) < 0.03 * width, name  # uniform, centred
    orders = {a.order for a in augments}
    assert orders == set(itertools.permutations(range(4)))  # every one of the 24 orders


def test_probabilities_are_per_slot_and_independent():
    augments = _augments(SampleRecipe(seed=2, jitter_prob=0.3, affine_prob=0.6), rows=300)
    jitter = np.array([a is not None and a.jitter for a in augments])
    affine = np.array([a is not None and a.affine for a in augments])
    assert len(augments) == 3600  # standard errors of the rates below ~0.008
    assert abs(jitter.mean() - 0.3) < 0.03 and abs(affine.mean() - 0.6) < 0.03
    assert abs((jitter & affine).mean() - 0.18) < 0.03
    assert not any(a is not None and not a.jitter and a.brightness != 1.0 for a in augments)


def test_draws_are_keyed_not_streamed():
    recipe = SampleRecipe(seed=3, jitter_prob=1.0, affine_prob=1.0)
    a = nearid_sample(_identity(4), SOURCES, recipe, epoch=1)
    assert a == nearid_sample(_identity(4), SOURCES, recipe, epoch=1)
    assert TrainingSet([_identity(i) for i in range(6)], SOURCES, recipe=recipe).sample(4, 1) == replace(a, index=4)
    augments = [s.augment for s in a.slots]
    assert len(set(augments)) == 6  # every slot draws its own
    assert [s.augment for s in nearid_sample(_identity(4), SOURCES, recipe, epoch=2).slots] != augments
    assert [s.augment for s in nearid_sample(_identity(5), SOURCES, recipe, epoch=1).slots] != augments
    other_seed = SampleRecipe(seed=4, jitter_prob=1.0, affine_prob=1.0)
    assert [s.augment for s in nearid_sample(_identity(4), SOURCES, other_seed, epoch=1).slots] != augments


def test_probabilities_are_validated():
    for name in ("jitter_prob", "affine_prob"):
        for bad in (-0.1, 1.5):
            with pytest.raises(ValueError, match=name):
                SampleRecipe(**{name: bad})


def test_keys_name_the_augmentation_and_it_is_not_cached():
    image = _ref("img|1")
    plain = Slot(image)
    jittered = Slot(image, augment=Augment(brightness=1.1, jitter=True))
    moved = Slot(image, augment=Augment(dx=0.05, affine=True))
    other = Slot(image, augment=Augment(brightness=1.1000000000000003, jitter=True))
    keys = {s.key for s in (plain, jittered, moved, other)}
    assert len(keys) == 4
    assert plain.key == "img%7C1" and plain.cacheable
    assert jittered.key.startswith("img%7C1|aug=jitter=b1.1,") and not jittered.cacheable and not moved.cacheable
    assert "|aug=affine=dx0.05,dy0.0,s1.0" in moved.key


def test_training_set_lists_only_cacheable_slots_on_request():
    train = TrainingSet([_identity(i) for i in range(20)], SOURCES, recipe=SampleRecipe(jitter_prob=0.5))
    every = train.slots([0, 1])
    cacheable = train.slots([0, 1], cacheable_only=True)
    assert any(not s.cacheable for s in every) and cacheable
    assert all(s.cacheable for s in cacheable) and [s for s in every if s.cacheable] == cacheable


# ------------------------------------------------------------------------------------------ pixels
def _photo(width=40, height=30, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_neutral_jitter_is_the_identity():
    image = _photo()
    for order in itertools.permutations(range(4)):
        out = color_jitter(image, Augment(order=order, jitter=True))
        np.testing.assert_array_equal(np.asarray(out), np.asarray(image))
    # a hue shift below one step of the 256-step hue byte is no shift (torchvision truncates)
    np.testing.assert_array_equal(np.asarray(adjust_hue(image, 0.0039)), np.asarray(image))


def test_neutral_disalignment_is_the_identity():
    image = _photo()
    np.testing.assert_array_equal(np.asarray(disalign(image, 0.0, 0.0, 1.0)), np.asarray(image))
    np.testing.assert_array_equal(np.asarray(apply(image, Augment(affine=True))), np.asarray(image))
    # a shift that rounds to 0 pixels is no shift: 0.01 * 40 = 0.4
    np.testing.assert_array_equal(np.asarray(disalign(image, 0.01, -0.01, 1.0)), np.asarray(image))


def test_a_known_translation_moves_a_marked_pixel_and_fills_black():
    image = Image.new("RGB", (40, 30), (255, 255, 255))
    image.putpixel((10, 5), (255, 0, 0))
    out = np.asarray(disalign(image, 0.1, 0.1, 1.0))  # 0.1 * 40 = 4 px right, 0.1 * 30 = 3 px down
    assert tuple(out[5 + 3, 10 + 4]) == (255, 0, 0)
    assert (out[:3] == 0).all() and (out[:, :4] == 0).all()  # black where nothing came from
    assert (out[3:, 4:][np.any(out[3:, 4:] != (255, 0, 0), axis=-1)] == 255).all()
    out = np.asarray(disalign(image, -0.05, -0.1, 1.0))  # -2 px, -3 px
    assert tuple(out[5 - 3, 10 - 2]) == (255, 0, 0)
    assert (out[-3:] == 0).all() and (out[:, -2:] == 0).all()


def test_scale_is_about_the_centre():
    image = Image.new("RGB", (40, 40))
    image.paste((255, 255, 255), (10, 10, 30, 30))  # a white square, edges at 10 and 30, centre 20
    up = np.asarray(disalign(image, 0.0, 0.0, 1.1))[..., 0]  # edges move to 20 -/+ 11 = 9, 31
    assert up[20, 9] > 200 and up[20, 8] < 30 and up[20, 30] > 200 and up[20, 31] < 30 and up[20, 20] == 255
    down = np.asarray(disalign(Image.new("RGB", (40, 40), (255, 255, 255)), 0.0, 0.0, 0.9))[..., 0]
    assert down[0, 0] == 0 and down[20, 20] == 255  # zooming out: black margins, centre kept
    assert (
        (down[20, :2] == 0).all() and (down[20, 2:38] == 255).all() and (down[20, 38:] == 0).all()
    )  # 40 * 0.05 = 2 px
    assert (down[:2, 20] == 0).all() and (down[2:38, 20] == 255).all()
    # the inverse map sends an output point back through shift and zoom about the centre
    a, b, c, d, e, f = affine_matrix((40, 30), 0.1, -0.1, 1.25)
    x_out, y_out = 20 + 4 + 1.25 * 6, 15 - 3 + 1.25 * -2  # input (26, 13): 6 right of, 2 above the centre
    assert (a * x_out + b * y_out + c, d * x_out + e * y_out + f) == pytest.approx((26.0, 13.0))


def nearest_affine_reference(pixels: np.ndarray, dx: float, dy: float, scale: float) -> np.ndarray:
    """The authors' call written independently (spec 12.10): shift ``int(dx * W)``, ``int(dy * H)``
    (truncated toward zero), zoom about ``(W / 2, H / 2)``, nearest neighbour, black fill. Each output
    pixel centre (x + 0.5, y + 0.5) is mapped back through the inverse transform and takes the input
    pixel it falls in (PIL's NEAREST on torchvision's inverse matrix)."""
    height, width = pixels.shape[:2]
    tx, ty = int(dx * width), int(dy * height)
    cx, cy = width / 2, height / 2
    xs = (np.arange(width) + 0.5 - cx - tx) / scale + cx
    ys = (np.arange(height) + 0.5 - cy - ty) / scale + cy
    xi, yi = np.floor(xs).astype(int), np.floor(ys).astype(int)
    out = np.zeros_like(pixels)
    inside_x, inside_y = (xi >= 0) & (xi < width), (yi >= 0) & (yi < height)
    out[np.ix_(inside_y, inside_x)] = pixels[np.ix_(yi[inside_y], xi[inside_x])]
    return out


def test_disalignment_truncates_the_shift_as_the_authors():
    """``int()``, not ``round()``: 0.075 x 20 = 1.5 px -> 1; -0.17 x 10 = -1.7 px -> -1."""
    image = Image.fromarray(np.arange(10 * 20 * 3, dtype=np.uint8).reshape(10, 20, 3) % 251)
    pixels = np.asarray(image)
    out = np.asarray(disalign(image, 0.075, -0.17, 1.0))
    np.testing.assert_array_equal(out[:9, 1:], pixels[1:, :19])  # 1 right, 1 up
    assert (out[:, 0] == 0).all() and (out[9] == 0).all()


@pytest.mark.parametrize(
    ("size", "dx", "dy", "scale"),
    [((40, 30), 0.1, -0.1, 1.07), ((37, 23), -0.093, 0.061, 0.913), ((64, 48), 0.0, 0.0, 1.093)],
)
def test_disalignment_is_nearest_neighbour_as_the_authors(size, dx, dy, scale):
    rng = np.random.default_rng(sum(size))
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    got = np.asarray(disalign(Image.fromarray(pixels), dx, dy, scale))
    np.testing.assert_array_equal(got, nearest_affine_reference(pixels, dx, dy, scale))


def test_jitter_operations():
    grey = Image.new("RGB", (8, 8), (100, 100, 100))
    np.testing.assert_array_equal(np.asarray(color_jitter(grey, Augment(brightness=1.2, jitter=True))), 120)
    np.testing.assert_array_equal(
        np.asarray(color_jitter(grey, Augment(saturation=0.8, contrast=1.2, jitter=True))), 100
    )
    two = np.zeros((2, 2, 3), np.uint8)
    two[0] = 50
    two[1] = 150  # mean grey 100: contrast 1.2 gives 100 -/+ 60
    contrasted = np.asarray(color_jitter(Image.fromarray(two), Augment(contrast=1.2, jitter=True)))[:, 0, 0]
    np.testing.assert_allclose(contrasted, [40, 160], atol=1)  # PIL's blend truncates 39.99...
    red = Image.new("RGB", (4, 4), (255, 0, 0))
    green = np.asarray(adjust_hue(red, 1 / 3))[0, 0]  # hue byte 0 -> 85 (120 degrees)
    assert green[1] > 250 and green[0] < 10 and green[2] < 10
    magenta_ish = np.asarray(adjust_hue(red, -0.05))[0, 0]  # wraps to 244: a little blue, no green
    assert magenta_ish[0] == 255 and magenta_ish[1] == 0 and 0 < magenta_ish[2] < 100
    desaturated = np.asarray(color_jitter(red, Augment(saturation=0.8, jitter=True)))[0, 0]
    assert desaturated[0] < 255 and desaturated[1] > 0  # towards grey


# ------------------------------------------------------------------------------------------ token cache
@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    from nearid.data import load_nearid
    from nearid.data.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("synth")
    generate(
        root,
        SynthConfig(identities=6, size=48, seed=1, val=1, test=1, mtg_train=0, mtg_test=0, workers=1),
        progress=False,
    )
    return load_nearid(root, ["Part", "Shape"], split="train")


@pytest.fixture(scope="module")
def encoder():
    from nearid import load_encoder

    return load_encoder("tiny", device="cpu")


def test_pixels_of_an_augmented_slot(bench, encoder):
    from nearid.training.token_cache import pixel_values

    train = TrainingSet(bench, ["Part", "Shape"], recipe=SampleRecipe(seed=2, jitter_prob=1.0, affine_prob=1.0))
    slots = [s for s in train.slots([0]) if s.mask is not None][:2] + [s for s in train.slots([0]) if s.flip][:2]
    assert all(not s.cacheable for s in slots) and any(s.flip for s in slots)
    pixels = pixel_values(slots, encoder.preprocess)
    for slot, row in zip(slots, pixels):
        augmented = apply(load_masked(slot.image, slot.mask), slot.augment)  # on the masked full-size image
        expected = encoder.preprocess([augmented])[0]
        torch.testing.assert_close(row, torch.flip(expected, dims=[-1]) if slot.flip else expected, rtol=0, atol=0)
        plain = pixel_values([Slot(slot.image, slot.mask, slot.flip)], encoder.preprocess)[0]
        assert (row - plain).abs().max() > 0.05  # the augmentation is really applied


def test_fill_skips_augmented_slots_and_slot_tokens_mixes(tmp_path, bench, encoder):
    from nearid.training.token_cache import TokenCache, fill, pixel_values, slot_tokens

    train = TrainingSet(bench, ["Part", "Shape"], recipe=SampleRecipe(seed=2, jitter_prob=0.5))
    slots = train.slots([0])
    cacheable = [s for s in slots if s.cacheable]
    assert 0 < len(cacheable) < len(slots)
    cache = TokenCache.for_model(tmp_path / "cache", encoder.model)
    assert fill(cache, encoder.model, slots, encoder.preprocess, progress=False) == len(cacheable)
    assert cache.keys() == {s.key for s in cacheable}
    batch = [s for s in slots if not s.cacheable][:2] + cacheable[:2]
    mixed = slot_tokens(batch, encoder.model, encoder.preprocess, cache)
    assert mixed.dtype == torch.float32 and mixed.shape == (4, 64, 64)
    torch.testing.assert_close(mixed[2:], cache.load([s.key for s in cacheable[:2]]).float(), rtol=0, atol=0)
    # fresh tokens get the cache's float16 rounding too, so cached and streamed runs train one head (issue 21.5)
    fresh = encoder.model.encode_tokens(pixel_values(batch[:2], encoder.preprocess)).half().float()
    torch.testing.assert_close(mixed[:2], fresh, rtol=0, atol=0)
    uncached = slot_tokens(batch, encoder.model, encoder.preprocess)
    torch.testing.assert_close(uncached[:2], fresh, rtol=0, atol=0)
    torch.testing.assert_close(uncached[2:], mixed[2:], rtol=0, atol=1e-2)  # another batch: last-bit rounding
