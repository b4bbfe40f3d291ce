"""The paper's 6-slot training samples (spec section 4), a pure function of (seed, epoch, item).

One sample is ``[anchor, positive1, positive2, distractor0, distractor1, distractor2]``. Distractor k
shares the background of the view in slot k, so distractor0 is the *matched-context* distractor: a
different object inpainted into the anchor's own background. Empty slots are ``None`` and are never
embedded (the authors embed zero images there; spec section 10).

A NearID item (spec 4.1):

1. the valid view slots are permuted; the first becomes the anchor, so the anchor changes with the
   epoch;
2. for every valid *original* slot j a distractor source is drawn uniformly among the sources that
   have a distractor for slot j, and that source's ``nimg{j+1}`` follows view j through the
   permutation;
3. role-aware masking: each slot is masked with its role's probability (anchor 0.5, positive 0.2,
   distractor 0.6; paper section 4.1). A masked view uses its own mask; a masked distractor uses the
   mask of the view of the same original slot (the silhouette of the object it replaced); where that
   mask is missing the slot stays unmasked;
4. each slot is flipped horizontally with ``flip_prob``;
5. optional (paper section 4.1, spec 12.5; probability 0 by default, as in the authors' code, since the
   probabilities of the published run are unpublished): colour jitter with ``jitter_prob`` and a
   translate + scale "disalignment" with ``affine_prob``, each drawn per slot with its parameters
   (:mod:`nearid.training.augment`). Their draws use purposes of their own, so turning them on
   changes no anchor, source, mask or flip.

An MTG item (spec 4.2): the two originals are the anchor and the positive (the shuffle may swap them),
their part-edited versions the distractors in the same backgrounds, the object masks the masks, and
the oracle ``o_k`` of each edit rides along for the oracle-ranking loss.

Every random choice is a keyed draw — a hash of (seed, epoch, item, purpose, slot) — never a value
taken from a shared stream. So a sample does not depend on the order items are built in, on other items,
on worker processes, or on how far a previous run got: a resumed run rebuilds exactly the samples an
uninterrupted one would have seen.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from nearid.data.records import Identity, MTGSample
from nearid.images.decode import ImageRef
from nearid.io.errors import NearIDError
from nearid.training.augment import Augment, affine_params, combine, jitter_params

#: Number of slots and their roles.
N_SLOTS = 6
ANCHOR, POSITIVES, DISTRACTORS = 0, (1, 2), (3, 4, 5)
ROLES = ("anchor", "positive", "positive", "distractor", "distractor", "distractor")

# Generator purposes: fixed numbers so that a key never collides across purposes.
_SHUFFLE = 424242  # the authors' anchor-shuffle constant
_SOURCE = 200003  # the authors' per-slot distractor-source constant
_AUGMENT = 300007  # masking and flipping, per slot
_BATCHES = 500009  # the epoch's order of items
_JITTER = 600011  # colour jitter: gate and factors, per slot
_JITTER_ORDER = 700001  # the order of the four colour operations, per slot
_AFFINE = 800011  # disalignment: gate, shift and zoom, per slot
_MTG_DOMAIN = 1_000_003  # MTG items are keyed by (.., _MTG_DOMAIN, index, ..), never like a NearID row

MTG_SOURCE = "MTG"


def _escape(key: str) -> str:
    return key.replace("%", "%25").replace("|", "%7C")


@dataclass(frozen=True)
class Slot:
    """One input of the model: an image, the mask that blacks out its background (or none), a flip,
    and the drawn colour jitter / disalignment (``augment``, ``None`` when neither was drawn)."""

    image: ImageRef
    mask: ImageRef | None = None
    flip: bool = False
    augment: Augment | None = None

    @property
    def key(self) -> str:
        """Names the exact pixels: ``<image>[|mask=<mask>][|flip][|aug=<parameters>]`` (``|`` and ``%``
        inside a key are percent-escaped, so two different inputs never share a key). The token-cache
        key; images and masks are named by their content-versioned ``cache_key``, so data regenerated
        at the same path recomputes exactly the inputs whose table changed."""
        parts = [_escape(self.image.cache_key)]
        if self.mask is not None:
            parts.append("mask=" + _escape(self.mask.cache_key))
        if self.flip:
            parts.append("flip")
        if self.augment is not None:
            parts.append("aug=" + self.augment.key)
        return "|".join(parts)

    @property
    def cacheable(self) -> bool:
        """Worth a token-cache entry: no jitter or disalignment. An augmented slot's parameters are
        drawn afresh per (seed, epoch, item, slot), so its pixels (almost) never recur; caching every
        variant would multiply the cache by the number of epochs for nothing. Such slots run the
        frozen trunk at training time (:func:`~nearid.training.token_cache.slot_tokens`)."""
        return self.augment is None


@dataclass(frozen=True)
class TrainingSample:
    """One item: 6 slots, which of them are valid, the oracle per distractor and where it came from.

    ``pos_mask`` covers slots 1-2, ``neg_mask`` slots 3-5, ``oracle`` and ``sources`` the distractor
    slots 3-5. ``oracle`` is 1.0 for a NearID distractor (an entirely different object), MTG's
    ``o_k`` for a part edit, NaN where the slot is empty. ``perm[k]`` is the original view slot
    (NearID ``images{j+1}``, MTG ``image_{j+1}``) shown in slot k and whose background distractor k
    shares (-1 where empty). ``index`` is the item's position in its :class:`TrainingSet` (MTG: in the
    repeated MTG part; -1 when built directly).
    """

    slots: tuple[Slot | None, ...]
    pos_mask: tuple[bool, bool]
    neg_mask: tuple[bool, bool, bool]
    oracle: tuple[float, float, float]
    row: int
    kind: str
    sources: tuple[str | None, str | None, str | None]
    perm: tuple[int, int, int] = (-1, -1, -1)
    epoch: int = 0
    index: int = -1

    @property
    def anchor(self) -> Slot:
        return self.slots[ANCHOR]

    @property
    def keys(self) -> tuple[str | None, ...]:
        """Each slot's cache key (``None`` for an empty slot)."""
        return tuple(None if slot is None else slot.key for slot in self.slots)


