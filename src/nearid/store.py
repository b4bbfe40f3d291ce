"""An on-disk embedding store: each image is embedded once per encoder content, ever, and runs resume.

A store is a folder of safetensors shards, one per finished chunk, each holding ``vectors`` and, in its
metadata, the image keys in row order. Shards are written atomically, so a killed run loses at most
the chunk in flight, and several processes can write their own shards into one store at once.

What makes a stored vector reusable is content, never a name: the folder is chosen by the encoder's
:attr:`~nearid.encoders.Encoder.fingerprint` (weights, preprocessing, readout, dtype) and the keys are
content-versioned image keys (:attr:`~nearid.images.ImageRef.cache_key`: the dataset's or file's
fingerprint). A model re-exported to the same folder gets another store; data regenerated at the same
path gets other keys; the same model reached by another spelling of its path finds its vectors.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import NearIDError
from .fingerprint import SHORT
from .io import atomic_path, write_text_atomic


def store_folder(root: str | os.PathLike, encoder_name: str, fingerprint: str) -> Path:
    """One store per encoder content: ``<family>-<fingerprint prefix>``. The family (``nearid``,
    ``histogram``; the spec text before ``:``) is only for people; the rest of the spec is left out so
    that two spellings of one model's path (``nearid:./m``, ``nearid:m``) share one store."""
    if not fingerprint:
        raise NearIDError(
            f"encoder '{encoder_name}' has no fingerprint; give it a `fingerprint` attribute "
            "(a hash of its weights and preprocessing) so its stored embeddings can be trusted"
        )
    slug = "".join(
        c if c.isalnum() or c in "-_." else "_" for c in (encoder_name.split(":")[0].split() or ["encoder"])[0]
    )[:32]
    return Path(root) / f"{slug}-{fingerprint[:SHORT]}"


class EmbeddingStore:
    def __init__(self, folder: str | os.PathLike, encoder_name: str, dim: int, fingerprint: str):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        manifest = self.folder / "manifest.json"
        expected = {"fingerprint": fingerprint, "dim": int(dim)}
        if manifest.is_file():
            found = json.loads(manifest.read_text())
            if {k: found.get(k) for k in expected} != expected:
                raise NearIDError(
                    f"{self.folder}: holds embeddings of another encoder ({found.get('encoder')}, "
                    f"fingerprint {str(found.get('fingerprint'))[:SHORT]}); use another --out"
                )
        else:  # the first spelling that made it, for people; the fingerprint is what is checked
            write_text_atomic(manifest, json.dumps({"encoder": encoder_name, **expected}) + "\n")
        self.dim = int(dim)
        self.fingerprint = fingerprint

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
