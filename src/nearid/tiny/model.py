"""The tiny NearID model: a deterministic, randomly initialised (UNTRAINED) NearID model at a tiny
SigLIP size, for tests and offline demos (``--model tiny[:SEED]`` builds the same one)."""

from __future__ import annotations

from nearid.models.nearid_model import NearIDModel, seeded_model, tiny_vision_config


def build_tiny_model(seed: int = 0) -> NearIDModel:
    """The tiny model with random weights from ``seed`` (the global random state is left as it was)."""
    return seeded_model(tiny_vision_config(), seed)
