"""The paper's photometric and geometric training augmentations, on PIL images (spec 4.1 item 7, 12.5).

The paper says colour jitter, flips and translation/scale were applied per slot; the authors' code has
them with probability 0 by default and the probabilities of the published run are unpublished, so ours
default to 0 as well (:class:`~nearid.training.samples.SampleRecipe` ``jitter_prob``, ``affine_prob``).

* **Colour jitter**, torchvision ``ColorJitter(0.2, 0.2, 0.2, 0.05)`` semantics on a PIL image:
  brightness, contrast and saturation factors uniform in [0.8, 1.2] (``ImageEnhance.Brightness``,
  ``Contrast``, ``Color``, which are what torchvision calls for PIL input), a hue shift uniform in
  [-0.05, 0.05] of the hue circle (PIL's HSV, the hue byte shifted by ``int(hue * 255)`` with
  wrap-around, as torchvision does), applied in a drawn order of the four (torchvision draws a
  permutation too).
* **"Disalignment"**: translate by ``(int(dx * W), int(dy * H))`` whole pixels (truncated toward zero,
  as the authors' call does), dx and dy uniform in [-0.1, 0.1], and scale uniform in [0.9, 1.1] about
  the image centre; nearest neighbour (torchvision's functional ``affine`` default, which the authors'
  call keeps), black fill (spec 12.10). Rounding and bilinear resampling, used before, moved 0.98% of
  the shifts by a pixel and each pixel by 2.5/255 on average.

No torchvision (it cannot be imported here). The parameters are *drawn* in ``samples.py`` from the
keyed hash of (seed, epoch, item, purpose, slot), like masks and flips; this module only applies them,
so resume stays exact. Augmentation is applied to the masked full-resolution image, before the
checkpoint's preprocessing; the flip stays on the preprocessed tensor (horizontal flip commutes with
jitter, and mirrors a translation whose distribution is symmetric).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageEnhance

#: The authors' strengths (spec 12.5): brightness, contrast, saturation (factor 1 ± 0.2), hue (± 0.05).
BRIGHTNESS = CONTRAST = SATURATION = 0.2
HUE = 0.05
#: Translation as a fraction of width / height on each axis, and the zoom range.
TRANSLATE = 0.1
SCALE = (0.9, 1.1)

#: The four colour operations, by the index used in ``Augment.order``.
OPERATIONS = ("brightness", "contrast", "saturation", "hue")


@dataclass(frozen=True)
class Augment:
    """Drawn augmentation parameters of one slot. Defaults are the identity; a field left at its
    default means that part was not applied (``jitter`` / ``affine`` say which parts were drawn)."""

    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    hue: float = 0.0
    order: tuple[int, int, int, int] = (0, 1, 2, 3)
    dx: float = 0.0
    dy: float = 0.0
    scale: float = 1.0
    jitter: bool = False
    affine: bool = False

    @property
    def key(self) -> str:
        """Names the parameters exactly (``repr`` of a float round-trips), for ``Slot.key``."""
        parts = []
        if self.jitter:
            order = "".join(str(i) for i in self.order)
            parts.append(f"jitter=b{self.brightness!r},c{self.contrast!r},s{self.saturation!r},h{self.hue!r},o{order}")
        if self.affine:
            parts.append(f"affine=dx{self.dx!r},dy{self.dy!r},s{self.scale!r}")
        return ";".join(parts)

    def __call__(self, image: Image.Image) -> Image.Image:
        return apply(image, self)


def jitter_params(u: tuple[float, float, float, float], order: tuple[int, int, int, int]) -> Augment:
    """Jitter parameters from four uniforms in [0, 1): factors 1 ± strength, hue ± ``HUE``."""
    b, c, s, h = u
    return Augment(
        brightness=1.0 + BRIGHTNESS * (2.0 * b - 1.0),
        contrast=1.0 + CONTRAST * (2.0 * c - 1.0),
        saturation=1.0 + SATURATION * (2.0 * s - 1.0),
        hue=HUE * (2.0 * h - 1.0),
        order=tuple(order),
        jitter=True,
    )


def affine_params(u: tuple[float, float, float]) -> Augment:
    """Disalignment parameters from three uniforms in [0, 1)."""
    x, y, z = u
    return Augment(
        dx=TRANSLATE * (2.0 * x - 1.0),
        dy=TRANSLATE * (2.0 * y - 1.0),
        scale=SCALE[0] + (SCALE[1] - SCALE[0]) * z,
        affine=True,
    )


def combine(jitter: Augment | None, affine: Augment | None) -> Augment | None:
    """One :class:`Augment` holding whichever parts were drawn (``None`` if neither)."""
    if jitter is None or affine is None:
        return jitter if affine is None else affine
    return replace(jitter, dx=affine.dx, dy=affine.dy, scale=affine.scale, affine=True)


# ------------------------------------------------------------------------------------------ applying
def adjust_hue(image: Image.Image, hue: float) -> Image.Image:
    """Rotate the hue by ``hue`` (in [-0.5, 0.5] of the circle) as torchvision does for PIL images:
    the HSV hue byte plus ``int(hue * 255)``, modulo 256. A shift of 0 returns the image unchanged
    (the HSV round trip itself is lossy)."""
    shift = int(hue * 255)  # truncation toward zero, as torchvision's np.int32(hue * 255)
    if shift == 0:
        return image
    h, s, v = image.convert("HSV").split()
    rotated = ((np.asarray(h, dtype=np.int16) + shift) % 256).astype(np.uint8)
    return Image.merge("HSV", (Image.fromarray(rotated), s, v)).convert("RGB")


_ENHANCERS = {0: ImageEnhance.Brightness, 1: ImageEnhance.Contrast, 2: ImageEnhance.Color}


def color_jitter(image: Image.Image, params: Augment) -> Image.Image:
    """Brightness, contrast, saturation and hue of ``params`` in ``params.order``; a factor of 1 (or a
    hue shift below one step) leaves the image untouched."""
    factors = (params.brightness, params.contrast, params.saturation)
    for op in params.order:
        if op == 3:
            image = adjust_hue(image, params.hue)
        elif factors[op] != 1.0:
            image = _ENHANCERS[op](image).enhance(factors[op])
    return image


def affine_matrix(size: tuple[int, int], dx: float, dy: float, scale: float) -> tuple[float, ...]:
    """PIL's inverse affine coefficients (output pixel -> input pixel) of "scale about the centre,
    then shift by ``(int(dx * W), int(dy * H))``" (torchvision's ``_get_inverse_affine_matrix``
    with angle and shear 0 and centre ``(W / 2, H / 2)``)."""
    width, height = size
    tx, ty = int(dx * width), int(dy * height)
    cx, cy = width * 0.5, height * 0.5
    return (1.0 / scale, 0.0, cx - (cx + tx) / scale, 0.0, 1.0 / scale, cy - (cy + ty) / scale)


def disalign(image: Image.Image, dx: float, dy: float, scale: float) -> Image.Image:
    """Translate and scale ``image`` (nearest neighbour, black fill); the identity returns it unchanged."""
    if int(dx * image.width) == 0 and int(dy * image.height) == 0 and scale == 1.0:
        return image
    return image.transform(
        image.size,
        Image.Transform.AFFINE,
        affine_matrix(image.size, dx, dy, scale),
        resample=Image.Resampling.NEAREST,
        fillcolor=(0,) * len(image.getbands()),
    )


def apply(image: Image.Image, params: Augment | None) -> Image.Image:
    """``image`` (RGB) with the jitter, then the disalignment, of ``params`` (``None``: unchanged)."""
    if params is None:
        return image
    if params.jitter:
        image = color_jitter(image, params)
    if params.affine:
        image = disalign(image, params.dx, params.dy, params.scale)
    return image


__all__ = [
    "Augment",
    "adjust_hue",
    "affine_matrix",
    "affine_params",
    "apply",
    "color_jitter",
    "combine",
    "disalign",
    "jitter_params",
]