@dataclass(frozen=True)
class SampleRecipe:
    """How samples are drawn. ``mask_probs`` = (anchor, positive, distractor), paper section 4.1.
    ``jitter_prob`` / ``affine_prob``: per-slot probability of colour jitter / disalignment (0 = off,
    the authors' default; the paper used them with unpublished probabilities)."""

    seed: int = 0
    mask_probs: tuple[float, float, float] = (0.5, 0.2, 0.6)
    flip_prob: float = 0.5
    mtg_repeat: int = 4
    jitter_prob: float = 0.0
    affine_prob: float = 0.0

    def __post_init__(self):
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be in [0, 2**63), got {self.seed}")
        if len(self.mask_probs) != 3 or not all(0.0 <= p <= 1.0 for p in self.mask_probs):
            raise ValueError(
                f"mask_probs must be 3 probabilities (anchor, positive, distractor), got {self.mask_probs}"
            )
        for name in ("flip_prob", "jitter_prob", "affine_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability, got {getattr(self, name)}")
        if self.mtg_repeat < 0:
            raise ValueError(f"mtg_repeat must be >= 0, got {self.mtg_repeat}")

    def role_mask_prob(self, slot: int) -> float:
        return self.mask_probs[0 if slot == ANCHOR else 1 if slot in POSITIVES else 2]


def _uniforms(key: tuple[int, ...], n: int) -> list[float]:
    """``n`` (<= 8) uniforms in [0, 1) that are a pure function of ``key``: BLAKE2b of the key, 53 bits
    each. A keyed hash instead of a seeded generator per draw: ~15x cheaper than ``default_rng``
    (a sample makes ~10 draws, an epoch ~40,000 samples)."""
    digest = hashlib.blake2b(struct.pack(f"<{len(key)}q", *key), digest_size=8 * n, person=b"nearid-sample").digest()
    return [(int.from_bytes(digest[8 * i : 8 * i + 8], "little") >> 11) * 2.0**-53 for i in range(n)]


def _permutation(key: tuple[int, ...], items: Sequence[int]) -> list[int]:
    """``items`` (at most 8) in a random order keyed by ``key``."""
    draws = _uniforms(key, len(items))
    return [int(item) for _, item in sorted(zip(draws, items))]


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


def _augment(recipe: SampleRecipe, key: tuple[int, ...], slot: int) -> tuple[bool, bool]:
    """(masked, flipped) of ``slot``: two keyed uniform draws of its own."""
    u_mask, u_flip = _uniforms((*key, _AUGMENT, slot), 2)
    return bool(u_mask < recipe.role_mask_prob(slot)), bool(u_flip < recipe.flip_prob)


