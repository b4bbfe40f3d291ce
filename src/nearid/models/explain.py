"""``nearid.explain``: where two images stop being the same identity, from the encoder's own read-out.

A similarity says *that* a generated image drifted from its reference, not *where*. NearID's score is
an attention-pooled read-out (the MAP head) of patch tokens, so the model itself says which patches it
reads and what each patch looks like to it. One forward pass per image gives both; the maps are
computed from them, with no re-embedding of perturbed images:

``tokens`` (the default; docs/explain.md says why): each patch token's best cosine match among the
other image's patch tokens; a patch with no good counterpart is a candidate difference, and it matters
as much as the read-out attends to it::

    mismatch[i] = attention[i] * (1 - max_j cos(token[i], other_token[j]))

``gradient``: a first-order estimate of how much similarity comes back if the patch's token were
replaced by its best match in the other image, ``max(0, d similarity / d token[i] . (match[i] - token[i]))``
-- gradient x input with the matched token as the baseline. It needs a read-out that is a
differentiable function of the patch tokens (the MAP head: the NearID family, SigLIP2, ``tiny``).

The read-out's attention is the MAP head's attention probabilities over patches (averaged over heads)
for NearID-shaped models, uniform for ``siglip2-mean`` (its read-out is the plain mean), and for CLIP,
DINO and ``hf:`` ViTs the last layer's attention of the CLS token when the model returns attentions
(uniform otherwise: docs/explain.md, limits).

The similarity is the encoder's own: the embeddings come out of the same ``encoder.embed`` call whose
tokens are read (hooks on the model), so it equals ``nearid.similarity(nearid.embed(...))``.
Maps are in each input image's pixels: the processor's resize and centre crop are undone
(:mod:`nearid.images.geometry`), pixels the crop removed get 0.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from nearid.images.decode import ImageInput, load_masked
from nearid.images.geometry import InputGeometry, input_geometry
from nearid.io.errors import NearIDError

METHODS = ("tokens", "gradient")


class ExplainError(NearIDError):
    """An encoder or option that cannot be explained (no patch tokens, a judge, an unknown method)."""


@dataclass(frozen=True)
class IdentityExplanation:
    """Where a pair differs. ``reference_map`` / ``generated_map``: float32 ``[H, W]`` of each input
    image, higher = "this region makes the two images less the same identity" (0 outside a centre
    crop); ``*_patches``: the same maps on the model's patch grid; ``similarity``: the encoder's cosine."""

    similarity: float
    reference_map: np.ndarray
    generated_map: np.ndarray
    reference_patches: np.ndarray
    generated_patches: np.ndarray
    method: str
    reference_geometry: InputGeometry | None = None
    generated_geometry: InputGeometry | None = None


@dataclass(frozen=True)
class ImageReading:
    """What one forward pass of an image gives: its embedding, its patch tokens ``[N, D]`` (prefix
    tokens such as CLS removed), the read-out's weight of each patch ``[N]`` (sums to 1), the patch
    grid and the image's geometry."""

    embedding: torch.Tensor
    tokens: torch.Tensor
    weights: torch.Tensor
    grid: tuple[int, int]
    geometry: InputGeometry


def check_explainable(encoder, method: str = "tokens") -> None:
    """Refuse, with one line, what cannot be explained: before any image is read."""
    from nearid.models.pair_scorers import is_pair_scorer

    name = getattr(encoder, "name", repr(encoder))
    if is_pair_scorer(encoder) and not hasattr(encoder, "embed"):
        raise ExplainError(f"{name} is a pair scorer (a judge): it has no patch tokens to explain; use an encoder")
    if (
        not isinstance(getattr(encoder, "model", None), torch.nn.Module)
        or getattr(encoder, "pixel_split", None) is None
    ):
        raise ExplainError(
            f"{name} has no patch tokens to explain (explain needs a ViT encoder: nearid, siglip2-*, clip, dino*, hf:, tiny)"
        )
    if method not in METHODS:
        raise ExplainError(f"explain method {method!r}: use one of {', '.join(METHODS)}")
    if method == "gradient" and not _is_nearid(encoder):
        raise ExplainError(
            f"--explain-method gradient needs a MAP-head read-out (nearid, siglip2-map, tiny); {name}: use tokens"
        )


def _is_nearid(encoder) -> bool:
    from nearid.models.encoders import mean_token_readout
    from nearid.models.nearid_model import NearIDModel

    return isinstance(encoder.model, NearIDModel) and encoder.readout is not mean_token_readout


def _patch_size(model) -> int:
    config = getattr(model, "config", None)
    config = getattr(config, "vision_config", None) or config
    size = getattr(config, "patch_size", None)
    if not isinstance(size, int):
        raise ExplainError(f"{type(model).__name__}: no patch size in its config; explain needs a ViT encoder")
    return size


