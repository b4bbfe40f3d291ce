"""An on-disk embedding store: each image is embedded once per encoder, ever, and runs resume.

A store is a folder of safetensors shards, one per finished chunk, each holding ``vectors`` and, in its
metadata, the image keys in row order. Shards are written atomically, so a killed run loses at most
the chunk in flight, and several processes can write their own shards into one store at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import NearIDError
from .io import atomic_path, write_text_atomic


def store_folder(root: str | os.PathLike, encoder_name: str, data_location: str) -> Path:
    """One store per (encoder, dataset location): image keys are only unique within a dataset."""
    digest = hashlib.sha1(f"{encoder_name}\n{data_location}".encode()).hexdigest()[:12]
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in encoder_name)[:48]
    return Path(root) / f"{slug}-{digest}"


class EmbeddingStore:
    def __init__(self, folder: str | os.PathLike, encoder_name: str, dim: int):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        manifest = self.folder / "manifest.json"
        expected = {"encoder": encoder_name, "dim": int(dim)}
        if manifest.is_file():
            found = json.loads(manifest.read_text())
            if found != expected:
                raise NearIDError(f"{self.folder}: holds embeddings of {found}, not {expected}; use another --out")
        else:
            write_text_atomic(manifest, json.dumps(expected) + "\n")
        self.dim = int(dim)

    def _shards(self) -> list[Path]:
        return sorted(self.folder.glob("shard-*.safetensors"))

    def keys(self) -> set[str]:
        found: set[str] = set()
        for shard in self._shards():
            with safe_open(shard, "pt") as handle:
                found.update(json.loads(handle.metadata()["keys"]))
        return found

    def add(self, keys: list[str], vectors: torch.Tensor, *, writer: str = "0") -> None:
        """Write one shard; ``writer`` keeps shard names of concurrent processes apart."""
        if len(keys) != len(vectors) or vectors.shape[-1] != self.dim:
            raise ValueError(f"{len(keys)} keys for vectors of shape {tuple(vectors.shape)} (dim {self.dim})")
        target = self.folder / f"shard-{time.time_ns()}-{writer}.safetensors"
        with atomic_path(target) as tmp:
            save_file({"vectors": vectors.float().contiguous()}, str(tmp), metadata={"keys": json.dumps(keys)})

    def load(self) -> dict[str, torch.Tensor]:
        """All stored vectors by key (a later shard wins if a key was stored twice)."""
        vectors: dict[str, torch.Tensor] = {}
        for shard in self._shards():
            with safe_open(shard, "pt") as handle:
                keys = json.loads(handle.metadata()["keys"])
                block = handle.get_tensor("vectors")
            vectors.update(zip(keys, block))
        return vectors
