"""Each checkpoint's own image preprocessing, as a callable from PIL images to ``pixel_values``.

We use transformers' PIL-backend image processors (no torchvision needed) configured from the
checkpoint's ``preprocessor_config.json`` when it has one, so preprocessing matches what the model
was trained with; the fallbacks below are the published defaults of each family.
:func:`preprocess_images` is the one path from image files (and foreground masks) to a model's
input: encoders, the token cache and the trainer all call it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import (
    AutoImageProcessor,
    BitImageProcessorPil,
    CLIPImageProcessorPil,
    SiglipImageProcessorPil,
    ViTImageProcessorPil,
)
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


class DinoEvalProcessor:
    """DINO's evaluation preprocessing (``eval_knn.py`` / ``eval_linear.py`` of facebookresearch/dino),
    exactly, in PIL + numpy: ``Resize(resize, BICUBIC)`` of the shorter side (long side
    ``int(resize * long / short)``, torchvision's rule), ``CenterCrop(crop)`` with torchvision's
    ``int(round((size - crop) / 2))`` offsets, ``ToTensor`` (x / 255) and ImageNet mean/std.

    Why not the checkpoint's processor: ``facebook/dino-vits16`` ships a ``ViTImageProcessor`` (square
    224 resize, no crop) that is not what DINO was evaluated with, and transformers' centre crop uses
    ``//`` offsets, one pixel off torchvision's rounding for some aspect ratios. ``resize``/``crop``
    default to DINO's 256/224; a smaller checkpoint uses ``crop`` = its image size and keeps the 8/7 ratio.
    """

    def __init__(self, resize: int = 256, crop: int = 224, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD):
        self.resize, self.crop = int(resize), int(crop)
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)

    @classmethod
    def for_image_size(cls, image_size: int) -> DinoEvalProcessor:
        """DINO's recipe scaled to a model input of ``image_size`` (224 -> resize 256, crop 224)."""
        return cls(resize=round(image_size * 256 / 224), crop=image_size)

    def __repr__(self) -> str:
        return f"DinoEvalProcessor(resize={self.resize}, crop={self.crop})"

    def to_dict(self) -> dict:
        """Every setting, as transformers' processors give theirs (what an encoder's fingerprint hashes)."""
        return {
            "processor": "DinoEvalProcessor",
            "resize": self.resize,
            "crop": self.crop,
            "mean": self.mean.ravel().tolist(),
            "std": self.std.ravel().tolist(),
        }

    def transform(self, image: Image.Image) -> np.ndarray:
        image = image.convert("RGB")
        w, h = image.size
        short, long = min(w, h), max(w, h)
        new_short, new_long = self.resize, int(self.resize * long / short)
        size = (new_short, new_long) if w <= h else (new_long, new_short)
        image = image.resize(size, Image.Resampling.BICUBIC)
        w, h = image.size
        if w < self.crop or h < self.crop:  # cannot happen with resize >= crop; refuse rather than pad
            raise ValueError(f"image {w}x{h} is smaller than the {self.crop} crop")
        top, left = round((h - self.crop) / 2.0), round((w - self.crop) / 2.0)  # torchvision's rule
        image = image.crop((left, top, left + self.crop, top + self.crop))
        array = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
        return (array - self.mean) / self.std

    def __call__(self, images, return_tensors="pt"):
        images = [images] if isinstance(images, Image.Image) else list(images)
        rows = [torch.from_numpy(np.ascontiguousarray(self.transform(image))) for image in images]
        pixels = torch.stack(rows) if rows else torch.empty(0, 3, self.crop, self.crop)
        return {"pixel_values": pixels}


def dinov3_processor(folder: Path | None, image_size: int = 224) -> ViTImageProcessorPil:
    """DINOv3: square resize (bilinear), x / 255, ImageNet mean/std, read from the checkpoint's
    ``preprocessor_config.json`` when it has one. DINOv3's own processor class needs torchvision, so
    the same numbers go into a PIL-backend ViT processor. It resizes the 8-bit image and then rescales,
    where DINOv3's processor rescales first (values agree to ~1/255 per pixel)."""
    config = {}
    if folder is not None and (folder / PROCESSOR_FILE).is_file():
        config = json.loads((folder / PROCESSOR_FILE).read_text())
    size = config.get("size") or {"height": image_size, "width": image_size}
    return ViTImageProcessorPil(
        size=size,
        resample=config.get("resample", Image.Resampling.BILINEAR),
        image_mean=list(config.get("image_mean", IMAGENET_DEFAULT_MEAN)),
        image_std=list(config.get("image_std", IMAGENET_DEFAULT_STD)),
        rescale_factor=config.get("rescale_factor", 1 / 255),
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
