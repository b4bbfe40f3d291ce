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
from dataclasses import dataclass, field
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
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from nearid.images.decode import ImageInput, load_masked

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
            "processor": type(self).__name__,
            "resize": self.resize,
            "crop": self.crop,
            "mean": self.mean.ravel().tolist(),
            "std": self.std.ravel().tolist(),
        }

    def transform(self, image: Image.Image) -> np.ndarray:
        return self.scale(self.to_uint8(image))

    def to_uint8(self, image: Image.Image) -> np.ndarray:
        """The geometric half (resize, crop): ``[crop, crop, 3]`` uint8, what input workers produce."""
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
        return np.asarray(image.crop((left, top, left + self.crop, top + self.crop)))

    def scale(self, pixels: np.ndarray) -> np.ndarray:
        """The arithmetic half (``ToTensor`` and mean/std): ``[H, W, 3]`` uint8 -> ``[3, H, W]`` float32."""
        array = np.asarray(pixels, dtype=np.float32).transpose(2, 0, 1) / 255.0
        return (array - self.mean) / self.std

    def split(self) -> PixelSplit:
        """This processor as a :class:`PixelSplit` (its arithmetic is per pixel value: a lookup table)."""
        levels = np.broadcast_to(np.arange(256, dtype=np.uint8)[None, :, None], (1, 256, 3))
        table = np.ascontiguousarray(self.scale(levels)[:, 0, :])
        affine = (255.0, tuple(self.mean.ravel().tolist()), tuple(self.std.ravel().tolist()))
        return PixelSplit(self.to_uint8, table, (self.crop, self.crop), self.resize, affine)

    def __call__(self, images, return_tensors="pt"):
        images = [images] if isinstance(images, Image.Image) else list(images)
        rows = [torch.from_numpy(np.ascontiguousarray(self.transform(image))) for image in images]
        pixels = torch.stack(rows) if rows else torch.empty(0, 3, self.crop, self.crop)
        return {"pixel_values": pixels}


class OpenAIClipProcessor(DinoEvalProcessor):
    """OpenAI CLIP's own preprocessing, ``clip.load``'s ``_transform(n_px)`` (openai/CLIP,
    ``clip/clip.py``), exactly: ``Resize(n_px, BICUBIC)`` of the shorter side, ``CenterCrop(n_px)`` with
    torchvision's rounded offsets, ``ToTensor``, CLIP's mean/std. The DreamBooth CLIP-I metric
    (``clip-i``) claims this reference; the checkpoint's ``CLIPImageProcessor`` floors the crop offset
    instead, which shifts the crop by one pixel for about 1 in 4 aspect ratios. DINO's eval transform
    with resize = crop, so the same code (and the same uint8 split for input workers)."""

    def __init__(self, size: int = 224):
        super().__init__(resize=size, crop=size, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD)

    def __repr__(self) -> str:
        return f"OpenAIClipProcessor(size={self.crop})"


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
        from nearid.io.errors import ModelNotAvailableError

        raise ModelNotAvailableError(
            f"'{folder}' has no {PROCESSOR_FILE}; add the checkpoint's image-processor config next to its weights"
        )
    return fallback


