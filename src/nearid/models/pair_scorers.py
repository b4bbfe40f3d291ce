"""The ``PairScorer`` protocol: metrics that judge two images at once, beside :class:`~nearid.models.encoders.Encoder`.

An encoder maps each image to a vector, so a benchmark embeds every image once and compares by
cosine. Some identity metrics cannot be factored that way: a VLM judge reads both images in one
prompt and answers with a score. Such a metric is a ``PairScorer``; the benchmark and the scorer plan
only the pairs its metrics use and keep each judgment in a content-keyed store, as they keep
embeddings.

:func:`load_metric` turns any spec into the one or the other. :class:`EncoderPairScorer` views an
encoder as a pair scorer (cosine of the two embeddings); a pair scorer built on an encoder must give
the encoder's own results, which is how the pair-scoring path is tested against the embedding path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from nearid.images.decode import ImageInput

#: One pair's optional foreground masks (first image's, second image's).
PairMasks = tuple[ImageInput | None, ImageInput | None]


@runtime_checkable
class PairScorer(Protocol):
    """What a benchmark or the scorer needs from a metric that reads two images together."""

    name: str
    #: SHA-256 of everything that decides the scores (weights, prompt, readout, decoding, dtype):
    #: what the judgment store is keyed by.
    fingerprint: str

    def score_pairs(
        self,
        pairs: Sequence[tuple[ImageInput, ImageInput]],
        masks: Sequence[PairMasks] | None = None,
    ) -> np.ndarray:
        """float64 ``[len(pairs)]`` similarities in input order, higher = more likely the same object
        instance; NaN where the metric gave no answer. Callers pass related pairs together (all pairs
        of one identity) so that a scorer can batch them in one call."""


def ask(scorer: PairScorer, pairs: Sequence[tuple[ImageInput, ImageInput]], masks: Sequence[PairMasks]) -> np.ndarray:
    """``scorer.score_pairs(pairs, masks)`` as float64 ``[len(pairs)]``; a scorer that answers another
    number of scores is a bug in it, named here rather than misaligning every later pair."""
    scores = np.asarray(scorer.score_pairs(pairs, masks), dtype=np.float64).reshape(-1)
    if len(scores) != len(pairs):
        raise RuntimeError(f"{scorer.name}: score_pairs returned {len(scores)} scores for {len(pairs)} pairs")
    return scores


def is_pair_scorer(metric) -> bool:
    """True for a :class:`PairScorer`, False for an :class:`~nearid.models.encoders.Encoder`."""
    return callable(getattr(metric, "score_pairs", None)) and not callable(getattr(metric, "embed", None))


class EncoderPairScorer:
    """An encoder seen as a pair scorer: the cosine of the two (masked) embeddings, in float64.

    Not a faster way to run an encoder (each pair embeds both images); it exists so that the
    pair-scoring path can be checked against the embedding path on the same encoder."""

    def __init__(self, encoder, *, batch_size: int = 32):
        self.encoder = encoder
        self.name = f"pairs({encoder.name})"
        self.batch_size = batch_size

    @property
    def fingerprint(self) -> str:
        from nearid.io.fingerprint import of_json

        return of_json({"pair_scorer": "cosine", "encoder": self.encoder.fingerprint})

    def score_pairs(self, pairs, masks=None) -> np.ndarray:
        from nearid.models.embedding import embed

        pairs = list(pairs)
        if not pairs:
            return np.empty(0, dtype=np.float64)
        masks = list(masks) if masks is not None else [(None, None)] * len(pairs)
        images = [image for pair in pairs for image in pair]
        flat_masks = [mask for pair_masks in masks for mask in pair_masks]
        vectors = embed(self.encoder, images, flat_masks, batch_size=self.batch_size, progress=False)
        vectors = vectors.double().numpy().reshape(len(pairs), 2, -1)
        return np.einsum("nd,nd->n", vectors[:, 0], vectors[:, 1])


__all__ = ["EncoderPairScorer", "PairMasks", "PairScorer", "ask", "is_pair_scorer"]