def _photometric(recipe: SampleRecipe, key: tuple[int, ...], slot: int) -> Augment | None:
    """The colour jitter and disalignment of ``slot`` (``None`` if neither is drawn). Each has its own
    purpose, so these draws never touch the mask and flip draws of :func:`_augment`."""
    jitter = affine = None
    if recipe.jitter_prob > 0.0:
        gate, *factors = _uniforms((*key, _JITTER, slot), 5)
        if gate < recipe.jitter_prob:
            jitter = jitter_params(tuple(factors), tuple(_permutation((*key, _JITTER_ORDER, slot), (0, 1, 2, 3))))
    if recipe.affine_prob > 0.0:
        gate, *shift_zoom = _uniforms((*key, _AFFINE, slot), 4)
        if gate < recipe.affine_prob:
            affine = affine_params(tuple(shift_zoom))
    return combine(jitter, affine)


def _assemble(
    images: list[ImageRef | None],
    masks: list[ImageRef | None],
    recipe: SampleRecipe,
    key: tuple[int, ...],
) -> tuple[Slot | None, ...]:
    """Slots from per-slot images and the mask each would use, masking, flipping, jittering and
    disaligning by draw."""
    slots = []
    for slot, (image, mask) in enumerate(zip(images, masks)):
        masked, flipped = _augment(recipe, key, slot)  # drawn for empty slots too: no shifting
        if image is None:
            slots.append(None)
        else:
            slots.append(Slot(image, mask if masked else None, flipped, _photometric(recipe, key, slot)))
    return tuple(slots)


def nearid_sample(
    identity: Identity, sources: Sequence[str], recipe: SampleRecipe = SampleRecipe(), epoch: int = 0
) -> TrainingSample:
    """The training sample of one NearID identity in ``epoch`` (see the module docstring)."""
    valid = identity.view_slots
    if len(valid) < 2:
        raise ValueError(f"identity {identity.id} (row {identity.row}) has {len(valid)} view(s); a sample needs 2")
    key = (recipe.seed, epoch, identity.row)
    order = _permutation((*key, _SHUFFLE), valid)  # order[k] = original slot shown in slot k
    chosen: dict[int, tuple[str, ImageRef] | None] = {}
    for j in valid:
        available = [s for s in sources if identity.distractor(s, j) is not None]
        if available:
            source = available[int(_uniforms((*key, _SOURCE, j), 1)[0] * len(available))]
            chosen[j] = (source, identity.distractor(source, j))
        else:
            chosen[j] = None
    perm = order + [-1] * (3 - len(order))
    views = [identity.views[j] if j >= 0 else None for j in perm]
    picks = [chosen[j] if j >= 0 else None for j in perm]
    images = [v.image if v else None for v in views] + [p[1] if p else None for p in picks]
    view_masks = [v.mask if v else None for v in views]
    slots = _assemble(images, view_masks + view_masks, recipe, key)
    neg_mask = tuple(p is not None for p in picks)
    return TrainingSample(
        slots=slots,
        pos_mask=(slots[1] is not None, slots[2] is not None),
        neg_mask=neg_mask,
        oracle=tuple(1.0 if present else math.nan for present in neg_mask),
        row=identity.row,
        kind="nearid",
        sources=tuple(p[0] if p else None for p in picks),
        perm=tuple(perm),
        epoch=epoch,
    )


def mtg_sample(
    sample: MTGSample,
    index: int,
    recipe: SampleRecipe = SampleRecipe(),
    epoch: int = 0,
    *,
    oracle: tuple[float, float] | None = None,
) -> TrainingSample:
    """The training sample of MTG item ``index`` (repeat r of MTG row i is ``r * len(mtg) + i``, so
    repeats draw their own anchor, masks and flips). ``oracle``: ``(o_1, o_2)`` if already known
    (computing it decodes both mask pairs)."""
    key = (recipe.seed, epoch, _MTG_DOMAIN, index)
    order = _permutation((*key, _SHUFFLE), (0, 1))
    if oracle is None:
        oracle = (sample.oracle(0), sample.oracle(1))
    images = [sample.originals[k] for k in order] + [None] + [sample.edited[k] for k in order] + [None]
    masks = [sample.object_masks[k] for k in order] + [None]
    slots = _assemble(images, masks + masks, recipe, key)
    return TrainingSample(
        slots=slots,
        pos_mask=(True, False),
        neg_mask=(True, True, False),
        oracle=(float(oracle[order[0]]), float(oracle[order[1]]), math.nan),
        row=sample.row,
        kind="mtg",
        sources=(MTG_SOURCE, MTG_SOURCE, None),
        perm=(order[0], order[1], -1),
        epoch=epoch,
        index=index,
    )


