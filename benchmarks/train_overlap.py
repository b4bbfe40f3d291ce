"""Streaming training (no token cache): steps/s with the inputs prefetched by worker processes against
decoding them in the training loop (target >= 1.5x).

A streaming step decodes, masks, resizes and flips every filled slot (CPU) and runs the frozen trunk on
them. On a GPU machine the two use different hardware, so prefetching hides the smaller one. This machine
has 2 CPU cores and no GPU, so two measurements:

* ``cpu trunk``: the real trunk pinned to ``--trunk-threads`` (default 1) core, the other core decoding.
  This needs the second core to be free: on a machine loaded by other work it shows the contention,
  not the overlap (the load average is printed);
* ``device stand-in``: the trunk call sleeps for the trunk's measured time and returns tokens of the
  right shape, as a GPU leaves the CPU free while it computes; the decoding, the prefetching workers
  and the head's steps are the real ones.

The model and image sizes are picked so the two costs are comparable; both are measured and printed
first (seconds per step, each alone, same inputs).

Each mode is timed as the difference between a ``--steps``-step and a 2-step run, so start-up (data,
model, worker processes) is not counted.

    python benchmarks/train_overlap.py [--batch 8] [--size 512] [--steps 12] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from transformers import SiglipVisionConfig

from nearid.data import load_nearid
from nearid.data.synth import SynthConfig, generate
from nearid.images.processors import preprocessor, siglip_processor
from nearid.models.backbones import load_backbone
from nearid.models.nearid_model import NearIDConfig, NearIDModel
from nearid.training import SampleRecipe, TrainingSet, pixel_values
from nearid.training.batches import present_slots
from nearid.training.trainer import TrainConfig, train

SOURCES = ["Part", "Shape"]


def timed(config: TrainConfig) -> float:
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        train(config)
    return time.perf_counter() - start


def costs(data: Path, backbone: str, batch: int, repeats: int = 3) -> tuple[float, float, int]:
    """(input seconds, trunk seconds, images) of the first step's filled slots, each measured alone."""
    model, processor = load_backbone(backbone)
    preprocess = preprocessor(processor)
    training_set = TrainingSet(load_nearid(data, SOURCES, split="train"), SOURCES, None, SampleRecipe(seed=0))
    slots = [slot for _, _, slot in present_slots(training_set.samples(0, training_set.batches(0, batch)[0]))]
    inputs, trunk = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        pixels = pixel_values(slots, preprocess)
        inputs.append(time.perf_counter() - start)
        start = time.perf_counter()
        model.encode_tokens(pixels)
        trunk.append(time.perf_counter() - start)
    return min(inputs), min(trunk), len(slots)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=512, help="stored image size (PNG), px")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--trunk-threads", type=int, default=1, help="torch threads of the training process")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=192)
    parser.add_argument("--image-size", type=int, default=224, help="the trunk's input size, px")
    args = parser.parse_args()
    torch.set_num_threads(args.trunk_threads)
    load = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="nearid-train-overlap-"))
    try:
        generate(
            work / "data",
            SynthConfig(identities=80, size=args.size, seed=0, val=4, test=4, mtg_train=0, mtg_test=1),
            progress=False,
        )
        torch.manual_seed(0)
        vision = SiglipVisionConfig(
            hidden_size=args.hidden,
            intermediate_size=4 * args.hidden,
            num_hidden_layers=args.layers,
            num_attention_heads=max(1, args.hidden // 64),
            image_size=args.image_size,
            patch_size=16,
        )
        NearIDModel(NearIDConfig(vision_config=vision)).save_pretrained(work / "backbone")
        siglip_processor(args.image_size).save_pretrained(work / "backbone")
        backbone = f"nearid:{work / 'backbone'}"
        input_s, trunk_s, images = costs(work / "data", backbone, args.batch)
        print(
            f"per step ({images} images, {args.size} px PNG -> {args.image_size} px): input {input_s:.3f} s on one core, "
            f"trunk {trunk_s:.3f} s on {args.trunk_threads} thread(s) ({args.layers} layers, hidden {args.hidden}); "
            f"input/trunk {input_s / trunk_s:.2f}",
            flush=True,
        )
        base = dict(
            data=str(work / "data"),
            sources=SOURCES,
            backbone=backbone,
            batch_size=args.batch,
            epochs=50,
            warmup_steps=1,
            save_steps=10_000,
            log_steps=10_000,
            token_cache="off",
        )
        results = {"input_s_per_step": input_s, "trunk_s_per_step": trunk_s, "images_per_step": images}
        encode_tokens = NearIDModel.encode_tokens

        def stand_in(self, pixels):  # the device's time, without the CPU's
            time.sleep(trunk_s * len(pixels) / images)
            config = self.config.vision_config
            return torch.zeros(len(pixels), (config.image_size // config.patch_size) ** 2, config.hidden_size)

        for mode, trunk in (("cpu trunk", encode_tokens), ("device stand-in", stand_in)):
            NearIDModel.encode_tokens = trunk
            rates = {}
            for workers in [0, *args.workers]:
                seconds = {}
                for steps in (2, args.steps):
                    out = work / f"w{workers}-{steps}"
                    seconds[steps] = timed(TrainConfig(**base, out=str(out), num_workers=workers, max_steps=steps))
                    shutil.rmtree(out, ignore_errors=True)
                rates[workers] = (args.steps - 2) / (seconds[args.steps] - seconds[2])
                print(f"{mode}, num_workers {workers}: {rates[workers]:.2f} steps/s", flush=True)
            bound = 1 / max(input_s, trunk_s)
            for workers in args.workers:
                print(
                    f"{mode}: ratio workers {workers} / synchronous: {rates[workers] / rates[0]:.2f}x "
                    f"(target >= 1.5x; ideal overlap: {bound / rates[0]:.2f}x)"
                )
            results[mode] = {
                "steps_per_s": {str(k): v for k, v in rates.items()},
                "ratio": {str(w): rates[w] / rates[0] for w in args.workers},
                "load_average": os.getloadavg()[0],
            }
        NearIDModel.encode_tokens = encode_tokens
        print(f"load average (1 min) before: {load:.2f}, after: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
        print(json.dumps(results))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
