"""The paper's 6-slot training samples: determinism, background pairing, masking, MTG, batches."""

from __future__ import annotations

import math
import re

import pytest

from nearid.data import Identity, View, load_mtg, load_nearid
from nearid.data.synth import SynthConfig, generate
from nearid.images.decode import ImageRef
from nearid.io.errors import NearIDError
from nearid.training import SampleRecipe, Slot, TrainingSet, mtg_sample, nearid_sample

SOURCES = ["Part", "Shape"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    config = SynthConfig(identities=16, size=48, seed=1, val=2, test=4, mtg_train=4, mtg_test=2, workers=1)
    generate(root, config, progress=False)
    return load_nearid(root, SOURCES, split="train"), load_mtg(root / "MTG", split="train")


def _ref(key: str) -> ImageRef:
    return ImageRef(key, fetch=lambda: b"")


def _identity(row: int, n_views: int = 3, sources=SOURCES, missing: dict | None = None) -> Identity:
    """A record without pixels (sample construction never decodes images)."""
    views = tuple(
        View(_ref(f"NearID[row {row}].images{j + 1}"), _ref(f"NearID[row {row}].masks{j + 1}")) if j < n_views else None
        for j in range(3)
    )
    missing = missing or {}
    distractors = {
        s: tuple(
            _ref(f"NearID-{s}[row {row}].nimg{j + 1}") if j < n_views and j not in missing.get(s, ()) else None
            for j in range(3)
        )
        for s in sources
    }
    return Identity(id=1000 + row, row=row, views=views, distractors=distractors)


SLOT_OF = re.compile(r"\[row (\d+)\]\.(?:images|masks|nimg)(\d)$")


def _original_slot(ref: ImageRef) -> tuple[int, int]:
    row, number = SLOT_OF.search(ref.key).groups()
    return int(row), int(number) - 1


def test_same_seed_and_epoch_give_identical_samples(data):
    nearid, mtg = data
    a = TrainingSet(nearid, SOURCES, mtg, SampleRecipe(seed=3))
    b = TrainingSet(nearid, SOURCES, mtg, SampleRecipe(seed=3))
    assert len(a) == len(nearid) + 4 * len(mtg)
    assert a.samples(2) == b.samples(2)
    # order of construction does not matter: building backwards gives the same samples
    backwards = [b.sample(i, 2) for i in reversed(range(len(b)))][::-1]
    assert backwards == a.samples(2)
    assert a.samples(2) != a.samples(3)


def test_anchor_changes_with_epoch_for_some_identities(data):
    nearid, _ = data
    train = TrainingSet(nearid, SOURCES)
    anchors = {i: {train.sample(i, epoch).perm[0] for epoch in range(6)} for i in range(len(nearid))}
    assert sum(len(a) > 1 for a in anchors.values()) >= len(nearid) // 2


def test_distractor_k_shares_the_background_of_slot_k(data):
    nearid, mtg = data
    train = TrainingSet(nearid, SOURCES, mtg)
    checked = 0
    for epoch in range(4):
        for item in train.samples(epoch):
            if item.kind != "nearid":
                continue
            for k in range(3):
                view, distractor = item.slots[k], item.slots[3 + k]
                assert (distractor is not None) == item.neg_mask[k]
                if distractor is None:
                    continue
                row, j = _original_slot(view.image)
                assert (row, j) == (item.row, item.perm[k])
                assert view.image.key == f"NearID[row {row}].images{j + 1}"
                assert distractor.image.key == f"NearID-{item.sources[k]}[row {row}].nimg{j + 1}"
                if distractor.mask is not None:  # a masked distractor uses its positive's mask
                    assert distractor.mask.key == f"NearID[row {row}].masks{j + 1}"
                if view.mask is not None:
                    assert view.mask.key == f"NearID[row {row}].masks{j + 1}"
                checked += 1
    assert checked > 50


def test_distractor_source_drawn_only_among_sources_that_have_that_slot():
    identity = _identity(5, 3, missing={"Part": (1,), "Shape": (2,)})
    for epoch in range(30):
        item = nearid_sample(identity, SOURCES, SampleRecipe(), epoch)
        for k in range(3):
            j = item.perm[k]
            expected = {0: {"Part", "Shape"}, 1: {"Shape"}, 2: {"Part"}}[j]
            assert item.sources[k] in expected and item.neg_mask[k]
    samples = [nearid_sample(identity, SOURCES, SampleRecipe(), e) for e in range(30)]
    used = {item.sources[item.perm.index(0)] for item in samples}  # slot 0 has both: both get drawn
    assert used == {"Part", "Shape"}


def test_masks_only_where_the_mask_exists():
    identity = _identity(2, 2)
    no_mask = Identity(
        identity.id, identity.row, (identity.views[0], View(identity.views[1].image, None), None), identity.distractors
    )
    recipe = SampleRecipe(mask_probs=(1.0, 1.0, 1.0), flip_prob=0.0)
    for epoch in range(10):
        item = nearid_sample(no_mask, SOURCES, recipe, epoch)
        for k in (0, 1):
            j = item.perm[k]
            assert (item.slots[k].mask is None) == (j == 1)
            assert (item.slots[3 + k].mask is None) == (j == 1)
            assert not item.slots[k].flip


def test_masking_rates_follow_the_roles():
    recipe = SampleRecipe()
    counts = {"anchor": [0, 0], "positive": [0, 0], "distractor": [0, 0]}
    flips = [0, 0]
    identities = [_identity(row, 3) for row in range(200)]
    for epoch in range(4):
        for identity in identities:
            item = nearid_sample(identity, SOURCES, recipe, epoch)
            for slot, role in zip(
                item.slots, ("anchor", "positive", "positive", "distractor", "distractor", "distractor")
            ):
                counts[role][0] += slot.mask is not None
                counts[role][1] += 1
                flips[0] += slot.flip
                flips[1] += 1
    assert counts["anchor"][1] >= 800 and counts["positive"][1] >= 1600 and counts["distractor"][1] >= 2400
    for role, expected in zip(("anchor", "positive", "distractor"), recipe.mask_probs):
        rate = counts[role][0] / counts[role][1]
        assert abs(rate - expected) < 0.05, (role, rate)
    assert abs(flips[0] / flips[1] - 0.5) < 0.03


def test_two_view_identities_leave_the_third_slots_empty(data):
    nearid, _ = data
    two_views = [identity for identity in nearid if len(identity.view_slots) == 2]
    assert two_views
    for identity in two_views:
        item = nearid_sample(identity, SOURCES, SampleRecipe(), 0)
        assert item.pos_mask == (True, False)
        assert item.neg_mask == (True, True, False)
        assert item.slots[2] is None and item.slots[5] is None
        assert item.oracle[:2] == (1.0, 1.0) and math.isnan(item.oracle[2])


def test_fewer_than_two_views_is_refused():
    with pytest.raises(ValueError, match="1 view"):
        nearid_sample(_identity(0, 1), SOURCES)


def test_mtg_samples(data):
    nearid, mtg = data
    train = TrainingSet(nearid, SOURCES, mtg)
    oracles = [(item.oracle(0), item.oracle(1)) for item in mtg]
    swaps = set()
    for index in range(len(nearid), len(train)):
        item = train.sample(index, 0)
        m = (index - len(nearid)) % len(mtg)
        sample = mtg[m]
        assert item.kind == "mtg" and item.row == sample.row
        assert item.pos_mask == (True, False) and item.neg_mask == (True, True, False)
        assert item.slots[2] is None and item.slots[5] is None
        a, b = item.perm[:2]
        swaps.add((a, b))
        assert item.slots[0].image == sample.originals[a] and item.slots[1].image == sample.originals[b]
        assert item.slots[3].image == sample.edited[a] and item.slots[4].image == sample.edited[b]
        for k, original in ((0, a), (1, b)):
            for slot in (item.slots[k], item.slots[3 + k]):
                assert slot.mask is None or slot.mask == sample.object_masks[original]
        assert item.oracle[:2] == pytest.approx((oracles[m][a], oracles[m][b]))
        assert math.isnan(item.oracle[2])
        assert 0.0 < item.oracle[0] < 1.0
    assert swaps == {(0, 1), (1, 0)}
    # the repeats of one MTG row are distinct items with their own draws
    repeats = [train.sample(len(nearid) + r * len(mtg), 0) for r in range(4)]
    assert len({tuple(s.keys) for s in repeats}) > 1
    direct = mtg_sample(mtg[0], 0, SampleRecipe(), 0)
    assert direct == train.sample(len(nearid), 0)


def test_batches_are_a_reproducible_permutation(data):
    nearid, mtg = data
    train = TrainingSet(nearid, SOURCES, mtg, SampleRecipe(seed=7))
    batches = train.batches(1, 5)
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(len(train)))
    assert all(len(b) == 5 for b in batches[:-1])
    assert batches == TrainingSet(nearid, SOURCES, mtg, SampleRecipe(seed=7)).batches(1, 5)
    assert batches != train.batches(2, 5)
    dropped = train.batches(1, 5, drop_last=True)
    assert all(len(b) == 5 for b in dropped) and dropped == batches[: len(train) // 5]
    # a resumed run skipping the first 2 batches sees what an uninterrupted run sees
    assert train.batches(1, 5)[2:] == batches[2:]


def test_slot_keys_name_the_exact_pixels():
    image, mask = _ref("NearID[row 3].images2"), _ref("NearID[row 3].masks2")
    keys = {Slot(image).key, Slot(image, mask).key, Slot(image, None, True).key, Slot(image, mask, True).key}
    assert len(keys) == 4
    assert Slot(image).key == "NearID[row 3].images2"
    assert Slot(_ref("a|mask=b")).key != Slot(_ref("a"), _ref("b")).key


def test_unknown_source_is_refused(data):
    nearid, _ = data
    with pytest.raises(NearIDError, match="Flux"):
        TrainingSet(nearid, ["Part", "Flux"])


def test_slots_of_epochs_are_unique(data):
    nearid, mtg = data
    train = TrainingSet(nearid, SOURCES, mtg)
    slots = train.slots([0, 1])
    keys = [slot.key for slot in slots]
    assert len(keys) == len(set(keys))
    used = {k for epoch in (0, 1) for item in train.samples(epoch) for k in item.keys if k is not None}
    assert set(keys) == used
