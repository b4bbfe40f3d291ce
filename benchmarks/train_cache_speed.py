"""Training steps/s from cached trunk tokens against running the frozen trunk every step (target >= 5x).

The backbone is where the time goes, so it is a mid-size SigLIP tower (12 layers, hidden 384, 224 px,
196 tokens, random weights) on a synthetic benchmark. Each mode is timed as the difference between a
12-step and a 2-step run, so set-up and the one-off cache fill are not counted; the fill is reported
separately (it is paid once per run, and once per (image, mask, flip) variant ever).

    python benchmarks/train_cache_speed.py [--batch 16]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import tempfile
import time
from pathlib import Path

import torch
from transformers import SiglipVisionConfig

from nearid.data.synth import SynthConfig, generate
from nearid.images.processors import siglip_processor
from nearid.models.nearid_model import NearIDConfig, NearIDModel
from nearid.training.trainer import TrainConfig, train


def timed(config: TrainConfig) -> float:
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        train(config)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="nearid-train-speed-"))
    generate(
        work / "data",
        SynthConfig(identities=120, size=128, seed=0, val=4, test=4, mtg_train=0, mtg_test=1),
        progress=False,
    )
    torch.manual_seed(0)
    vision = SiglipVisionConfig(
        hidden_size=384,
        intermediate_size=1536,
        num_hidden_layers=12,
        num_attention_heads=6,
        image_size=224,
        patch_size=16,
    )
    NearIDModel(NearIDConfig(vision_config=vision)).save_pretrained(work / "backbone")
    siglip_processor(224).save_pretrained(work / "backbone")
    rates = {}
    fill_seconds = 0.0
    for cached in (True, False):
        base = dict(
            data=str(work / "data"),
            sources=["Part", "Shape"],
            backbone=f"nearid:{work / 'backbone'}",
            batch_size=args.batch,
            epochs=50,
            warmup_steps=1,
            save_steps=10_000,
            log_steps=10_000,
            flip_prob=0.0,
            token_cache="on" if cached else "off",
            out=str(work / ("cached" if cached else "fresh")),
        )
        if cached:  # the one-off fill, so that the timed runs below read a warm cache
            fill_seconds = timed(TrainConfig(**base, max_steps=1))
        seconds = {}
        for steps in (2, 12):
            shutil.rmtree(Path(base["out"]) / "checkpoints", ignore_errors=True)
            seconds[steps] = timed(TrainConfig(**base, max_steps=steps))
        rates[cached] = 10 / (seconds[12] - seconds[2])
    print(
        f"batch {args.batch}, 12-layer/384/224px trunk, 2 cores: cached {rates[True]:.2f} steps/s, "
        f"trunk every step {rates[False]:.2f} steps/s"
    )
    print(f"first cached run incl. the one-off token fill: {fill_seconds:.1f} s")
    print(f"ratio cached/uncached: {rates[True] / rates[False]:.1f}x (target >= 5x)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
