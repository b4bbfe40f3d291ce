"""Trunk inputs decoded in worker processes while the trunk runs.

A training step or a token-cache fill spends its CPU time decoding, masking, resizing and flipping
images (:func:`~nearid.training.token_cache.pixel_values`) and its accelerator time in the frozen trunk.
Done one after the other, the GPU idles while the CPU works. Here :class:`SlotChunks`, a dataset of
*chunks of slots*, goes through the embedding pipeline's loader (:func:`nearid.images.pipeline.batches`),
which builds the pixels of the next chunks in ``num_workers`` processes while the main process runs the
trunk on the current ones:

* **in order**: the loader yields chunk i before chunk i+1 whatever worker made it, and a chunk's
  pixels are a pure function of its slots, so the trunk sees exactly the tensor the in-process path
  builds (``num_workers=0``: the same chunks, built one ahead on a thread, no process);
* **bounded**: at most ``num_workers x input_pipeline.PREFETCH_BATCHES`` chunks are in flight, and a chunk holds at most
  :data:`CHUNK_SAMPLES` samples (6 slots each), so the memory in flight does not grow with the batch;
* **fewer bytes**: a chunk is cast in the worker to the dtype the trunk casts it to anyway (fp16 under
  fp16 mixed precision): half the bytes through shared memory and to the device, the same values;
* **shut down** when the loop ends, raises or is interrupted (the iterator is dropped in a
  ``finally``; the DataLoader joins its workers).

Workers are forked (slots hold closures over memory-mapped tables, which do not pickle). They only
decode: they never touch CUDA, so forking a process that has initialised CUDA is safe.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from nearid.images.decode import load_masked
from nearid.training.augment import apply as apply_augment
from nearid.training.samples import Slot

#: Samples per chunk of a training step (<= 6 x this many images per worker item).
CHUNK_SAMPLES = 16


def pixel_values(slots: Sequence[Slot], preprocess: Callable) -> torch.Tensor:
    """The model input of each slot: ``preprocess(images, masks)`` (the mask blacks out the background
    on the full-resolution image), then a horizontal flip of the flipped ones' pixel tensors. A slot
    with colour jitter or disalignment (``slot.augment``) is loaded and masked here, augmented as a
    full-resolution PIL image and handed to ``preprocess`` as that image; the others take the plain
    path. The token cache and an uncached trainer both build pixels here, so they feed the trunk the
    same."""
    images, masks = [], []
    for slot in slots:
        if slot.augment is None:
            images.append(slot.image)
            masks.append(slot.mask)
        else:
            images.append(apply_augment(load_masked(slot.image, slot.mask), slot.augment))
            masks.append(None)
    pixels = preprocess(images, masks)
    flipped = [i for i, slot in enumerate(slots) if slot.flip]
    if flipped:
        pixels = pixels.clone()
        pixels[flipped] = torch.flip(pixels[flipped], dims=[-1])
    return pixels


def default_workers(cuda: bool) -> int:
    """``--num-workers auto``: the input pipeline's one rule (:func:`nearid.images.pipeline.resolve_num_workers`:
    min(8, CPUs) with CUDA, where the trunk runs on the device and the CPUs are free to decode; 0 on the
    CPU, where workers would take the cores the trunk runs on)."""
    from nearid.images.pipeline import resolve_num_workers

    return resolve_num_workers("auto", "cuda" if cuda else "cpu")


class SlotChunks(torch.utils.data.Dataset):
    """Item i: the pixel values (``[n, 3, H, W]`` in ``dtype``) of the slots ``slots_of(i)`` returns,
    or an empty ``[0]`` tensor when it returns none."""

    def __init__(
        self,
        n: int,
        slots_of: Callable[[int], Sequence[Slot]],
        preprocess: Callable,
        dtype: torch.dtype = torch.float32,
    ):
        self.n, self.slots_of, self.preprocess, self.dtype = int(n), slots_of, preprocess, dtype

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> torch.Tensor:
        slots = self.slots_of(index)
        if not slots:
            return torch.empty(0)
        return pixel_values(slots, self.preprocess).to(self.dtype)


__all__ = ["CHUNK_SAMPLES", "SlotChunks", "default_workers"]
