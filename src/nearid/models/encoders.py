"""The ``Encoder`` protocol and the factories behind encoder specs.

Every benchmark and the scorer take any ``Encoder``: ``preprocess`` turns images (and optional
foreground masks) into a batch tensor, ``embed`` turns that batch into L2-normalised ``[B, D]``
float32 embeddings on the CPU. Specs (``nearid[:X]``, ``siglip2-map[:X]``, ``clip[:X]``, ``hf:X``,
``tiny[:SEED]``, ...) are parsed and listed by the torch-free :mod:`nearid.models.specs`; this module maps
each family to a builder. The NearID-shaped families (``nearid``, ``siglip2-map``, ``siglip2-mean``,
``tiny``) are readouts of the one model factory :func:`nearid.models.backbones.load_backbone`, wrapped by
:func:`nearid_encoder` (which the trainer also uses to validate the head it is training).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from nearid.images.decode import ImageInput, load_masked
from nearid.images.processors import (
    DinoEvalProcessor,
    OpenAIClipProcessor,
    PixelSplit,
    clip_processor,
    dinov2_processor,
    dinov3_processor,
    load_processor,
    preprocess_images,
    split_processor,
)
from nearid.io.errors import EncoderSpecError, NearIDError
from nearid.models.backbones import load_backbone
from nearid.models.loading import load_pretrained
from nearid.models.nearid_model import NearIDModel
from nearid.models.options import LoadOptions
from nearid.models.specs import (
    FP16_FAMILIES,
    BackboneSpec,
    EncoderSpec,
    available_encoders,
    integer_argument,
    parse_encoder_spec,
    register_family,
)


class NonFiniteEmbeddingError(NearIDError):
    """An embedding came out inf or NaN (an fp16 overflow): the fix is another ``--dtype``."""


@runtime_checkable
class Encoder(Protocol):
    """What every benchmark, trainer and scorer needs from an image encoder."""

    name: str
    dim: int
    #: SHA-256 of everything that decides the embeddings (weights, preprocessing, readout, dtype):
    #: what stores and calibrations are keyed by, so re-exported weights are never matched by name.
    fingerprint: str

    def preprocess(
        self, images: Sequence[ImageInput], masks: Sequence[ImageInput | None] | None = None
    ) -> torch.Tensor:
        """Load, mask (black background) and convert images to one ``pixel_values`` batch."""

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """L2-normalised float32 ``[B, D]`` embeddings on the CPU."""

    # Optional, detected with getattr (so it is not a Protocol member: encoders without it still are
    # Encoders): ``pixel_split``, a :class:`~nearid.images.processors.PixelSplit` equal to ``preprocess`` (or
    # None). With it, :func:`nearid.embed` decodes to uint8 in its input workers and rescales and
    # normalises on ``device`` (another optional attribute); without it, workers call ``preprocess``.


Readout = Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]


class TransformersEncoder:
    """A transformers vision model, its image processor and a readout that picks the embedding."""

    def __init__(
        self,
        name: str,
        model: torch.nn.Module,
        processor,
        readout: Readout,
        *,
        device,
        dtype,
        dim=None,
        untrained=False,
    ):
        self.name = name
        self.untrained = untrained
        self.device = torch.device(device)
        self.dtype = dtype
        self.model = model.to(device=self.device, dtype=dtype).eval()
        self.processor = processor
        self.readout = readout
        self.dim = int(dim) if dim is not None else self._probe_dim()
        self._fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the weights as they run (every tensor of the state dict, after the dtype cast),
        the model config, the processor's settings, the readout and the dtype. Two paths to the same
        weights give one fingerprint; a model re-exported to the same folder gives another.

        Computed once, on first use, on the CPU one tensor at a time, at SHA-256's speed (measured
        here: SO400M/14-384, 428 M parameters, 1.71 GB in float32 in 3.9 s at 0.44 GB/s on a loaded
        2-core machine; ~1.3 s at the idle machine's 1.3 GB/s); an encoder's weights do not change
        after loading (the trainer's validation encoder, whose head does, never asks)."""
        if self._fingerprint is None:
            from nearid.io.fingerprint import of_json, of_tensors

            config = getattr(self.model, "config", None)
            processor = self.processor.to_dict() if hasattr(self.processor, "to_dict") else repr(self.processor)
            self._fingerprint = of_json(
                {
                    "weights": of_tensors(self.model.state_dict()),
                    "config": semantic_config(config.to_dict()) if config is not None else None,
                    "processor": semantic_config(processor) if isinstance(processor, dict) else processor,
                    "readout": f"{self.readout.__module__}.{getattr(self.readout, '__qualname__', repr(self.readout))}",
                    "dtype": str(self.dtype),
                }
            )
        return self._fingerprint

    def __repr__(self) -> str:
        return f"<Encoder {self.name} dim={self.dim} device={self.device} dtype={self.dtype}>"

    def preprocess(self, images, masks=None) -> torch.Tensor:
        return preprocess_images(self.processor, images, masks)

    @property
    def pixel_split(self) -> PixelSplit | None:
        """:meth:`preprocess` cut at its uint8 boundary (:func:`~nearid.images.processors.split_processor`), for
        :func:`nearid.embed`'s workers; ``None`` for a processor that cannot be split exactly, or a
        ``preprocess`` of its own (a subclass's, or one set on the instance), which the split would bypass."""
        if getattr(self.preprocess, "__func__", None) is not TransformersEncoder.preprocess:
            return None
        if not hasattr(self, "_pixel_split"):
            self._pixel_split = split_processor(self.processor)
        return self._pixel_split

    @torch.inference_mode()
    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        features = self.readout(self.model, pixel_values.to(device=self.device, dtype=self.dtype)).float()
        finite = torch.isfinite(features).all(dim=-1)
        if not bool(finite.all()):  # an fp16 overflow would otherwise become a NaN score, silently
            raise NonFiniteEmbeddingError(
                f"encoder {self.name} produced a non-finite embedding for {int((~finite).sum())} of {len(finite)} "
                f"images in {str(self.dtype).removeprefix('torch.')}; rerun with --dtype fp32 (or bf16)"
            )
        return F.normalize(features, dim=-1).cpu()

    def _probe_dim(self) -> int:
        """Embed one grey image to learn the width of a model whose config does not say it."""
        from PIL import Image

        return self.embed(self.preprocess([Image.new("RGB", (32, 32), (128, 128, 128))])).shape[-1]


