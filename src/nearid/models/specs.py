"""Encoder and backbone specs, parsed in one place, without importing torch or transformers.

A spec is a string a user types (``nearid bench --model``, ``nearid train --backbone``); this module
turns it into what the factories need, so ``nearid encoders`` and argument errors stay instant and the
two grammars cannot drift apart. The factories that build models from a parsed spec are
:func:`nearid.models.backbones.load_backbone` (a :class:`~nearid.models.nearid_model.NearIDModel` and its preprocessing)
and :func:`nearid.models.encoders.load_encoder` (an :class:`~nearid.models.encoders.Encoder`).

Encoder specs are ``family`` or ``family:argument``:

==================  ===============================================================================
``nearid[:X]``      NearID model in our or the authors' release layout; X = folder or hub id
                    (default ``Aleksandar/nearid-siglip2``)
``siglip2-map[:X]`` frozen SigLIP2 vision tower, its pretrained MAP-head output (default
                    ``google/siglip2-so400m-patch14-384``)
``siglip2-mean[:X]`` mean of SigLIP2's 729 post-LN patch tokens, head skipped (the paper's DB++ baseline)
``clip[:X]``        CLIP image features = projected pooled CLS (default ``openai/clip-vit-large-patch14``)
``dinov2[:X]``      DINOv2 ``pooler_output`` = final-LN CLS token (default ``facebook/dinov2-large``)
``clip-i[:X]``      DreamBooth's CLIP-I: CLIP ViT-B/32 ``get_image_features`` with its processor
                    (default ``openai/clip-vit-base-patch32``)
``dino-i[:X]``      DreamBooth's DINO: DINO ViT-S/16 CLS token ``last_hidden_state[:, 0]`` with DINO's
                    evaluation preprocessing (default ``facebook/dino-vits16``)
``dinov3[:X]``      DINOv3 ``pooler_output`` = final-norm CLS token (default
                    ``facebook/dinov3-vitl16-pretrain-lvd1689m``)
``hf:X``            any transformers image model, pooled by :func:`nearid.models.encoders.generic_readout`
``vlm:X``           a Qwen-VL judge that reads both images of a pair and answers 0-10 (a
                    :class:`~nearid.models.pair_scorers.PairScorer`, not an encoder; :mod:`nearid.judges.vlm`)
``histogram[:B]``   joint RGB colour histogram with B bins per channel (no model)
``tiny[:SEED]``     deterministic, randomly initialised (UNTRAINED) tiny NearID model for tests and demos
==================  ===============================================================================

Backbone specs (what training starts from, what ``export`` rebuilds) are ``tiny[:SEED]``,
``nearid[:X]`` (a NearID checkpoint, e.g. to continue training) or a bare SigLIP folder or hub id
(its pretrained MAP head becomes NearID's initial head).
"""

from __future__ import annotations

from dataclasses import dataclass

from nearid.io.errors import EncoderSpecError

#: The paper's backbone (spec section 2.1).
DEFAULT_BACKBONE = "google/siglip2-so400m-patch14-384"
#: The authors' released NearID model.
RELEASE_MODEL = "Aleksandar/nearid-siglip2"


@dataclass(frozen=True)
class Family:
    """What ``nearid encoders`` lists about a family, and how its argument is read.

    ``integer`` says what an integer argument means ("an integer seed"); ``None`` = a folder or hub id.
    ``bounds`` = the smallest and largest integer that makes sense (``None`` = no bound).
    """

    name: str
    default: str | None
    help: str
    integer: str | None = None
    bounds: tuple[int | None, int | None] = (None, None)


_FAMILIES: dict[str, Family] = {}

#: Families whose ``--dtype auto`` is fp16 on CUDA: the NearID release stores fp16 and the authors
#: evaluated every embedding baseline (NearID, SigLIP2, CLIP, DINOv2) in fp16 (spec 12.3, 12.10); bf16
#: embeddings are ~10x further from fp32. Families they did not run keep bf16 on CUDA; every family's
#: ``auto`` is fp32 on the CPU. An fp16 overflow is an error, never a NaN (``TransformersEncoder.embed``).
FP16_FAMILIES = ("nearid", "siglip2-map", "siglip2-mean", "clip", "dinov2", "tiny")


def register_family(
    name: str,
    *,
    default: str | None = None,
    help: str = "",
    integer: str | None = None,
    bounds: tuple[int | None, int | None] = (None, None),
) -> Family:
    """Add (or replace) a family's name, default argument and description."""
    family = Family(name, default, help, integer, bounds)
    _FAMILIES[name] = family
    return family


for _family in (
    Family("nearid", RELEASE_MODEL, "NearID identity encoder (ours or the authors' release)"),
    Family("siglip2-map", DEFAULT_BACKBONE, "frozen SigLIP2, pretrained MAP-head output"),
    Family("siglip2-mean", DEFAULT_BACKBONE, "frozen SigLIP2, mean of post-LN patch tokens"),
    Family("clip", "openai/clip-vit-large-patch14", "CLIP-I: projected pooled CLS"),
    Family("dinov2", "facebook/dinov2-large", "DINOv2: pooler output (final-LN CLS)"),
    Family("clip-i", "openai/clip-vit-base-patch32", "DreamBooth CLIP-I: ViT-B/32 get_image_features"),
    Family("dino-i", "facebook/dino-vits16", "DreamBooth DINO: ViT-S/16 CLS token, DINO eval preprocessing"),
    Family("dinov3", "facebook/dinov3-vitl16-pretrain-lvd1689m", "DINOv3: pooler output (final-norm CLS)"),
    Family("hf", None, "any transformers image model: hf:<folder or hub id>"),
    # No default: the paper's judge (Qwen/Qwen3-VL-30B-A3B-Instruct) is ~60 GB and ~20 s per pair on an
    # A100; a bare `vlm` must not start that. Naming the model is part of the metric's name anyway.
    Family("vlm", None, "VLM judge (pair scorer; Qwen3-VL, Qwen3-VL-MoE, Qwen2.5-VL): vlm:<folder or hub id>"),
    # B bins per channel make B**3 dimensions: 64 is already 262,144 floats per image, and 8-bit
    # channels cannot fill more than 256 bins anyway; 0 or fewer bins is no histogram.
    Family(
        "histogram",
        "8",
        "joint RGB colour histogram (no model; context-dominated floor)",
        "a number of bins per channel",
        (1, 64),
    ),
    # the range torch.manual_seed accepts
    Family(
        "tiny",
        "0",
        "tiny NearID model with random weights (UNTRAINED; tests, demos)",
        "an integer seed",
        (-(2**63), 2**64 - 1),
    ),
):
    _FAMILIES[_family.name] = _family


