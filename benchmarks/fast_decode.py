"""What `--fast-decode` (JPEG draft decoding) changes: pixels, embeddings, and SSR / PA on a synthetic bench.

The fast path decodes a JPEG at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, ``Image.draft``) when
both sides stay at least the model's input size, then resizes as usual; the exact path decodes at
full size. Measured, exact vs fast, on the same files in one run:

1. **pixels**: scikit-image's colour photographs as JPEG (quality 90) at 1024x1024 and at their own
   sizes; the largest and mean absolute difference of the uint8 model input (0-255 levels) and of
   ``pixel_values`` (SigLIP's [-1, 1] scale), at 384 px (so400m) and 64 px (the tiny model);
2. **embeddings**: cosine of the fast to the exact embedding, with the tiny model (64 px, untrained)
   and the full-size SO400M architecture (``model.siglip2_so400m_vision_config``, random weights,
   384 px; ``--so400m-images`` of them, 2-5 s each on a 2-core CPU);
3. **SSR / PA**: ``make demo``'s recipe at a small scale with 256 px JPEG images (4x the 64 px model
   input, so draft decoding engages at 1/4 scale): `nearid synth`, the stand-in backbone, NearID head
   training, then `nearid bench` of the histogram, the frozen stand-in (``siglip2-map``) and the
   trained model, exact and ``fast_decode``, on the same test split.

    python benchmarks/fast_decode.py [--so400m-images 3] [--identities 400] [--size 256] [--skip-bench]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import nearid
from nearid.images.processors import siglip_processor, split_processor
from nearid.models.encoders import nearid_encoder
from nearid.models.nearid_model import NearIDConfig, NearIDModel, siglip2_so400m_vision_config

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "retina", "hubble_deep_field", "immunohistochemistry")


def write_photos(folder: Path) -> dict[str, list[Path]]:
    import skimage.data

    files = {"1024x1024": [], "own size": []}
    for name in PHOTOS:
        image = Image.fromarray(np.ascontiguousarray(getattr(skimage.data, name)()[..., :3]))
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        square = image.crop((left, top, left + side, top + side)).resize((1024, 1024), Image.Resampling.LANCZOS)
        files["1024x1024"].append(folder / f"{name}_1024.jpg")
        square.save(files["1024x1024"][-1], quality=90)
        files["own size"].append(folder / f"{name}.jpg")
        image.save(files["own size"][-1], quality=90)
    return files


def pixel_differences(files: list[Path], size: int) -> str:
    split = split_processor(siglip_processor(size))
    exact = np.stack([split.load(f) for f in files]).astype(np.int16)
    fast = np.stack([split.load(f, fast_decode=True) for f in files]).astype(np.int16)
    drafted = sum(Image.open(f).size[0] >= 2 * size and Image.open(f).size[1] >= 2 * size for f in files)
    levels = np.abs(fast - exact)
    values = (
        split.finish(torch.from_numpy(fast.astype(np.uint8))) - split.finish(torch.from_numpy(exact.astype(np.uint8)))
    ).abs()
    return (
        f"{drafted}/{len(files)} draft-decoded; uint8 input: max |diff| {levels.max()} levels, mean {levels.mean():.2f}, "
        f"99th percentile {np.percentile(levels, 99):.0f}; pixel_values: max {values.max():.4f}, mean {values.mean():.4f}"
    )


def cosines(encoder, files: list[Path], batch_size: int = 8) -> str:
    exact = nearid.embed(encoder, files, batch_size=batch_size, progress=False)
    fast = nearid.embed(encoder, files, batch_size=batch_size, progress=False, fast_decode=True)
    cos = (exact * fast).sum(-1)
    return f"cosine(fast, exact): min {cos.min():.5f}, mean {cos.mean():.5f} over {len(files)} images"


def so400m_encoder():
    torch.manual_seed(0)
    model = NearIDModel(NearIDConfig(vision_config=siglip2_so400m_vision_config())).eval()
    return nearid_encoder(model, siglip_processor(384), name="so400m (random)", device="cpu", dtype=torch.float32)


def bench_exact_and_fast(work: Path, identities: int, size: int, standin_epochs: int, train_epochs: int) -> None:
    from nearid.bench.run import BenchConfig, run_bench
    from nearid.data import load_nearid
    from nearid.data.synth import SynthConfig, generate
    from nearid.eval.metrics import DiscriminationScore
    from nearid.tiny.standin import StandInConfig, pretrain_standin
    from nearid.training.trainer import TrainConfig, export, train

    sources = ["Instance", "Part", "Recolor", "Texture", "Shape"]
    started = time.perf_counter()
    clock = lambda: f"[{time.perf_counter() - started:4.0f} s]"
    data = work / "data"
    generate(
        data,
        SynthConfig(identities=identities, size=size, seed=0, test=identities // 4, val=10, mtg_train=0, mtg_test=1),
        progress=False,
    )
    print(f"{clock()} synth: {identities} identities, {size} px JPEG")
    backbone = pretrain_standin(
        load_nearid(data, sources, split="train"),
        work / "backbone",
        StandInConfig(image_size=64, epochs=standin_epochs, seed=0, foreground_weight=10.0),
        log=lambda *_: None,
    )
    print(f"{clock()} stand-in backbone ({standin_epochs} epochs)")
    trained = train(
        TrainConfig(
            data=str(data),
            out=str(work / "train"),
            sources=sources,
            backbone=str(backbone),
            epochs=train_epochs,
            batch_size=64,
            lr=3e-3,
            warmup_steps=20,
            seed=0,
            save_steps=10**9,
            log_steps=10**9,
        )
    )
    model = export(trained["checkpoint"], work / "model")
    print(f"{clock()} NearID head ({train_epochs} epochs), exported")
    encoders = ["histogram", f"siglip2-map:{backbone}", f"nearid:{model}"]
    rows = {}
    for fast in (False, True):
        results = run_bench(
            BenchConfig(
                encoders=encoders,
                data=str(data),
                sources=sources,
                out=str(work / ("bench-fast" if fast else "bench-exact")),
                device="cpu",
                dtype="fp32",
                fast_decode=fast,
            )
        )
        for spec, result in zip(encoders, results.encoders.values()):
            for source in ("Instance", "all"):
                chosen = sources if source == "all" else [source]
                pooled = DiscriminationScore.pool(*(result.nearid.per_source[s] for s in chosen))
                rows.setdefault((spec.split(":")[0], source), {})[fast] = (pooled.ssr, pooled.pa)
    print(f"{clock()} bench, exact and fast, test split ({identities // 4} identities)")
    print(f"  {'encoder':12s} {'sources':9s} {'exact SSR / PA':>16s} {'fast SSR / PA':>16s}")
    for (name, source), values in rows.items():
        (es, ep), (fs, fp) = values[False], values[True]
        print(f"  {name:12s} {source:9s} {es:7.1f} / {ep:5.1f}   {fs:7.1f} / {fp:5.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--so400m-images", type=int, default=3)
    parser.add_argument("--identities", type=int, default=400)
    parser.add_argument("--size", type=int, default=256, help="synthetic image side (>= 128: draft decoding engages)")
    parser.add_argument("--standin-epochs", type=int, default=6)
    parser.add_argument("--train-epochs", type=int, default=20)
    parser.add_argument("--skip-bench", action="store_true")
    parser.add_argument("--skip-photos", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nearid-fast-decode-") as folder:
        work = Path(folder)
        files = write_photos(work)
        if args.skip_photos:
            files = {}
        print("1. pixels")
        for kind, paths in files.items():
            for size in (384, 64):
                print(f"  {kind:9s} -> {size:3d} px: {pixel_differences(paths, size)}")
        if files:
            print("2. embeddings")
            every = files["1024x1024"] + files["own size"]
            print(f"  tiny (64 px):            {cosines(nearid.load_encoder('tiny', device='cpu'), every)}")
            start = time.perf_counter()
            chosen = files["1024x1024"][: args.so400m_images]
            print(f"  so400m (384 px, random): {cosines(so400m_encoder(), chosen, batch_size=len(chosen))}", end="")
            print(f" ({time.perf_counter() - start:.0f} s)")
        if not args.skip_bench:
            print("3. SSR / PA")
            bench_exact_and_fast(work, args.identities, args.size, args.standin_epochs, args.train_epochs)


if __name__ == "__main__":
    main()