#: Config entries that name where a model came from or which library wrote it, not what it computes.
_NON_SEMANTIC = {"transformers_version", "architectures", "auto_map", "dtype", "torch_dtype"}


def semantic_config(values: dict) -> dict:
    """A config or processor dict without provenance (``_name_or_path``, versions), recursively."""
    return {
        k: semantic_config(v) if isinstance(v, dict) else v
        for k, v in values.items()
        if k not in _NON_SEMANTIC and not str(k).startswith("_")
    }


# --------------------------------------------------------------------------------------- readouts
def nearid_readout(model: NearIDModel, pixel_values: torch.Tensor) -> torch.Tensor:
    return model.get_image_features(pixel_values, normalize=False)


def pooler_readout(model, pixel_values: torch.Tensor) -> torch.Tensor:
    return model(pixel_values=pixel_values).pooler_output


def mean_token_readout(model, pixel_values: torch.Tensor) -> torch.Tensor:
    return model(pixel_values=pixel_values).last_hidden_state.mean(dim=1)


def image_embeds_readout(model, pixel_values: torch.Tensor) -> torch.Tensor:
    return model(pixel_values=pixel_values).image_embeds


def cls_token_readout(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """The CLS token of the last (post-LN) hidden state, ``last_hidden_state[:, 0]``: DINO's embedding."""
    return model(pixel_values=pixel_values).last_hidden_state[:, 0]


def generic_readout(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """How ``hf:<id>`` pools, first rule that applies:

    1. the model has ``get_image_features`` (CLIP, SigLIP, ... full models): its output
       (``pooler_output`` when it returns a model output);
    2. the output has ``image_embeds`` (``*WithProjection`` models);
    3. the output has a ``pooler_output`` (CLS-after-LN for ViT/DINOv2, MAP head for SigLIP);
    4. the model was built without its pooler (``model.pooler is None``: a checkpoint saved without
       pooler weights, e.g. ``facebook/dino-vits16``; see :func:`nearid.models.loading.load_pretrained`):
       the CLS token ``last_hidden_state[:, 0]``;
    5. otherwise the mean of ``last_hidden_state`` over tokens, or over H and W for a feature map.
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
    if hasattr(model, "pooler") and model.pooler is None and hidden.ndim == 3:
        return hidden[:, 0]
    return hidden.mean(dim=(2, 3)) if hidden.ndim == 4 else hidden.mean(dim=1)


# --------------------------------------------------------------------------------------- registry
Builder = Callable[[str, LoadOptions], Encoder]
_BUILDERS: dict[str, Builder] = {}


def register_encoder(family: str, *, default: str | None = None, help: str = ""):
    """Add an encoder family; ``build(argument, options)`` returns an :class:`Encoder`."""

    def decorator(build):
        register_family(family, default=default, help=help)
        _BUILDERS[family] = build
        return build

    return decorator


def _builder(family: str):
    """A builder for a family that :mod:`nearid.models.specs` declares (name, default and help live there)."""

    def decorator(build):
        _BUILDERS[family] = build
        return build

    return decorator


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
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device, family: str | None = None) -> torch.dtype:
    """``auto`` is fp32 on the CPU; on CUDA fp16 for the families the authors ran in fp16 (NearID,
    SigLIP2, CLIP, DINOv2: :data:`~nearid.models.specs.FP16_FAMILIES`; spec 12.10) and bf16 for the others
    (fp32 where the GPU has no bf16). ``family=None`` is a NearID model (:func:`nearid_encoder`)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if device.type != "cuda":
            return torch.float32
        if family is None or family in FP16_FAMILIES:
            return torch.float16
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise EncoderSpecError(f"unknown dtype '{dtype}'; use one of auto, {', '.join(_DTYPES)}") from None


def load_encoder(
    spec: str,
    options: LoadOptions | None = None,
    *,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "auto",
    allow_pickle: bool = False,
) -> Encoder:
    """Build the encoder a spec names (grammar: :mod:`nearid.models.specs`), loaded as ``options`` say
    (a :class:`~nearid.models.options.LoadOptions`; without one, from ``device``, ``dtype`` and
    ``allow_pickle``). The builder receives the options with device and dtype resolved."""
    if options is None:
        options = LoadOptions(device=device, dtype=dtype, allow_pickle=allow_pickle)
    parsed = parse_encoder_spec(spec)
    build = _BUILDERS.get(parsed.family)
    if build is None:
        raise EncoderSpecError(f"encoder '{spec}' is listed but has no loader; register one with register_encoder")
    resolved = resolve_device(options.device)
    options = dataclasses.replace(options, device=resolved, dtype=resolve_dtype(options.dtype, resolved, parsed.family))
    return build(parsed.argument, options)


def nearid_encoder(
    model: NearIDModel,
    processor,
    *,
    name: str,
    readout: Readout | None = None,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "auto",
    untrained: bool = False,
) -> TransformersEncoder:
    """An :class:`Encoder` over a NearID-shaped model and its processor (as :func:`load_backbone` returns
    them). ``readout`` defaults to the MAP-head output (:func:`nearid_readout`). The model is moved and
    cast in place, not copied: an encoder over a model being trained sees its current head."""
    resolved = resolve_device(device)
    return TransformersEncoder(
        name,
        model,
        processor,
        readout or nearid_readout,
        device=resolved,
        dtype=resolve_dtype(dtype, resolved),
        dim=model.config.embed_dim,
        untrained=untrained,
    )


def _encoder(name, model, processor, readout, options: LoadOptions, **kw) -> TransformersEncoder:
    return TransformersEncoder(name, model, processor, readout, device=options.device, dtype=options.dtype, **kw)


def _backbone_encoder(spec: EncoderSpec, backbone: BackboneSpec, readout: Readout, options: LoadOptions, **kw):
    model, processor = load_backbone(backbone, allow_pickle=options.allow_pickle)
    return nearid_encoder(
        model, processor, name=str(spec), readout=readout, device=options.device, dtype=options.dtype, **kw
    )


@_builder("nearid")
def _nearid(argument: str, options: LoadOptions):
    return _backbone_encoder(EncoderSpec("nearid", argument), BackboneSpec("nearid", argument), nearid_readout, options)


@_builder("siglip2-map")
def _siglip2_map(argument: str, options: LoadOptions):
    # NearID's initial head *is* SigLIP's pretrained MAP head, so its raw output is SigLIP's pooler_output
    return _backbone_encoder(
        EncoderSpec("siglip2-map", argument), BackboneSpec("siglip", argument), nearid_readout, options
    )


@_builder("siglip2-mean")
def _siglip2_mean(argument: str, options: LoadOptions):
    return _backbone_encoder(
        EncoderSpec("siglip2-mean", argument), BackboneSpec("siglip", argument), mean_token_readout, options
    )


@_builder("tiny")
def _tiny(argument: str, options: LoadOptions):
    seed = integer_argument(EncoderSpec("tiny", argument))
    model, processor = load_backbone(BackboneSpec("tiny", str(seed)))
    return nearid_encoder(
        model, processor, name=f"tiny:{seed} (untrained)", device=options.device, dtype=options.dtype, untrained=True
    )


def _clip_encoder(family: str, argument: str, options: LoadOptions, openai_preprocessing: bool = False):
    from transformers import CLIPVisionModelWithProjection

    folder, model = load_pretrained(CLIPVisionModelWithProjection, argument, allow_pickle=options.allow_pickle)
    if openai_preprocessing:
        processor = OpenAIClipProcessor(model.config.image_size)
    else:
        processor = load_processor(folder, clip_processor())
    return _encoder(
        f"{family}:{argument}", model, processor, image_embeds_readout, options, dim=model.config.projection_dim
    )


@_builder("clip")
def _clip(argument: str, options: LoadOptions):
    return _clip_encoder("clip", argument, options)


@_builder("clip-i")
def _clip_i(argument: str, options: LoadOptions):
    # DreamBooth's CLIP-I: CLIPModel.get_image_features = visual_projection(pooled CLS) = the projection
    # model's image_embeds, with OpenAI clip.load's preprocessing (torchvision's crop rounding), not the
    # checkpoint's processor; `clip` (the paper's baseline) keeps the checkpoint's, as the authors ran it
    return _clip_encoder("clip-i", argument, options, openai_preprocessing=True)


@_builder("dino-i")
def _dino_i(argument: str, options: LoadOptions):
    """DreamBooth's DINO metric: DINO ViT-S/16's CLS token with DINO's evaluation preprocessing."""
    from transformers import ViTModel

    # built without a pooler: DINO has none (the checkpoint has no pooler weights), the CLS token is read
    _, model = load_pretrained(ViTModel, argument, allow_pickle=options.allow_pickle, add_pooling_layer=False)
    processor = DinoEvalProcessor.for_image_size(model.config.image_size)
    return _encoder(f"dino-i:{argument}", model, processor, cls_token_readout, options, dim=model.config.hidden_size)


@_builder("dinov3")
def _dinov3(argument: str, options: LoadOptions):
    from transformers import DINOv3ViTModel

    folder, model = load_pretrained(DINOv3ViTModel, argument, allow_pickle=options.allow_pickle)
    processor = dinov3_processor(folder, model.config.image_size)
    # DINOv3ViTModel's pooler_output is the final-norm CLS token (no pooler weights)
    return _encoder(f"dinov3:{argument}", model, processor, pooler_readout, options, dim=model.config.hidden_size)


@_builder("dinov2")
def _dinov2(argument: str, options: LoadOptions):
    from transformers import Dinov2Model

    folder, model = load_pretrained(Dinov2Model, argument, allow_pickle=options.allow_pickle)
    processor = load_processor(folder, dinov2_processor())
    return _encoder(f"dinov2:{argument}", model, processor, pooler_readout, options, dim=model.config.hidden_size)


@_builder("hf")
def _hf(argument: str, options: LoadOptions):
    from transformers import AutoModel

    folder, model = load_pretrained(AutoModel, argument, allow_pickle=options.allow_pickle, pooler_optional=True)
    return _encoder(f"hf:{argument}", model, load_processor(folder), generic_readout, options)


@_builder("vlm")
def _vlm(argument: str, options: LoadOptions):
    raise EncoderSpecError(
        f"vlm:{argument} is a judge (a pair scorer), not an encoder: it scores pairs of images and has no "
        "embedding; use it with nearid bench / nearid score (nearid.judges.loading.load_metric)"
    )


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
        from nearid.io.fingerprint import of_json

        # its settings are all it is; "v1" names this implementation (bump it if the arithmetic changes)
        self.fingerprint = of_json({"encoder": "histogram", "bins": bins, "size": size, "implementation": "v1"})

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


@_builder("histogram")
def _histogram(argument: str, options: LoadOptions):
    return HistogramEncoder(integer_argument(EncoderSpec("histogram", argument)))


__all__ = [
    "Encoder",
    "HistogramEncoder",
    "LoadOptions",
    "NonFiniteEmbeddingError",
    "TransformersEncoder",
    "available_encoders",
    "cls_token_readout",
    "generic_readout",
    "image_embeds_readout",
    "load_encoder",
    "mean_token_readout",
    "nearid_encoder",
    "nearid_readout",
    "pooler_readout",
    "register_encoder",
    "resolve_device",
    "resolve_dtype",
]
