"""The records every benchmark, trainer and report works on.

An :class:`Identity` keeps its views *by slot*: ``views[j]`` is view j (or ``None``) and
``distractors[source][j]`` is the distractor inpainted into view j's background. Nothing is ever
compacted, so a distractor can never be paired with another view's background (a defect of the
authors' evaluation code, spec section 10).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from nearid.images.decode import ImageRef, load_mask


@dataclass(frozen=True)
class View:
    image: ImageRef
    mask: ImageRef | None = None


@dataclass(frozen=True)
class Identity:
    id: int | str
    row: int
    views: tuple[View | None, ...]
    distractors: Mapping[str, tuple[ImageRef | None, ...]] = field(default_factory=dict)
    category: str = ""
    description: str = ""
    split: str | None = None

    @property
    def view_slots(self) -> list[int]:
        """Slots that hold a view, in slot order."""
        return [j for j, view in enumerate(self.views) if view is not None]

    def distractor(self, source: str, slot: int) -> ImageRef | None:
        """The ``source`` distractor that shares view ``slot``'s background, if there is one."""
        per_slot = self.distractors.get(source, ())
        return per_slot[slot] if slot < len(per_slot) else None


def edit_oracle(object_mask: np.ndarray | None, part_mask: np.ndarray | None) -> float:
    """MTG oracle o = 1 - |part| / |object|: the share of the object an edit left untouched.

    Areas are mask pixels > 0, each as a fraction of its own mask's size (so masks stored at another
    resolution still compare). As in the reference code a missing mask or an empty object gives 0.
    Where the part mask is larger than the object mask the authors' oracle goes *negative*
    (1 - |part| / |object| unclipped, e.g. -0.261; spec 12.6); ours clips the ratio at 1, so such an
    edit gives 0. A documented difference: an oracle is a share of the object and cannot be below 0.
    """
    if object_mask is None or part_mask is None:
        return 0.0
    object_share = float(np.mean(object_mask))
    if object_share == 0.0:
        return 0.0
    return 1.0 - min(1.0, float(np.mean(part_mask)) / object_share)


@dataclass(frozen=True)
class MTGSample:
    """One Mind-the-Glitch sample: two views of a subject, each with one part re-inpainted."""

    row: int
    originals: tuple[ImageRef, ImageRef]
    edited: tuple[ImageRef, ImageRef]
    object_masks: tuple[ImageRef | None, ImageRef | None]
    part_masks: tuple[ImageRef | None, ImageRef | None]

    def oracle(self, k: int) -> float:
        """Oracle of edited image ``k`` (0 or 1); decodes the two masks."""
        obj, part = self.object_masks[k], self.part_masks[k]
        return edit_oracle(None if obj is None else load_mask(obj), None if part is None else load_mask(part))
