"""NearID as torchmetrics metrics (the ``metrics`` extra: ``pip install nearid[metrics]``).

:class:`IdentitySimilarity` is identity preservation in a training or evaluation loop: the cosine
similarity between each generated image and its reference(s) under any NearID encoder (``nearid``,
``clip-i``, ``dino-i``, ... or a loaded :class:`~nearid.models.encoders.Encoder`), averaged over all
generated images seen. Its states are a sum and a count with ``dist_reduce_fx="sum"``, so
``compute()`` on several processes equals one process over the union of their inputs, and it is
the mean that ``nearid score`` reports on the same pairs. :class:`NearIDBenchScore` accumulates
NearID-bench's SSR / PA as the counts of :class:`~nearid.eval.metrics.DiscriminationScore` (summed across
processes = the paper's micro-averaging). The functional twins take a loaded encoder or arrays.

Images: a batch tensor ``[B, 3, H, W]`` (``uint8`` in 0..255, or floating point in [0, 1], which is
rounded to 8 bits like every image file, so a tensor and its saved PNG score the same; a float image
with NaN or with values past [0, 1] by more than float rounding (1e-3) is refused, never clamped: 0..255
floats clamped to 1 score white pictures), or a sequence
of images (PIL images, ``[3, H, W]`` tensors, paths, arrays). References: one per generated image
(the same forms), or several per generated image (a ``[B, K, 3, H, W]`` tensor or a sequence whose
items are lists / ``[K, 3, H, W]`` tensors; K may vary); several are reduced by ``reduction``
(``"mean"`` or ``"max"`` of the similarities, as ``nearid score --pairing subjects`` reports them).
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import torch
from PIL import Image

try:
    from torchmetrics import Metric
except ImportError as exc:  # an optional extra: say how to get it
    raise ImportError("nearid.eval.torchmetrics needs torchmetrics: pip install 'nearid[metrics]'") from exc

from nearid.eval.metrics import DiscriminationScore, nearid_scores
from nearid.io.errors import NearIDError
from nearid.models.encoders import Encoder, load_encoder

REDUCTIONS = ("mean", "max")


# ------------------------------------------------------------------------------------- inputs
def _to_image(image):
    """A ``[3, H, W]`` tensor -> 8-bit PIL image; anything else is left for :func:`nearid.images.decode.load_image`."""
    if not isinstance(image, torch.Tensor):
        return image
    if image.ndim != 3 or image.shape[0] != 3:
        raise NearIDError(f"an image tensor must be [3, H, W], got {list(image.shape)}; pass a batch as [B, 3, H, W]")
    if image.dtype == torch.uint8:
        pixels = image
    elif image.is_floating_point():
        pixels = (_checked_float(image).clamp(0, 1) * 255).round().to(torch.uint8)
    else:
        raise NearIDError(f"image tensors must be uint8 (0..255) or floating point (0..1), got {image.dtype}")
    return Image.fromarray(pixels.permute(1, 2, 0).cpu().numpy())


#: how far past 0 or 1 a float image may go and still be clamped: float rounding, not another range
FLOAT_SLACK = 1e-3


def _checked_float(image: torch.Tensor) -> torch.Tensor:
    """A float image in [0, 1] (within :data:`FLOAT_SLACK`), else one line: clamping 0..255 or [-1, 1]
    images would score white (or half-black) pictures, a similarity near 1 that means nothing."""
    pixels = image.detach().float()
    if torch.isnan(pixels).any():
        raise NearIDError("an image tensor holds NaN values; pass finite pixels (uint8 0..255 or float 0..1)")
    low, high = float(pixels.min()), float(pixels.max())
    if low < -FLOAT_SLACK or high > 1 + FLOAT_SLACK:
        hint = "divide by 255 (or pass uint8)" if high > 1 + FLOAT_SLACK else "map [-1, 1] to [0, 1] with (x + 1) / 2"
        raise NearIDError(f"float image values {low:g}..{high:g} lie outside [0, 1]: {hint}")
    return pixels


def _images(batch) -> list:
    """A ``[B, 3, H, W]`` tensor or a sequence of images -> a list of images for the encoder."""
    if isinstance(batch, torch.Tensor):
        if batch.ndim != 4:
            raise NearIDError(f"a batch of images must be [B, 3, H, W], got {list(batch.shape)}")
        return [_to_image(image) for image in batch]
    if isinstance(batch, (Image.Image, str, bytes)):
        return [batch]
    return [_to_image(image) for image in batch]


def _reference_groups(references, n: int) -> list[list]:
    """References -> one list of images per generated image."""
    if isinstance(references, torch.Tensor) and references.ndim == 5:
        groups = [_images(group) for group in references]
    elif isinstance(references, torch.Tensor):
        groups = [[image] for image in _images(references)]
    else:
        groups = []
        for item in references:
            several = isinstance(item, (list, tuple)) or (isinstance(item, torch.Tensor) and item.ndim == 4)
            groups.append(_images(item) if several else [_to_image(item)])
    if len(groups) != n:
        raise NearIDError(
            f"{n} generated images but references for {len(groups)}; give one reference "
            "(or one list of references) per generated image"
        )
    if any(not group for group in groups):
        raise NearIDError("a generated image has an empty list of references; give at least one")
    return groups


def pair_similarities(
    encoder: Encoder, generated, references, reduction: str = "mean", *, batch_size: int = 32
) -> torch.Tensor:
    """Per generated image, the cosine similarity to its reference(s) (``reduction`` over several):
    float64 ``[B]``. Each similarity is the float32 dot product of unit embeddings, as ``nearid score``."""
    from nearid.models.embedding import embed

    if reduction not in REDUCTIONS:
        raise NearIDError(f"reduction '{reduction}': use one of {', '.join(REDUCTIONS)}")
    gens = _images(generated)
    groups = _reference_groups(references, len(gens))
    refs = [image for group in groups for image in group]
    if not gens:
        return torch.empty(0, dtype=torch.float64)
    vectors = embed(encoder, gens + refs, batch_size=batch_size, progress=False)
    gen_vectors, ref_vectors = vectors[: len(gens)], vectors[len(gens) :]
    out, start = [], 0
    for g, group in zip(gen_vectors, groups):
        sims = (ref_vectors[start : start + len(group)] * g).sum(-1).double()
        start += len(group)
        out.append(sims.mean() if reduction == "mean" else sims.max())
    return torch.stack(out)


def identity_similarity(
    encoder: Encoder, generated, references, reduction: str = "mean", *, batch_size: int = 32
) -> torch.Tensor:
    """The functional :class:`IdentitySimilarity`: mean over generated images (a float64 scalar)."""
    return pair_similarities(encoder, generated, references, reduction, batch_size=batch_size).mean()


def _as_array(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().double().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


def nearid_bench_counts(pair_sims, own_background) -> DiscriminationScore:
    """SSR / PA counts of one table: ``pair_sims[N, 3]`` = s(p_a, p_b) for the view pairs (0,1), (0,2),
    (1,2); ``own_background[N, 3]`` = s(p_v, n_v), each view against the distractor in its background.
    NaN marks a missing value (a 2-view identity); ties lose."""
    pair_sims, own_background = _as_array(pair_sims), _as_array(own_background)
    if pair_sims.ndim != 2 or pair_sims.shape[1] != 3 or own_background.shape != pair_sims.shape:
        raise NearIDError(
            f"pair_sims and own_background must both be [N, 3], got {list(pair_sims.shape)} "
            f"and {list(own_background.shape)}"
        )
    return nearid_scores(pair_sims, own_background)


def nearid_bench_score(pair_sims, own_background) -> dict[str, torch.Tensor]:
    """The functional :class:`NearIDBenchScore`: ``{"ssr": ..., "pa": ...}`` in percent (NaN when empty)."""
    score = nearid_bench_counts(pair_sims, own_background)
    return {"ssr": torch.tensor(score.ssr, dtype=torch.float64), "pa": torch.tensor(score.pa, dtype=torch.float64)}


# ------------------------------------------------------------------------------------- metrics
class IdentitySimilarity(Metric):
    """Mean identity similarity of generated images to their references under one encoder.

    ``model``: an encoder spec (``"nearid"``, ``"clip-i"``, ``"dino-i"``, ``"tiny"``, ...; loaded with
    ``device`` / ``dtype``) or a loaded :class:`~nearid.models.encoders.Encoder`. The encoder runs where it
    was loaded; the metric's states are two scalars.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        model: str | Encoder = "nearid",
        reduction: str = "mean",
        *,
        device="auto",
        dtype="auto",
        batch_size: int = 32,
        allow_pickle: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if reduction not in REDUCTIONS:
            raise NearIDError(f"reduction '{reduction}': use one of {', '.join(REDUCTIONS)}")
        self.encoder = (
            load_encoder(model, device=device, dtype=dtype, allow_pickle=allow_pickle)
            if isinstance(model, str)
            else model
        )
        self.reduction = reduction
        self.batch_size = batch_size
        self.add_state("similarity_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, generated, references) -> None:
        sims = pair_similarities(self.encoder, generated, references, self.reduction, batch_size=self.batch_size)
        self.similarity_sum += sims.sum().to(self.similarity_sum.device)
        self.count += len(sims)

    def compute(self) -> torch.Tensor:
        """Mean similarity (float64); NaN before any update."""
        if self.count == 0:
            return torch.tensor(float("nan"), dtype=torch.float64)
        return self.similarity_sum / self.count


class NearIDBenchScore(Metric):
    """NearID-bench SSR / PA from similarity tables, accumulated as counts.

    ``update(pair_sims[N, 3], own_background[N, 3])`` (see :func:`nearid_bench_counts`); ``compute()``
    returns ``{"ssr", "pa", "pa_published"}`` in percent. Counts add across updates and processes, so the result equals
    scoring the concatenated tables (:meth:`DiscriminationScore.pool`).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    #: every count of a DiscriminationScore (so a count added there is accumulated here too)
    COUNTS = tuple(f.name for f in fields(DiscriminationScore))

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for name in self.COUNTS:
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pair_sims, own_background) -> None:
        score = nearid_bench_counts(pair_sims, own_background)
        for name in self.COUNTS:
            setattr(self, name, getattr(self, name) + getattr(score, name))

    def score(self) -> DiscriminationScore:
        """The accumulated counts (synced across processes when called through :meth:`compute`)."""
        return DiscriminationScore(**{name: int(getattr(self, name)) for name in self.COUNTS})

    def compute(self) -> dict[str, torch.Tensor]:
        score = self.score()
        return {name: torch.tensor(getattr(score, name), dtype=torch.float64) for name in ("ssr", "pa", "pa_published")}


__all__ = [
    "IdentitySimilarity",
    "NearIDBenchScore",
    "identity_similarity",
    "nearid_bench_counts",
    "nearid_bench_score",
    "pair_similarities",
]