@dataclass(frozen=True)
class PixelSplit:
    """A processor cut at its 8-bit boundary, so input workers send what the model will see in a
    quarter of the bytes and the arithmetic runs where the model runs.

    ``to_uint8`` is the geometric half (resize, crop: PIL on 8-bit RGB, exactly as the processor
    does it) -> ``[H, W, 3]`` uint8 at the model's input ``size``. The rest of every processor we
    split (rescale, normalise) acts on each pixel value alone, so ``table`` describes it fully:
    ``table[c, v]`` is the processor's own output for value ``v`` in channel ``c``, computed by the
    processor's own functions. :meth:`finish` reproduces the table bit for bit: by the arithmetic
    ``affine = (divisor, mean, std)``, ``(x / divisor - mean) / std`` in float32, where that gives
    all 256 levels exactly on the device (checked once per device), else by looking values up
    (about 3x slower on a CPU). ``draft`` is the smallest side the geometric half needs from its
    input: JPEG draft decoding (``fast_decode``) never decodes below it.
    """

    to_uint8: Callable[[Image.Image], np.ndarray]
    table: np.ndarray
    size: tuple[int, int]
    draft: int | None = None
    affine: tuple[float, tuple, tuple] | None = None
    _exact: dict = field(default_factory=dict, init=False, compare=False, repr=False)  # device -> arithmetic exact?

    def load(self, image: ImageInput, mask: ImageInput | None = None, *, fast_decode: bool = False) -> np.ndarray:
        """The worker stage: decode (JPEG in draft mode with ``fast_decode``), mask at the decoded
        resolution, resize and crop -> ``[H, W, 3]`` uint8."""
        return self.to_uint8(load_masked(image, mask, draft=self.draft if fast_decode else None))

    def finish(self, pixels: torch.Tensor) -> torch.Tensor:
        """The device stage: ``[B, H, W, 3]`` uint8 -> ``[B, 3, H, W]`` float32 ``pixel_values`` on
        ``pixels``' device, equal to the processor's output for the same 8-bit pixels."""
        out = torch.empty((len(pixels), 3, *pixels.shape[1:3]), dtype=torch.float32, device=pixels.device)
        out.copy_(pixels.permute(0, 3, 1, 2))  # one pass: channels first and uint8 -> float32
        if self._arithmetic_is_exact(pixels.device):
            return self._arithmetic(out)
        table = torch.as_tensor(self.table, device=pixels.device)
        for channel in range(3):
            out[:, channel] = table[channel][out[:, channel].long()]
        return out

    def _arithmetic(self, out: torch.Tensor) -> torch.Tensor:
        """In place, one IEEE float32 operation at a time, as numpy rounds the processors' steps."""
        divisor, mean, std = self.affine
        shape = (1, 3, 1, 1)
        out.div_(divisor).sub_(torch.tensor(mean, dtype=torch.float32, device=out.device).view(shape))
        return out.div_(torch.tensor(std, dtype=torch.float32, device=out.device).view(shape))

    def _arithmetic_is_exact(self, device: torch.device) -> bool:
        key = str(device)
        if key not in self._exact:
            exact = False
            if self.affine is not None:
                levels = torch.arange(256, dtype=torch.float32, device=device).expand(1, 3, 1, 256).clone()
                exact = torch.equal(self._arithmetic(levels)[0, :, 0].cpu(), torch.from_numpy(self.table))
            self._exact[key] = exact
        return self._exact[key]


#: Methods of transformers' PIL backend whose own (unmodified) behaviour :func:`split_processor` reproduces.
_PIL_STEPS = (
    "__call__",
    "preprocess",
    "_preprocess_image_like_inputs",
    "_prepare_image_like_inputs",
    "process_image",
    "_preprocess",
    "resize",
    "center_crop",
    "rescale",
    "normalize",
)


@dataclass(frozen=True)
class _PilGeometry:
    """The resize and centre crop of a transformers PIL-backend processor, on a PIL image: the same
    output size rules (transformers' own functions), the same ``Image.resize`` call, the same crop."""

    size: dict
    resample: int
    crop: tuple[int, int] | None

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        from transformers.image_transforms import get_resize_output_image_size, get_size_with_aspect_ratio
        from transformers.image_utils import ChannelDimension, get_image_size_for_max_height_width

        size = self.size
        if size.get("shortest_edge") and size.get("longest_edge"):
            return get_size_with_aspect_ratio((height, width), size["shortest_edge"], size["longest_edge"])
        if size.get("shortest_edge"):
            shape_only = np.broadcast_to(np.uint8(0), (3, height, width))  # the function reads the shape alone
            return get_resize_output_image_size(
                shape_only, size["shortest_edge"], default_to_square=False, input_data_format=ChannelDimension.FIRST
            )
        if size.get("max_height") and size.get("max_width"):
            return get_image_size_for_max_height_width((height, width), size["max_height"], size["max_width"])
        return size["height"], size["width"]

    def __call__(self, image: Image.Image) -> np.ndarray:
        from transformers.image_transforms import center_crop
        from transformers.image_utils import ChannelDimension

        if self.size:
            height, width = self.output_size(image.height, image.width)
            image = image.resize((width, height), resample=self.resample, reducing_gap=None)
        pixels = np.asarray(image)
        if self.crop is not None:
            last = ChannelDimension.LAST
            pixels = center_crop(pixels, self.crop, data_format=last, input_data_format=last)
        return pixels


