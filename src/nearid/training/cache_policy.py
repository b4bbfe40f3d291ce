"""Whether a training run caches its frozen-trunk tokens or streams its inputs: ``--token-cache auto|on|off``.

A cached run writes each (image, mask, flip) input's tokens once (``N_tokens x hidden`` float16) and
then trains from disk; a streaming run decodes the inputs and runs the trunk every step. The paper's
recipe touches ~0.5 M inputs, ~0.9 TB of SO400M tokens: more than a typical GPU machine's disk, and
filling a disk mid-run is the worst way to find out. So the run estimates first:

* **what it would write**: the distinct cacheable inputs of the steps it will run (augmented slots
  never enter the cache: their pixels are drawn afresh per epoch), less those already in the cache
  folder, times ``N_tokens x hidden x 2`` bytes, plus the index (each shard's ``.keys.json`` and
  ``.npy`` header, rounded up to whole 4 KiB file-system blocks);
* **what is free** at the cache folder (:func:`free_bytes`, ``shutil.disk_usage`` of its nearest
  existing folder);
* **the margin**: the cache fits when it leaves at least :data:`KEEP_FRACTION` (10%) of today's free
  space plus :data:`KEEP_BYTES` (1 GiB) free, for checkpoints, logs and whatever else shares the disk.

``auto`` caches when it fits and streams otherwise; ``on`` refuses a run that will not fit, with the
estimate, before the model loads; ``off`` streams. The decision and its numbers are one printed line.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from nearid.io.errors import NearIDError

SETTINGS = ("auto", "on", "off")
#: The cache must leave this fraction of the free space it found, plus :data:`KEEP_BYTES`, free.
KEEP_FRACTION = 0.10
KEEP_BYTES = 1 << 30
#: Environment variable that replaces the measured free space (bytes). For tests and dry runs only.
FREE_BYTES_ENV = "NEARID_FREE_BYTES"
#: File-system block that every small file occupies at least (the index estimate rounds up to it).
BLOCK = 4096
#: ``.npy`` header bytes (numpy pads it to a multiple of 64; 128 for our shapes).
NPY_HEADER = 128


def free_bytes(folder: str | os.PathLike) -> int:
    """Bytes free for this user at ``folder`` (or at its nearest existing parent, for a folder not made
    yet). ``NEARID_FREE_BYTES`` (an integer) replaces the measurement: tests set it to stand for a small
    or a large disk."""
    override = os.environ.get(FREE_BYTES_ENV)
    if override is not None:
        try:
            value = int(override)
        except ValueError:
            value = -1
        if value < 0:
            raise NearIDError(
                f"{FREE_BYTES_ENV}={override!r}: must be a whole number of bytes >= 0; unset it to measure"
            )
        return value
    path = Path(folder).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def room(free: int) -> int:
    """The bytes a cache may take from ``free`` bytes: all but 10% of them and 1 GiB."""
    return int(free * (1.0 - KEEP_FRACTION)) - KEEP_BYTES


def index_bytes(keys: list[str], shard_size: int) -> int:
    """The cache's index for ``keys`` written ``shard_size`` per shard: the keys files (JSON) and the
    ``.npy`` headers, each file rounded up to whole :data:`BLOCK` s."""
    if not keys:
        return 0
    shards = math.ceil(len(keys) / shard_size)
    key_text = sum(len(key) + 4 for key in keys)  # '"key", ' in JSON (escapes are rare in our keys)
    per_shard_keys = -(-key_text // shards)
    return shards * (_blocks(per_shard_keys) + _blocks(NPY_HEADER))


def _blocks(n: int) -> int:
    return max(1, -(-int(n) // BLOCK)) * BLOCK


def gb(n: int) -> str:
    """Bytes in decimal gigabytes, as disks are sold (``1.68 MB`` per SO400M input)."""
    return f"{n / 1e9:,.1f} GB" if abs(n) >= 1e8 else f"{n / 1e6:,.1f} MB"


@dataclass(frozen=True)
class CachePlan:
    """The decision for one run: ``cache`` True (fill, then train from disk) or False (stream)."""

    setting: str
    cache: bool
    inputs: int = 0  # inputs still to compute and store
    cached: int = 0  # inputs of the run already in the cache folder
    token_bytes: int = 0
    index_bytes: int = 0
    free: int = 0
    folder: str = ""
    reason: str = ""

    @property
    def needed(self) -> int:
        return self.token_bytes + self.index_bytes

    def line(self) -> str:
        """The one line a run prints: the estimate, the free space, the decision and why."""
        if self.setting == "off" and not self.inputs:
            return "token cache off: streaming (the trunk runs on every step's inputs)"
        decision = "caching" if self.cache else "streaming (the trunk runs on every step's inputs)"
        already = f" ({self.cached:,} already cached)" if self.cached else ""
        return (
            f"token cache {self.setting}: {self.inputs:,} inputs to cache{already} = {gb(self.needed)} "
            f"(tokens {gb(self.token_bytes)} + index {gb(self.index_bytes)}); {gb(self.free)} free at "
            f"{self.folder}, of which {gb(max(0, room(self.free)))} usable (keeping 10% + 1 GiB free) "
            f"-> {decision}{': ' + self.reason if self.reason else ''}"
        )


def plan(
    setting: str,
    *,
    keys: list[str],
    already: set[str] | frozenset[str] = frozenset(),
    n_tokens: int,
    hidden: int,
    folder: str | os.PathLike,
    shard_size: int = 32,
    resumed_streaming: bool = False,
) -> CachePlan:
    """Decide for ``setting`` given the distinct cacheable input ``keys`` the run will use, the keys
    ``already`` in the cache folder and the trunk's token shape. ``resumed_streaming``: the run being
    resumed streamed (``auto`` keeps it so, whatever the disk holds now: a run changes its token
    precision only when told to). ``on`` that does not fit raises a one-line :class:`NearIDError`."""
    if setting not in SETTINGS:
        raise NearIDError(f"--token-cache {setting!r}: use auto, on or off")
    if setting == "off":
        return CachePlan(setting, False, folder=str(folder))
    todo = [key for key in keys if key not in already]
    tokens = len(todo) * int(n_tokens) * int(hidden) * 2
    index = index_bytes(todo, shard_size)
    free = free_bytes(folder)
    fits = not todo or tokens + index <= room(free)  # nothing left to write always fits
    base = dict(
        inputs=len(todo),
        cached=len(keys) - len(todo),
        token_bytes=tokens,
        index_bytes=index,
        free=free,
        folder=str(folder),
    )
    if setting == "on":
        if not fits:
            raise NearIDError(
                f"--token-cache on: the cache needs {gb(tokens + index)} for {len(todo):,} inputs "
                f"({n_tokens} x {hidden} float16 each) but {folder} has {gb(free)} free, "
                f"{gb(max(0, room(free)))} usable after keeping 10% + 1 GiB free; free space there, "
                "or pass --token-cache auto (streams when it does not fit) or off"
            )
        return CachePlan(setting, True, **base)
    if resumed_streaming:
        return CachePlan(setting, False, **base, reason="the run being resumed streamed (inputs.json)")
    if fits:
        return CachePlan(setting, True, **base, reason="it fits")
    return CachePlan(setting, False, **base, reason="the cache would not fit")


def backbone_token_shape(spec: str) -> tuple[int, int] | None:
    """``(N_tokens, hidden)`` of a backbone spec from its config alone (no weights loaded), or ``None``
    when the config cannot be read that way (the model loader then reports the problem)."""
    from nearid.models.specs import parse_backbone

    try:
        parsed = parse_backbone(spec)
        if parsed.kind == "tiny":
            from nearid.models.nearid_model import tiny_vision_config

            config = tiny_vision_config()
        else:
            from transformers import AutoConfig

            from nearid.io.hub import resolve_model_dir
            from nearid.models import nearid_model as _registers_nearid  # noqa: F401 (AutoConfig learns model_type "nearid")

            config = AutoConfig.from_pretrained(resolve_model_dir(parsed.argument))
            config = getattr(config, "vision_config", config)
        return (config.image_size // config.patch_size) ** 2, config.hidden_size
    except Exception:  # any failure here: load_backbone then loads the model or names the problem
        return None


__all__ = ["SETTINGS", "CachePlan", "backbone_token_shape", "free_bytes", "plan", "room"]
