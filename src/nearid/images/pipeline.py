"""The input pipeline of :func:`nearid.embed`: images -> model-ready batches, decoded in workers.

Why: one thread decodes 30-40 photographs a second, a GPU embeds over a thousand. So:

* **Workers** (``num_workers`` >= 1) are ``torch.utils.data.DataLoader`` worker processes, each
  building whole batches; the loader hands them back in input order, keeps at most
  ``num_workers * PREFETCH_BATCHES`` batches in flight (bounded memory however long the input),
  pins them on CUDA and shuts its workers down when the caller stops, by an exception or Ctrl-C
  (:func:`batches` closes them explicitly: a traceback can keep an abandoned iterator alive).
  ``num_workers=0`` builds batches in the calling process, one batch ahead on a thread (PIL
  decodes and resizes without the GIL), as :func:`nearid.embed` always did.
* **uint8 in flight.** An encoder with a ``pixel_split`` (:class:`~nearid.images.processors.PixelSplit`:
  every transformers PIL processor of the built-in families, and DINO's evaluation transform) has
  its workers stop at 8-bit pixels at the model's input size (decode, mask at full resolution,
  resize, crop); rescaling and normalisation run on the model's device (:meth:`PixelSplit.finish`),
  bit-identical to the processor. Other encoders (``histogram``, a user's own) run their whole
  ``preprocess`` in the workers.
* **Failures per image.** A worker catches each image's :class:`~nearid.io.errors.NearIDError` and
  sends it back with the batch; the caller raises the first one or collects them all, as before.

Workers are forked where the platform can (Linux): the inputs are often :class:`~nearid.images.decode.ImageRef`
closures over a memory-mapped dataset, which a fork shares and pickling cannot send.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import torch

from nearid.io.errors import NearIDError

#: Batches each worker prepares ahead (DataLoader's ``prefetch_factor``): enough to hide a slow image.
PREFETCH_BATCHES = 2

#: ``num_workers="auto"`` on CUDA uses at most this many processes. One worker decodes and resizes
#: 45-80 photographs a second on one of this machine's cores (benchmarks/input_pipeline.py's floor)
#: while so400m at 384 px embeds ~1,200 a second on an H100-class GPU, so a big GPU wants more: ask
#: with ``--num-workers N``. 8 bounds what an unattended default takes from a shared machine (each
#: worker is a process with its batches in flight).
AUTO_MAX_WORKERS = 8


def available_cpus() -> int:
    """CPUs this process may run on (a container's or scheduler's limit, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_num_workers(num_workers: int | str, device: torch.device | str | None = None) -> int:
    """``num_workers`` as a count: an integer >= 0, or ``"auto"``: ``min(8, CPUs)`` when the model runs on
    CUDA, 0 on the CPU (there the workers would take the cores the model's own threads need: on a
    2-core machine 2 workers make each batch's forward pass wait for the cores)."""
    if num_workers == "auto" or num_workers is None:
        device = torch.device(device) if device is not None else torch.device("cpu")
        return min(AUTO_MAX_WORKERS, available_cpus()) if device.type == "cuda" else 0
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise NearIDError(
            f"num_workers {num_workers!r}: give 0 (in this process), a number of worker processes, or auto"
        )
    return num_workers


class Batch(NamedTuple):
    """One batch from :class:`ImageBatches`: ``pixels`` of the images that loaded (``None`` if none
    did) and ``failed``, ``(position in the batch, the NearIDError)`` of each that did not."""

    pixels: torch.Tensor | None
    failed: tuple[tuple[int, NearIDError], ...]


class ImageBatches(torch.utils.data.Dataset):
    """Batch ``b`` of the inputs (images ``[b * batch_size, (b + 1) * batch_size)``) as a :class:`Batch`.

    With a ``split``, pixels are ``[n, H, W, 3]`` uint8 (:meth:`PixelSplit.load` per image);
    without, they are ``preprocess(images, masks)`` of the batch, and when that raises, each image
    alone, to find the failing ones (a batch of good images costs one call, as before)."""

    def __init__(
        self,
        images: Sequence,
        masks: Sequence | None,
        batch_size: int,
        *,
        split=None,
        preprocess=None,
        fast_decode: bool = False,
    ):
        if (split is None) == (preprocess is None):
            raise ValueError("give one of split or preprocess")
        self.images, self.masks, self.batch_size = images, masks, batch_size
        self.split, self.preprocess, self.fast_decode = split, preprocess, fast_decode

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def __getitem__(self, index: int) -> Batch:
        start = index * self.batch_size
        images = list(self.images[start : start + self.batch_size])
        masks = [None] * len(images) if self.masks is None else list(self.masks[start : start + self.batch_size])
        if self.split is not None:
            return self._uint8(images, masks)
        try:
            return Batch(self.preprocess(images, masks), ())
        except NearIDError:
            pass
        rows, failed = [], []
        for offset, (image, mask) in enumerate(zip(images, masks)):
            try:
                rows.append(self.preprocess([image], [mask]))
            except NearIDError as exc:
                failed.append((offset, exc))
        return Batch(torch.cat(rows) if rows else None, tuple(failed))

    def _uint8(self, images, masks) -> Batch:
        rows, failed = [], []
        for offset, (image, mask) in enumerate(zip(images, masks)):
            try:
                rows.append(self.split.load(image, mask, fast_decode=self.fast_decode))
            except NearIDError as exc:
                failed.append((offset, exc))
        return Batch(torch.from_numpy(np.stack(rows)) if rows else None, tuple(failed))


@contextlib.contextmanager
def batches(dataset, *, num_workers: int = 0, pin_memory: bool = False) -> Iterator[Iterator]:
    """Yield an iterator over ``dataset``'s items in order, built by ``num_workers`` processes (0:
    this process, one item ahead on a thread); leaving the block stops and joins every worker.

    ``dataset`` is any map-style dataset whose items are whole batches (:class:`ImageBatches`, or a
    trainer's batches of slots): tensors, tuples and named tuples of them, other values passed as they are."""
    num_workers = min(num_workers, len(dataset))
    if num_workers == 0:
        with ThreadPoolExecutor(max_workers=1) as pool:
            yield _ahead(pool, dataset, pin_memory)
        return
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=None,  # the dataset's items are batches already
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_as_is,
        pin_memory=pin_memory,
        prefetch_factor=PREFETCH_BATCHES,
        persistent_workers=False,
        multiprocessing_context=_worker_context(),
    )
    iterator = iter(loader)
    try:
        yield iterator
    finally:
        # Stop and join the workers now. DataLoader does it when its iterator is garbage-collected, but
        # an exception's traceback keeps this frame (and the iterator) alive until the caller lets go.
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        del iterator


