"""The judge's pixels as the authors' run made them: Qwen's *fast* image processor, without torchvision.

The authors loaded Qwen3-VL's processor with its defaults, which is the fast (torchvision) image
processor (spec 12.10): each image is resized to the ``smart_resize`` grid with torchvision's tensor
resize, bicubic with antialiasing, which is ``torch.nn.functional.interpolate(mode="bicubic",
antialias=True, align_corners=False)``, rounded and clamped back to 0..255, then rescaled and
normalised. Measured (tests/test_judge_pixels.py): that antialiased kernel is Keys' cubic with
a = -0.5, widened by the downscale factor, computed in float32 in two passes; transformers' PIL twin
(``Qwen2VLImageProcessorPil``) resizes with the same kernel in PIL's fixed-point arithmetic with a uint8
rounding between the passes: 13-24% of pixel values differ, by about one level where they do, and a
small judge's answers can change with them.

torchvision cannot be imported here (spec 12.9), so :class:`QwenFastPixels` is the PIL processor with
its resize replaced by that ``interpolate`` call; everything else (``smart_resize``, patchify, the
config it reads and writes) is transformers'. The one arithmetic difference left: the fast processor
fuses rescale and normalise into one float32 step, ``(x - 255 mean) / (255 std)``, the PIL one does
``x / 255`` then ``(x - mean) / std``: a float32 rounding (measured <= 6e-8 against an independent
float64 emulation; besides it, 0-0.014% of values sit at a .5 tie and round one level apart).

``--judge-pixels fast`` (the default, as the authors ran it) or ``pil`` (the PIL processor).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil, smart_resize

#: ``--judge-pixels`` choices: the fast processor's pixels (ours, torch), or the PIL processor's.
PIXELS = ("fast", "pil")


def resize_bicubic_antialiased(image: np.ndarray, height: int, width: int, mode: str = "bicubic") -> np.ndarray:
    """``image`` (``[C, H, W]``, 0..255) resized as torchvision resizes a uint8 tensor with antialiasing
    (``mode`` bicubic, or bilinear for a checkpoint that asks for it): interpolate in float32, clamp to
    [0, 255], round, uint8."""
    pixels = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
    resized = F.interpolate(pixels, size=(height, width), mode=mode, antialias=True, align_corners=False)
    return resized[0].clamp_(0, 255).round_().to(torch.uint8).numpy()


class QwenFastPixels(Qwen2VLImageProcessorPil):
    """Qwen2-VL / Qwen3-VL image preprocessing with the fast processor's resize (module docstring)."""

    def resize(self, image: np.ndarray, size, resample=None, factor: int = 28, **kwargs) -> np.ndarray:
        if not size.shortest_edge or not size.longest_edge:
            raise ValueError(f"`size` dict must contain 'shortest_edge' and 'longest_edge' keys but got {size}.")
        height, width = image.shape[-2:]
        height, width = smart_resize(
            height, width, factor=factor, min_pixels=size.shortest_edge, max_pixels=size.longest_edge
        )
        mode = "bilinear" if resample is not None and int(resample) == 2 else "bicubic"  # PIL's codes
        return resize_bicubic_antialiased(image, height, width, mode)

    def to_dict(self) -> dict:
        """transformers' settings plus what makes these pixels differ from the PIL processor's (so a
        judge's fingerprint, which reads this, changes with ``--judge-pixels``)."""
        return {**super().to_dict(), "nearid_resize": "torch-bicubic-antialias-a0.75"}


def image_processor(kind: str, folder):
    """The judge's image processor of ``--judge-pixels`` ``kind``, from the checkpoint's
    ``preprocessor_config.json`` in ``folder``."""
    cls = QwenFastPixels if kind == "fast" else Qwen2VLImageProcessorPil
    return cls.from_pretrained(folder)


__all__ = ["PIXELS", "QwenFastPixels", "image_processor", "resize_bicubic_antialiased"]
