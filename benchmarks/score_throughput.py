"""Scoring 1,000 (reference, generated) pairs that share 100 references, with the tiny model.

Each unique image is embedded once: 1,100 images, not 2,000. The baseline measured in the same run is
the naive scorer that embeds both images of every pair (as a per-pair CLIP-I / DINO script does).

    python benchmarks/score_throughput.py [--pairs 1000] [--references 100] [--model tiny]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import nearid
from nearid.score.run import plan_pairs, score_pairs


def make_images(folder: Path, count: int, seed: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    paths = []
    for i in range(count):
        image = Image.new("RGB", (128, 128), tuple(int(v) for v in rng.integers(0, 255, 3)))
        ImageDraw.Draw(image).ellipse(tuple(int(v) for v in sorted(rng.integers(10, 118, 2)) * 2), fill=(200, 40, 40))
        paths.append(folder / f"{i}.png")
        image.save(paths[-1])
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--references", type=int, default=100)
    parser.add_argument("--model", default="tiny")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="nearid-score-"))
    refs = make_images(work / "refs", args.references, 0)
    gens = make_images(work / "gens", args.pairs, 1)
    lines = ["reference,generated"] + [f"refs/{refs[i % len(refs)].name},gens/{g.name}" for i, g in enumerate(gens)]
    (work / "pairs.csv").write_text("\n".join(lines) + "\n")
    encoder = nearid.load_encoder(args.model, device="cpu")

    start = time.perf_counter()
    result = score_pairs(encoder, plan_pairs(work / "pairs.csv"), progress=False)
    ours = time.perf_counter() - start

    start = time.perf_counter()
    naive = nearid.embed(encoder, [p for i, g in enumerate(gens) for p in (refs[i % len(refs)], g)], progress=False)
    naive_similarities = (naive[0::2] * naive[1::2]).sum(-1).numpy()
    baseline = time.perf_counter() - start
    assert np.allclose(naive_similarities, result.similarities, atol=1e-5), "the two scorers disagree"
    print(
        f"{args.pairs} pairs sharing {args.references} references, {encoder.name}: embedded {result.embedded} images "
        f"in {ours:.2f} s ({result.embedded / ours:.0f} images/s, {args.pairs / ours:.0f} pairs/s)"
    )
    print(
        f"baseline, both images of every pair: {len(naive)} images in {baseline:.2f} s ({args.pairs / baseline:.0f} pairs/s)"
    )
    print(f"ratio baseline/ours: {baseline / ours:.2f}x time, {len(naive) / result.embedded:.2f}x images")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
