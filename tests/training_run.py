"""What the trainer's test modules share: a small synthetic training set, a tiny run's settings (as
CLI arguments and as a ``TrainConfig``) and the newest checkpoint's head."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file

from nearid.data.synth import SynthConfig, generate
from nearid.training.trainer import TrainConfig

ARGS = ["--sources", "Part", "Shape", "--backbone", "tiny", "--batch-size", "8", "--warmup-steps", "2", "--lr", "1e-3"]


def training_data(root: Path) -> Path:
    """40 identities (val 4, test 8) at 48 px with 8 MTG train samples, under ``root``."""
    generate(
        root,
        SynthConfig(identities=40, size=48, seed=2, val=4, test=8, mtg_train=8, mtg_test=2, workers=1),
        progress=False,
    )
    return root


def config(data, out, **overrides) -> TrainConfig:
    values = dict(
        data=str(data),
        out=str(out),
        sources=["Part", "Shape"],
        mtg=str(data / "MTG"),
        backbone="tiny",
        batch_size=8,
        epochs=2,
        warmup_steps=2,
        lr=1e-3,
        save_steps=4,
        log_steps=100,
    )
    values.update(overrides)
    return TrainConfig(**values)


def head_of(run: Path) -> dict:
    latest = max((run / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    return load_file(latest / "head.safetensors")
