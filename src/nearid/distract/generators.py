"""Inpainting generators for ``nearid distract``: a registry of diffusers pipelines, real and tiny.

Each generator is one diffusers pipeline with the paper's settings (spec sections 3.2 and 12.8) as
defaults. ``tiny-*`` generators are the same pipeline classes built from small configs with random
weights and locally constructed tokenizers: no download, a few seconds per image on a CPU. They make
noise, not objects — they exist so the whole distractor pipeline can be run and tested offline, and
everything they make is labelled *untrained*.

diffusers is imported inside functions only: ``nearid --help`` and the rest of the CLI must not pay
for it, and it is an optional extra (``pip install nearid[distract]``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image

from nearid.io.errors import ModelNotAvailableError, NearIDError
from nearid.tiny.pipelines import build_tiny_flux_fill, build_tiny_sdxl_inpaint
from nearid.tiny.tokenizers import tiny_clip_tokenizer, tiny_t5_tokenizer  # noqa: F401  (re-exported: their old home)

#: The SDXL negative prompt: the paper's "text/watermark/low resolution" (spec 3.2).
SDXL_NEGATIVE = "text, watermark, logo, signature, low resolution, blurry, jpeg artifacts, deformed"


class GeneratorError(NearIDError):
    """An unknown generator, a missing optional dependency, or a model that does not fit the device."""


@dataclass(frozen=True)
class GeneratorSettings:
    """Everything that changes a generated image; part of the content key of every output shard."""

    steps: int
    guidance: float
    resolution: int  # longer side of the generation canvas (sides rounded to a multiple of 16)
    strength: float | None = None
    negative_prompt: str | None = None
    true_cfg: float | None = None
    conditioning_scale: float | None = None
    max_sequence_length: int | None = None


@dataclass(frozen=True)
class GeneratorSpec:
    name: str
    pipeline: str  # the diffusers class, for messages and docs
    model: str  # default hub id (or "tiny")
    defaults: GeneratorSettings
    needs: str  # memory and licence, shown by `nearid distract --list`
    build: Callable[..., object] = field(repr=False, compare=False)
    untrained: bool = False


def _resolve(model: str) -> str:
    """A local folder for ``model``; offline or missing weights become one line with the download fix."""
    from nearid.io.hub import resolve_model_dir

    return str(resolve_model_dir(model))


# ------------------------------------------------------------------------------------- real pipelines
def _build_flux_fill(model: str, dtype, **_):
    from diffusers import FluxFillPipeline

    return FluxFillPipeline.from_pretrained(_resolve(model), torch_dtype=dtype)


def _build_sdxl_inpaint(model: str, dtype, **_):
    from diffusers import StableDiffusionXLInpaintPipeline

    # No invisible watermark: it is a generator fingerprint an encoder could learn (issue 15).
    return StableDiffusionXLInpaintPipeline.from_pretrained(_resolve(model), torch_dtype=dtype, add_watermarker=False)


def _build_qwen_image(model: str, dtype, *, controlnet: str | None = None, lora: str | None = None, **_):
    from diffusers import QwenImageControlNetInpaintPipeline, QwenImageControlNetModel

    net = QwenImageControlNetModel.from_pretrained(_resolve(controlnet or QWEN_INPAINT_CONTROLNET), torch_dtype=dtype)
    pipe = QwenImageControlNetInpaintPipeline.from_pretrained(_resolve(model), controlnet=net, torch_dtype=dtype)
    if lora:
        try:
            import peft  # noqa: F401
        except ImportError:
            raise GeneratorError("--lora needs peft: pip install peft") from None
        pipe.load_lora_weights(_resolve(lora))
    return pipe


QWEN_INPAINT_CONTROLNET = "InstantX/Qwen-Image-ControlNet-Inpainting"


# ------------------------------------------------------------------------------------- registry
GENERATORS: dict[str, GeneratorSpec] = {
    spec.name: spec
    for spec in (
        GeneratorSpec(
            "flux-fill",
            "FluxFillPipeline",
            "black-forest-labs/FLUX.1-Fill-dev",
            GeneratorSettings(steps=50, guidance=30.0, resolution=512, max_sequence_length=512),
            "~34 GB of weights (bf16, ~24 GB VRAM with CPU offload of the T5); FLUX.1 [dev] Non-Commercial License",
            _build_flux_fill,
        ),
        GeneratorSpec(
            "sdxl-inpaint",
            "StableDiffusionXLInpaintPipeline",
            "diffusers/stable-diffusion-xl-1.0-inpainting-0.1",
            GeneratorSettings(steps=30, guidance=8.0, resolution=512, strength=0.99, negative_prompt=SDXL_NEGATIVE),
            "~7 GB of weights (fp16, ~10 GB VRAM); CreativeML Open RAIL++-M License",
            _build_sdxl_inpaint,
        ),
        GeneratorSpec(
            "qwen-image",
            "QwenImageControlNetInpaintPipeline",
            "Qwen/Qwen-Image",
            GeneratorSettings(
                steps=8, guidance=1.0, resolution=512, true_cfg=1.0, conditioning_scale=1.0, negative_prompt=" "
            ),
            "~58 GB of weights (bf16, a 80 GB GPU, or CPU offload) + the InstantX inpainting ControlNet; "
            "Apache-2.0 (model, ControlNet and Lightning LoRA); --lora lightx2v/Qwen-Image-Lightning needs peft",
            _build_qwen_image,
        ),
        GeneratorSpec(
            "tiny-flux-fill",
            "FluxFillPipeline",
            "tiny",
            GeneratorSettings(steps=4, guidance=30.0, resolution=64, max_sequence_length=32),
            "random weights built from a config, no download (tests, offline example); makes noise",
            build_tiny_flux_fill,
            untrained=True,
        ),
        GeneratorSpec(
            "tiny-sdxl-inpaint",
            "StableDiffusionXLInpaintPipeline",
            "tiny",
            GeneratorSettings(steps=4, guidance=8.0, resolution=64, strength=0.99, negative_prompt=SDXL_NEGATIVE),
            "random weights built from a config, no download (tests, offline example); makes noise",
            build_tiny_sdxl_inpaint,
            untrained=True,
        ),
    )
}


def generator_spec(name: str) -> GeneratorSpec:
    try:
        return GENERATORS[name]
    except KeyError:
        raise GeneratorError(f"unknown generator '{name}'; choose from {', '.join(GENERATORS)}") from None


def generation_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    """The canvas for an image of ``width`` x ``height``: longer side ``resolution``, sides multiples of 16."""
    scale = resolution / max(width, height)
    return tuple(max(16, round(side * scale / 16) * 16) for side in (width, height))


def view_seed(seed: int, identity, slot: int, source: str) -> int:
    """One seed per (identity, view, source): a re-run, or another process, draws the same noise."""
    digest = hashlib.sha256(f"{seed}\n{identity}\n{slot}\n{source}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class Generator:
    """A loaded pipeline plus its settings; :meth:`inpaint` returns an image the size of its input."""

    def __init__(self, spec: GeneratorSpec, settings: GeneratorSettings, model: str, pipe, device, options: dict):
        self.spec, self.settings, self.model, self.pipe, self.device = spec, settings, model, pipe, device
        self.options = options  # controlnet / lora / tiny seed: part of the fingerprint

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def untrained(self) -> bool:
        return self.spec.untrained

    def fingerprint(self) -> dict:
        """What a shard's content key includes about the generator."""
        return {"generator": self.spec.name, "model": self.model, "settings": asdict(self.settings), **self.options}

    def inpaint(self, image: Image.Image, mask: np.ndarray, prompt: str, seed: int) -> Image.Image:
        """Inpaint ``prompt`` into the ``mask`` region of ``image`` (RGB, any size); same size out (Lanczos)."""
        import torch

        width, height = generation_size(image.width, image.height, self.settings.resolution)
        canvas = image.resize((width, height), Image.Resampling.LANCZOS)
        mask_image = Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height), Image.Resampling.NEAREST)
        s = self.settings
        kwargs = dict(
            prompt=prompt,
            height=height,
            width=width,
            num_inference_steps=s.steps,
            generator=torch.Generator("cpu").manual_seed(seed),
        )
        if self.spec.pipeline == "QwenImageControlNetInpaintPipeline":
            kwargs.update(
                control_image=canvas,
                control_mask=mask_image,
                true_cfg_scale=s.true_cfg,
                controlnet_conditioning_scale=s.conditioning_scale,
                negative_prompt=s.negative_prompt,
            )
        else:
            kwargs.update(image=canvas, mask_image=mask_image, guidance_scale=s.guidance)
            if s.strength is not None:
                kwargs["strength"] = s.strength
            if s.negative_prompt is not None:
                kwargs["negative_prompt"] = s.negative_prompt
            if s.max_sequence_length is not None:
                kwargs["max_sequence_length"] = s.max_sequence_length
        try:
            out = self.pipe(**kwargs).images[0]
        except torch.OutOfMemoryError:
            raise GeneratorError(
                f"{self.spec.name}: out of memory on {self.device} at {width}x{height}; use --resolution smaller, "
                "--dtype bfloat16, --offload (model CPU offload) or a larger GPU"
            ) from None
        return out.convert("RGB").resize(image.size, Image.Resampling.LANCZOS)


