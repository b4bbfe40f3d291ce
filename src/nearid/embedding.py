"""Batch embedding of many images with any ``Encoder``, and cosine similarity.

Images are read and preprocessed one batch ahead on a worker thread (PIL decodes and resizes
without holding the GIL), so disk and preprocessing overlap the model's forward pass, and at most
two batches of pixels are in memory however long the input list is.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .encoders import Encoder
from .images import ImageInput

#: Inputs longer than this many batches get a progress bar (on a terminal).
PROGRESS_MIN_BATCHES = 4


def embed(
    encoder: Encoder,
    images: Sequence[ImageInput],
    masks: Sequence[ImageInput | None] | None = None,
    *,
    batch_size: int = 32,
    progress: bool | None = None,
) -> torch.Tensor:
    """L2-normalised float32 embeddings ``[len(images), encoder.dim]``, in input order.

    ``masks`` (same length, ``None`` entries allowed) black out each image's background first.
    ``progress=None`` shows a bar on long inputs when writing to a terminal.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if masks is not None and len(masks) != len(images):
        raise ValueError(f"{len(images)} images but {len(masks)} masks")
    starts = range(0, len(images), batch_size)
    if not starts:
        return torch.empty(0, encoder.dim)

    def prepare(start: int) -> torch.Tensor:
        chunk_masks = None if masks is None else masks[start : start + batch_size]
        return encoder.preprocess(images[start : start + batch_size], chunk_masks)

    if progress is None:  # automatic: long inputs only, and only on a terminal (tqdm's disable=None)
        disable = None if len(starts) > PROGRESS_MIN_BATCHES else True
    else:
        disable = not progress
    bar = tqdm(total=len(images), desc=f"embedding [{encoder.name}]", unit="img", disable=disable)
    outputs = []
    with ThreadPoolExecutor(max_workers=1) as pool, bar:
        pending = pool.submit(prepare, starts[0])
        for index in range(len(starts)):
            pixel_values = pending.result()
            if index + 1 < len(starts):
                pending = pool.submit(prepare, starts[index + 1])
            outputs.append(encoder.embed(pixel_values))
            bar.update(len(pixel_values))
    return torch.cat(outputs)


def _unit_rows(x) -> torch.Tensor:
    tensor = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return F.normalize(tensor.float(), dim=-1)


def similarity(a, b=None) -> torch.Tensor:
    """Cosine-similarity matrix ``[len(a), len(b)]`` (``b`` defaults to ``a``); rows are re-normalised."""
    a = _unit_rows(a)
    return a @ (a if b is None else _unit_rows(b)).T
