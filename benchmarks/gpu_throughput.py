"""Throughput of the real-scale paths on a GPU: SO400M (random weights) at 384 px, fp16 and bf16.

(a) the raw forward (trunk + MAP head) on pre-made tensors: images/s and the share of the FLOP limit
    (``--peak-tflops``, default 989: H100/H200 dense fp16/bf16), with the FLOPs per image computed from
    the config (patch embedding, attention projections and scores, MLPs, the MAP head);
(b) ``nearid.embed`` from 512^2 PNG files with ``--workers`` (default 8 16) worker processes, as a
    ratio of (a) (target >= 0.8: the input pipeline keeps the GPU fed);
(c) uncached (streaming) training at batch 128 with the paper's recipe (masks 0.5/0.2/0.6, flips,
    MTG mixed in, fp16 mixed precision with a half trunk): steps/s, timed as the difference of a
    ``--steps``-step and a 2-step run (target >= 1 step/s: the paper's ~3,300 steps in < 1 h).

It never runs in the tests' way on a GPU-less machine except as ``--smoke`` (a tiny tower, tiny images,
a few steps, on the CPU), which checks that every part runs. The last line is one JSON object.

    python benchmarks/gpu_throughput.py [--batch 256] [--workers 8 16] [--steps 12]
    python benchmarks/gpu_throughput.py --smoke
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nearid.models.nearid_model import NearIDConfig, NearIDModel, siglip2_so400m_vision_config, tiny_vision_config

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def flops_per_image(config) -> float:
    """Forward FLOPs (2 x multiply-adds) of trunk + MAP head for one image, from a SigLIP vision config."""
    d, m, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    n = (config.image_size // config.patch_size) ** 2
    patch = n * (config.num_channels * config.patch_size**2) * d
    per_layer = 4 * n * d * d + 2 * n * n * d + 2 * n * d * m  # q, k, v, out; scores and values; MLP
    head = 2 * n * d * d + 2 * d * d + n * d + 2 * d * m  # probe attention: k, v of n tokens; q, out; MLP of 1
    return 2.0 * (patch + layers * per_layer + head)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def raw_forward(config, dtype, device, batch: int, iterations: int) -> float:
    """Images/s of ``get_image_features`` on a pre-made batch already on the device."""
    with torch.device(device):
        model = NearIDModel(NearIDConfig(vision_config=config)).to(dtype).eval()
    pixels = torch.randn(batch, 3, config.image_size, config.image_size, device=device, dtype=dtype)
    with torch.inference_mode():
        for _ in range(2):
            model.get_image_features(pixels)
        sync(device)
        start = time.perf_counter()
        for _ in range(iterations):
            model.get_image_features(pixels)
        sync(device)
    seconds = time.perf_counter() - start
    del model
    return batch * iterations / seconds


def photos(folder: Path, n: int, size: int) -> list[Path]:
    """``n`` PNGs of ``size``^2: scikit-image's photographs when installed (real image statistics, which
    decode at the speed of real photos), else smooth synthetic images."""
    try:
        from skimage import data as skdata

        names = ["astronaut", "coffee", "chelsea", "rocket", "cat", "hubble_deep_field", "immunohistochemistry"]
        sources = [Image.fromarray(getattr(skdata, name)()).convert("RGB") for name in names]
    except Exception:  # no scikit-image, or its data missing: synthetic images
        grid = np.linspace(0, 255, 256, dtype=np.float32)
        sources = [
            Image.fromarray(np.stack([np.add.outer(grid * k % 256, grid)[:, :] % 256] * 3, -1).astype(np.uint8))
            for k in range(1, 8)
        ]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        image = sources[i % len(sources)].resize((size, size), Image.BICUBIC)
        if i >= len(sources):  # distinct files: a shifted crop of the photo
            array = np.roll(np.asarray(image), shift=(i * 7) % size, axis=1)
            image = Image.fromarray(array)
        path = folder / f"{i:05d}.png"
        image.save(path)
        paths.append(path)
    return paths


def embed_rate(config, dtype, device, paths, batch: int, workers: int) -> float | str:
    """Images/s of ``nearid.embed`` over ``paths`` with ``workers`` worker processes (the first pass
    warms up), or why it could not run."""
    from nearid import embed
    from nearid.images.processors import siglip_processor
    from nearid.models.encoders import nearid_encoder

    if workers and "num_workers" not in inspect.signature(embed).parameters:
        return "embed() has no num_workers in this build"
    model = NearIDModel(NearIDConfig(vision_config=config)).eval()
    encoder = nearid_encoder(
        model, siglip_processor(config.image_size), name="so400m-random", device=device, dtype=dtype
    )
    options = {"num_workers": workers} if workers else {}
    embed(encoder, paths[: 2 * batch], batch_size=batch, progress=False, **options)
    sync(device)
    start = time.perf_counter()
    embed(encoder, paths, batch_size=batch, progress=False, **options)
    sync(device)
    return len(paths) / (time.perf_counter() - start)


def training_rate(work: Path, config, *, batch: int, steps: int, workers: int, size: int, identities: int) -> dict:
    """Steps/s of streaming training (paper recipe) from the difference of a ``steps`` and a 2-step run."""
    from nearid.data.synth import SynthConfig, generate
    from nearid.images.processors import siglip_processor
    from nearid.training.trainer import TrainConfig, train

    data = work / "train-data"
    generate(
        data,
        SynthConfig(identities=identities, size=size, seed=0, val=4, test=4, mtg_train=identities // 4, mtg_test=1),
        progress=False,
    )
    backbone = work / "backbone"
    NearIDModel(NearIDConfig(vision_config=config)).save_pretrained(backbone)
    siglip_processor(config.image_size).save_pretrained(backbone)
    seconds = {}
    for n in (2, steps):
        out = work / f"run-{n}"
        options = dict(data=str(data), out=str(out), sources=["Part", "Shape", "Recolor", "Texture"])
        options.update(mtg=str(data / "MTG"), backbone=f"nearid:{backbone}", batch_size=batch, max_steps=n)
        options.update(token_cache="off", num_workers=workers, save_steps=10_000, log_steps=10_000)
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            train(TrainConfig(**options))
        seconds[n] = time.perf_counter() - start
        shutil.rmtree(out, ignore_errors=True)
    rate = (steps - 2) / (seconds[steps] - seconds[2])
    return {"steps_per_s": rate, "hours_for_3300_steps": 3300 / rate / 3600, "startup_s": seconds[2] - 2 / rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks that every part runs")
    parser.add_argument("--batch", type=int, default=256, help="(a), (b) batch")
    parser.add_argument("--iterations", type=int, default=10, help="(a) timed forward passes")
    parser.add_argument("--images", type=int, default=2048, help="(b) PNG files")
    parser.add_argument("--workers", type=int, nargs="+", default=[8, 16], help="(b) worker processes")
    parser.add_argument("--train-batch", type=int, default=128)
    parser.add_argument("--train-workers", type=int, default=16)
    parser.add_argument("--steps", type=int, default=12, help="(c) timed steps (+2)")
    parser.add_argument("--identities", type=int, default=600, help="(c) synthetic identities")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense fp16/bf16 peak (H100/H200 SXM: 989)")
    parser.add_argument("--parts", default="abc", help="which parts to run (a, b, c)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    config = siglip2_so400m_vision_config()
    size = 512
    if args.smoke:
        config, size = tiny_vision_config(), 96
        args.batch, args.iterations, args.images, args.workers = 8, 2, 24, [0, 2]
        args.train_batch, args.train_workers, args.steps, args.identities = 8, 2, 3, 24
    elif device.type != "cuda":
        print("no CUDA device: the numbers below are the CPU's (use --smoke for a quick check)")
    flops = flops_per_image(config)
    results = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "model": "tiny" if args.smoke else "so400m-patch14-384 (random weights)",
        "gflop_per_image": flops / 1e9,
        "peak_tflops": args.peak_tflops,
    }
    work = Path(tempfile.mkdtemp(prefix="nearid-gpu-throughput-"))
    try:
        if "a" in args.parts or "b" in args.parts:
            raw = {}
            for name, dtype in DTYPES.items():
                rate = raw_forward(config, dtype, device, args.batch, args.iterations)
                raw[name] = {"images_per_s": rate, "flop_share": rate * flops / (args.peak_tflops * 1e12)}
                print(f"(a) raw forward {name}: {rate:,.0f} images/s, {100 * raw[name]['flop_share']:.1f}% of peak")
            results["raw"] = raw
        if "b" in args.parts:
            paths = photos(work / "png", args.images, size)
            embedding = {}
            for workers in args.workers:
                rate = embed_rate(config, torch.float16, device, paths, args.batch, workers)
                ratio = rate / raw["fp16"]["images_per_s"] if isinstance(rate, float) else None
                embedding[str(workers)] = {"images_per_s": rate, "ratio_to_raw_fp16": ratio}
                shown = f"{rate:,.0f} images/s = {ratio:.2f}x raw fp16 (target >= 0.8)" if ratio is not None else rate
                print(f"(b) embed {size}px PNG, {workers} workers: {shown}")
            results["embed"] = embedding
        if "c" in args.parts:
            trained = training_rate(
                work,
                config,
                batch=args.train_batch,
                steps=args.steps,
                workers=args.train_workers,
                size=size,
                identities=args.identities,
            )
            results["train"] = {"batch": args.train_batch, "workers": args.train_workers, **trained}
            print(
                f"(c) streaming training, batch {args.train_batch}, {args.train_workers} workers: "
                f"{trained['steps_per_s']:.2f} steps/s, 3,300 steps in {trained['hours_for_3300_steps']:.2f} h "
                "(target >= 1 step/s)"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
