"""Mixed precision for training: ``--mixed-precision auto|no|fp16|bf16`` and the half-precision trunk.

``auto`` is fp16 on CUDA, as the authors trained (spec 12.3), and full precision on the CPU. Under a
half precision the frozen trunk itself is cast to it: it runs without a graph, so autocast would gain
nothing there, and the cast halves its memory and time; the head stays float32 and trains under autocast.
"""

from __future__ import annotations

import torch

from nearid.io.errors import NearIDError


def mixed_precision(setting: str, *, cuda: bool) -> str:
    """accelerate's ``mixed_precision`` for a ``--mixed-precision`` setting: ``auto`` is fp16 on CUDA
    (the authors' training config, spec 12.3) and ``no`` on the CPU; ``no``, ``fp16``, ``bf16`` as given."""
    if setting == "auto":
        return "fp16" if cuda else "no"
    if setting not in ("no", "fp16", "bf16"):
        raise NearIDError(f"--mixed-precision '{setting}': use auto, no, fp16 or bf16")
    return setting


def half_trunk(model, precision: str) -> None:
    """Under fp16 / bf16 mixed precision, cast the frozen trunk (embeddings, blocks, post-LN) to that
    half dtype: it runs without a graph (``encode_tokens``), so nothing is lost to autocast, and it
    halves its memory and time. The head stays float32: it trains, autocast handles its matmuls."""
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    if dtype is None:
        return
    tower = model.backbone
    for part in (tower.embeddings, tower.encoder, tower.post_layernorm):
        part.to(dtype)


__all__ = ["half_trunk", "mixed_precision"]
