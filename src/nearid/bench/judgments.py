"""An on-disk judgment store: each image pair is judged once per pair-scorer content, ever, and runs resume.

The pair-scorer twin of :mod:`nearid.bench.store`. A judgment (a VLM judge's score for two images) costs
seconds, so a benchmark asks only for pairs it has not stored. A store is a folder of safetensors
shards, one per flushed batch of judgments, each holding the float64 ``scores`` and, in its metadata,
the pair keys in row order. Shards are written atomically: a killed run loses at most the judgments
not flushed yet, and several processes write their own shards into one store at once.

What makes a stored judgment reusable is content, never a name: the folder is chosen by the scorer's
:attr:`~nearid.models.pair_scorers.PairScorer.fingerprint` (weights, prompt, readout, decoding, dtype), and a
pair's key is its two images' content-versioned keys, masks included (:func:`pair_key` over
:func:`nearid.eval.evaluate.image_key`), in order: a judge reads image A first, so (A, B) and (B, A) are two
judgments. A NaN (the judge gave no answer) is a judgment too: greedy decoding would give it again, so
a repeated run does not ask again, and the benchmark counts it.

numpy and safetensors only: no torch.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from nearid.io.atomic import atomic_path
from nearid.io.fingerprint import SHORT

#: Between the two image keys of a pair key; image keys never contain it.
SEPARATOR = " || "


def pair_key(first: str, second: str) -> str:
    """The key of the ordered pair of two image keys (each already carries its mask and content version)."""
    return f"{first}{SEPARATOR}{second}"


class JudgmentStore:
    """Judgments of one pair scorer, keyed by :func:`pair_key`."""

    def __init__(self, folder: str | os.PathLike, scorer_name: str, fingerprint: str):
        from nearid.bench.store import claim_folder

        self.folder = Path(folder)
        claim_folder(
            self.folder,
            {"fingerprint": fingerprint, "kind": "judgments"},
            {"scorer": scorer_name},
            lambda found: (
                f"holds another scorer's {found.get('kind', 'embeddings')} "
                f"({found.get('scorer') or found.get('encoder')}, fingerprint {str(found.get('fingerprint'))[:SHORT]})"
            ),
        )
        self.fingerprint = fingerprint

    def _shards(self) -> list[Path]:
        return sorted(self.folder.glob("shard-*.safetensors"))

    def keys(self) -> set[str]:
        found: set[str] = set()
        for shard in self._shards():
            with safe_open(shard, "np") as handle:
                found.update(json.loads(handle.metadata()["keys"]))
        return found

    def add(self, keys: Sequence[str], scores, *, writer: str = "0") -> None:
        """Write one shard of judgments; ``writer`` keeps shard names of concurrent processes apart."""
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if len(keys) != len(scores):
            raise ValueError(f"{len(keys)} keys for {len(scores)} judgments")
        if not len(keys):
            return
        target = self.folder / f"shard-{time.time_ns()}-{writer}.safetensors"
        with atomic_path(target) as tmp:
            save_file({"scores": np.ascontiguousarray(scores)}, str(tmp), metadata={"keys": json.dumps(list(keys))})

    def load(self) -> dict[str, float]:
        """Every stored judgment by pair key (a later shard wins if a pair was stored twice)."""
        scores: dict[str, float] = {}
        for shard in self._shards():
            with safe_open(shard, "np") as handle:
                keys = json.loads(handle.metadata()["keys"])
                block = handle.get_tensor("scores")
            scores.update(zip(keys, (float(v) for v in block)))
        return scores


__all__ = ["JudgmentStore", "pair_key"]