def load_generator(
    name: str,
    *,
    model: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    offload: bool = False,
    controlnet: str | None = None,
    lora: str | None = None,
    **overrides,
) -> Generator:
    """Build generator ``name`` with the paper's settings, ``overrides`` (``steps=...``) applied."""
    spec = generator_spec(name)
    try:
        import diffusers  # noqa: F401
    except ImportError:
        raise GeneratorError("nearid distract needs diffusers: pip install 'nearid[distract]'") from None
    import torch

    from nearid.models.encoders import resolve_device, resolve_dtype

    known = set(GeneratorSettings.__dataclass_fields__)
    unknown = set(overrides) - known
    if unknown:
        raise TypeError(f"unknown generator settings {sorted(unknown)}")
    settings = GeneratorSettings(**{**asdict(spec.defaults), **{k: v for k, v in overrides.items() if v is not None}})
    if settings.steps < 1 or settings.resolution < 16:
        raise GeneratorError(
            f"{name}: steps must be >= 1 and resolution >= 16 (got {settings.steps}, {settings.resolution})"
        )
    target = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, target)
    model = model or spec.model
    options = {"controlnet": controlnet, "lora": lora} if spec.name == "qwen-image" else {}
    with quiet():
        try:
            pipe = spec.build(model, torch_dtype, controlnet=controlnet, lora=lora)
        except ModelNotAvailableError:
            raise
        except (OSError, ValueError) as exc:
            raise ModelNotAvailableError(
                f"{name}: '{model}' is not a loadable {spec.pipeline} folder ({type(exc).__name__}: {str(exc)[:160]})"
            ) from None
    try:
        if offload and target.type == "cuda":
            pipe.enable_model_cpu_offload(device=target)
        else:
            pipe.to(target)
    except torch.OutOfMemoryError:
        raise GeneratorError(
            f"{name}: the model does not fit on {target}; pass --offload (model CPU offload), --dtype bfloat16, "
            "or use a larger GPU"
        ) from None
    pipe.set_progress_bar_config(disable=True)
    return Generator(spec, settings, model, pipe, target, options)


@contextlib.contextmanager
def quiet():
    """Only errors from transformers and diffusers while a pipeline is built (no load reports)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    levels = transformers_logging.get_verbosity(), diffusers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(levels[0])
        diffusers_logging.set_verbosity(levels[1])


def settings_key(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
