"""Throughput of ``nearid.explain`` (pairs/s) against plain embedding of the same images, for ``tiny`` and
the full-size SO400M architecture with random weights (built from its config, no download).

An explanation costs one forward pass per image (the tokens and the read-out's attention are taken by
hooks during ``encoder.embed``) plus a patch-by-patch cosine matrix per pair (N x N, N = 729 for
SO400M/14-384), so pairs/s should be close to half the embedding rate in images/s. The printed
``extra s/pair`` is what ``nearid score --explain K`` adds per explained pair (it reads each image of
those pairs once more). Random weights are fine: speed does not depend on the values.

    python benchmarks/explain_throughput.py [--batch 8] [--pairs 8] [--skip-so400m]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image

import nearid
from nearid.images.processors import siglip_processor
from nearid.models.encoders import nearid_encoder
from nearid.models.explain import explain_pairs
from nearid.models.nearid_model import seeded_model, siglip2_so400m_vision_config


def images(count: int, size: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(count)]


def measure(name: str, encoder, pairs: int, batch: int, size: int) -> None:
    refs, gens = images(pairs, size, 0), images(pairs, size, 1)
    explain_pairs(encoder, list(zip(refs[:1], gens[:1])), batch_size=batch)  # warm-up
    start = time.perf_counter()
    nearid.embed(encoder, refs + gens, batch_size=batch)
    embed_s = time.perf_counter() - start
    start = time.perf_counter()
    explain_pairs(encoder, list(zip(refs, gens)), batch_size=batch)
    explain_s = time.perf_counter() - start
    print(
        f"{name:34s} batch {batch}: explain {pairs / explain_s:8.2f} pairs/s   embed {2 * pairs / embed_s:8.2f} images/s"
        f"   explain / embed time {explain_s / embed_s:.2f}   extra s/pair (score --explain) {explain_s / pairs:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8, help="images per forward pass (default 8)")
    parser.add_argument("--pairs", type=int, default=8, help="pairs explained (default 8)")
    parser.add_argument("--skip-so400m", action="store_true", help="measure tiny only")
    args = parser.parse_args()
    print(f"torch threads: {torch.get_num_threads()}")
    measure("tiny (64 px, 8x8 patches)", nearid.load_encoder("tiny", device="cpu"), max(args.pairs, 64), args.batch, 64)
    if not args.skip_so400m:
        start = time.perf_counter()
        model = seeded_model(siglip2_so400m_vision_config())
        encoder = nearid_encoder(model, siglip_processor(384), name="so400m (random)", device="cpu", dtype="float32")
        print(f"(SO400M built in {time.perf_counter() - start:.0f} s)")
        measure("SO400M/14-384 random, float32", encoder, args.pairs, args.batch, 384)


if __name__ == "__main__":
    main()
