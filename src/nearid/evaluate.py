"""Plan the pairs a benchmark needs, embed each unique image once, and fill similarity tables.

Positives are shared by every distractor source, so a run over 7 sources embeds each view once,
not 7 times; image identity is the :class:`~nearid.images.ImageRef` key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .embedding import embed
from .encoders import Encoder
from .images import ImageRef
from .metrics import VIEW_PAIRS, DiscriminationScore, nearid_scores


@dataclass
class SimilarityTable:
    """One source's similarities, one row per identity: ``pair[i, k]`` = s(p_a, p_b) for the k-th
    pair of ``VIEW_PAIRS``; ``cross[i, a, b]`` = s(p_a, n_b), view a against the distractor in view b's
    background (the authors' ``cross_ab``). NaN where a view or distractor is missing."""

    source: str
    ids: list
    pair: np.ndarray
    cross: np.ndarray

    @property
    def own_background(self) -> np.ndarray:
        """``[N, 3]``: s(p_v, n_v), each view against the distractor in its own background."""
        return np.diagonal(self.cross, axis1=1, axis2=2)

    def scores(self) -> DiscriminationScore:
        return nearid_scores(self.pair, self.own_background)


def pooled_scores(tables: dict[str, SimilarityTable]) -> DiscriminationScore:
    """SSR / PA over several sources, pooled by concatenation (each (identity, source) counts once)."""
    return nearid_scores(np.concatenate([t.pair for t in tables.values()]),
                         np.concatenate([t.own_background for t in tables.values()]))


def unique_images(bench, sources: Sequence[str], *, masks: bool) -> dict[str, tuple[ImageRef, ImageRef | None]]:
    """key -> (image, mask) for every view and distractor the tables need, each key once.

    With ``masks`` a distractor is masked with its view's mask (the paper's protocol), so the key
    of a masked image includes the mask it is cut with.
    """
    plan: dict[str, tuple[ImageRef, ImageRef | None]] = {}
    for identity in bench:
        for j in identity.view_slots:
            view = identity.views[j]
            mask = view.mask if masks else None
            plan.setdefault(image_key(view.image, mask), (view.image, mask))
            for source in sources:
                distractor = identity.distractor(source, j)
                if distractor is not None:
                    plan.setdefault(image_key(distractor, mask), (distractor, mask))
    return plan


def image_key(image: ImageRef, mask: ImageRef | None) -> str:
    """What identifies one embedding: the image, and the mask it is cut with (if any)."""
    return image.key if mask is None else f"{image.key}|mask={mask.key}"


def similarity_tables(
    encoder: Encoder, bench, sources: Sequence[str], *, masks: bool = False, batch_size: int = 32, progress=None
) -> tuple[dict[str, SimilarityTable], int]:
    """Embed the unique images of ``bench`` and fill one table per source; returns (tables, #embedded)."""
    plan = unique_images(bench, sources, masks=masks)
    keys = list(plan)
    vectors = embed(encoder, [plan[k][0] for k in keys], [plan[k][1] for k in keys], batch_size=batch_size, progress=progress)
    index = {key: i for i, key in enumerate(keys)}
    return fill_tables(bench, sources, lambda image, mask: vectors[index[image_key(image, mask)]], masks=masks), len(keys)


def fill_tables(bench, sources: Sequence[str], vector_of, *, masks: bool) -> dict[str, SimilarityTable]:
    """Similarity tables from a ``vector_of(image_ref, mask_ref) -> unit vector`` lookup.

    With ``masks`` the distractor in view j's background is cut with view j's mask, whichever view
    it is compared with (the paper: a distractor uses the silhouette of its positive).
    """
    n = len(bench)
    pair = np.full((n, len(VIEW_PAIRS)), np.nan)
    cross = {source: np.full((n, 3, 3), np.nan) for source in sources}
    ids = []
    for i, identity in enumerate(bench):
        ids.append(identity.id)
        views = {}
        for j in identity.view_slots:
            view = identity.views[j]
            views[j] = vector_of(view.image, view.mask if masks else None)
        for source in sources:
            for b in views:
                distractor = identity.distractor(source, b)
                if distractor is None:
                    continue
                n_b = vector_of(distractor, identity.views[b].mask if masks else None)
                for a, p_a in views.items():
                    cross[source][i, a, b] = float(torch.dot(p_a, n_b))
        for k, (a, b) in enumerate(VIEW_PAIRS):
            if a in views and b in views:
                pair[i, k] = float(torch.dot(views[a], views[b]))
    return {source: SimilarityTable(source, ids, pair, cross[source]) for source in sources}
