"""Shared fixtures. Tests never touch the network and never load a full-size backbone."""

from __future__ import annotations

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
# datasets reads its cache location once, at import: parquet conversions of test data go here.
os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="nearid-test-datasets-")

import pytest
import torch
from PIL import Image
from transformers import SiglipVisionConfig

from nearid.images.processors import siglip_processor


@pytest.fixture(autouse=True)
def _empty_hub_cache(tmp_path_factory, monkeypatch):
    """An empty Hugging Face cache: a hub id can only resolve if a test put it there."""
    cache = tmp_path_factory.mktemp("hf_cache")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))


def small_siglip_config(**overrides) -> SiglipVisionConfig:
    values = dict(
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        hidden_act="gelu_pytorch_tanh",
        layer_norm_eps=1e-6,
    )
    values.update(overrides)
    return SiglipVisionConfig(**values)


@pytest.fixture
def siglip_config() -> SiglipVisionConfig:
    return small_siglip_config()


@pytest.fixture
def pixel_batch() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(3, 3, 32, 32, generator=generator) * 2 - 1


@pytest.fixture
def rgb_images(tmp_path):
    """Three distinct small RGB files on disk."""
    paths = []
    for i, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        image = Image.new("RGB", (48, 40), colour)
        image.paste((255, 255, 255), (10 + 5 * i, 8, 30 + 5 * i, 30))
        path = tmp_path / f"img{i}.png"
        image.save(path)
        paths.append(path)
    return paths


def save_processor(folder, image_size: int) -> None:
    siglip_processor(image_size).save_pretrained(folder)
