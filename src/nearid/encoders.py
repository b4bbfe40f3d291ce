"""The ``Encoder`` protocol and the registry of encoder specs.

Every benchmark and the scorer take any ``Encoder``: ``preprocess`` turns images (and optional
foreground masks) into a batch tensor, ``embed`` turns that batch into L2-normalised ``[B, D]``
float32 embeddings on the CPU. Specs are ``family`` or ``family:argument``:

==================  ===============================================================================
``nearid[:X]``      NearID model in our or the authors' release layout; X = folder or hub id
                    (default ``Aleksandar/nearid-siglip2``)
``siglip2-map[:X]`` frozen SigLIP2 vision tower, its pretrained MAP-head output (default
                    ``google/siglip2-so400m-patch14-384``)
``siglip2-mean[:X]`` mean of SigLIP2's 729 post-LN patch tokens, head skipped (the paper's DB++ baseline)
``clip[:X]``        CLIP image features = projected pooled CLS (default ``openai/clip-vit-large-patch14``)
``dinov2[:X]``      DINOv2 ``pooler_output`` = final-LN CLS token (default ``facebook/dinov2-large``)
``hf:X``            any transformers image model, pooled by the rule in :func:`generic_readout`
``tiny[:SEED]``     deterministic, randomly initialised (UNTRAINED) tiny NearID model for tests and demos
==================  ===============================================================================
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from .errors import EncoderSpecError, ModelNotAvailableError
from .hub import resolve_model_dir
from .images import ImageInput, load_masked
from .model import DEFAULT_BACKBONE, RELEASE_MODEL, NearIDModel, build_tiny_model
from .processors import clip_processor, dinov2_processor, load_processor, siglip_processor


@runtime_checkable
class Encoder(Protocol):
    """What every benchmark, trainer and scorer needs from an image encoder."""

    name: str
    dim: int

    def preprocess(self, images: Sequence[ImageInput], masks: Sequence[ImageInput | None] | None = None) -> torch.Tensor:
        """Load, mask (black background) and convert images to one ``pixel_values`` batch."""

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """L2-normalised float32 ``[B, D]`` embeddings on the CPU."""


Readout = Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]


class TransformersEncoder:
    """A transformers vision model, its image processor and a readout that picks the embedding."""

    def __init__(
        self, name: str, model: torch.nn.Module, processor, readout: Readout, *, device, dtype, dim=None, untrained=False
    ):
        self.name = name
        self.untrained = untrained
        self.device = torch.device(device)
        self.dtype = dtype
        self.model = model.to(device=self.device, dtype=dtype).eval()
        self.processor = processor
        self.readout = readout
        self.dim = int(dim) if dim is not None else self._probe_dim()

    def __repr__(self) -> str:
        return f"<Encoder {self.name} dim={self.dim} device={self.device} dtype={self.dtype}>"

    def preprocess(self, images, masks=None) -> torch.Tensor:
        masks = [None] * len(images) if masks is None else masks
        if len(masks) != len(images):
            raise ValueError(f"{len(images)} images but {len(masks)} masks")
        pil = [load_masked(image, mask) for image, mask in zip(images, masks)]
        return self.processor(images=pil, return_tensors="pt")["pixel_values"]

    @torch.inference_mode()
    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        features = self.readout(self.model, pixel_values.to(device=self.device, dtype=self.dtype))
        return F.normalize(features.float(), dim=-1).cpu()

    def _probe_dim(self) -> int:
        """Embed one grey image to learn the width of a model whose config does not say it."""
        from PIL import Image

        return self.embed(self.preprocess([Image.new("RGB", (32, 32), (128, 128, 128))])).shape[-1]


# --------------------------------------------------------------------------------------- readouts
def nearid_readout(model: NearIDModel, pixel_values: torch.Tensor) -> torch.Tensor:
    return model.get_image_features(pixel_values, normalize=False)


def pooler_readout(model, pixel_values: torch.Tensor) -> torch.Tensor:
    return model(pixel_values=pixel_values).pooler_output


def mean_token_readout(model, pixel_values: torch.Tensor) -> torch.Tensor:
    return model(pixel_values=pixel_values).last_hidden_state.mean(dim=1)


def image_embeds_readout(model, pixel_values: torch.Tensor) -> torch.Tensor:
    return model(pixel_values=pixel_values).image_embeds


def generic_readout(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """How ``hf:<id>`` pools, first rule that applies:

    1. the model has ``get_image_features`` (CLIP, SigLIP, ... full models): its output
       (``pooler_output`` when it returns a model output);
    2. the output has ``image_embeds`` (``*WithProjection`` models);
    3. the output has a ``pooler_output`` (CLS-after-LN for ViT/DINOv2, MAP head for SigLIP);
    4. otherwise the mean of ``last_hidden_state`` over tokens, or over H and W for a feature map.
    """
    if hasattr(model, "get_image_features"):
        out = model.get_image_features(pixel_values=pixel_values)
        return out if isinstance(out, torch.Tensor) else out.pooler_output
    out = model(pixel_values=pixel_values)
    if getattr(out, "image_embeds", None) is not None:
        return out.image_embeds
    if getattr(out, "pooler_output", None) is not None:
        pooled = out.pooler_output
        return pooled.flatten(1)
    hidden = out.last_hidden_state
    return hidden.mean(dim=(2, 3)) if hidden.ndim == 4 else hidden.mean(dim=1)


# --------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class LoadOptions:
    device: torch.device
    dtype: torch.dtype
    allow_pickle: bool = False


@dataclass(frozen=True)
class EncoderFamily:
    build: Callable[[str | None, LoadOptions], TransformersEncoder]
    default: str | None
    help: str


_FAMILIES: dict[str, EncoderFamily] = {}


def register_encoder(family: str, *, default: str | None = None, help: str = ""):
    """Add an encoder family; ``build(argument, options)`` returns an :class:`Encoder`."""

    def decorator(build):
        _FAMILIES[family] = EncoderFamily(build, default, help)
        return build

    return decorator


def available_encoders() -> dict[str, str]:
    """Family name (with its default argument) -> one-line description."""
    return {(f"{k}[:{v.default}]" if v.default else k): v.help for k, v in _FAMILIES.items()}


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` is the first CUDA device when there is one, else the CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise EncoderSpecError(f"unknown device '{device}'; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise EncoderSpecError(f"device '{device}': no CUDA device is available here; use --device cpu or auto")
    return resolved


_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``auto`` is bf16 on a GPU that supports it and fp32 elsewhere."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else torch.float32
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise EncoderSpecError(f"unknown dtype '{dtype}'; use one of auto, {', '.join(_DTYPES)}") from None


def load_encoder(
    spec: str,
    *,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "auto",
    allow_pickle: bool = False,
) -> TransformersEncoder:
    """Build the encoder a spec names (see the module docstring for the grammar)."""
    family_name, _, argument = spec.partition(":")
    family = _FAMILIES.get(family_name)
    if family is None:
        known = ", ".join(available_encoders())
        raise EncoderSpecError(f"unknown encoder '{spec}'; known: {known}")
    argument = argument or family.default
    if argument is None:
        raise EncoderSpecError(f"encoder '{family_name}' needs an argument: '{family_name}:<folder or hub id>'")
    resolved = resolve_device(device)
    options = LoadOptions(device=resolved, dtype=resolve_dtype(dtype, resolved), allow_pickle=allow_pickle)
    return family.build(argument, options)


@contextlib.contextmanager
def _quiet_transformers():
    """Hide transformers' per-load progress bar and load report (e.g. a CLIP checkpoint's unused text
    weights): the problems that matter are raised as errors by ``_pretrained``."""
    from transformers.utils import logging as hf_logging

    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


def _pretrained(model_class, argument: str, options: LoadOptions):
    """Resolve a folder or hub id safely and load ``model_class`` from it in float32.

    transformers fills weights missing from a checkpoint with random values and only warns; for an
    encoder whose scores people publish that is an error, so a checkpoint of the wrong kind fails here.
    """
    folder = resolve_model_dir(argument, allow_pickle=options.allow_pickle)
    try:
        with _quiet_transformers():
            model, info = model_class.from_pretrained(
                folder,
                dtype=torch.float32,
                use_safetensors=None if options.allow_pickle else True,
                output_loading_info=True,
            )
    except RuntimeError:  # transformers refuses weights of the wrong shape
        raise _wrong_checkpoint(argument, model_class, "weights of the wrong shape") from None
    except (OSError, ValueError, KeyError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelNotAvailableError(f"'{argument}': cannot load it as {model_class.__name__} ({first_line})") from None
    if info["missing_keys"]:
        missing = sorted(info["missing_keys"])
        raise _wrong_checkpoint(argument, model_class, f"{len(missing)} weights missing, e.g. {missing[0]}")
    return folder, model


def _wrong_checkpoint(argument: str, model_class, detail: str) -> ModelNotAvailableError:
    return ModelNotAvailableError(
        f"'{argument}': not a {model_class.__name__} checkpoint ({detail}); "
        "check that the spec's family matches the checkpoint"
    )


def _encoder(name, model, processor, readout, options: LoadOptions, **kw) -> TransformersEncoder:
    return TransformersEncoder(name, model, processor, readout, device=options.device, dtype=options.dtype, **kw)


@register_encoder("nearid", default=RELEASE_MODEL, help="NearID identity encoder (ours or the authors' release)")
def _nearid(argument: str, options: LoadOptions):
    folder, model = _pretrained(NearIDModel, argument, options)
    processor = load_processor(folder, siglip_processor(model.config.vision_config.image_size))
    return _encoder(f"nearid:{argument}", model, processor, nearid_readout, options, dim=model.config.embed_dim)


def _siglip_family(readout: Readout, label: str):
    def build(argument: str, options: LoadOptions):
        from transformers import SiglipVisionModel

        folder, model = _pretrained(SiglipVisionModel, argument, options)
        processor = load_processor(folder, siglip_processor(model.config.image_size))
        return _encoder(f"{label}:{argument}", model, processor, readout, options, dim=model.config.hidden_size)

    return build


register_encoder("siglip2-map", default=DEFAULT_BACKBONE, help="frozen SigLIP2, pretrained MAP-head output")(
    _siglip_family(pooler_readout, "siglip2-map")
)
register_encoder("siglip2-mean", default=DEFAULT_BACKBONE, help="frozen SigLIP2, mean of post-LN patch tokens")(
    _siglip_family(mean_token_readout, "siglip2-mean")
)


@register_encoder("clip", default="openai/clip-vit-large-patch14", help="CLIP-I: projected pooled CLS")
def _clip(argument: str, options: LoadOptions):
    from transformers import CLIPVisionModelWithProjection

    folder, model = _pretrained(CLIPVisionModelWithProjection, argument, options)
    processor = load_processor(folder, clip_processor())
    return _encoder(f"clip:{argument}", model, processor, image_embeds_readout, options, dim=model.config.projection_dim)


@register_encoder("dinov2", default="facebook/dinov2-large", help="DINOv2: pooler output (final-LN CLS)")
def _dinov2(argument: str, options: LoadOptions):
    from transformers import Dinov2Model

    folder, model = _pretrained(Dinov2Model, argument, options)
    processor = load_processor(folder, dinov2_processor())
    return _encoder(f"dinov2:{argument}", model, processor, pooler_readout, options, dim=model.config.hidden_size)


@register_encoder("hf", help="any transformers image model: hf:<folder or hub id>")
def _hf(argument: str, options: LoadOptions):
    from transformers import AutoModel

    folder, model = _pretrained(AutoModel, argument, options)
    return _encoder(f"hf:{argument}", model, load_processor(folder), generic_readout, options)


class HistogramEncoder:
    """A joint RGB colour histogram: no model at all, and entirely context-dominated.

    It is the sanity floor of a matched-context benchmark: a distractor drawn into the same background
    shares almost all of its colours with the view, so this encoder should lose nearly every trial.
    """

    untrained = False

    def __init__(self, bins: int = 8, size: int = 128):
        self.bins, self.size = bins, size
        self.name = f"histogram:{bins}"
        self.dim = bins**3

    def preprocess(self, images, masks=None) -> torch.Tensor:
        masks = [None] * len(images) if masks is None else masks
        rows = []
        for image, mask in zip(images, masks):
            pixels = torch.from_numpy(np.asarray(load_masked(image, mask).resize((self.size, self.size))).copy())
            rows.append(pixels.permute(2, 0, 1))
        return torch.stack(rows) if rows else torch.empty(0, 3, self.size, self.size, dtype=torch.uint8)

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        levels = (pixel_values.long() * self.bins) // 256
        index = (levels[:, 0] * self.bins + levels[:, 1]) * self.bins + levels[:, 2]
        counts = torch.zeros(len(index), self.dim).scatter_add_(1, index.flatten(1), torch.ones(index.flatten(1).shape))
        return F.normalize(counts.sqrt(), dim=-1)  # Hellinger: cosine of square-rooted histograms


@register_encoder("histogram", default="8", help="joint RGB colour histogram (no model; context-dominated floor)")
def _histogram(argument: str, options: LoadOptions):
    try:
        bins = int(argument)
    except ValueError:
        raise EncoderSpecError(f"histogram encoder takes a number of bins per channel, got '{argument}'") from None
    return HistogramEncoder(bins)


@register_encoder("tiny", default="0", help="tiny NearID model with random weights (UNTRAINED; tests, demos)")
def _tiny(argument: str, options: LoadOptions):
    try:
        seed = int(argument)
    except ValueError:
        raise EncoderSpecError(f"tiny encoder takes an integer seed, got '{argument}'") from None
    model = build_tiny_model(seed)
    processor = siglip_processor(model.config.vision_config.image_size)
    name = f"tiny:{seed} (untrained)"
    return _encoder(name, model, processor, nearid_readout, options, dim=model.config.embed_dim, untrained=True)
