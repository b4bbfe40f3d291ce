"""Mask dilation, feathering, paste-back, and the two measurements that decide between them.

The point of a matched-context distractor is that *only the object* differs from its view. A diffusion
pipeline returns a whole new image: outside the mask every pixel went through the VAE and changed a
little (a texture present only in distractors, which an encoder can learn). Pasting the original back
outside the mask makes the background byte-identical, but can leave a seam at the mask border (another
learnable cue). We dilate the mask (the generator gets room around the object and the seam moves off
its silhouette) and feather *inside* the dilated region, so the blend ramps from the generated pixels
to the original ones across the dilation ring and every pixel outside it is the original's.

:func:`outside_difference` and :func:`seam_strength` measure both effects (docs/distract.md).
"""

from __future__ import annotations

import numpy as np


def dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    """``mask`` grown by ``pixels`` (Euclidean disc), as booleans."""
    mask = np.asarray(mask, dtype=bool)
    if pixels <= 0:
        return mask.copy()
    import cv2

    offsets = np.arange(-pixels, pixels + 1)
    kernel = (np.add.outer(offsets**2, offsets**2) <= pixels**2).astype(np.uint8)  # every pixel within `pixels`
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def blend_weights(region: np.ndarray, feather: int) -> np.ndarray:
    """Per-pixel weight of the generated image: 0 outside ``region``, ramping to 1 over ``feather``
    pixels inward from its border (distance transform), 1 deeper inside. Never > 0 outside ``region``."""
    region = np.asarray(region, dtype=bool)
    if feather <= 0:
        return region.astype(np.float32)
    import cv2

    padded = np.pad(region, 1, mode="edge").astype(np.uint8)  # the image edge is not a border
    distance = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]  # exact Euclidean
    return np.where(region, np.clip(distance / feather, 0.0, 1.0), 0.0).astype(np.float32)


def paste_back(original: np.ndarray, generated: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``generated`` where ``weights`` is 1, ``original`` where it is 0 (exactly), blended between."""
    original, generated = np.asarray(original), np.asarray(generated)
    w = weights[..., None]
    blended = np.rint(original.astype(np.float32) * (1.0 - w) + generated.astype(np.float32) * w)
    return np.where(w > 0, np.clip(blended, 0, 255), original).astype(np.uint8)


def outside_difference(original: np.ndarray, result: np.ndarray, region: np.ndarray) -> float | None:
    """Mean absolute difference (0-255 scale, over channels) of the pixels outside ``region``; ``None``
    (n/a) when ``region`` covers the whole image: nothing of the background is left to compare, and the
    mean of no pixels is not a perfect 0."""
    outside = ~np.asarray(region, dtype=bool)
    if not outside.any():
        return None
    diff = np.abs(np.asarray(original, dtype=np.float32) - np.asarray(result, dtype=np.float32))
    return float(diff[outside].mean())


def inside_difference(original: np.ndarray, result: np.ndarray, region: np.ndarray) -> float:
    """Mean absolute difference inside ``region``: did the generator change the object at all?"""
    inside = np.asarray(region, dtype=bool)
    if not inside.any():
        return 0.0
    diff = np.abs(np.asarray(original, dtype=np.float32) - np.asarray(result, dtype=np.float32))
    return float(diff[inside].mean())


def seam_strength(original: np.ndarray, result: np.ndarray, region: np.ndarray) -> float | None:
    """Excess edge strength on the border of ``region``: the mean absolute step between horizontally or
    vertically adjacent pixels that straddle the border, in ``result`` minus in ``original`` (0-255).

    About 0 means the border is no more visible than the image's own texture there; a hard paste of a
    different image gives a large positive value. ``None`` (n/a) when ``region`` has no border inside
    the image (it covers all of it).
    """
    region = np.asarray(region, dtype=bool)
    a, b = np.asarray(original, dtype=np.float32), np.asarray(result, dtype=np.float32)
    steps_a, steps_b = [], []
    for axis in (0, 1):
        cut = [slice(None)] * 2
        lo, hi = list(cut), list(cut)
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        crossing = region[tuple(lo)] != region[tuple(hi)]
        if crossing.any():
            steps_a.append(np.abs(a[tuple(lo)] - a[tuple(hi)])[crossing])
            steps_b.append(np.abs(b[tuple(lo)] - b[tuple(hi)])[crossing])
    if not steps_a:
        return None if region.all() else 0.0
    return float(np.concatenate(steps_b).mean() - np.concatenate(steps_a).mean())