@dataclass
class TrainingSet:
    """NearID identities followed by ``mtg_repeat`` copies of the MTG samples (the authors' ConcatDataset).

    Index i < len(nearid) is NearID identity i; index ``len(nearid) + r * len(mtg) + m`` is repeat r
    of MTG sample m. ``sources=None`` uses every source the benchmark was loaded with.
    """

    nearid: Sequence[Identity]
    sources: Sequence[str] | None = None
    mtg: Sequence[MTGSample] | None = None
    recipe: SampleRecipe = field(default_factory=SampleRecipe)

    def __post_init__(self):
        if self.sources is None:
            self.sources = list(getattr(self.nearid, "source_names", []))
        self.sources = list(self.sources)
        known = getattr(self.nearid, "source_names", None)
        unknown = [s for s in self.sources if known is not None and s not in known]
        if unknown:
            raise NearIDError(
                f"distractor source(s) {', '.join(unknown)} not loaded with the benchmark; "
                f"loaded: {', '.join(known) or 'none'}"
            )
        self._oracles: dict[int, tuple[float, float]] = {}

    @property
    def n_nearid(self) -> int:
        return len(self.nearid)

    @property
    def n_mtg(self) -> int:
        """MTG items including repeats."""
        return self.recipe.mtg_repeat * len(self.mtg) if self.mtg is not None else 0

    def __len__(self) -> int:
        return self.n_nearid + self.n_mtg

    def sample(self, index: int, epoch: int) -> TrainingSample:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a training set of {len(self)}")
        if index < self.n_nearid:
            return replace(nearid_sample(self.nearid[index], self.sources, self.recipe, epoch), index=index)
        mtg_index = index - self.n_nearid
        position = mtg_index % len(self.mtg)
        item = self.mtg[position]
        if position not in self._oracles:  # decoding masks once per MTG row, not per repeat and epoch
            self._oracles[position] = (item.oracle(0), item.oracle(1))
        return mtg_sample(item, mtg_index, self.recipe, epoch, oracle=self._oracles[position])

    def samples(self, epoch: int, indices: Iterable[int] | None = None) -> list[TrainingSample]:
        """The samples of ``epoch`` (all, in index order, or those at ``indices``)."""
        return [self.sample(i, epoch) for i in (range(len(self)) if indices is None else indices)]

    def batches(self, epoch: int, batch_size: int, *, drop_last: bool = False) -> list[list[int]]:
        """The epoch's batches of indices: a permutation keyed by (seed, epoch) cut into ``batch_size``
        pieces. A run resumed in the middle of an epoch skips the batches it has done and sees exactly
        what an uninterrupted run sees."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        order = _rng(self.recipe.seed, epoch, _BATCHES).permutation(len(self)).tolist()
        cut = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        if drop_last and cut and len(cut[-1]) < batch_size:
            cut.pop()
        return cut

    def slots(self, epochs: Iterable[int], *, cacheable_only: bool = False) -> list[Slot]:
        """Every distinct slot (by key) the given epochs use, in first-use order: what a token cache
        must hold to train those epochs without the trunk. ``cacheable_only``: leave out the jittered
        or disaligned slots (:attr:`Slot.cacheable`), which run the trunk at training time instead."""
        seen: dict[str, Slot] = {}
        for epoch in epochs:
            for item in self.samples(epoch):
                for slot in item.slots:
                    if slot is not None and slot.key not in seen and (slot.cacheable or not cacheable_only):
                        seen[slot.key] = slot
        return list(seen.values())


__all__ = [
    "MTG_SOURCE",
    "N_SLOTS",
    "ROLES",
    "Augment",
    "SampleRecipe",
    "Slot",
    "TrainingSample",
    "TrainingSet",
    "mtg_sample",
    "nearid_sample",
]
