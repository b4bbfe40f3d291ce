"""Evaluation-time mask cleaning, as the authors clean masks (bench ``--foreground``, score ``--mask-folder``;
spec section 12.2).

Masks that come with a benchmark or from a segmenter have specks of noise, pinholes and stray blobs;
the authors clean each one before it blacks out the background, and a masked score is comparable with
theirs only if the masks are cleaned the same way. The steps, each OpenCV's:

1. greyscale (PIL ``L``);
2. ``cv2.GaussianBlur(mask, (5, 5), 0)``. With sigma 0 OpenCV's documented rule gives
   sigma = 0.3·((5 − 1)·0.5 − 1) + 0.8 = 1.1, but for kernels of size ≤ 7 it actually uses a fixed
   table: for 5 the binomial kernel [1, 4, 6, 4, 1] / 16 (tested). We call OpenCV, so we get what the
   authors got;
3. threshold: > 10 → 255, else 0;
4. morphological close, then open, each with a 5×5 all-ones kernel;
5. keep only the external contour of largest area, drawn filled.

Optional dilation (the authors' option, off by default): binarise (> 0), max filter of odd size k.

Training does not clean masks (the authors' training code does not either). OpenCV
(opencv-python-headless) is imported only when a mask is cleaned, so the CLI does not pay for it at
start-up. This module must not import :mod:`nearid.images.decode` at module level: ``images`` re-exports
:func:`clean_mask` from here.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from nearid.io.errors import MaskError, NearIDError

if TYPE_CHECKING:
    from nearid.images.decode import ImageInput

#: The authors' constants (spec 12.2).
BLUR_KERNEL = 5
THRESHOLD = 10
MORPH_KERNEL = 5


class MaskDilationError(NearIDError, ValueError):
    """A mask dilation size that is not an odd number >= 1."""


def _check_dilation(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 or k % 2 == 0:
        raise MaskDilationError(f"mask dilation size {k!r} is not an odd number >= 1; use 1, 3, 5, ...")
    return int(k)


def _grey(mask: ImageInput, name: str | None = None) -> np.ndarray:
    """The mask as an HxW uint8 array, through PIL's ``convert("L")`` as the authors read masks."""
    from nearid.images.decode import ImageRef, open_checked

    if isinstance(mask, ImageRef):
        return _grey(mask.fetch(), name=mask.key)
    if isinstance(mask, np.ndarray):
        if mask.dtype == bool:
            return np.ascontiguousarray(mask.astype(np.uint8) * 255)
        if mask.dtype != np.uint8 or mask.ndim not in (2, 3):
            raise MaskError(
                f"{name or '<array>'}: mask array of dtype {mask.dtype} and shape {mask.shape}; "
                "pass an HxW bool or an HxW[xC] uint8 array"
            )
        mask = Image.fromarray(mask)
    elif not isinstance(mask, Image.Image):
        mask = open_checked(mask, max_pixels=_max_pixels(), name=name or _name(mask))
    return np.ascontiguousarray(np.asarray(mask.convert("L"), dtype=np.uint8))


def _max_pixels() -> int:
    from nearid.images.decode import MAX_PIXELS

    return MAX_PIXELS


def _name(source) -> str | None:
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else None


def clean_mask(mask: ImageInput, *, dilate: int = 0) -> Image.Image:
    """The authors' cleaned mask of ``mask`` (a path, bytes, ``ImageRef``, PIL image or array) as a
    mode-``L`` image of 0 and 255 (see the module docstring). ``dilate``: 0 = off (the default), else
    an odd max-filter size applied to the cleaned mask. A mask with no foreground left after cleaning
    comes back all zeros (using it then fails as an empty mask)."""
    import cv2

    if dilate != 0:
        _check_dilation(dilate)
    grey = _grey(mask)
    blurred = cv2.GaussianBlur(grey, (BLUR_KERNEL, BLUR_KERNEL), 0)
    _, binary = cv2.threshold(blurred, THRESHOLD, 255, cv2.THRESH_BINARY)
    kernel = np.ones((MORPH_KERNEL, MORPH_KERNEL), np.uint8)
    binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, kernel)
    binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, kernel)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cleaned = np.zeros_like(binary)
    if contours:
        largest = max(contours, key=cv2.contourArea)  # the first of equal areas, as Python's max
        cv2.drawContours(cleaned, [largest], -1, 255, thickness=cv2.FILLED)
    result = Image.fromarray(cleaned)  # uint8 HxW: mode L
    return dilate_mask(result, dilate) if dilate else result


def dilate_mask(mask: ImageInput, k: int) -> Image.Image:
    """The authors' mask dilation: binarise (> 0 after greyscale), max filter of odd size ``k``
    (a k×k square; pixels beyond the border do not count), 0/255 mode-``L`` image. ``k = 1`` only
    binarises."""
    import cv2

    k = _check_dilation(k)
    binary = np.where(_grey(mask) > 0, 255, 0).astype(np.uint8)
    if k > 1:
        binary = cv2.dilate(binary, np.ones((k, k), np.uint8))
    return Image.fromarray(binary)


def cleaned_mask_ref(mask, *, dilate: int = 0):
    """An :class:`~nearid.images.decode.ImageRef` of the cleaned ``mask`` (an ``ImageRef`` or a path), for the
    masked loading path (``load_masked`` / ``Encoder.preprocess`` / the embedding plan): its key is the
    mask's key plus ``|clean`` (and ``,dilate=k``), so stores and caches never mix cleaned and raw
    masks; fetching it cleans the mask and returns it PNG-encoded."""
    import io

    from nearid.images.decode import ImageRef

    if dilate != 0:
        _check_dilation(dilate)
    if isinstance(mask, ImageRef):
        key = mask.key
    elif isinstance(mask, (str, os.PathLike)):
        key = os.fspath(mask)
    else:
        raise TypeError(f"cleaned_mask_ref takes an ImageRef or a path, not {type(mask).__name__}")
    suffix = "|clean" + (f",dilate={dilate}" if dilate else "")

    def fetch() -> bytes:
        buffer = io.BytesIO()
        clean_mask(mask, dilate=dilate).save(buffer, format="PNG")
        return buffer.getvalue()

    if isinstance(mask, ImageRef):
        version = mask.version
    else:
        try:
            version = ImageRef.of_file(mask).version
        except OSError:  # reported, naming the mask, when it is used
            version = None
    return ImageRef(key + suffix, fetch, version=version)


#: ``--mask-cleaning`` values: the authors' cleaning (the default when masks are used), or the raw mask.
MASK_CLEANINGS = ("authors", "none")


def evaluation_mask(mask, cleaning: str = "authors", dilate: int = 0):
    """The mask an evaluation cuts with: ``mask`` itself (``cleaning="none"``, or no mask), or its
    :func:`cleaned_mask_ref` (whose key says it is cleaned). Used where the unique (image, mask) keys
    are planned (bench's plan, score's unique set), so one run never mixes cleaned and raw masks."""
    if cleaning not in MASK_CLEANINGS:
        raise NearIDError(f"mask cleaning '{cleaning}' is not one of {', '.join(MASK_CLEANINGS)}")
    if dilate and cleaning == "none":
        raise MaskDilationError(
            f"--mask-dilate {dilate} dilates the cleaned mask; drop it or use --mask-cleaning authors"
        )
    if mask is None or cleaning == "none":
        return mask
    return cleaned_mask_ref(mask, dilate=dilate)


__all__ = ["MASK_CLEANINGS", "MaskDilationError", "clean_mask", "cleaned_mask_ref", "dilate_mask", "evaluation_mask"]
