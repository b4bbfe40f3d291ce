"""What ``--token-cache auto`` estimates for the paper's recipe, counted the way ``nearid train`` counts it.

The paper's training data (spec 3.1-3.4, 4.3): 18,786 NearID train identities (67% with 2 views, 33%
with 3), one distractor per view from each of 4 sources (Flux, Flux_1024, Qwen, Qwen_1328), MTG train
~5,000 samples (4 images, object masks) repeated 4x; 11 epochs at batch 128, masks 0.5/0.2/0.6, flip 0.5,
no jitter or disalignment (the authors' defaults). Stand-in records with the same structure go through
the trainer's own sample construction (:class:`TrainingSet`) and its disk estimate
(:func:`nearid.training.cache_policy.plan`) for SO400M's tokens (729 x 1152 float16), so the count of
distinct (image, mask, flip) inputs is exact for these counts; the real data's rows differ only in
which identities have 3 views. Also times the enumeration (the trainer does it before deciding).

    python benchmarks/paper_cache_estimate.py [--free-gb 2000]
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass

from nearid.data.records import Identity, View
from nearid.images.decode import ImageRef
from nearid.training import SampleRecipe, TrainingSet
from nearid.training.cache_policy import plan

SOURCES = ["Flux", "Flux_1024", "Qwen", "Qwen_1328"]


def ref(key: str) -> ImageRef:
    return ImageRef(key, lambda: b"", version="paper")


@dataclass(frozen=True)
class StandInMTG:
    """An MTG train sample's structure (its oracle is only carried along; any value will do)."""

    row: int
    originals: tuple
    edited: tuple
    object_masks: tuple
    part_masks: tuple = (None, None)

    def oracle(self, k: int) -> float:
        return 0.5


class Bench(list):
    source_names = SOURCES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=18_786)
    parser.add_argument("--three-view-share", type=float, default=6_433 / 19_386)
    parser.add_argument("--mtg", type=int, default=5_000)
    parser.add_argument("--free-gb", type=float, default=2000.0, help="free disk to decide against (GB)")
    args = parser.parse_args()
    identities = Bench()
    three = round(args.identities * args.three_view_share)
    for row in range(args.identities):
        n_views = 3 if row < three else 2
        views = tuple(
            View(ref(f"NearID[row {row}].images{j + 1}"), ref(f"NearID[row {row}].masks{j + 1}"))
            for j in range(n_views)
        )
        views += (None,) * (3 - n_views)
        distractors = {
            s: tuple(ref(f"NearID-{s}[row {row}].nimg{j + 1}") if j < n_views else None for j in range(3))
            for s in SOURCES
        }
        identities.append(Identity(id=row, row=row, views=views, distractors=distractors))
    mtg = [
        StandInMTG(
            row,
            tuple(ref(f"MTG[row {row}].image_{k}_original") for k in (1, 2)),
            tuple(ref(f"MTG[row {row}].image_{k}_inpainted") for k in (1, 2)),
            tuple(ref(f"MTG[row {row}].image_{k}_object_mask") for k in (1, 2)),
        )
        for row in range(args.mtg)
    ]
    training_set = TrainingSet(identities, SOURCES, mtg, SampleRecipe(seed=0))
    steps = 11 * len(training_set.batches(0, 128))
    start = time.perf_counter()
    keys = {slot.key for slot in training_set.slots(range(11), cacheable_only=True)}
    seconds = time.perf_counter() - start
    images = sum(len(i.view_slots) for i in identities) * (1 + len(SOURCES)) + 4 * len(mtg)
    os.environ["NEARID_FREE_BYTES"] = str(int(args.free_gb * 1e9))
    decided = plan("auto", keys=sorted(keys), n_tokens=729, hidden=1152, folder=".")
    print(f"{len(training_set):,} items per epoch, {steps:,} steps; {images:,} images, {len(keys):,} distinct inputs")
    filled = sum(2 * len(i.view_slots) for i in identities) + 4 * len(mtg) * training_set.recipe.mtg_repeat
    print(f"{len(keys) / images:.2f} variants per image; enumerated in {seconds:.1f} s")
    print(f"{filled * 128 / len(training_set):.0f} filled slots (trunk inputs) per step of 128 on average")
    print(decided.line())


if __name__ == "__main__":
    main()
