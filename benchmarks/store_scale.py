"""Embedding-store reads at scale: peak memory and time to look up 1M random 1152-d embeddings,
the memory-mapped store (:meth:`EmbeddingStore.matrix`) against the dict path it replaced
(:meth:`EmbeddingStore.load`), measured in the same run on the same store.

The store is written as ``nearid bench`` writes it (float32 safetensors shards of 256 vectors, keys
in each shard's metadata, keys shaped like the bench's versioned image keys). Each reader runs in its
own process, so its peak resident set (``VmHWM``) is its own; a third process that only builds the
1M key strings and the random order gives the floor both readers share (the caller's keys). Both
readers look up every key once, in a random order, 16,384 keys at a time, and sum each answer
(float32, as stored), so the answer held at once is the same small block for both.

    python benchmarks/store_scale.py [--n 1000000] [--dim 1152] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

READER = r"""
import json, re, sys, time
import numpy as np

def peak_mb():
    return int(re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read()).group(1)) / 1024

folder, n, dim, chunk, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
import torch  # both readers pay for the same imports
from nearid.bench.store import EmbeddingStore
keys = [f"NearID-Instance[row {i // 3}].images{i % 3}@0123456789abcdef" for i in range(n)]
order = np.random.default_rng(0).permutation(n)
floor = peak_mb()
store = EmbeddingStore(folder, "bench", dim, "0" * 64)
start = time.perf_counter()
total = 0.0
if mode == "memmap":
    store.missing(keys[:1])  # builds the index (reads every shard's header)
    opened = time.perf_counter() - start
    for at in range(0, n, chunk):
        total += float(store.matrix([keys[i] for i in order[at:at + chunk]], dtype=np.float32).sum(dtype=np.float64))
elif mode == "dict":
    vectors = store.load()
    opened = time.perf_counter() - start
    for at in range(0, n, chunk):
        block = np.stack([vectors[keys[i]].numpy() for i in order[at:at + chunk]])
        total += float(block.sum(dtype=np.float64))
else:
    opened = 0.0
seconds = time.perf_counter() - start
print(json.dumps({"mode": mode, "open_s": opened, "total_s": seconds, "peak_mb": peak_mb(), "floor_mb": floor,
                  "checksum": total}))
"""


def write_store(folder: Path, n: int, dim: int, rows: int = 256) -> float:
    import numpy as np
    import torch

    from nearid.bench.store import EmbeddingStore

    store = EmbeddingStore(folder, "bench", dim, "0" * 64)
    rng = np.random.default_rng(1)
    start = time.perf_counter()
    for at in range(0, n, rows):
        count = min(rows, n - at)
        keys = [f"NearID-Instance[row {i // 3}].images{i % 3}@0123456789abcdef" for i in range(at, at + count)]
        vectors = rng.standard_normal((count, dim), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        store.add(keys, torch.from_numpy(vectors), writer=str(at // rows % 8))
    return time.perf_counter() - start


def read(folder: Path, n: int, dim: int, chunk: int, mode: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", READER, str(folder), str(n), str(dim), str(chunk), mode],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=1152)
    parser.add_argument("--chunk", type=int, default=16384, help="keys per lookup")
    parser.add_argument("--keep", help="write (or reuse) the store in this folder and keep it")
    args = parser.parse_args()
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="nearid-store-scale-"))
    try:
        if not any(folder.glob("shard-*.safetensors")):
            seconds = write_store(folder, args.n, args.dim)
            size = sum(p.stat().st_size for p in folder.glob("shard-*")) / 2**30
            print(f"wrote {args.n:,} x {args.dim} float32 vectors ({size:.2f} GiB, 256 per shard) in {seconds:.0f} s")
        floor = read(folder, args.n, args.dim, args.chunk, "keys-only")
        mapped = read(folder, args.n, args.dim, args.chunk, "memmap")
        held = read(folder, args.n, args.dim, args.chunk, "dict")
        assert abs(mapped["checksum"] - held["checksum"]) < 1e-6 * max(1.0, abs(held["checksum"])), (mapped, held)
        base = floor["peak_mb"]
        print(f"{args.n:,} random lookups of {args.dim}-d float32 embeddings, {args.chunk:,} keys per lookup")
        print(f"  caller's keys + imports (floor): peak {base:,.0f} MB")
        for name, run in (("memmap", mapped), ("dict (old)", held)):
            print(
                f"  {name:11s}: peak {run['peak_mb']:,.0f} MB (+{run['peak_mb'] - base:,.0f} MB over the floor); "
                f"open {run['open_s']:.1f} s, open + all lookups {run['total_s']:.1f} s"
            )
        print(
            f"ratios (dict / memmap): memory over the floor {(held['peak_mb'] - base) / (mapped['peak_mb'] - base):.1f}x, "
            f"time {held['total_s'] / mapped['total_s']:.2f}x"
        )
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
