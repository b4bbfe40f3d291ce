"""An on-disk embedding store: each image is embedded once per encoder content, ever, and runs resume.

A store is a folder of safetensors shards, one per finished chunk, each holding ``vectors`` and, in its
metadata, the image keys in row order. Shards are written atomically, so a killed run loses at most
the chunk in flight, and several processes can write their own shards into one store at once.

What makes a stored vector reusable is content, never a name: the folder is chosen by the encoder's
:attr:`~nearid.models.encoders.Encoder.fingerprint` (weights, preprocessing, readout, dtype) and the keys are
content-versioned image keys (:attr:`~nearid.images.decode.ImageRef.cache_key`: the dataset's or file's
fingerprint). A model re-exported to the same folder gets another store; data regenerated at the same
path gets other keys; the same model reached by another spelling of its path finds its vectors.

Reading is memory-mapped (issue 14): :meth:`EmbeddingStore.matrix` returns the vectors of the keys
asked for, in that order, without holding the store in Python objects. The index is three numpy
arrays (a 128-bit digest of each key, sorted; its shard; its row: 24 bytes per stored vector, against
~4.6 KB for a 1152-d vector held as a tensor in a dict), and the vectors are read through a
``numpy.memmap`` of each shard's data section, one shard mapped at a time, so peak memory is the
index, the answer and one shard's pages. Why map the safetensors files rather than a raw ``.npy``
per shard: a safetensors file *is* a small JSON header followed by the raw little-endian array, so
numpy can map its data section directly (the header gives the offset, dtype and shape); the files
stay what they were, so stores written before are read as they are, embeddings already computed
are reused, and writing (one atomic file per chunk, keys in its metadata) needs no second file that
could be out of step with the first.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nearid.io.atomic import write_text_atomic
from nearid.io.errors import NearIDError
from nearid.io.fingerprint import SHORT

#: numpy dtypes of the safetensors dtypes a shard may hold (nearid writes F32).
_DTYPES = {"F16": np.dtype("<f2"), "F32": np.dtype("<f4"), "F64": np.dtype("<f8")}
#: bytes of a key's digest in the index: 128 bits, so two of 10^9 keys collide with odds ~10^-21.
DIGEST = 16


class StoreError(NearIDError):
    """A store shard that cannot be read (truncated, not safetensors, an unknown dtype)."""


class MissingEmbeddingsError(KeyError):
    """Keys asked of :meth:`EmbeddingStore.matrix` that the store does not hold (a bug of the caller:
    bench embeds every planned key before it reads them)."""

    def __str__(self) -> str:  # KeyError's own quotes the message
        return str(self.args[0])


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


def digests(keys) -> np.ndarray:
    """``[N]`` of ``S16``: the index's name for each key (BLAKE2b, 128 bits)."""
    blake2b = hashlib.blake2b
    return np.array([blake2b(key.encode("utf-8"), digest_size=DIGEST).digest() for key in keys], dtype=f"S{DIGEST}")


@dataclass(frozen=True)
class _Shard:
    """Where one shard's vectors lie in its file, read from the safetensors header."""

    path: Path
    offset: int  # bytes from the start of the file to row 0
    rows: int
    dtype: np.dtype
    keys_digest: np.ndarray  # [rows] S16, row order


def read_header(path: Path) -> tuple[dict, int]:
    """A safetensors file's JSON header and the offset of its data section (the format: an 8-byte
    little-endian header length, the header, the data)."""
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise StoreError(f"{path}: not a store shard (truncated header); delete it and run again")
        (length,) = struct.unpack("<Q", head)
        if length > 1 << 30:
            raise StoreError(f"{path}: not a store shard (header of {length} bytes); delete it and run again")
        try:
            header = json.loads(handle.read(length))
        except ValueError:
            raise StoreError(f"{path}: not a store shard (unreadable header); delete it and run again") from None
    return header, 8 + length


