"""A training step's batch: which global batches a run takes, each process's share of one, the slots
that reach the trunk, and the loss of a share's samples.

Samples and batch order are pure functions of (seed, epoch, index) (:mod:`nearid.training.samples`),
so the batches of a run's steps are known before the first one: the token cache is filled with the
inputs of exactly those steps, and the streaming path decodes them ahead (:class:`TrunkInputs`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from nearid.training.prefetch import CHUNK_SAMPLES
from nearid.training.samples import N_SLOTS


def planned_batches(training_set, batch_size: int, start: int, end: int, per_epoch: int) -> list[tuple[int, list[int]]]:
    """``(epoch, global batch indices)`` of the steps ``start .. end - 1`` this run will take."""
    planned = []
    for epoch in range(start // per_epoch, -(-end // per_epoch)):
        for batch_index, indices in enumerate(training_set.batches(epoch, batch_size)):
            if start <= epoch * per_epoch + batch_index < end:
                planned.append((epoch, indices))
    return planned


def process_share(indices: list[int], rank: int, world: int) -> list[int]:
    """A contiguous slice per process, so the gathered pool keeps the one-process order."""
    per = -(-len(indices) // world)
    return indices[rank * per : (rank + 1) * per]


def present_slots(samples) -> list[tuple[int, int, object]]:
    """``(sample, slot index, Slot)`` of every filled slot, sample by sample: the order in which a step's
    inputs are embedded (and prefetched). Empty slots never reach the trunk."""
    return [(b, s, slot) for b, sample in enumerate(samples) for s, slot in enumerate(sample.slots) if slot is not None]


def step_loss(head, loss_fn, samples, tokens_of: Callable, device) -> torch.Tensor:
    """Embed the present slots of ``samples`` (``tokens_of(slots)``: cached or fresh trunk tokens)
    with ``head`` and apply the loss: one step's forward pass."""
    present = present_slots(samples)
    tokens = tokens_of([slot for _, _, slot in present]).to(device=device, dtype=torch.float32)
    pooled = F.normalize(head(tokens), dim=-1)
    embeddings = pooled.new_zeros(len(samples), N_SLOTS, pooled.shape[-1])
    rows = torch.tensor([b for b, _, _ in present], device=device)
    cols = torch.tensor([s for _, s, _ in present], device=device)
    embeddings = embeddings.index_put((rows, cols), pooled)
    pos_mask = torch.tensor([s.pos_mask for s in samples], device=device)
    neg_mask = torch.tensor([s.neg_mask for s in samples], device=device)
    oracle = torch.tensor([s.oracle for s in samples], device=device, dtype=torch.float32)
    return loss_fn(embeddings[:, 0], embeddings[:, 1:3], embeddings[:, 3:6], pos_mask, neg_mask, oracle=oracle)


@dataclass(frozen=True)
class TrunkInputs:
    """The slots that run the trunk in a process's steps, in chunks of at most
    :data:`~nearid.training.prefetch.CHUNK_SAMPLES` samples: item ``i`` is the ``i``-th chunk's slots,
    the items of one step following each other step by step. With a token cache (``cached``) only the
    augmented slots run the trunk (the others are read from the cache); without, every filled slot.

    ``shares``: ``(epoch, this process's sample indices)`` of each step. The item function runs in the
    input pipeline's worker processes (forked), so it reads only what it is given here."""

    training_set: object
    shares: list[tuple[int, list[int]]]
    cached: bool
    chunks: list[tuple[int, int]] = field(init=False)  # (step in shares, first sample of the chunk)

    def __post_init__(self) -> None:
        chunks = [
            (k, start) for k, (_, share) in enumerate(self.shares) for start in range(0, len(share), CHUNK_SAMPLES)
        ]
        object.__setattr__(self, "chunks", chunks)

    def __len__(self) -> int:
        return len(self.chunks)

    def __call__(self, index: int) -> list:
        k, start = self.chunks[index]
        epoch, share = self.shares[k]
        samples = self.training_set.samples(epoch, share[start : start + CHUNK_SAMPLES])
        return [slot for _, _, slot in present_slots(samples) if not self.cached or not slot.cacheable]

    @staticmethod
    def per_step(share: list[int]) -> int:
        """The number of chunks of a step whose share is ``share``."""
        return len(range(0, len(share), CHUNK_SAMPLES))


__all__ = ["TrunkInputs", "planned_batches", "present_slots", "process_share", "step_loss"]
