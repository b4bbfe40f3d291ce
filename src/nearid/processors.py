"""Each checkpoint's own image preprocessing, as a callable from PIL images to ``pixel_values``.

We use transformers' PIL-backend image processors (no torchvision needed) configured from the
checkpoint's ``preprocessor_config.json`` when it has one, so preprocessing matches what the model
was trained with; the fallbacks below are the published defaults of each family.
:func:`preprocess_images` is the one path from image files (and foreground masks) to a model's
input: encoders, the token cache and the trainer all call it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image
from transformers import AutoImageProcessor, BitImageProcessorPil, CLIPImageProcessorPil, SiglipImageProcessorPil
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from .images import ImageInput, load_masked

PROCESSOR_FILE = "preprocessor_config.json"


def siglip_processor(image_size: int) -> SiglipImageProcessorPil:
    """SigLIP2: square resize to the model size (bilinear, as SigLIP2 configs say), x/255, mean = std = 0.5."""
    return SiglipImageProcessorPil(
        size={"height": image_size, "width": image_size},
        resample=Image.Resampling.BILINEAR,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )


def clip_processor() -> CLIPImageProcessorPil:
    """CLIP: shortest side 224 (bicubic), centre crop 224, CLIP mean/std."""
    return CLIPImageProcessorPil()


def dinov2_processor() -> BitImageProcessorPil:
    """DINOv2: shortest side 256 (bicubic), centre crop 224, ImageNet mean/std."""
    return BitImageProcessorPil(
        size={"shortest_edge": 256},
        crop_size={"height": 224, "width": 224},
        image_mean=list(IMAGENET_DEFAULT_MEAN),
        image_std=list(IMAGENET_DEFAULT_STD),
    )


def load_processor(folder: Path | None, fallback=None):
    """The checkpoint's own processor if ``folder`` has one, else ``fallback`` (``None``: required)."""
    if folder is not None and (folder / PROCESSOR_FILE).is_file():
        return AutoImageProcessor.from_pretrained(folder, backend="pil")
    if fallback is None:
        from .errors import ModelNotAvailableError

        raise ModelNotAvailableError(
            f"'{folder}' has no {PROCESSOR_FILE}; add the checkpoint's image-processor config next to its weights"
        )
    return fallback


def preprocess_images(processor, images: Sequence[ImageInput], masks: Sequence[ImageInput | None] | None = None):
    """Load each image, black out its background with its mask (on the full-resolution image, as in
    the paper), and convert the batch with ``processor`` -> ``pixel_values`` ``[B, 3, H, W]``."""
    masks = [None] * len(images) if masks is None else masks
    if len(masks) != len(images):
        raise ValueError(f"{len(images)} images but {len(masks)} masks")
    pil = [load_masked(image, mask) for image, mask in zip(images, masks)]
    return processor(images=pil, return_tensors="pt")["pixel_values"]


def preprocessor(processor) -> Callable:
    """``preprocess(images, masks=None) -> pixel_values`` for one processor (:func:`preprocess_images`)."""
    return functools.partial(preprocess_images, processor)
