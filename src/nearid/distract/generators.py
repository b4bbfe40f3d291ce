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

from ..errors import ModelNotAvailableError, NearIDError

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
    from ..hub import resolve_model_dir

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


# ------------------------------------------------------------------------------------- tiny pipelines
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes)))


def tiny_clip_tokenizer():
    """CLIP's byte-level BPE reduced to characters: every byte, its ``</w>`` word-end form, no merges."""
    from transformers import CLIPTokenizer

    chars = list(_bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def tiny_t5_tokenizer():
    """A T5-style Unigram tokenizer over lower-case letters and digits (``</s>`` appended, ``<pad>`` = 0)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    letters = "abcdefghijklmnopqrstuvwxyz"
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(c, -3.0) for c in letters + "0123456789"] + [("▁" + c, -2.5) for c in letters]
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=512
    )


def _tiny_clip_text(vocab_size: int, projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=vocab_size,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        projection_dim=32,
        max_position_embeddings=77,
        hidden_act="gelu",
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def _build_tiny_sdxl_inpaint(model: str, dtype, *, seed: int = 0, **_):
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLInpaintPipeline, UNet2DConditionModel

    torch.manual_seed(seed)  # random weights, but the same ones every time
    tokenizer = tiny_clip_tokenizer()
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        sample_size=32,
        in_channels=9,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=80,
        cross_attention_dim=64,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        block_out_channels=[8, 16],
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        sample_size=64,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        norm_num_groups=4,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, steps_offset=1, beta_schedule="scaled_linear", timestep_spacing="leading"
    )
    pipe = StableDiffusionXLInpaintPipeline(
        vae=vae,
        unet=unet,
        scheduler=scheduler,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        text_encoder=_tiny_clip_text(len(tokenizer), False),
        text_encoder_2=_tiny_clip_text(len(tokenizer), True),
        requires_aesthetics_score=False,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    return _evaluation_mode(pipe).to(dtype=dtype)


def _evaluation_mode(pipe):
    """Modules built from configs start in training mode; T5's dropout would make every call differ."""
    for component in pipe.components.values():
        if hasattr(component, "eval") and hasattr(component, "parameters"):
            component.eval()
    return pipe


def _build_tiny_flux_fill(model: str, dtype, *, seed: int = 0, **_):
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxFillPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    clip, t5 = tiny_clip_tokenizer(), tiny_t5_tokenizer()
    latent, scale = 4, 2  # latent channels; VAE downscale (2 blocks)
    vae = AutoencoderKL(
        block_out_channels=(4, 8),
        in_channels=3,
        out_channels=3,
        latent_channels=latent,
        sample_size=32,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        layers_per_block=1,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    transformer = FluxTransformer2DModel(  # packed latents + packed masked-image latents + packed mask
        patch_size=1,
        in_channels=8 * latent + 4 * scale * scale,
        out_channels=4 * latent,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    )
    text_2 = T5EncoderModel(
        T5Config(
            vocab_size=len(t5),
            d_model=32,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    )
    pipe = FluxFillPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        transformer=transformer,
        text_encoder=_tiny_clip_text(len(clip), False),
        tokenizer=clip,
        text_encoder_2=text_2,
        tokenizer_2=t5,
    )
    return _evaluation_mode(pipe).to(dtype=dtype)


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
            _build_tiny_flux_fill,
            untrained=True,
        ),
        GeneratorSpec(
            "tiny-sdxl-inpaint",
            "StableDiffusionXLInpaintPipeline",
            "tiny",
            GeneratorSettings(steps=4, guidance=8.0, resolution=64, strength=0.99, negative_prompt=SDXL_NEGATIVE),
            "random weights built from a config, no download (tests, offline example); makes noise",
            _build_tiny_sdxl_inpaint,
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

    from ..encoders import resolve_device, resolve_dtype

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
