"""Are ``nearid.explain``'s maps faithful? The restoration test and part localisation on MTG.

*Restoration* (issue 23, item 4): pairs whose generated image is the reference with one region
replaced; copy the reference's pixels back under the map's top q% (q = 5, 12, 25) and re-score; print
the mean fraction of the lost similarity recovered, by the map and by random patches of the same grid
(:mod:`nearid.eval.faithfulness`), for both methods (``tokens``, ``gradient``). Two pair sets: blocks of
random colour with a replaced square ("blocks", any model), and synthetic MTG pairs (an object with one
part re-drawn: ``nearid synth``'s Mind-the-Glitch), which is in the demo model's own domain.

*Part localisation* (MTG): the map's share of mass inside the edited part divided by the part's share of
the object (1 = chance), for the demo's frozen baseline (its stand-in backbone with the pretrained MAP
head, ``siglip2-map``) and its trained head (``nearid``), when ``runs/demo`` exists (``make demo``).

    python benchmarks/explain_faithfulness.py [--pairs 48] [--mtg 48] [--demo runs/demo]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import nearid
from nearid.eval.faithfulness import pointing_score, restoration_test
from nearid.models.explain import explain_pairs

QS = (0.05, 0.12, 0.25)


def block_pairs(count: int, seed: int = 0, size: int = 96) -> list[tuple[Image.Image, Image.Image]]:
    """Blocks of random colour (6 x 6 cells, noise), one square of 35% of the side from another such image."""
    rng = np.random.default_rng(seed)

    def scene():
        cells = rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)
        image = np.asarray(Image.fromarray(cells).resize((size, size), Image.Resampling.NEAREST)).astype(np.int16)
        return np.clip(image + rng.integers(-20, 20, image.shape), 0, 255).astype(np.uint8)

    pairs = []
    for _ in range(count):
        ref, other = scene(), scene()
        side = int(size * 0.35)
        y, x = rng.integers(0, size - side, 2)
        gen = ref.copy()
        gen[y : y + side, x : x + side] = other[y : y + side, x : x + side]
        pairs.append((Image.fromarray(ref), Image.fromarray(gen)))
    return pairs


def mtg_samples(folder: Path, count: int, size: int, seed: int = 1):
    """``count`` synthetic MTG pairs (original, edited, part mask, object mask) drawn by ``nearid synth``."""
    from nearid.data.mtg import load_mtg
    from nearid.data.synth import SynthConfig, generate
    from nearid.images.decode import load_image, load_mask

    config = SynthConfig(identities=8, size=size, seed=seed, test=2, val=1, mtg_train=0, mtg_test=count)
    generate(folder, config, progress=False)
    out = []
    for sample in load_mtg(folder / "MTG", "test"):
        for k in (0, 1):
            if sample.part_masks[k] is None:
                continue
            obj = sample.object_masks[k]
            out.append(
                (
                    load_image(sample.originals[k]),
                    load_image(sample.edited[k]),
                    load_mask(sample.part_masks[k]) > 0,
                    None if obj is None else load_mask(obj) > 0,
                )
            )
    return out[:count]


def restoration_lines(name: str, encoder, pairs) -> list[str]:
    lines = []
    for method in ("tokens", "gradient"):
        try:
            result = restoration_test(encoder, pairs, QS, method=method)
        except nearid.NearIDError as exc:
            lines.append(f"  {name:28s} {method:8s} (not available: {exc})")
            continue
        cells = "  ".join(
            f"q={q:.0%}: map {m:.3f} random {r:.3f} ({m / max(r, 1e-9):.1f}x)"
            for q, m, r in zip(result.q, result.by_map, result.by_random)
        )
        lines.append(f"  {name:28s} {method:8s} {cells}")
    return lines


def pointing_line(name: str, encoder, samples) -> str:
    scores = []
    for method in ("tokens", "gradient"):
        try:
            results = explain_pairs(encoder, [(o, e) for o, e, _, _ in samples], method=method)
        except nearid.NearIDError:
            continue
        values = [pointing_score(r.generated_map, part, obj) for r, (_, _, part, obj) in zip(results, samples)]
        values = np.array([v for v in values if np.isfinite(v)])
        scores.append(f"{method}: {values.mean():.2f} (median {np.median(values):.2f}, n={len(values)})")
    return f"  {name:28s} " + "   ".join(scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=48, help="block pairs (default 48)")
    parser.add_argument("--mtg", type=int, default=48, help="MTG pairs (default 48)")
    parser.add_argument("--demo", default="runs/demo", help="a `make demo` output folder (default runs/demo)")
    args = parser.parse_args()
    start = time.perf_counter()
    demo = Path(args.demo)
    encoders = [("tiny (untrained)", nearid.load_encoder("tiny", device="cpu"))]
    if (demo / "model").is_dir() and (demo / "backbone").is_dir():
        encoders += [
            ("demo frozen (siglip2-map)", nearid.load_encoder(f"siglip2-map:{demo / 'backbone'}", device="cpu")),
            ("demo trained (nearid)", nearid.load_encoder(f"nearid:{demo / 'model'}", device="cpu")),
        ]
    else:
        print(f"{demo}: no demo model (run `make demo`); measuring the tiny model only")
    size = encoders[-1][1].pixel_split.size[0]
    blocks = block_pairs(args.pairs)
    with tempfile.TemporaryDirectory() as tmp:
        samples = mtg_samples(Path(tmp) / "synth", args.mtg, size)
    print("restoration: mean fraction of the lost similarity recovered (q = share of the image restored)")
    print(f" blocks ({len(blocks)} pairs, 96 px, one square of 35% of the side replaced)")
    for name, encoder in encoders:
        print("\n".join(restoration_lines(name, encoder, blocks)))
    mtg_pairs = [(o, e) for o, e, _, _ in samples]
    print(f" MTG ({len(mtg_pairs)} pairs, {size} px, one part re-drawn)")
    for name, encoder in encoders:
        print("\n".join(restoration_lines(name, encoder, mtg_pairs)))
    print("part localisation on MTG: map mass in the edited part / the part's share of the object (1 = chance)")
    for name, encoder in encoders:
        print(pointing_line(name, encoder, samples))
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