def _ahead(pool: ThreadPoolExecutor, dataset, pin_memory: bool) -> Iterator:
    load = (lambda index: _pinned(dataset[index])) if pin_memory else dataset.__getitem__
    pending = pool.submit(load, 0)
    for index in range(len(dataset)):
        batch = pending.result()
        if index + 1 < len(dataset):
            pending = pool.submit(load, index + 1)
        yield batch


def _pinned(item):
    """``item`` with its tensors in pinned memory (what DataLoader's ``pin_memory`` does for workers)."""
    if isinstance(item, torch.Tensor):
        return item.pin_memory()
    if isinstance(item, tuple) and hasattr(item, "_fields"):  # a named tuple
        return type(item)(*(_pinned(value) for value in item))
    if isinstance(item, (tuple, list)):
        return type(item)(_pinned(value) for value in item)
    return item


def _as_is(batch):
    """The loader's collate function: the dataset's items are finished batches."""
    return batch


def _worker_context():
    """Fork where the platform has it (see the module's docstring), else the platform's default."""
    return multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None


def decoded_fingerprint(fingerprint: str | None, fast_decode: bool) -> str | None:
    """An encoder's fingerprint as stores and caches should key it: unchanged for exact decoding; with
    ``fast_decode`` another one, since draft-decoded embeddings differ and must never be reused as exact."""
    if not fast_decode or not fingerprint:
        return fingerprint
    from nearid.io.fingerprint import of_json

    return of_json({"encoder": fingerprint, "decode": "jpeg-draft"})
