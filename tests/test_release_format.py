"""The authors' release layout (Aleksandar/nearid-siglip2) loads without running its shipped code."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from transformers import AutoModel, SiglipVisionModel

import nearid
from nearid.models.nearid_model import NearIDModel

from .conftest import small_siglip_config

POISON = """
import pathlib
pathlib.Path({sentinel!r}).write_text("imported")
raise RuntimeError("shipped remote code must never run")
"""


def write_release(folder, siglip: SiglipVisionModel, sentinel) -> None:
    """What the authors' convert_checkpoint writes: 4.x key names under backbone.vision_model, fp16."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {f"backbone.vision_model.{k}": v.to(torch.float16).contiguous() for k, v in siglip.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    vision = siglip.config.to_dict()
    vision.update(model_type="siglip_vision_model", torch_dtype="float16")
    config = {
        "architectures": ["NearIDModel"],
        "auto_map": {
            "AutoConfig": "configuration_nearid.NearIDConfig",
            "AutoModel": "modeling_nearid.NearIDModel",
        },
        "model_type": "nearid",
        "embed_dim": siglip.config.hidden_size,
        "normalize_embeddings": True,
        "torch_dtype": "float16",
        "transformers_version": "4.57.1",
        "vision_config": vision,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    processor = {
        "do_convert_rgb": None,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_processor_type": "SiglipImageProcessor",
        "image_std": [0.5, 0.5, 0.5],
        "processor_class": "SiglipProcessor",
        "resample": 2,
        "rescale_factor": 1 / 255,
        "size": {"height": siglip.config.image_size, "width": siglip.config.image_size},
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    for module in ("modeling_nearid.py", "configuration_nearid.py"):
        (folder / module).write_text(POISON.format(sentinel=str(sentinel)))


@pytest.fixture
def release(tmp_path):
    torch.manual_seed(0)
    siglip = SiglipVisionModel(small_siglip_config()).eval()
    sentinel = tmp_path / "remote_code_ran"
    write_release(tmp_path / "release", siglip, sentinel)
    return tmp_path / "release", siglip, sentinel


def _assert_no_remote_code(sentinel):
    assert not sentinel.exists(), "the release's Python files were imported"
    assert not any("modeling_nearid" in name or name.startswith("transformers_modules") for name in sys.modules)


def test_release_loads_with_from_pretrained(release, pixel_batch):
    folder, siglip, sentinel = release
    model = NearIDModel.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        ours = model.get_image_features(pixel_batch)
        reference = F.normalize(siglip(pixel_values=pixel_batch).pooler_output, dim=-1)
    cosine = (ours * reference).sum(-1)
    assert cosine.min() > 0.999, cosine
    _assert_no_remote_code(sentinel)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        n for n, _ in model.named_parameters() if n.startswith("backbone.head.")
    ]


def test_release_loads_with_automodel_and_no_remote_code(release, pixel_batch):
    folder, _siglip, sentinel = release
    model = AutoModel.from_pretrained(folder)
    assert type(model) is NearIDModel
    assert model.dtype == torch.float16  # transformers keeps the stored dtype unless told otherwise
    _assert_no_remote_code(sentinel)


def test_release_through_encoder_spec(release, rgb_images):
    folder, siglip, sentinel = release
    encoder = nearid.load_encoder(f"nearid:{folder}", device="cpu")
    vectors = nearid.embed(encoder, rgb_images)
    # the release's preprocessor_config.json, by hand: bilinear (resample 2) to 32 x 32, x/255, mean = std = 0.5
    pixels = torch.stack(
        [
            torch.from_numpy(
                (
                    np.asarray(
                        Image.open(p).convert("RGB").resize((32, 32), Image.Resampling.BILINEAR), dtype=np.float32
                    )
                    / 255
                    - 0.5
                )
                / 0.5
            ).permute(2, 0, 1)
            for p in rgb_images
        ]
    )
    torch.testing.assert_close(encoder.preprocess(rgb_images), pixels, rtol=0, atol=1e-5)
    with torch.no_grad():
        reference = F.normalize(siglip(pixel_values=pixels).pooler_output, dim=-1)
    assert (vectors * reference).sum(-1).min() > 0.999
    _assert_no_remote_code(sentinel)


def test_release_from_the_hub_cache_offline(release, pixel_batch, tmp_path):
    """A hub id resolves from the local Hugging Face cache when offline: the real hub code path."""
    import huggingface_hub.constants as constants

    folder, siglip, sentinel = release
    repo = tmp_path / "cache" / "models--Aleksandar--nearid-siglip2"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for file in folder.iterdir():
        (snapshot / file.name).write_bytes(file.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    constants.HF_HUB_CACHE = str(tmp_path / "cache")  # restored by the autouse fixture
    encoder = nearid.load_encoder("nearid", device="cpu")  # default = Aleksandar/nearid-siglip2
    assert encoder.name == "nearid:Aleksandar/nearid-siglip2"
    with torch.no_grad():
        reference = F.normalize(siglip(pixel_values=pixel_batch).pooler_output, dim=-1)
    assert (encoder.embed(pixel_batch) * reference).sum(-1).min() > 0.999
    _assert_no_remote_code(sentinel)


def test_release_as_a_training_backbone(release, pixel_batch):
    """``nearid:DIR`` as a backbone (continue training from the release): float32, head trainable, same embeddings."""
    from nearid.models.backbones import load_backbone

    folder, siglip, sentinel = release
    model, processor = load_backbone(f"nearid:{folder}")
    assert model.dtype == torch.float32 and processor.size == {"height": 32, "width": 32}
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        n for n, _ in model.named_parameters() if n.startswith("backbone.head.")
    ]
    with torch.no_grad():
        reference = F.normalize(siglip(pixel_values=pixel_batch).pooler_output, dim=-1)
        assert (model.get_image_features(pixel_batch) * reference).sum(-1).min() > 0.999
    _assert_no_remote_code(sentinel)
