"""``nearid.reward.IdentityReward``: identity similarity to a subject's references as a differentiable reward.

People measure identity preservation to improve it. The same frozen encoder that scores generated
images after the fact can score them *inside* a training loop -- reward fine-tuning in the style of
ReFL / DRaFT, or an identity term beside a DreamBooth / LoRA loss -- if its score has a gradient to the
pixels. This module gives it one:

* generated images come in as a float tensor ``[B, 3, H, W]`` on the encoder's device, in the range the
  caller states (``value_range="0-1"`` or ``"-1-1"``: never guessed; values outside it, or NaN, are
  refused in one line, since a reward quietly computed on mis-scaled pixels trains the wrong thing);
* the encoder's preprocessing is reproduced in torch (:class:`~nearid.images.tensor_preprocess.TensorPreprocess`:
  the processor's resize sizes, antialiased filter, centre crop and normalisation), the embedding is the
  encoder's own computation with autograd on (:mod:`nearid.models.differentiable`);
* the references are embedded once, at construction; every weight is frozen, so gradients flow only to
  the generated pixels (and through them to whatever made them).

A matched-context metric matters more here than anywhere: a reward that CLIP-I or DINO gives for a
copied background is a reward a generator learns to earn by copying the background (docs/reward.md).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from nearid.images.decode import ImageRef, load_mask
from nearid.images.tensor_preprocess import TensorPreprocess
from nearid.io.errors import NearIDError
from nearid.models.differentiable import check_differentiable, checkpointed, model_dtype, raw_features
from nearid.models.encoders import NonFiniteEmbeddingError

#: ``value_range`` -> the (low, high) of the pixel values the caller promises.
VALUE_RANGES = {"0-1": (0.0, 1.0), "-1-1": (-1.0, 1.0)}

_SINGLE_IMAGES = (str, os.PathLike, Image.Image, np.ndarray, bytes, ImageRef)


class RewardInputError(NearIDError):
    """Generated images, references or masks the reward cannot take as they are (shape, device, range, NaN)."""


def check_value_range(value_range) -> tuple[float, float]:
    """The ``(low, high)`` of ``value_range``; anything but ``"0-1"`` / ``"-1-1"`` is refused."""
    if value_range not in VALUE_RANGES:
        raise RewardInputError(
            f"value_range={value_range!r}: say how the pixels are scaled, value_range='0-1' or value_range='-1-1'"
        )
    return VALUE_RANGES[value_range]


def to_unit_range(images: torch.Tensor, value_range: str, *, what: str = "images", device=None) -> torch.Tensor:
    """``images`` (``[B, 3, H, W]`` float in ``value_range``) mapped to ``[0, 1]``, with their graph.
    Shape, dtype, device, NaN and range are checked first (one line each)."""
    low, high = check_value_range(value_range)
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise RewardInputError(f"{what}: expected a [B, 3, H, W] float tensor, got {shape}")
    if not images.is_floating_point():
        raise RewardInputError(f"{what}: dtype {images.dtype}; give floats in [{low:g}, {high:g}] (x / 255 for 8-bit)")
    if device is not None and images.device != device:
        raise RewardInputError(f"{what} are on {images.device} but the encoder is on {device}; move them with .to()")
    with torch.no_grad():
        if bool(torch.isnan(images).any()):
            raise RewardInputError(f"{what}: {int(torch.isnan(images).sum())} values are NaN")
        if images.numel():
            smallest, largest = (float(v) for v in torch.aminmax(images.detach()))
            if smallest < low or largest > high:
                raise RewardInputError(
                    f"{what}: values span [{smallest:.4g}, {largest:.4g}] but value_range={value_range!r} says "
                    f"[{low:g}, {high:g}]; clamp the images or pass the range they are in"
                )
    return images if low == 0.0 else (images - low) / (high - low)


def mask_tensor(mask, height: int, width: int, *, like: torch.Tensor, what: str) -> torch.Tensor:
    """A foreground mask as a ``[1, H, W]`` tensor in ``[0, 1]`` (``like``'s dtype and device).

    A tensor (``[H, W]`` or ``[1, H, W]``, bool or float in ``[0, 1]``) is taken as it is; anything else
    is read by :func:`~nearid.images.decode.load_mask` (its rule: alpha or any channel > 0). The mask must
    have the image's size, and a foreground, as :func:`~nearid.images.decode.apply_mask` requires."""
    if isinstance(mask, torch.Tensor):
        values = mask.detach() if mask.dtype == torch.bool else mask
        if values.ndim == 2:
            values = values[None]
        if values.ndim != 3 or values.shape[0] != 1:
            raise RewardInputError(f"{what}: expected an [H, W] or [1, H, W] mask, got {tuple(mask.shape)}")
    else:
        values = torch.from_numpy(load_mask(mask, name=what))[None]
    values = values.to(device=like.device, dtype=like.dtype)
    if tuple(values.shape[-2:]) != (height, width):
        raise RewardInputError(
            f"{what}: mask is {values.shape[-1]}x{values.shape[-2]} but its image is {width}x{height}"
        )
    with torch.no_grad():
        if bool(torch.isnan(values).any()) or float(values.min()) < 0 or float(values.max()) > 1:
            raise RewardInputError(f"{what}: mask values must lie in [0, 1] (1 = foreground)")
        if not bool((values > 0).any()):
            raise RewardInputError(f"{what}: mask is empty (no foreground pixel); fix the mask or drop it")
    return values


class IdentityReward(torch.nn.Module):
    """Identity similarity of generated images to a subject's references, differentiable in the pixels.

    ``encoder``: an :class:`~nearid.models.encoders.Encoder` of the patch-token families (``nearid``,
    ``siglip2-*``, ``tiny``, ``clip``, ``clip-i``, ``dino-i``, ``dinov2``, ``dinov3``, ``hf:``), e.g.
    ``nearid.load_encoder("nearid")``. Its weights are frozen here (``requires_grad_(False)``): the
    reward is a fixed judge. ``references``: the subject's images -- paths, PIL images, uint8 arrays
    (embedded the normal way, :func:`nearid.embed`, exactly as ``nearid score`` embeds them), or float
    tensors ``[3, H, W]`` / ``[R, 3, H, W]`` in ``value_range`` (embedded through this module's torch
    preprocessing, so a reference tensor scores 1.0 against itself).

    ``masks``: one per reference (``None`` entries allowed): the *references'* foreground, whose
    background is blacked out before embedding, as ``nearid score --mask-folder`` does. They say nothing about
    the generated images; a generated image is masked only by the ``masks`` given to :meth:`forward`
    (``[B, H, W]`` / ``[B, 1, H, W]``, e.g. an inpainting mask), which black out its background the same
    way (a float mask in ``[0, 1]`` blends, and then is differentiable too). Give both to compare objects
    without their contexts, as NearID's masked protocol does.

    ``value_range``: ``"0-1"`` or ``"-1-1"``, required; the generated images (and tensor references) must
    lie in it. ``gradient_checkpointing``: recompute each trunk block in the backward pass instead of
    keeping its activations (less memory, one more trunk forward).

    The module runs on the encoder's device and holds no parameters of its own (``parameters()`` is
    empty: an optimizer over a model that contains it never sees the encoder).
    """

    def __init__(
        self,
        encoder,
        references,
        *,
        value_range: str,
        masks: Sequence | None = None,
        gradient_checkpointing: bool = False,
        batch_size: int = 32,
    ):
        super().__init__()
        check_value_range(value_range)
        check_differentiable(encoder)
        self.encoder = encoder  # not a Module: its weights stay out of parameters() and state_dict()
        self.value_range = value_range
        self.gradient_checkpointing = bool(gradient_checkpointing)
        self.preprocess = TensorPreprocess.of(getattr(encoder, "pixel_split", None), encoder.name)
        encoder.model.requires_grad_(False)
        self.device = next(encoder.model.parameters()).device
        embeddings = self._embed_references(references, masks, batch_size)
        self.register_buffer("reference_embeddings", embeddings, persistent=False)

    def extra_repr(self) -> str:
        return (
            f"encoder={self.encoder.name!r}, references={len(self.reference_embeddings)}, "
            f"value_range={self.value_range!r}, input={self.preprocess.size}, mode={self.preprocess.mode!r}, "
            f"gradient_checkpointing={self.gradient_checkpointing}"
        )

    def _embed_references(self, references, masks, batch_size: int) -> torch.Tensor:
        """``[R, D]`` unit embeddings: files and PIL images through :func:`nearid.embed`, tensors through
        :meth:`embed` (without a graph), in the order given."""
        from nearid.models.embedding import embed

        if isinstance(references, torch.Tensor):
            items = list(references[None] if references.ndim == 3 else references)
        elif isinstance(references, _SINGLE_IMAGES):
            items = [references]
        else:
            items = list(references)
        if not items:
            raise RewardInputError("references: none given; pass the subject's reference image(s)")
        masks = [None] * len(items) if masks is None else list(masks)
        if len(masks) != len(items):
            raise RewardInputError(f"{len(items)} references but {len(masks)} masks: one mask (or None) per reference")
        rows: list[torch.Tensor | None] = [None] * len(items)
        files = [i for i, item in enumerate(items) if not isinstance(item, torch.Tensor)]
        if files:
            file_masks = [masks[i].cpu().numpy() if isinstance(masks[i], torch.Tensor) else masks[i] for i in files]
            vectors = embed(self.encoder, [items[i] for i in files], file_masks, batch_size=batch_size)
            for i, vector in zip(files, vectors):
                rows[i] = vector
        with torch.no_grad():
            for i, item in enumerate(items):
                if isinstance(item, torch.Tensor):
                    image = item.to(self.device)[None] if item.ndim == 3 else item
                    mask = None if masks[i] is None else [masks[i]]
                    rows[i] = self.embed(image, masks=mask, what=f"reference {i}")[0].float().cpu()
        return torch.stack(rows).to(self.device)

    def embed(self, images: torch.Tensor, *, masks=None, what: str = "images") -> torch.Tensor:
        """Unit embeddings ``[B, D]`` of generated images (with their graph), float32 or wider."""
        unit = to_unit_range(images, self.value_range, what=what, device=self.device)
        if masks is not None:
            if len(masks) != len(unit):
                raise RewardInputError(f"{what}: {len(unit)} images but {len(masks)} masks")
            height, width = unit.shape[-2:]
            rows = [mask_tensor(m, height, width, like=unit, what=f"{what} mask {i}") for i, m in enumerate(masks)]
            unit = unit * torch.stack(rows)
        pixels = self.preprocess(unit)
        with checkpointed(self.encoder.model, self.gradient_checkpointing and torch.is_grad_enabled()):
            features = raw_features(self.encoder, pixels)
        features = features.to(torch.promote_types(features.dtype, torch.float32))
        finite = torch.isfinite(features).all(dim=-1)
        if not bool(finite.all()):
            raise NonFiniteEmbeddingError(
                f"{self.encoder.name} produced a non-finite embedding for {int((~finite).sum())} of {len(finite)} "
                f"images in {str(model_dtype(self.encoder)).removeprefix('torch.')}; load it with dtype fp32 or bf16"
            )
        return F.normalize(features, dim=-1)

    def similarities(self, images: torch.Tensor, *, masks=None) -> torch.Tensor:
        """Cosine similarity of each generated image to each reference, ``[B, R]``, with the graph."""
        vectors = self.embed(images, masks=masks)
        return vectors @ self.reference_embeddings.to(vectors.dtype).T

    def forward(self, images: torch.Tensor, *, masks=None, reference_index: torch.Tensor | None = None):
        """The reward ``[B]``: each image's cosine similarity to the references -- their mean, or with
        ``reference_index`` (``[B]`` integers) the one reference each image is compared with."""
        similarities = self.similarities(images, masks=masks)
        if reference_index is None:
            return similarities.mean(dim=1)
        index = torch.as_tensor(reference_index, device=similarities.device)
        count = similarities.shape[1]
        if index.shape != (len(similarities),) or index.is_floating_point():
            raise RewardInputError(f"reference_index: expected {len(similarities)} integers, got {tuple(index.shape)}")
        if len(index) and (int(index.min()) < 0 or int(index.max()) >= count):
            raise RewardInputError(f"reference_index: values must lie in 0..{count - 1} (there are {count} references)")
        return similarities.gather(1, index.long()[:, None])[:, 0]


__all__ = ["VALUE_RANGES", "IdentityReward", "RewardInputError", "check_value_range", "mask_tensor", "to_unit_range"]
