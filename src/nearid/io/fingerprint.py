"""Content fingerprints: what makes a stored result reusable.

Stores and caches are keyed by *what went in*, never by what it was called: a model re-exported to the
same folder, or data regenerated at the same path, has another fingerprint, so nothing computed from
the old one is reused; the same weights reached by two spellings of a path have one fingerprint.

* :func:`of_tensors` hashes a state dict byte for byte (names, dtypes, shapes, raw bytes).
* :func:`of_files` hashes files by (resolved path, size, modification time in ns): the rule make and
  rsync use. A full content hash would read a benchmark's multi-GB Arrow files on every run (seconds
  to minutes) to learn what one ``stat`` says: anything that rewrites a file (``nearid synth``,
  ``save_to_disk``, a download) gives it a new mtime. Touching a file without changing it only costs a
  recomputation, never a stale result.
* :func:`of_json` hashes settings (canonical JSON).

All are SHA-256 hex digests. No torch import at module level: numpy-only commands import this.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

#: Characters of a fingerprint used where a short tag is enough (folder names, image-key versions).
SHORT = 16


def of_json(value) -> str:
    """SHA-256 of ``value`` as canonical JSON (sorted keys, no whitespace; unknown types via ``str``)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def of_tensors(state_dict: Mapping) -> str:
    """SHA-256 of a ``{name: tensor}`` mapping: each tensor's name, dtype, shape and raw bytes, by name.

    Tensors are copied to the CPU one at a time (a GPU model is never copied whole). bfloat16, which
    numpy lacks, is hashed through its int16 view: the same bits.
    """
    import torch

    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.view(torch.int16)
        data = tensor.cpu().contiguous().reshape(-1)
        digest.update(memoryview(data.view(torch.uint8).numpy()) if data.numel() else b"")
    return digest.hexdigest()


def file_version(path: str | os.PathLike) -> str:
    """A short tag of one file's (size, mtime_ns): changes when the file is rewritten."""
    stat = Path(path).stat()
    return f"{stat.st_size:x}-{stat.st_mtime_ns:x}"


def of_files(paths: Iterable[str | os.PathLike]) -> str:
    """SHA-256 over the files' resolved paths, sizes and mtime_ns, in sorted order (see the module
    docstring for why not their contents). A file that does not exist is an ``OSError``."""
    rows = []
    for path in paths:
        resolved = Path(path).resolve()
        stat = resolved.stat()
        rows.append([str(resolved), stat.st_size, stat.st_mtime_ns])
    return of_json(sorted(rows))


__all__ = ["SHORT", "file_version", "of_files", "of_json", "of_tensors"]