def available_encoders() -> dict[str, str]:
    """Family name (with its default argument) -> one-line description."""
    return {(f"{f.name}[:{f.default}]" if f.default else f.name): f.help for f in _FAMILIES.values()}


@dataclass(frozen=True)
class EncoderSpec:
    """A parsed encoder spec: the family and its argument (the family's default filled in)."""

    family: str
    argument: str

    def __str__(self) -> str:
        return f"{self.family}:{self.argument}"


def parse_encoder_spec(spec: str) -> EncoderSpec:
    """``family[:argument]`` -> :class:`EncoderSpec`; an unknown family or a bad argument is an
    :class:`EncoderSpecError` naming the spec and the fix."""
    name, _, argument = str(spec).partition(":")
    family = _FAMILIES.get(name)
    if family is None:
        raise EncoderSpecError(f"unknown encoder '{spec}'; known: {', '.join(available_encoders())}")
    argument = argument or family.default
    if argument is None:
        raise EncoderSpecError(f"encoder '{name}' needs an argument: '{name}:<folder or hub id>'")
    if family.integer is not None:
        _integer(family, argument)
    return EncoderSpec(name, argument)


def check_distinct_specs(specs: list[str], option: str = "--model") -> None:
    """Refuse one metric named twice, however spelled (``histogram`` and ``histogram:8`` are the same
    encoder: the family's default filled in, integer arguments compared as numbers); its column or
    results entry would otherwise be written twice."""
    seen: dict[tuple, str] = {}
    for spec in specs:
        parsed = parse_encoder_spec(spec)
        family = _FAMILIES[parsed.family]
        key = (parsed.family, _integer(family, parsed.argument) if family.integer else parsed.argument)
        if key in seen:
            same = (
                f"{option} {seen[key]} and {option} {spec} are one metric"
                if seen[key] != spec
                else f"{option} {spec} is given twice"
            )
            raise EncoderSpecError(f"{same} ({parsed}); give each model once")
        seen[key] = spec


def integer_argument(spec: EncoderSpec) -> int:
    """The integer argument of a family that takes one (``tiny``'s seed, ``histogram``'s bins)."""
    return _integer(_FAMILIES[spec.family], spec.argument)


def _integer(family: Family, argument: str) -> int:
    try:
        value = int(argument)
    except ValueError:
        raise EncoderSpecError(f"{family.name} encoder takes {family.integer}, got '{argument}'") from None
    low, high = family.bounds
    if (low is not None and value < low) or (high is not None and value > high):
        span = (
            f"from {low} to {high}"
            if low is not None and high is not None
            else (f"of at least {low}" if low is not None else f"of at most {high}")
        )
        raise EncoderSpecError(
            f"{family.name}:{argument}: {family.name} takes {family.integer} {span}, e.g. {family.name}:{family.default}"
        )
    return value


@dataclass(frozen=True)
class BackboneSpec:
    """What a NearID model is built from: ``kind`` is ``"tiny"`` (``argument`` = seed), ``"nearid"``
    (a NearID checkpoint folder or hub id) or ``"siglip"`` (a SigLIP checkpoint folder or hub id)."""

    kind: str
    argument: str

    @property
    def seed(self) -> int:
        if self.kind != "tiny":
            raise ValueError(f"a {self.kind} backbone has no seed")
        return int(self.argument)

    def __str__(self) -> str:
        return self.argument if self.kind == "siglip" else f"{self.kind}:{self.argument}"


def parse_backbone(spec: str) -> BackboneSpec:
    """``tiny[:SEED]``, ``nearid[:X]`` or a SigLIP folder / hub id -> :class:`BackboneSpec`.

    Only the exact words ``tiny`` / ``nearid`` (alone or before ``:``) are families, so a folder or
    hub id that merely starts with them (``tinyvit/``, ``nearid_runs/x``) is read as a SigLIP checkpoint.
    """
    spec = str(spec)
    if not spec.strip():
        raise EncoderSpecError(
            f"empty backbone; pass a SigLIP folder or hub id (default {DEFAULT_BACKBONE}), tiny[:SEED] or nearid[:DIR]"
        )
    name = spec.partition(":")[0]
    if name in ("tiny", "nearid"):
        parsed = parse_encoder_spec(spec)
        return BackboneSpec(name, str(integer_argument(parsed)) if name == "tiny" else parsed.argument)
    return BackboneSpec("siglip", spec)


__all__ = [
    "DEFAULT_BACKBONE",
    "RELEASE_MODEL",
    "BackboneSpec",
    "EncoderSpec",
    "Family",
    "available_encoders",
    "integer_argument",
    "parse_backbone",
    "parse_encoder_spec",
    "register_family",
]