def _read_shard(path: Path, dim: int) -> _Shard:
    header, data = read_header(path)
    try:
        keys = json.loads(header["__metadata__"]["keys"])
        info = header["vectors"]
        start, end = info["data_offsets"]
        rows, width = info["shape"]
    except (KeyError, TypeError, ValueError):
        raise StoreError(f"{path}: not a store shard (no vectors or keys); delete it and run again") from None
    dtype = _DTYPES.get(info.get("dtype"))
    if dtype is None:
        raise StoreError(f"{path}: vectors of dtype {info.get('dtype')}, the store reads {', '.join(_DTYPES)}")
    if width != dim or len(keys) != rows or end - start != rows * width * dtype.itemsize:
        raise StoreError(f"{path}: {len(keys)} keys for vectors of shape {[rows, width]} (dim {dim}); delete it")
    if os.path.getsize(path) < data + end:
        raise StoreError(f"{path}: truncated store shard; delete it and run again (its images are embedded again)")
    return _Shard(path, data + start, rows, dtype, digests(keys))


def claim_folder(folder: Path, expected: dict, owner: dict, conflict) -> None:
    """Make ``folder`` the store of one content (``expected``: its fingerprint and shape), or check that it
    is: a ``manifest.json`` written by the first run (with ``owner``, the first spelling that made it,
    for people) must hold ``expected``, else ``conflict(found manifest)`` says what is there instead.
    Embedding and judgment stores claim their folders this way."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "manifest.json"
    if manifest.is_file():
        found = json.loads(manifest.read_text())
        if {k: found.get(k) for k in expected} != expected:
            raise NearIDError(f"{folder}: {conflict(found)}; use another --out")
    else:
        write_text_atomic(manifest, json.dumps({**owner, **expected}) + "\n")


class EmbeddingStore:
    def __init__(self, folder: str | os.PathLike, encoder_name: str, dim: int, fingerprint: str):
        self.folder = Path(folder)
        claim_folder(
            self.folder,
            {"fingerprint": fingerprint, "dim": int(dim)},
            {"encoder": encoder_name},
            lambda found: (
                f"holds embeddings of another encoder ({found.get('encoder')}, "
                f"fingerprint {str(found.get('fingerprint'))[:SHORT]})"
            ),
        )
        self.dim = int(dim)
        self.fingerprint = fingerprint
        self._seen: dict[str, _Shard] = {}  # shard file name -> its header, read once
        self._index: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # digest (sorted), shard, row
        self._order: list[_Shard] = []  # the shards the index's shard numbers name

    def _shards(self) -> list[Path]:
        # a shard being written is a hidden ``.shard-*.part`` file (nearid.io.atomic.atomic_path): not listed
        names = (n for n in os.listdir(self.folder) if n.startswith("shard-") and n.endswith(".safetensors"))
        return [self.folder / name for name in sorted(names)]

    # ------------------------------------------------------------------------------------ index
    def refresh(self) -> None:
        """Read the headers of shards written since the last look (by any process) into the index."""
        paths = self._shards()
        if self._index is not None and all(p.name in self._seen for p in paths):
            return
        for path in paths:
            if path.name not in self._seen:
                self._seen[path.name] = _read_shard(path, self.dim)
        self._order = [self._seen[p.name] for p in paths]
        if not self._order:
            empty = np.empty(0, dtype=np.int32)
            self._index = (np.empty(0, dtype=f"S{DIGEST}"), empty, empty)
            return
        digest = np.concatenate([s.keys_digest for s in self._order])
        shard = np.concatenate([np.full(s.rows, i, dtype=np.int32) for i, s in enumerate(self._order)])
        row = np.concatenate([np.arange(s.rows, dtype=np.int32) for s in self._order])
        order = np.argsort(digest, kind="stable")  # equal digests keep shard order...
        digest, shard, row = digest[order], shard[order], row[order]
        last = np.append(digest[1:] != digest[:-1], True)  # ...and the last one wins, as in load()
        self._index = (digest[last], shard[last], row[last])

    def __len__(self) -> int:
        self.refresh()
        return len(self._index[0])

    def _locate(self, keys) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(found, shard, row) of each key; the folder is listed again only when a key is not indexed
        (shards are never changed once written, so an indexed key's place stays true)."""
        if self._index is None:
            self.refresh()
        wanted = digests(keys)
        found, shard, row = self._search(wanted)
        if not found.all():
            self.refresh()
            found, shard, row = self._search(wanted)
        return found, shard, row

    def _search(self, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        index, shard, row = self._index
        if not len(index):
            nowhere = np.zeros(len(wanted), dtype=np.int64)
            return np.zeros(len(wanted), dtype=bool), nowhere, nowhere
        at = np.minimum(np.searchsorted(index, wanted), len(index) - 1)
        return index[at] == wanted, shard[at], row[at]

    def missing(self, keys) -> list[str]:
        """The keys (in the order given) that the store does not hold: what is left to embed."""
        found, _, _ = self._locate(keys)
        return [key for key, ok in zip(keys, found) if not ok]

    # ------------------------------------------------------------------------------------ read
    def matrix(self, keys, dtype=np.float64) -> np.ndarray:
        """``[len(keys), dim]``: the vectors of ``keys`` in the order given, read through a memory map
        of each shard that holds any of them (one mapped at a time); :class:`MissingEmbeddingsError`
        if any key is not stored."""
        found, shard, row = self._locate(keys)
        if not found.all():
            missing = [key for key, ok in zip(keys, found) if not ok]
            raise MissingEmbeddingsError(
                f"{len(missing)} of {len(keys)} keys are not in the store {self.folder}, e.g. {missing[0]}"
            )
        out = np.empty((len(keys), self.dim), dtype=dtype)
        order = np.argsort(shard, kind="stable")
        bounds = np.flatnonzero(np.diff(shard[order])) + 1
        for positions in np.split(order, bounds) if len(order) else []:
            info = self._order[shard[positions[0]]]
            with open(info.path, "rb") as handle:
                mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            vectors = np.frombuffer(mapped, info.dtype, info.rows * self.dim, info.offset).reshape(info.rows, self.dim)
            out[positions] = vectors[row[positions]]
            del vectors
            mapped.close()  # unmapped: its pages leave this process's resident set
        return out

    def keys(self) -> set[str]:
        """Every stored key (Python strings: for small stores and tests; bench asks :meth:`missing`)."""
        found: set[str] = set()
        for shard in self._shards():
            header, _ = read_header(shard)
            found.update(json.loads(header["__metadata__"]["keys"]))
        return found

    # ------------------------------------------------------------------------------------ write
    def add(self, keys: list[str], vectors, *, writer: str = "0") -> None:
        """Write one shard; ``writer`` keeps shard names of concurrent processes apart."""
        from safetensors.torch import save_file

        from nearid.io.atomic import atomic_path

        if len(keys) != len(vectors) or vectors.shape[-1] != self.dim:
            raise ValueError(f"{len(keys)} keys for vectors of shape {tuple(vectors.shape)} (dim {self.dim})")
        target = self.folder / f"shard-{time.time_ns()}-{writer}.safetensors"
        with atomic_path(target) as tmp:
            save_file({"vectors": vectors.float().contiguous()}, str(tmp), metadata={"keys": json.dumps(keys)})

    def load(self) -> dict:
        """All stored vectors by key as tensors (a later shard wins if a key was stored twice).

        The dict path from before the memory map: it holds every vector in memory (~4.6 KB per 1152-d
        vector with its tensor object); kept for small stores and as the reference that
        :meth:`matrix` is tested and benchmarked against (benchmarks/store_scale.py)."""
        from safetensors import safe_open

        vectors: dict = {}
        for shard in self._shards():
            with safe_open(shard, "pt") as handle:
                keys = json.loads(handle.metadata()["keys"])
                block = handle.get_tensor("vectors")
            vectors.update(zip(keys, block))
        return vectors
