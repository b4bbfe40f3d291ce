"""Frozen-trunk tokens, computed once per exact input and memory-mapped from disk.

NearID trains only the MAP head; the trunk is frozen, so its post-LN tokens
(:meth:`NearIDModel.encode_tokens`, ``[N_tokens, hidden]``) for one exact input (image, mask, flip:
a :class:`~nearid.training.samples.Slot`, named by ``Slot.key``) never change. A :class:`TokenCache`
stores them as float16 and the head trains on :meth:`TokenCache.load` + :meth:`NearIDModel.pool`.

Layout of a cache folder::

    manifest.json                   {"format", "signature", "shape": [N_tokens, hidden], "dtype": "float16"}
    shard-<ns>-<pid>-<i>.keys.json  the keys of the shard's rows, in order (written first)
    shard-<ns>-<pid>-<i>.npy        [n, N_tokens, hidden] float16 (written last)

Both files are written atomically (temporary file, then ``os.replace``); a shard counts only when both
exist and agree in length, so a killed fill loses at most the batch in flight and several processes
can fill one cache at once. The manifest's ``signature`` (:func:`model_signature`) ties the folder to
one trunk; opening it for another is an error. ``Slot`` keys are built from the images'
content-versioned ``ImageRef.cache_key`` (the table's fingerprint), so data regenerated at the same
path recomputes exactly the tables that changed and never reuses a token of the old data.

Disk, the paper's training data (SigLIP2-SO400M/14 at 384 px: 729 tokens x 1152, fp16):

* per image: 729 * 1152 * 2 = 1,679,616 B (1.68 MB);
* NearID train split: 18,786 identities x ~2.33 views (45,215 images / 19,386 identities)
  = ~43,816 views, plus 4 training sources (Flux, Flux_1024, Qwen, Qwen_1328) x one distractor per
  view = 175,264 distractors: 219,080 images;
* one variant per image: 219,080 x 1,679,616 B = 367,970,273,280 B = ~368 GB (343 GiB);
* all 4 variants (masked/unmasked x flipped/not): 1,471,881,093,120 B = ~1.47 TB (1.34 TiB);
* what 11 epochs of the paper recipe (masks 0.5/0.2/0.6, flip 0.5) actually touch is about
  ~3.7 variants per view and ~2.0 per distractor (each source is drawn a quarter of the time):
  ~515,000 inputs, ~0.86 TB;
* MTG train (~5,000 samples x 4 images) adds ~33.6 GB per variant, ~134 GB for all 4; counted through
  the trainer's own sampling, NearID + MTG x 4 over 11 epochs is 595,124 inputs, 999.7 GB with the index
  (``benchmarks/paper_cache_estimate.py``). ``nearid train --token-cache auto`` makes this count for
  each run and streams when it does not fit (:mod:`nearid.training.cache_policy`).

:func:`disk_estimate` gives the bytes for other counts and backbones.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from nearid.io.atomic import atomic_path, write_text_atomic
from nearid.io.errors import NearIDError
from nearid.training.prefetch import pixel_values
from nearid.training.samples import Slot

FORMAT = 1
MANIFEST = "manifest.json"
DTYPE = "float16"
_KEYS_SUFFIX = ".keys.json"
_SHARD_COUNTER = itertools.count()  # shard names stay unique within a process even within one time_ns tick

#: ``fill`` shows a bar on a terminal when it has more than this many batches (``progress=None``).
PROGRESS_MIN_BATCHES = 4
#: Inputs per shard that :func:`fill` writes (its ``batch_size``; the trainer's cache estimate counts shards by it).
DEFAULT_FILL_BATCH = 32


def disk_estimate(n_images: int, n_tokens: int = 729, hidden: int = 1152) -> int:
    """Bytes of token data for ``n_images`` inputs (fp16; keys and .npy headers are negligible)."""
    return int(n_images) * int(n_tokens) * int(hidden) * 2


# ------------------------------------------------------------------------------------------ signature
_NON_SEMANTIC_CONFIG = {"transformers_version", "_name_or_path", "architectures", "auto_map", "dtype", "torch_dtype"}


def model_signature(model: torch.nn.Module, processor=None) -> str:
    """A hash of the frozen trunk: its config, and the name, dtype, shape and bytes of every trunk
    parameter and buffer (the MAP head, which trains, is left out). Pass the ``processor`` too (the
    encoder's) and its settings are hashed as well, since they change the pixels and so the tokens.

    Hashing every trunk weight costs 1-3 s for SO400M (0.8 GB in fp16); it is done once per run, and a cache
    built for another backbone, another checkpoint or another dtype is never reused.
    """
    digest = hashlib.sha1()
    config = getattr(model, "config", None)
    config = getattr(config, "vision_config", config)
    if config is not None:
        values = {k: v for k, v in config.to_dict().items() if k not in _NON_SEMANTIC_CONFIG and not k.startswith("_")}
        digest.update(json.dumps(values, sort_keys=True, default=str).encode())
    trunk = getattr(model, "backbone", model)
    tensors = dict(trunk.named_parameters())
    tensors.update(trunk.named_buffers())
    for name in sorted(tensors):
        if name.startswith("head."):
            continue
        tensor = tensors[name].detach()
        digest.update(f"\n{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).cpu().numpy().tobytes())
    if processor is not None:
        text = processor.to_json_string() if hasattr(processor, "to_json_string") else repr(processor)
        digest.update(b"\nprocessor\n" + text.encode())
    return digest.hexdigest()


def token_shape(model: torch.nn.Module) -> tuple[int, int]:
    """``(N_tokens, hidden)`` of a NearID / SigLIP trunk, from its config."""
    config = model.config.vision_config if hasattr(model.config, "vision_config") else model.config
    return (config.image_size // config.patch_size) ** 2, config.hidden_size


# ------------------------------------------------------------------------------------------ the cache
def _open_file_budget() -> int:
    """How many shards to keep memory-mapped at once (each mapping holds a file descriptor)."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return 1024
        return max(16, min(1024, soft // 4))
    except (ImportError, OSError, ValueError):
        return 256


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, bool]:
    """(shape, dtype, complete) of an .npy file from its header alone."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}[version]
        shape, fortran, dtype = reader(handle)
        expected = handle.tell() + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    return tuple(shape), dtype, (not fortran) and path.stat().st_size == expected


class TokenCache:
    """Float16 trunk tokens by ``Slot.key``, in memory-mapped shards (see the module docstring)."""

    def __init__(
        self,
        folder: str | os.PathLike,
        model_signature: str,
        n_tokens: int,
        hidden: int,
        *,
        max_open: int | None = None,
    ):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.signature = str(model_signature)
        self.n_tokens, self.hidden = int(n_tokens), int(hidden)
        expected = {
            "format": FORMAT,
            "signature": self.signature,
            "shape": [self.n_tokens, self.hidden],
            "dtype": DTYPE,
        }
        manifest = self.folder / MANIFEST
        if manifest.is_file():
            try:
                found = json.loads(manifest.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise NearIDError(
                    f"{self.folder}: unreadable token-cache manifest ({exc}); delete the folder or use another"
                ) from None
            if found != expected:
                raise NearIDError(
                    f"{self.folder}: token cache was built for {_describe(found)}, not {_describe(expected)}; "
                    "use another cache folder (or delete this one)"
                )
        else:
            write_text_atomic(manifest, json.dumps(expected) + "\n")
        self._shards: list[Path] = []  # shard id -> .npy path
        self._scanned: set[str] = set()
        self._index: dict[str, tuple[int, int]] = {}  # key -> (shard id, row)
        self._open: OrderedDict[int, np.ndarray] = OrderedDict()
        self.max_open = int(max_open) if max_open is not None else _open_file_budget()
        self.refresh()

    @classmethod
    def for_model(cls, folder: str | os.PathLike, model: torch.nn.Module, processor=None) -> TokenCache:
        """The cache for ``model``'s trunk (and ``processor``'s settings, if given) in ``folder``."""
        return cls(folder, model_signature(model, processor), *token_shape(model))

    def __repr__(self) -> str:
        return f"<TokenCache {self.folder} {len(self)} inputs, {len(self._shards)} shards>"

    @property
    def bytes_per_image(self) -> int:
        return disk_estimate(1, self.n_tokens, self.hidden)

    # ---------------------------------------------------------------------------------- index
    def refresh(self) -> int:
        """Pick up shards written since the last look (by this or another process); returns how many."""
        added = 0
        for path in sorted(self.folder.glob("shard-*.npy")):
            if path.name in self._scanned:
                continue
            keys = self._valid_keys(path)
            if keys is None:  # incomplete or foreign: not counted (looked at again next time)
                continue
            self._register(path, keys)
            added += 1
        return added

    def _valid_keys(self, path: Path) -> list[str] | None:
        keys_path = _keys_path(path)
        try:
            keys = json.loads(keys_path.read_text(encoding="utf-8"))
            shape, dtype, complete = _npy_header(path)
        except (OSError, ValueError, KeyError):
            return None
        if not (isinstance(keys, list) and complete and dtype == np.dtype(DTYPE)):
            return None
        if shape != (len(keys), self.n_tokens, self.hidden):
            return None
        return keys

    def _register(self, path: Path, keys: list[str]) -> None:
        shard = len(self._shards)
        self._shards.append(path)
        self._scanned.add(path.name)
        for row, key in enumerate(keys):
            self._index.setdefault(key, (shard, row))

    def keys(self) -> set[str]:
        """The keys of every counted shard (as of the last :meth:`refresh` or :meth:`add`)."""
        return set(self._index)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    # ---------------------------------------------------------------------------------- write
    def add(self, keys: Sequence[str], tokens: torch.Tensor | np.ndarray, *, writer: str | int | None = None) -> None:
        """Write one shard: ``tokens[i]`` (``[N_tokens, hidden]``) is the input named ``keys[i]``."""
        keys = [str(k) for k in keys]
        if isinstance(tokens, torch.Tensor):
            array = tokens.detach().to(device="cpu", dtype=torch.float16).contiguous().numpy()
        else:
            array = np.ascontiguousarray(tokens, dtype=np.float16)
        if array.shape != (len(keys), self.n_tokens, self.hidden):
            raise ValueError(
                f"{len(keys)} keys for tokens of shape {tuple(array.shape)}; expected [n, {self.n_tokens}, {self.hidden}]"
            )
        if not keys:
            return
        finite = np.isfinite(array).reshape(len(keys), -1).all(axis=1)
        if not finite.all():
            bad = keys[int(np.flatnonzero(~finite)[0])]
            raise ValueError(
                f"tokens of {bad} are not finite in float16 ({int((~finite).sum())} inputs); nothing was written"
            )
        base = f"shard-{time.time_ns():020d}-{os.getpid()}-{next(_SHARD_COUNTER)}" + (
            f"-{writer}" if writer is not None else ""
        )
        path = self.folder / f"{base}.npy"
        write_text_atomic(_keys_path(path), json.dumps(keys))  # keys first ...
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:  # ... the array last: it makes the shard count
            np.save(handle, array)
            handle.flush()
            os.fsync(handle.fileno())
        self._register(path, keys)

    # ---------------------------------------------------------------------------------- read
    def _array(self, shard: int) -> np.ndarray:
        array = self._open.get(shard)
        if array is None:
            array = np.load(self._shards[shard], mmap_mode="r")
            self._open[shard] = array
            while len(self._open) > self.max_open:
                self._open.popitem(last=False)
        else:
            self._open.move_to_end(shard)
        return array

    def load(self, keys: Sequence[str]) -> torch.Tensor:
        """``[len(keys), N_tokens, hidden]`` float16 tokens, in the order of ``keys``."""
        missing = [k for k in keys if k not in self._index]
        if missing:
            raise KeyError(
                f"{len(missing)} input(s) not in the token cache {self.folder}, e.g. {missing[0]!r}; run fill() first"
            )
        out = np.empty((len(keys), self.n_tokens, self.hidden), dtype=np.float16)
        by_shard: dict[int, list[tuple[int, int]]] = {}
        for position, key in enumerate(keys):
            shard, row = self._index[key]
            by_shard.setdefault(shard, []).append((row, position))
        for shard, pairs in by_shard.items():
            pairs.sort()
            rows, positions = zip(*pairs)
            out[list(positions)] = self._array(shard)[list(rows)]
        return torch.from_numpy(out)

    def close(self) -> None:
        """Drop the memory maps (they are reopened on demand)."""
        self._open.clear()


def stored_keys(folder: str | os.PathLike) -> set[str]:
    """The keys of the shards in a cache folder whose ``.npy`` exists, read from their ``.keys.json``
    files alone (no manifest check, no array opened): what a run's disk estimate counts as done."""
    keys: set[str] = set()
    for path in Path(folder).glob("shard-*.npy"):
        try:
            found = json.loads(_keys_path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(found, list):
            keys.update(str(key) for key in found)
    return keys


def _keys_path(npy: Path) -> Path:
    return npy.with_name(npy.name[: -len(".npy")] + _KEYS_SUFFIX)


def _describe(manifest: dict) -> str:
    signature = str(manifest.get("signature", "?"))
    shape = manifest.get("shape", "?")
    return f"trunk {signature[:12]} tokens {shape} {manifest.get('dtype', '?')} (format {manifest.get('format', '?')})"


# ------------------------------------------------------------------------------------------ filling
def fill(
    cache: TokenCache,
    model,
    slots: Iterable[Slot | None],
    preprocess: Callable,
    batch_size: int = DEFAULT_FILL_BATCH,
    progress: bool | Callable[[int, int], None] | None = None,
    *,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> int:
    """Compute and store the tokens of every distinct cacheable slot not yet in ``cache``; one shard per
    batch, so a killed fill resumes where it stopped. Returns how many inputs were computed. Slots with
    colour jitter or disalignment (``not slot.cacheable``) are skipped: their pixels are drawn afresh
    each epoch, so :func:`slot_tokens` runs the trunk on them instead.

    ``model`` is the :class:`NearIDModel` (on its device and dtype), ``preprocess`` its encoder's
    ``preprocess(images, masks)``. Images of the next batches are decoded while the trunk runs: on a
    thread (``num_workers=0``) or in ``num_workers`` processes (:mod:`nearid.training.prefetch`; pixels
    cast there to the trunk's dtype, ``pin_memory`` for CUDA). The tokens are the same either way.
    ``progress``: ``None`` = a bar on long fills on a terminal, a bool, or ``fn(done, total)``.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    cache.refresh()  # another process may have filled part of it
    todo: dict[str, Slot] = {}
    for slot in slots:
        if slot is not None and slot.cacheable and slot.key not in todo and slot.key not in cache:
            todo[slot.key] = slot
    pending_slots = list(todo.values())
    batches = [pending_slots[i : i + batch_size] for i in range(0, len(pending_slots), batch_size)]
    if not batches:
        return 0
    device = next(model.parameters()).device
    callback = progress if callable(progress) else None
    bar = None
    if callback is None:
        from tqdm.auto import tqdm

        disable = (None if len(batches) > PROGRESS_MIN_BATCHES else True) if progress is None else not progress
        bar = tqdm(total=len(pending_slots), desc="caching trunk tokens", unit="img", disable=disable)
    done = 0
    try:
        with _batch_pixels(batches, preprocess, model, num_workers, pin_memory) as pixels_of_batches:
            for batch, pixels in zip(batches, pixels_of_batches):
                tokens = model.encode_tokens(pixels.to(device, non_blocking=True))
                cache.add([slot.key for slot in batch], tokens)
                done += len(batch)
                if callback is not None:
                    callback(done, len(pending_slots))
                if bar is not None:
                    bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
    return done


@contextlib.contextmanager
def _batch_pixels(batches: list[list[Slot]], preprocess: Callable, model, num_workers: int, pin_memory: bool):
    """The pixel values of each batch in order, in the trunk's dtype, built ahead by the input pipeline
    (:func:`nearid.images.pipeline.batches`: one batch ahead on a thread with ``num_workers=0``, else the
    next ones in worker processes)."""
    from nearid.images.pipeline import batches as prefetched
    from nearid.training.prefetch import SlotChunks

    dtype = model.backbone.embeddings.patch_embedding.weight.dtype
    dataset = SlotChunks(len(batches), batches.__getitem__, preprocess, dtype=dtype)
    with prefetched(dataset, num_workers=num_workers, pin_memory=pin_memory) as iterator:
        yield iterator


def slot_tokens(
    slots: Sequence[Slot],
    model,
    preprocess: Callable,
    cache: TokenCache | None = None,
    *,
    pixels: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[len(slots), N_tokens, hidden]`` float32 trunk tokens on the model's device, in slot order:
    cacheable slots from ``cache`` (filled beforehand; a missing key is a KeyError), the rest
    (augmented slots, or all when ``cache`` is None) from the trunk, in one batch. This is the cache
    policy of a run with jitter or disalignment on: cache what recurs, compute what does not.
    Every token the head sees has the cache's precision (:data:`DTYPE`, float16): cached tokens are
    the stored copies, fresh ones are rounded to it the same way (float32 -> float16 -> float32), so a
    streamed run (``--token-cache off``, or ``auto`` on a full disk) trains the head a cached run
    trains, and the free disk space never changes the result (issue 21.5; a bf16 or fp16 trunk's tokens
    are exact in float16).
    ``pixels``: the trunk's inputs, already built (prefetched by workers), of the slots that run the
    trunk, in slot order; built here from ``preprocess`` when not given."""
    device = next(model.parameters()).device
    out = torch.empty((len(slots), *token_shape(model)), dtype=torch.float32, device=device)
    cached = [i for i, slot in enumerate(slots) if cache is not None and slot.cacheable]
    fresh = [i for i, slot in enumerate(slots) if cache is None or not slot.cacheable]
    if cached:
        out[cached] = cache.load([slots[i].key for i in cached]).to(device=device, dtype=torch.float32)
    if fresh:
        if pixels is None:
            pixels = pixel_values([slots[i] for i in fresh], preprocess)
        elif len(pixels) != len(fresh):
            raise ValueError(f"{len(pixels)} prefetched inputs for {len(fresh)} slots that run the trunk")
        out[fresh] = model.encode_tokens(pixels.to(device)).to(getattr(torch, DTYPE)).to(torch.float32)
    return out


__all__ = [
    "TokenCache",
    "disk_estimate",
    "fill",
    "model_signature",
    "pixel_values",
    "slot_tokens",
    "stored_keys",
    "token_shape",
]
