"""Shards of one run and the records they write: the part every sharded command shares.

A shard is a contiguous share of a run's work (:meth:`Shard.span`); it writes a record instead of the
result, and a merge reads the records of one run back (:func:`complete`: all of one run, none missing,
each readable). ``nearid bench`` (:mod:`nearid.bench.shards`) and ``nearid score``
(:mod:`nearid.score.shards`) build on it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nearid.io.errors import NearIDError

#: where a sharded bench run's partial records go, inside ``--out``
SHARDS_FOLDER = "shards"
SCHEMA_VERSION = 1


class ShardError(NearIDError):
    """A bad ``--num-shards`` / ``--shard-index``, or shards that cannot be merged."""


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based)."""

    count: int
    index: int

    @property
    def name(self) -> str:
        return f"shard-{self.index}-of-{self.count}"

    def span(self, n: int) -> range:
        """This shard's contiguous share of ``n`` items in order; the shares of 0..count-1 tile 0..n."""
        return range(self.index * n // self.count, (self.index + 1) * n // self.count)

    def take(self, items: Sequence) -> list:
        return [items[i] for i in self.span(len(items))]

    def record(self, out: str | os.PathLike) -> Path:
        """This shard's partial record in a bench ``out`` folder."""
        return Path(out) / SHARDS_FOLDER / f"{self.name}.json"


def shard_option(num_shards: int | None, shard_index: int | None) -> Shard | None:
    """``--num-shards`` / ``--shard-index`` as a :class:`Shard` (``None``: not sharded); checked before
    any data is read or model loaded."""
    if num_shards is None and shard_index is None:
        return None
    if num_shards is None or shard_index is None:
        given, needed = ("--num-shards", "--shard-index") if shard_index is None else ("--shard-index", "--num-shards")
        raise ShardError(f"{given} needs {needed}: a shard is --shard-index I (0-based) of --num-shards S")
    if num_shards < 1:
        raise ShardError(f"--num-shards {num_shards}: must be at least 1")
    if not 0 <= shard_index < num_shards:
        raise ShardError(
            f"--shard-index {shard_index}: out of range for --num-shards {num_shards} (0 to {num_shards - 1})"
        )
    return Shard(num_shards, shard_index)


def complete(paths: list[Path], kind: str, where: str, rerun: str) -> list[dict]:
    """The records of ``paths`` in shard order: all of one run, none missing, one settings."""
    records = {}
    for path in paths:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            if record.get("kind") != kind or record.get("schema_version") != SCHEMA_VERSION:
                raise ValueError(f"not a {kind} record of this nearid")
            shard = Shard(int(record["shard"]["count"]), int(record["shard"]["index"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ShardError(
                f"{path}: not readable as a shard record ({exc}); delete it and run that shard again"
            ) from None
        record["path"] = str(path)
        records[shard] = record
    counts = sorted({shard.count for shard in records})
    if len(counts) > 1:
        raise ShardError(
            f"{where}: holds shards of runs split {' and '.join(map(str, counts))} ways; "
            "delete the records of the run you do not want (shard-I-of-S.json) and merge again"
        )
    count = counts[0]
    for index in range(count):
        if Shard(count, index) not in records:
            raise ShardError(
                f"{where}: shard {index} of {count} is missing ({Shard(count, index).name}.json); run `{rerun}` "
                f"with the same options and --num-shards {count} --shard-index {index}, then merge"
            )
    return [records[Shard(count, index)] for index in range(count)]
