"""The synthetic object renderer: determinism, what each distractor rule may change, masks, backgrounds."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from nearid.data import backgrounds, objects
from nearid.data import render as R
from nearid.data.render import (
    DISTRACTOR_RULES,
    PART_FIELDS,
    PART_NAMES,
    ObjectSpec,
    Placement,
    edit_part,
    near_identity,
    render_part_mask,
    sample_background,
    sample_object,
    sample_placement,
)

SIZE = 128
RULE_FIELDS = {
    "part": {"cap_shape", "side_part", "emblem_shape", "base"},
    "recolor": {"body_color", "cap_color", "side_color"},
    "texture": {"texture"},
    "shape": {"body_shape"},
}
SINGLE_ATTRIBUTE_RULES = [rule for rule in DISTRACTOR_RULES if rule != "instance"]


def changed_fields(a: ObjectSpec, b: ObjectSpec) -> set[str]:
    return {f.name for f in dataclasses.fields(a) if getattr(a, f.name) != getattr(b, f.name)}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / (a | b).sum()


def grown(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (-1, -1), (1, -1), (-1, 1)):
        out |= np.roll(mask, (dy, dx), axis=(0, 1))
    return out


def eroded(mask: np.ndarray) -> np.ndarray:
    return ~grown(~mask)


def scene(seed: int):
    rng = np.random.default_rng(seed)
    return sample_object(rng), sample_placement(rng), sample_background(rng, SIZE), rng


SPEC = ObjectSpec(
    body_shape="capsule",
    body_aspect=0.7,
    body_color=(200, 30, 30),
    texture="hstripes",
    texture_color=(30, 60, 200),
    texture_scale=0.25,
    cap_shape="round",
    cap_color=(240, 220, 40),
    side_part="ring",
    side_color=(30, 160, 60),
    emblem_shape="star",
    emblem_color=(250, 250, 250),
    base="legs",
    base_color=(60, 60, 60),
)
CENTRED = Placement(cx=0.5, cy=0.5, scale=0.6, rotation=10.0, flip=False)


def test_same_seed_same_images():
    (spec_a, place_a, bg_a, rng_a), (spec_b, place_b, bg_b, rng_b) = scene(7), scene(7)
    assert (spec_a, place_a) == (spec_b, place_b)
    np.testing.assert_array_equal(bg_a, bg_b)
    for rule in DISTRACTOR_RULES:
        assert near_identity(spec_a, rule, rng_a) == near_identity(spec_b, rule, rng_b)
    assert edit_part(spec_a, rng_a) == edit_part(spec_b, rng_b)
    first, again = R.render(spec_a, place_a, bg_a), R.render(spec_a, place_a, bg_a)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert scene(8)[0] != spec_a


def test_identities_are_varied():
    rng = np.random.default_rng(0)
    specs = [sample_object(rng) for _ in range(2000)]
    assert len(set(specs)) == len(specs)
    assert {s.category for s in specs} == set(R.BODY_SHAPES)
    assert {s.texture for s in specs} == set(R.TEXTURES)
    assert all(s.describe().startswith("a") and s.category in s.describe() for s in specs[:50])


def test_describe_reads_naturally():
    assert SPEC.describe() == (
        "a red capsule with blue horizontal stripes, a round yellow cap, a green ring handle and a white star emblem,"
        " on black legs"
    )


@pytest.mark.parametrize("rule", SINGLE_ATTRIBUTE_RULES)
def test_each_rule_changes_only_what_it_names(rule):
    rng = np.random.default_rng(1)
    for _ in range(60):
        spec = sample_object(rng)
        other = near_identity(spec, rule, rng)
        changed = changed_fields(spec, other)
        assert other != spec and len(changed) == 1 and changed <= RULE_FIELDS[rule], (rule, changed)
        if rule == "recolor":
            (field,) = changed
            assert 70 <= np.linalg.norm(np.subtract(getattr(spec, field), getattr(other, field))) <= 230
            assert {"body_color": "body", "cap_color": spec.cap_shape, "side_color": spec.side_part}[field] != "none"
        if rule == "shape":
            assert other.body_shape in objects.SIMILAR_SHAPES[spec.body_shape]


def test_instance_rule_is_another_object_of_the_same_kind():
    rng = np.random.default_rng(2)
    changed_counts = []
    for _ in range(60):
        spec = sample_object(rng)
        other = near_identity(spec, "instance", rng)
        changed = changed_fields(spec, other)
        assert other != spec and other.category == spec.category and other.body_aspect == spec.body_aspect
        assert not changed & {"body_shape", "body_aspect"}
        changed_counts.append(len(changed))
    # every colour is drawn anew (continuous), and textures and parts often too: far from a one-field edit
    assert min(changed_counts) >= 5 and np.mean(changed_counts) >= 8
    # drawn with the same placement, the distractor covers mostly the original's region (the body is
    # the same; caps, side parts and bases may differ)
    background = sample_background(np.random.default_rng(3), SIZE)
    for seed in range(5):
        other = near_identity(SPEC, "instance", np.random.default_rng(seed))
        a, b = R.render(SPEC, CENTRED, background)[1], R.render(other, CENTRED, background)[1]
        assert (a & b).sum() / (a | b).sum() > 0.6


def test_unknown_rule_and_part_raise():
    with pytest.raises(ValueError, match="unknown distractor rule 'colour'"):
        near_identity(SPEC, "colour", np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown part 'lid'"):
        render_part_mask(SPEC, CENTRED, SIZE, "lid")


def test_render_draws_only_the_object_and_its_shadow():
    background = sample_background(np.random.default_rng(3), SIZE)
    kept = background.copy()
    rgb, mask = R.render(SPEC, CENTRED, background)
    np.testing.assert_array_equal(background, kept)  # drawn on a copy
    assert rgb.shape == (SIZE, SIZE, 3) and rgb.dtype == np.uint8
    assert mask.shape == (SIZE, SIZE) and mask.dtype == bool
    assert 0.1 < mask.mean() < 0.5  # about 0.6 x 0.4 of the frame
    assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())
    changed = (rgb != background).any(-1)
    assert changed[mask].mean() > 0.95
    outside = changed & ~mask
    ys, xs = np.nonzero(mask)
    near = np.zeros_like(mask)
    near[ys.min() - 2 : ys.max() + 8, xs.min() - 8 : xs.max() + 9] = True  # anti-aliased rim and contact shadow
    assert not (outside & ~near).any()
    shadow = outside & ~grown(mask)  # beyond the 1-px anti-aliased rim, pixels only get darker
    assert shadow.any()
    assert (rgb[shadow].astype(int) <= background[shadow].astype(int)).all()


def test_object_leaving_the_frame():
    background = sample_background(np.random.default_rng(4), SIZE)
    rgb, mask = R.render(SPEC, dataclasses.replace(CENTRED, cx=0.02, cy=0.95), background)
    assert mask.any() and mask[:, 0].any()
    rgb, mask = R.render(SPEC, dataclasses.replace(CENTRED, cx=-3.0), background)
    assert not mask.any()
    np.testing.assert_array_equal(rgb, background)
    wide = np.zeros((96, 160, 3), np.uint8)
    rgb, mask = R.render(SPEC, CENTRED, wide)
    assert rgb.shape == (96, 160, 3) and mask.shape == (96, 160) and mask.any()


def test_placements_keep_the_object_in_view():
    rng = np.random.default_rng(5)
    blank = np.zeros((SIZE, SIZE, 3), np.uint8)
    touching = 0
    for _ in range(100):
        placement = sample_placement(rng)
        assert 0.45 <= placement.scale <= 0.75 and -25 <= placement.rotation <= 25
        mask = R.render(sample_object(rng), placement, blank)[1]
        assert mask.sum() > 0.03 * SIZE * SIZE
        touching += mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()
    assert touching <= 10


@pytest.mark.parametrize("rule", ["part", "recolor", "texture"])
def test_distractors_occupy_the_same_silhouette(rule):
    rng = np.random.default_rng(6)
    for _ in range(15):
        spec, placement = sample_object(rng), sample_placement(rng)
        background = sample_background(rng, SIZE)
        original = R.render(spec, placement, background)[1]
        distractor = R.render(near_identity(spec, rule, rng), placement, background)[1]
        assert iou(original, distractor) > (0.6 if rule == "part" else 0.999)


def test_part_masks_lie_inside_the_object():
    rng = np.random.default_rng(8)
    for _ in range(20):
        spec, placement = sample_object(rng), sample_placement(rng)
        mask = R.render(spec, placement, np.zeros((SIZE, SIZE, 3), np.uint8))[1]
        parts = {part: render_part_mask(spec, placement, SIZE, part) for part in PART_NAMES}
        for part, part_mask in parts.items():
            assert part_mask.dtype == bool and not (part_mask & ~mask).any(), part
        shape_of = {"cap": spec.cap_shape, "side": spec.side_part, "emblem": spec.emblem_shape, "base": spec.base}
        for part, shape in shape_of.items():
            assert parts[part].any() == (shape != "none") or part == "side", (part, shape)
        assert parts["texture"].sum() > max(parts[p].sum() for p in ("cap", "emblem"))
        assert not (eroded(parts["emblem"]) & parts["texture"]).any()  # they share at most a rim


def test_edit_part_changes_one_part_and_the_mask_covers_it():
    rng = np.random.default_rng(9)
    seen = set()
    for _ in range(40):
        spec, placement = sample_object(rng), sample_placement(rng)
        background = sample_background(rng, SIZE)
        edited, part = edit_part(spec, rng)
        seen.add(part)
        assert part in PART_NAMES and edited != spec
        assert changed_fields(spec, edited) <= set(PART_FIELDS[part])
        union = render_part_mask(spec, placement, SIZE, part) | render_part_mask(edited, placement, SIZE, part)
        assert union.any()
        before, after = R.render(spec, placement, background)[0], R.render(edited, placement, background)[0]
        differs = (np.abs(before.astype(int) - after.astype(int)) > 8).any(-1)
        if part != "base":  # a new base also moves the contact shadow
            assert (differs & ~grown(union)).sum() <= 0.05 * differs.sum() + 2, part
    assert seen == set(PART_NAMES)


def test_backgrounds_differ_and_are_not_flat():
    rng = np.random.default_rng(10)
    backgrounds = [sample_background(rng, SIZE) for _ in range(24)]
    for background in backgrounds:
        assert background.shape == (SIZE, SIZE, 3) and background.dtype == np.uint8
        assert background.std() > 5
    gaps = [np.abs(a.astype(int) - b.astype(int)).mean() for a, b in itertools.pairwise(backgrounds)]
    assert np.mean(np.array(gaps) > 15) > 0.8
    assert sample_background(np.random.default_rng(1), 256).shape == (256, 256, 3)


def test_procedural_backgrounds_without_photos(monkeypatch):
    monkeypatch.setattr(backgrounds, "_photo_paths", lambda: ())
    assert not backgrounds.photo_backgrounds_available()
    rng_a, rng_b = np.random.default_rng(11), np.random.default_rng(11)
    for _ in range(10):
        background = sample_background(rng_a, 64)
        np.testing.assert_array_equal(background, sample_background(rng_b, 64))
        assert background.shape == (64, 64, 3) and background.std() > 2