def read_images(encoder, images: Sequence[ImageInput], masks: Sequence[ImageInput | None] | None = None):
    """One forward pass (``encoder.embed``) over ``images``; the patch tokens and the read-out's attention
    are taken on the way by hooks. Returns one :class:`ImageReading` per image."""
    masks = [None] * len(images) if masks is None else list(masks)
    split = encoder.pixel_split
    pictures = [load_masked(image, mask) for image, mask in zip(images, masks)]
    pixels = split.finish(torch.from_numpy(np.stack([split.to_uint8(p) for p in pictures])).to(encoder.device))
    captured: dict[str, torch.Tensor] = {}
    hooks = _install_hooks(encoder, captured)
    try:
        with _attentions_returned(encoder):
            embeddings = encoder.embed(pixels)
    finally:
        for hook in hooks:
            hook.remove()
    tokens = captured["tokens"].float().cpu()
    height, width = pixels.shape[-2:]
    patch = _patch_size(encoder.model)
    grid = (int(height) // patch, int(width) // patch)
    tokens = tokens[:, tokens.shape[1] - grid[0] * grid[1] :]
    weights = captured.get("weights")
    if weights is None:
        weights = torch.full(tokens.shape[:2], 1.0 / tokens.shape[1])
    weights = weights.float().cpu()
    weights = weights[:, weights.shape[1] - grid[0] * grid[1] :]
    weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return [
        ImageReading(embeddings[i], tokens[i], weights[i], grid, input_geometry(split, p.height, p.width))
        for i, p in enumerate(pictures)
    ]


@contextlib.contextmanager
def _attentions_returned(encoder):
    """For a CLS read-out (CLIP, DINO, ``hf:`` ViTs): eager attention with ``output_attentions`` for the
    duration of the pass, so the last layer's CLS attention can be read (SDPA does not return it; the
    tokens differ from SDPA's by float rounding, ~1e-6). Models that cannot switch keep uniform weights."""
    model = encoder.model
    config = getattr(model, "config", None)
    switch = not _is_nearid(encoder) and hasattr(model, "set_attn_implementation") and config is not None
    before = (getattr(config, "_attn_implementation", None), getattr(config, "output_attentions", False))
    if switch:
        try:
            model.set_attn_implementation("eager")
            config.output_attentions = True
        except (ValueError, AttributeError):
            switch = False
    try:
        yield
    finally:
        if switch:
            config.output_attentions = before[1]
            if before[0]:
                model.set_attn_implementation(before[0])


def _install_hooks(encoder, captured: dict) -> list:
    """Hooks that copy out the patch tokens and the read-out's attention during ``encoder.embed``."""
    model = encoder.model
    if _is_nearid(encoder):
        head = model.head

        def tokens_in(_module, args):
            captured["tokens"] = args[0].detach()

        def attention_out(_module, _args, output):
            if isinstance(output, tuple) and output[1] is not None:
                captured["weights"] = output[1].detach()[:, 0]  # [B, 1, N] averaged over heads -> [B, N]

        return [head.register_forward_pre_hook(tokens_in), head.attention.register_forward_hook(attention_out)]
    from nearid.models.nearid_model import NearIDModel

    if isinstance(model, NearIDModel):  # siglip2-mean: the read-out is the plain mean of the tokens

        def mean_tokens(_module, args):
            captured["tokens"] = args[0].detach()

        return [model.head.register_forward_pre_hook(mean_tokens)]

    def hidden_out(_module, _args, output):
        hidden = getattr(output, "last_hidden_state", None)
        if hidden is not None and "tokens" not in captured:
            captured["tokens"] = hidden.detach()
        attentions = getattr(output, "attentions", None)
        if attentions:
            captured["weights"] = attentions[-1].detach().mean(dim=1)[:, 0]  # CLS row, heads averaged

    # the vision transformer itself (CLIP's projection model wraps one): its output has the tokens
    inner = getattr(model, "vision_model", model)
    return [inner.register_forward_hook(hidden_out)]


def token_maps(reference: ImageReading, generated: ImageReading) -> tuple[np.ndarray, np.ndarray]:
    """The ``tokens`` method on two readings: ``attention * (1 - best match cosine)`` per patch."""
    ref_tokens, gen_tokens = F.normalize(reference.tokens, dim=-1), F.normalize(generated.tokens, dim=-1)
    cosine = ref_tokens @ gen_tokens.T
    ref_map = reference.weights * (1 - cosine.max(dim=1).values).clamp_min(0)
    gen_map = generated.weights * (1 - cosine.max(dim=0).values).clamp_min(0)
    return ref_map.numpy(), gen_map.numpy()


def gradient_maps(encoder, reference: ImageReading, generated: ImageReading) -> tuple[np.ndarray, np.ndarray]:
    """The ``gradient`` method: ``max(0, grad_i . (match_i - token_i))`` through the MAP head alone."""
    head = encoder.model.head
    dtype = head.probe.dtype
    with torch.enable_grad(), torch.inference_mode(False):
        ref = reference.tokens.clone().to(encoder.device, dtype).requires_grad_(True)
        gen = generated.tokens.clone().to(encoder.device, dtype).requires_grad_(True)
        pooled = head(torch.stack([ref, gen]))
        unit = F.normalize(pooled.float(), dim=-1)
        (unit[0] @ unit[1]).backward()
    cosine = F.normalize(reference.tokens, dim=-1) @ F.normalize(generated.tokens, dim=-1).T
    ref_match = generated.tokens[cosine.argmax(dim=1)]
    gen_match = reference.tokens[cosine.argmax(dim=0)]
    ref_gain = (ref.grad.float().cpu() * (ref_match - reference.tokens)).sum(dim=-1).clamp_min(0)
    gen_gain = (gen.grad.float().cpu() * (gen_match - generated.tokens)).sum(dim=-1).clamp_min(0)
    return ref_gain.numpy(), gen_gain.numpy()


def explain_readings(encoder, reference: ImageReading, generated: ImageReading, method: str = "tokens"):
    """An :class:`IdentityExplanation` from two readings (no forward pass of the trunk)."""
    if method == "gradient":
        ref_patches, gen_patches = gradient_maps(encoder, reference, generated)
    else:
        ref_patches, gen_patches = token_maps(reference, generated)
    ref_patches = ref_patches.reshape(reference.grid).astype(np.float32)
    gen_patches = gen_patches.reshape(generated.grid).astype(np.float32)
    return IdentityExplanation(
        similarity=float(reference.embedding @ generated.embedding),
        reference_map=reference.geometry.to_pixels(ref_patches),
        generated_map=generated.geometry.to_pixels(gen_patches),
        reference_patches=ref_patches,
        generated_patches=gen_patches,
        method=method,
        reference_geometry=reference.geometry,
        generated_geometry=generated.geometry,
    )


def explain_pairs(
    encoder,
    pairs: Sequence[tuple[ImageInput, ImageInput]],
    masks: Sequence[tuple[ImageInput | None, ImageInput | None]] | None = None,
    *,
    method: str = "tokens",
    batch_size: int = 8,
) -> list[IdentityExplanation]:
    """Explanations of many pairs: each distinct (image, mask) read once, ``batch_size`` per forward pass."""
    check_explainable(encoder, method)
    masks = [(None, None)] * len(pairs) if masks is None else list(masks)
    if len(masks) != len(pairs):
        raise ExplainError(f"{len(pairs)} pairs but {len(masks)} mask pairs: give one (reference, generated) per pair")
    keys: dict = {}
    for (ref, gen), (ref_mask, gen_mask) in zip(pairs, masks):
        for key in ((ref, ref_mask), (gen, gen_mask)):
            keys.setdefault(_key(key), key)
    order = list(keys)
    readings: dict = {}
    for start in range(0, len(order), batch_size):
        chunk = [keys[k] for k in order[start : start + batch_size]]
        for key, reading in zip(order[start : start + batch_size], read_images(encoder, *zip(*chunk))):
            readings[key] = reading
    return [
        explain_readings(encoder, readings[_key((ref, rm))], readings[_key((gen, gm))], method)
        for (ref, gen), (rm, gm) in zip(pairs, masks)
    ]


def _key(item) -> tuple:
    """A dictionary key for an (image, mask) input: paths by value, in-memory images by identity."""
    return tuple(
        str(part) if isinstance(part, (str, bytes)) or hasattr(part, "__fspath__") else id(part) for part in item
    )


def explain(
    encoder,
    reference: ImageInput,
    generated: ImageInput,
    *,
    masks: tuple[ImageInput | None, ImageInput | None] | None = None,
    method: str = "tokens",
) -> IdentityExplanation:
    """Where ``generated`` stops being the identity of ``reference``, for any patch-token encoder.

    ``masks``: ``(reference_mask, generated_mask)`` (``None`` entries allowed), applied as
    :func:`nearid.embed` applies them (black background). ``method``: ``tokens`` or ``gradient``
    (module docstring). ``histogram`` and ``vlm:`` are refused with an :class:`ExplainError`.
    """
    return explain_pairs(encoder, [(reference, generated)], None if masks is None else [tuple(masks)], method=method)[0]


__all__ = [
    "METHODS",
    "ExplainError",
    "IdentityExplanation",
    "ImageReading",
    "check_explainable",
    "explain",
    "explain_pairs",
    "explain_readings",
    "gradient_maps",
    "read_images",
    "token_maps",
]
