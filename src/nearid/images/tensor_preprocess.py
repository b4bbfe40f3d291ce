"""An encoder's preprocessing done to a float tensor in torch, so that gradients reach the pixels.

:func:`nearid.embed` decodes files to 8-bit RGB and runs the checkpoint's PIL processor (resize, centre
crop, rescale, normalise). A generated image inside a training loop is a float tensor with a graph
behind it: writing it to 8 bits and back would cut the graph. :class:`TensorPreprocess` does the same
steps in torch, each differentiable:

* the resize and crop *sizes* come from the same rules the PIL path uses
  (:func:`~nearid.images.geometry.input_geometry` over the encoder's
  :class:`~nearid.images.processors.PixelSplit`), so a 1024x768 input is cut exactly where PIL cuts it;
* the resize is ``torch.nn.functional.interpolate`` with the processor's filter (bilinear, bicubic or
  nearest) and ``antialias=True``: PIL's bilinear and bicubic filters widen with the scale factor
  when shrinking, which is what torch's antialiased kernels reproduce (both use a = -0.5 for bicubic);
  like PIL it resizes the width, then the height, clamping each pass to ``[0, 1]`` as PIL clamps to 8 bits;
* rescale and normalise are read from the processor's own lookup table (``PixelSplit.table``), which
  is affine in the 8-bit value: ``pixel = table[c, 0] + x * (table[c, 255] - table[c, 0])`` for
  ``x`` in ``[0, 1]``.

What is left is PIL's rounding to 8 bits (after each of its two resize passes): about one level of 255
per pixel at most (docs/reward.md quotes the measured numbers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from nearid.images.geometry import input_geometry
from nearid.images.processors import DinoEvalProcessor, PixelSplit
from nearid.io.errors import NearIDError

#: PIL filters that torch's ``interpolate`` reproduces (PIL's nearest samples pixel centres: nearest-exact).
TORCH_MODES = {
    int(Image.Resampling.BILINEAR): "bilinear",
    int(Image.Resampling.BICUBIC): "bicubic",
    int(Image.Resampling.NEAREST): "nearest-exact",
}


def _resample(split: PixelSplit) -> int:
    """The PIL filter of ``split``'s geometric half: DINO's recipe is bicubic; a transformers processor
    says its own."""
    owner = getattr(split.to_uint8, "__self__", None)
    if isinstance(owner, DinoEvalProcessor):
        return int(Image.Resampling.BICUBIC)
    return int(getattr(split.to_uint8, "resample", Image.Resampling.BILINEAR))


@dataclass(frozen=True)
class TensorPreprocess:
    """``[B, 3, H, W]`` float in ``[0, 1]`` -> the encoder's ``pixel_values``, differentiable.

    ``split`` is the encoder's :class:`PixelSplit` (its PIL path), ``mode`` the torch filter,
    ``offset`` / ``scale`` the per-channel affine map of the processor's rescale + normalise."""

    split: PixelSplit
    mode: str
    offset: tuple[float, float, float]
    scale: tuple[float, float, float]

    @classmethod
    def of(cls, split: PixelSplit | None, name: str = "this encoder") -> TensorPreprocess:
        """The torch twin of ``split``; a processor it cannot reproduce is refused in one line."""
        if split is None:
            raise NearIDError(
                f"{name}: its preprocessing has no fixed resize, crop and per-pixel arithmetic to reproduce in "
                "torch; use a ViT encoder (nearid, siglip2-*, clip, dino*, hf:, tiny)"
            )
        resample = _resample(split)
        if resample not in TORCH_MODES:
            raise NearIDError(
                f"{name}: its processor resizes with PIL filter {Image.Resampling(resample).name}, which torch "
                "cannot reproduce; use a checkpoint whose processor resizes bilinear, bicubic or nearest"
            )
        table = np.asarray(split.table, dtype=np.float64)
        offset, top = table[:, 0], table[:, 255]
        affine = offset[:, None] + np.arange(256)[None, :] / 255.0 * (top - offset)[:, None]
        if np.abs(affine - table).max() > 1e-4 * max(1.0, float(np.abs(table).max())):
            raise NearIDError(f"{name}: its rescale/normalise is not affine in the pixel value; torch cannot mirror it")
        return cls(split, TORCH_MODES[resample], tuple(offset.tolist()), tuple((top - offset).tolist()))

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the model's input."""
        return tuple(self.split.size)

    def resize(self, images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """PIL's two passes: the width first, then the height, each clipped to ``[0, 1]`` as PIL clips
        each pass to 8 bits (one pass without the clip differs from PIL by up to 8 levels of 255 at
        sharp edges under bicubic; two clipped passes by about 1). A side that keeps its size is not
        resampled, and an image of the target size is returned as it is (PIL returns a copy)."""
        antialias = self.mode in ("bilinear", "bicubic")
        x = images
        for target in ((x.shape[-2], size[1]), size):
            if tuple(x.shape[-2:]) != tuple(target):
                x = F.interpolate(x, size=tuple(target), mode=self.mode, antialias=antialias).clamp(0.0, 1.0)
        return x

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``images``: ``[B, 3, H, W]`` float in ``[0, 1]`` (checked by the caller). Returns
        ``pixel_values`` ``[B, 3, h, w]`` in ``images``' dtype, with ``images``' graph."""
        height, width = int(images.shape[-2]), int(images.shape[-1])
        geometry = input_geometry(self.split, height, width)
        top, left, crop_h, crop_w = geometry.crop
        resized = geometry.resized
        if top < 0 or left < 0 or top + crop_h > resized[0] or left + crop_w > resized[1]:
            raise NearIDError(
                f"a {height}x{width} image resizes to {resized[0]}x{resized[1]}, smaller than the encoder's "
                f"{crop_h}x{crop_w} crop; give larger images"
            )
        x = self.resize(images, tuple(resized))
        x = x[..., top : top + crop_h, left : left + crop_w]
        shape = (1, 3, 1, 1)
        offset = torch.tensor(self.offset, dtype=x.dtype, device=x.device).view(shape)
        scale = torch.tensor(self.scale, dtype=x.dtype, device=x.device).view(shape)
        return offset + x * scale


__all__ = ["TORCH_MODES", "TensorPreprocess"]
