"""Is an identity map faithful? The restoration test and the part-localisation (pointing-game) score.

*Restoration*: on a pair whose generated image is the reference with one region replaced, copy the
reference's pixels back under the map's highest ``q`` of the image area and score again. A map that
shows what the *metric* reacted to gets most of the lost similarity back with a small ``q``; a map
that decorates does no better than copying back a random ``q``. The random baseline restores random
*patches* of the same grid (a random patch map through the same geometry), so both restore regions of
the same shape and size. Fraction recovered = ``(s_restored - s_generated) / (1 - s_generated)``
(the reference against itself scores 1).

*Part localisation* (MTG: the edited part's mask is known): the share of the map's mass inside the
edited part, divided by the part's share of the object -- 1 is chance, higher means the map points at
the part that changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image


def top_area(pixel_map: np.ndarray, q: float) -> np.ndarray:
    """Boolean ``[H, W]``: the ``q`` share of pixels with the highest map values (ties in input order)."""
    flat = np.asarray(pixel_map, dtype=np.float64).ravel()
    count = round(q * flat.size)
    chosen = np.zeros(flat.size, dtype=bool)
    if count:
        chosen[np.argsort(-flat, kind="stable")[:count]] = True
    return chosen.reshape(np.shape(pixel_map))


def restore(reference: Image.Image, generated: Image.Image, area: np.ndarray) -> Image.Image:
    """``generated`` with ``reference``'s pixels copied back where ``area`` is true (same size images)."""
    out = np.asarray(generated.convert("RGB")).copy()
    out[area] = np.asarray(reference.convert("RGB"))[area]
    return Image.fromarray(out)


@dataclass(frozen=True)
class Restoration:
    """Mean fraction of the lost similarity recovered, per ``q``, by the map and by random patches."""

    q: tuple[float, ...]
    by_map: tuple[float, ...]
    by_random: tuple[float, ...]
    pairs: int


def restoration_test(
    encoder,
    pairs: Sequence[tuple[Image.Image, Image.Image]],
    qs: Sequence[float] = (0.05, 0.12, 0.25),
    *,
    method: str = "tokens",
    random_draws: int = 4,
    seed: int = 0,
) -> Restoration:
    """Run the restoration test over ``pairs`` of PIL images (reference, generated) of equal size."""
    from nearid.images.geometry import input_geometry
    from nearid.models.embedding import embed
    from nearid.models.explain import explain_pairs

    rng = np.random.default_rng(seed)
    explanations = explain_pairs(encoder, list(pairs), method=method)
    by_map = {q: [] for q in qs}
    by_random = {q: [] for q in qs}
    for (reference, generated), explanation in zip(pairs, explanations):
        lost = 1.0 - explanation.similarity
        geometry = input_geometry(encoder.pixel_split, generated.height, generated.width)
        grid = explanation.generated_patches.shape
        candidates, owners = [], []
        for q in qs:
            candidates.append(restore(reference, generated, top_area(explanation.generated_map, q)))
            owners.append(("map", q))
            for _ in range(random_draws):
                noise = rng.random(grid).astype(np.float32) + 1.0  # every patch inside the crop above 0
                candidates.append(restore(reference, generated, top_area(geometry.to_pixels(noise), q)))
                owners.append(("random", q))
        vectors = embed(encoder, [reference, *candidates])
        scores = (vectors[1:] @ vectors[0]).numpy()
        random_scores: dict[float, list[float]] = {q: [] for q in qs}
        for (kind, q), score in zip(owners, scores):
            gain = (float(score) - explanation.similarity) / max(lost, 1e-6)
            (by_map[q] if kind == "map" else random_scores[q]).append(gain)
        for q in qs:
            by_random[q].append(float(np.mean(random_scores[q])))
    return Restoration(
        tuple(qs),
        tuple(float(np.mean(by_map[q])) for q in qs),
        tuple(float(np.mean(by_random[q])) for q in qs),
        len(pairs),
    )


def pointing_score(pixel_map: np.ndarray, part: np.ndarray, obj: np.ndarray | None = None) -> float:
    """Share of the map's mass inside ``part`` divided by ``part``'s share of ``obj`` (the whole image
    when ``obj`` is None): 1 = chance, higher = the map points at the part. NaN for an empty map or part."""
    pixel_map = np.asarray(pixel_map, dtype=np.float64)
    part = np.asarray(part, dtype=bool)
    obj = np.ones_like(part) if obj is None else np.asarray(obj, dtype=bool) | part
    mass = pixel_map[obj].sum()
    share = part.sum() / max(obj.sum(), 1)
    if mass <= 0 or share <= 0:
        return float("nan")
    return float(pixel_map[part].sum() / mass / share)


__all__ = ["Restoration", "pointing_score", "restoration_test", "restore", "top_area"]
