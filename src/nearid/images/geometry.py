"""Where each pixel of an input image lands in the model's input: the processor's resize and centre
crop, undone, so that a map over the model's patch grid can be drawn in the input image's own pixels.

A map computed on patch tokens lives on the grid of the *cropped, resized* image. To show it over the
picture the user gave (and to test it against regions of that picture) every input pixel is sent
forward through the same resize and crop the processor applied: its centre ``(x + 0.5)`` scales by
``resized / input`` along each axis, the crop's offset is subtracted, and the patch it falls in is
looked up. Pixels that the centre crop cut away fall in no patch and get 0.

The rules are read from a :class:`~nearid.images.processors.PixelSplit` (the same description of the
geometry that :func:`nearid.embed`'s workers run), so the map and the embedding agree on the crop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nearid.io.errors import NearIDError


@dataclass(frozen=True)
class InputGeometry:
    """One input image's path into the model: ``(height, width)`` of the input, of the resized image,
    and the crop box ``(top, left, height, width)`` taken out of the resized image."""

    size: tuple[int, int]
    resized: tuple[int, int]
    crop: tuple[int, int, int, int]

    def patch_index(self, grid: tuple[int, int]) -> np.ndarray:
        """``[H, W]`` int array: the flat index of the patch (row-major over ``grid``) each input pixel's
        centre falls in, or -1 for pixels outside the crop."""
        (height, width), (rh, rw), (top, left, ch, cw) = self.size, self.resized, self.crop
        ys = (np.arange(height) + 0.5) * (rh / height) - top
        xs = (np.arange(width) + 0.5) * (rw / width) - left
        rows = np.floor(ys * grid[0] / ch).astype(np.int64)
        cols = np.floor(xs * grid[1] / cw).astype(np.int64)
        inside = ((rows >= 0) & (rows < grid[0]))[:, None] & ((cols >= 0) & (cols < grid[1]))[None, :]
        index = rows[:, None] * grid[1] + cols[None, :]
        return np.where(inside, index, -1)

    def to_pixels(self, patch_map: np.ndarray) -> np.ndarray:
        """A ``[gh, gw]`` map over the patch grid -> ``[H, W]`` float32 over the input pixels (0 outside the crop)."""
        patch_map = np.asarray(patch_map, dtype=np.float32)
        index = self.patch_index(patch_map.shape)
        flat = np.append(patch_map.ravel(), np.float32(0))  # index -1 reads the appended 0
        return flat[index]


def input_geometry(split, height: int, width: int) -> InputGeometry:
    """The geometry ``split`` (a :class:`~nearid.images.processors.PixelSplit`) applies to a
    ``height x width`` image: transformers' PIL-backend resize rules and ``//`` crop offsets, or DINO's
    evaluation recipe (:class:`~nearid.images.processors.DinoEvalProcessor`: torchvision's rounding)."""
    from nearid.images.processors import DinoEvalProcessor

    geometry = getattr(split, "to_uint8", None)
    owner = getattr(geometry, "__self__", None)
    if isinstance(owner, DinoEvalProcessor):
        short, long = min(height, width), max(height, width)
        new_short, new_long = owner.resize, int(owner.resize * long / short)
        resized = (new_short, new_long) if height <= width else (new_long, new_short)
        top, left = round((resized[0] - owner.crop) / 2.0), round((resized[1] - owner.crop) / 2.0)
        return InputGeometry((height, width), resized, (top, left, owner.crop, owner.crop))
    if geometry is None or not hasattr(geometry, "output_size"):
        raise NearIDError(
            "this encoder's preprocessing cannot be mapped back to image pixels (no fixed resize and crop); "
            "explain supports the NearID, SigLIP, CLIP, DINO and hf: ViT processors"
        )
    resized = tuple(int(v) for v in geometry.output_size(height, width)) if geometry.size else (height, width)
    if geometry.crop is None:
        return InputGeometry((height, width), resized, (0, 0, *resized))
    ch, cw = geometry.crop
    # transformers' center_crop: integer offsets (size - crop) // 2 (negative: the image is padded)
    return InputGeometry((height, width), resized, ((resized[0] - ch) // 2, (resized[1] - cw) // 2, ch, cw))


__all__ = ["InputGeometry", "input_geometry"]
