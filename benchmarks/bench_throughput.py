"""`nearid bench` throughput with the tiny model, in images/s, and what embedding each image once saves.

The baseline measured in the same run is the authors' pipeline shape: one pass per distractor
source, each re-embedding the positives. Ours embeds the union of all images once (positives are
shared by every source) and keeps them in the store.

    python benchmarks/bench_throughput.py [--identities 400] [--sources Part Recolor Texture Shape]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from nearid.bench.run import BenchConfig, run_bench
from nearid.data import load_nearid
from nearid.data.synth import SOURCES, SynthConfig, generate
from nearid.eval.evaluate import similarity_tables
from nearid.models.encoders import load_encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=400)
    parser.add_argument("--sources", nargs="+", default=list(SOURCES))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="nearid-bench-tp-"))
    generate(
        work / "data",
        SynthConfig(identities=args.identities, test=args.identities // 2, val=1, mtg_train=0, mtg_test=1),
        progress=False,
    )

    start = time.perf_counter()
    results = run_bench(
        BenchConfig(encoders=["tiny"], data=str(work / "data"), sources=args.sources, out=str(work / "out"))
    )
    ours = time.perf_counter() - start
    result = next(iter(results.encoders.values()))
    embedded = result.embeddings_computed

    bench = load_nearid(work / "data", args.sources, split="test")
    encoder = load_encoder("tiny", device="cpu")
    start = time.perf_counter()
    per_source_images = 0
    for source in args.sources:  # baseline: one pass per source, positives embedded again each time
        _, count = similarity_tables(encoder, bench, [source])
        per_source_images += count
    baseline = time.perf_counter() - start
    print(
        f"nearid bench, tiny model, {len(bench)} identities x {len(args.sources)} sources: {embedded} images "
        f"embedded in {ours:.1f} s end to end ({embedded / ours:.0f} images/s incl. loading and writing)"
    )
    print(
        f"baseline, one pass per source: {per_source_images} images in {baseline:.1f} s "
        f"({per_source_images / baseline:.0f} images/s)"
    )
    print(f"ratio baseline/ours: {baseline / ours:.2f}x time, {per_source_images / embedded:.2f}x images")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
