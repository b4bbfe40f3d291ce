"""Masks the authors' evaluation accepts where a strict reading would stop (bench ``--foreground``; spec 12.10).

* A mask that is empty once cleaned (or empty as given): the authors apply it as it is, so the view,
  and every distractor cut with the same mask, becomes an all-black image that is embedded. Stopping
  the whole run for one bad mask lost everything else; the view now scores what theirs scores.
* A mask of another aspect ratio than its image: the authors resize it to the image with
  nearest-neighbour sampling. :func:`~nearid.images.decode.apply_mask` refuses that (it would cut
  other pixels than the mask's author meant), so the bench plans a resized mask instead.

Both are decided when the bench is planned, by reading each view's mask (cleaned as configured) and
its image's header: the plan then holds ordinary (image, mask) pairs, the workers need nothing new, and
both cases are counted (``ImagePlan.masks_emptied`` / ``masks_resized``, the load report and
``results.json``). ``nearid score`` keeps the strict rule: there a mask is the user's, and an empty one
is a mistake to report.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from nearid.images.decode import ImageRef, load_mask

#: EXIF orientations that swap width and height (what ``exif_transpose`` does on load).
_SWAPPING = {5, 6, 7, 8}


def image_size(image) -> tuple[int, int]:
    """``(width, height)`` of ``image`` (an :class:`ImageRef` or a path) as it loads, from its header."""
    source = image.fetch() if isinstance(image, ImageRef) else image
    handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    with Image.open(handle) as opened:
        width, height = opened.size
        if opened.getexif().get(0x0112) in _SWAPPING:
            width, height = height, width
    return width, height


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def black_image_ref(size: tuple[int, int]) -> ImageRef:
    """An all-black RGB image of ``size``: what a view cut with an empty mask is."""
    width, height = size
    return ImageRef(f"black:{width}x{height}", lambda: _png(np.zeros((height, width, 3), np.uint8)), version="1")


def resized_mask_ref(mask, size: tuple[int, int]) -> ImageRef:
    """``mask`` resized to ``size`` with nearest-neighbour sampling (the authors' rule for a mask of
    another shape); its key says so."""
    width, height = size
    key = mask.key if isinstance(mask, ImageRef) else str(mask)

    def fetch() -> bytes:
        foreground = load_mask(mask).astype(np.uint8) * 255
        return _png(np.asarray(Image.fromarray(foreground).resize(size, Image.Resampling.NEAREST)))

    return ImageRef(f"{key}|resized={width}x{height}", fetch, version=getattr(mask, "version", None))


def accept_mask(image, mask):
    """``(image, mask, outcome)`` as the authors would cut ``image`` with ``mask``: unchanged
    (``outcome`` None); the mask resized to the image (``"resized"``); or, for a mask with no
    foreground, an all-black image and no mask (``"emptied"``)."""
    foreground = load_mask(mask)
    width, height = image_size(image)
    outcome = None
    if foreground.shape != (height, width) and abs(foreground.shape[1] / foreground.shape[0] - width / height) > 0.01:
        mask, outcome = resized_mask_ref(mask, (width, height)), "resized"
        foreground = np.asarray(Image.fromarray(foreground).resize((width, height), Image.Resampling.NEAREST))
    if not foreground.any():
        return black_image_ref((width, height)), None, "emptied"
    return image, mask, outcome


__all__ = ["accept_mask", "black_image_ref", "image_size", "resized_mask_ref"]
