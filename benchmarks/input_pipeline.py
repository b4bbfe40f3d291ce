"""`nearid.embed`'s input pipeline on real photographs: images/s at num_workers 0, 1, 2 against the
bare PIL decode + resize floor, all measured in the same run.

Inputs: scikit-image's colour photographs (astronaut, chelsea, coffee, rocket, retina, hubble deep
field, immunohistochemistry), each in 8 orientations x 2 crops, saved as 512x512 PNG (how the hub
datasets store images) and 1024x1024 JPEG (quality 90, typical generated images). Each run reads the
112 files ``--passes`` times (default 4: 28 batches, so the workers' start and the last batches'
imbalance weigh as little as in a real run of thousands of images). The model is a
tiny SigLIP tower at 384 px (32 px patches, 2 layers: the model costs little, so this measures the
input path) with SigLIP2's 384 px preprocessing; `nearid.embed` runs at batch 16. The main process
runs the model on 1 torch thread (``--threads``): the tiny model then takes ~5 ms per image, and
with 2 threads on a 2-core machine OpenMP's spinning threads fight the input workers for the cores
(measured here under load: the tiny forward pass 6x slower with 2 threads than with 1).

Measured, each the best of ``--repeats`` runs:

* ``floor``: one thread, ``Image.open(path).convert("RGB").resize((384, 384), BILINEAR)`` per file;
* ``floor draft``: the same after ``Image.draft`` (JPEG DCT scaling, what ``--fast-decode`` does);
* ``before``: `nearid.embed` through the encoder's whole ``preprocess`` (float pixels from the
  transformers processor, one batch ahead on a thread: the path before the uint8 split);
* ``serial``: the same work as ``embed w0`` with nothing overlapped (each batch decoded, then
  normalised and embedded): what one process does alone;
* ``embed wN``: `nearid.embed` with ``num_workers=N`` (uint8 workers, normalisation in the main
  process; N = 0: decoding one batch ahead on a thread, which already overlaps the model);
* ``embed w0 fast``: ``num_workers=0, fast_decode=True``.

Targets (issue 14): one process >= 0.8x the floor; 2 workers >= 1.6x 0 workers on an idle 2-core
machine. Each line also says how many cores the variant kept busy (CPU seconds of the process and
its joined workers per wall second): ``embed w0`` already uses more than one core (its decoding
thread runs beside the model), so on 2 cores the gain of 2 workers over it is bounded by the cores
left, not by the pipeline. The load average is printed before and after: other work on the machine
lowers the worker figures.

    python benchmarks/input_pipeline.py [--repeats 2] [--batch 16]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import SiglipVisionConfig

import nearid
from nearid.images.pipeline import ImageBatches
from nearid.images.processors import siglip_processor
from nearid.models.encoders import nearid_encoder
from nearid.models.nearid_model import NearIDConfig, NearIDModel

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "retina", "hubble_deep_field", "immunohistochemistry")
SIZE = 384


def photographs() -> list[Image.Image]:
    """Square crops of scikit-image's colour photographs in 8 orientations x 2 crops (112 images)."""
    import skimage.data

    out = []
    for name in PHOTOS:
        array = getattr(skimage.data, name)()[..., :3]
        h, w = array.shape[:2]
        side = min(h, w)
        for crop in (0, 1):  # a centred square and one from the top-left corner
            top, left = ((h - side) // 2, (w - side) // 2) if crop == 0 else (0, 0)
            square = Image.fromarray(np.ascontiguousarray(array[top : top + side, left : left + side]))
            for turn in range(4):
                rotated = square.rotate(90 * turn)
                out += [rotated, rotated.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    return out


def write_files(folder: Path, images: list[Image.Image]) -> dict[str, list[str]]:
    files = {"512 PNG": [], "1024 JPEG": []}
    for i, image in enumerate(images):
        png, jpeg = folder / f"{i:03d}.png", folder / f"{i:03d}.jpg"
        image.resize((512, 512), Image.Resampling.LANCZOS).save(png)
        image.resize((1024, 1024), Image.Resampling.LANCZOS).save(jpeg, quality=90)
        files["512 PNG"].append(str(png))
        files["1024 JPEG"].append(str(jpeg))
    return files


def tiny_encoder_384():
    torch.manual_seed(0)
    vision = SiglipVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=SIZE,
        patch_size=32,
        hidden_act="gelu_pytorch_tanh",
        layer_norm_eps=1e-6,
    )
    model = NearIDModel(NearIDConfig(vision_config=vision)).eval()
    return nearid_encoder(model, siglip_processor(SIZE), name="tiny@384", device="cpu", dtype=torch.float32)


class WholePreprocess:
    """The encoder seen without its ``pixel_split``: `nearid.embed` then runs ``preprocess`` whole."""

    def __init__(self, encoder):
        self.encoder, self.name, self.dim = encoder, encoder.name, encoder.dim

    def preprocess(self, images, masks=None):
        return self.encoder.preprocess(images, masks)

    def embed(self, pixel_values):
        return self.encoder.embed(pixel_values)


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished children (joined workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


BUSY: dict[str, float] = {}  # variant -> cores busy (CPU seconds per wall second) in its best run


def best_rate(run, count: int, repeats: int, name: str = "") -> float:
    best, busy = float("inf"), 0.0
    for _ in range(repeats):
        start, cpu = time.perf_counter(), cpu_seconds()
        run()
        wall = time.perf_counter() - start
        if wall < best:
            best, busy = wall, (cpu_seconds() - cpu) / wall
    BUSY[name] = busy
    return count / best


def serial(encoder, paths: list[str], batch: int) -> None:
    """`nearid.embed`'s work with nothing overlapped: each batch decoded, then normalised and embedded."""
    split = encoder.pixel_split
    dataset = ImageBatches(paths, None, batch, split=split)
    for index in range(len(dataset)):
        encoder.embed(split.finish(dataset[index].pixels))


def floor(files: list[str], draft: bool = False) -> None:
    for path in files:
        image = Image.open(path)
        if draft:
            image.draft("RGB", (SIZE, SIZE))
        image.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR)


def measure(encoder, paths: list[str], jpeg: bool, batch: int, repeats: int) -> dict[str, float]:
    """images/s of every variant on ``paths``, each the best of ``repeats`` runs."""
    n, whole = len(paths), WholePreprocess(encoder)

    def embed(enc=encoder, **options):
        nearid.embed(enc, paths, batch_size=batch, progress=False, **options)

    embed()  # warm-up: page cache, model, allocator
    rates = {"floor": best_rate(lambda: floor(paths), n, repeats, "floor")}
    if jpeg:
        rates["floor draft"] = best_rate(lambda: floor(paths, draft=True), n, repeats, "floor draft")
    rates["before"] = best_rate(lambda: embed(whole), n, repeats, "before")
    rates["serial"] = best_rate(lambda: serial(encoder, paths, batch), n, repeats, "serial")
    for workers in (0, 1, 2):
        name = f"embed w{workers}"
        rates[name] = best_rate(lambda w=workers: embed(num_workers=w), n, repeats, name)
    if jpeg:
        for workers in (0, 2):
            name = f"embed w{workers} fast"
            rates[name] = best_rate(lambda w=workers: embed(num_workers=w, fast_decode=True), n, repeats, name)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument(
        "--passes", type=int, default=4, help="the file list repeated: 112 x 4 images per run (steady state)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads of the main process (default 1, see the docstring)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"cores available {len(os.sched_getaffinity(0))}, torch threads {torch.get_num_threads()}, "
        f"load average {os.getloadavg()[0]:.2f} (1 min) at the start"
    )
    encoder = tiny_encoder_384()
    with tempfile.TemporaryDirectory(prefix="nearid-input-") as folder:
        files = write_files(Path(folder), photographs())
        for kind, paths in files.items():
            rates = measure(encoder, paths * args.passes, kind.endswith("JPEG"), args.batch, args.repeats)
            print(f"\n{kind}: {len(paths)} files x {args.passes} passes")
            for name, rate in rates.items():
                print(
                    f"  {name:14s} {rate:7.1f} images/s   {rate / rates['floor']:5.2f}x floor   "
                    f"{BUSY[name]:4.2f} cores busy"
                )
            print(
                f"  ratios: before/floor {rates['before'] / rates['floor']:.2f}, "
                f"w0/floor {rates['embed w0'] / rates['floor']:.2f}, w1/floor {rates['embed w1'] / rates['floor']:.2f}, "
                f"w2/w0 {rates['embed w2'] / rates['embed w0']:.2f}, w2/serial {rates['embed w2'] / rates['serial']:.2f}, "
                f"w0/before {rates['embed w0'] / rates['before']:.2f}"
            )
    print(f"\nload average {os.getloadavg()[0]:.2f} (1 min) at the end")


if __name__ == "__main__":
    main()