def split_processor(processor) -> PixelSplit | None:
    """``processor`` as a :class:`PixelSplit`, or ``None`` when it cannot be split exactly (then its
    callers run it whole): :class:`DinoEvalProcessor`, and transformers PIL-backend processors that
    use the backend's own steps (SigLIP, CLIP, BiT/DINOv2, ViT/DINOv3 ...) with a fixed output size,
    no padding and some rescaling or normalisation."""
    if isinstance(processor, DinoEvalProcessor):
        return processor.split()
    from transformers.image_processing_backends import PilBackend
    from transformers.image_utils import SizeDict

    if not isinstance(processor, PilBackend) or processor.do_pad:
        return None
    if any(getattr(type(processor), name, None) is not getattr(PilBackend, name) for name in _PIL_STEPS):
        return None  # a subclass with steps of its own
    if not (processor.do_rescale or processor.do_normalize):
        return None  # its output would stay uint8
    resample = processor.resample if processor.resample is not None else Image.Resampling.BILINEAR
    if not isinstance(resample, int):  # a torchvision mode: the PIL backend maps it, we do not
        return None
    size, crop = processor.size, None
    if processor.do_resize:
        if not isinstance(size, SizeDict):
            return None
        size = {key: value for key, value in dict(size).items() if value is not None}
        rules = ({"height", "width"}, {"shortest_edge"}, {"shortest_edge", "longest_edge"}, {"max_height", "max_width"})
        if set(size) not in rules:
            return None
    else:
        size = {}
    if processor.do_center_crop:
        if not isinstance(processor.crop_size, SizeDict) or not (
            processor.crop_size.height and processor.crop_size.width
        ):
            return None
        crop = (int(processor.crop_size.height), int(processor.crop_size.width))
    if crop is not None:
        output = crop
    elif set(size) == {"height", "width"}:
        output = (int(size["height"]), int(size["width"]))
    else:
        return None  # the output size depends on the image: no fixed-size batch
    levels = np.broadcast_to(np.arange(256, dtype=np.uint8), (3, 1, 256)).copy()  # channels first, as _preprocess
    table = levels
    if processor.do_rescale:
        table = processor.rescale(table, processor.rescale_factor)
    if processor.do_normalize:
        table = processor.normalize(table, processor.image_mean, processor.image_std)
    mean = tuple(processor.image_mean) if processor.do_normalize else (0.0, 0.0, 0.0)
    std = tuple(processor.image_std) if processor.do_normalize else (1.0, 1.0, 1.0)
    factor = processor.rescale_factor if processor.do_rescale else 1.0
    # x / 255 in float32 rounds as numpy's float64 x * (1/255) does (x * (1/255) in float32 does not);
    # whatever the factor, _arithmetic_is_exact checks the result against the table before it is used
    divisor = round(1 / factor) if factor > 0 else 0
    affine = (float(divisor), mean, std) if divisor >= 1 and len(mean) == len(std) == 3 else None
    draft = max(size.get(key) or 0 for key in ("height", "width", "shortest_edge", "max_height", "max_width"))
    return PixelSplit(
        _PilGeometry(size, int(resample), crop),
        np.ascontiguousarray(table[:, 0, :], dtype=np.float32),
        output,
        draft or None,
        affine,
    )


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
