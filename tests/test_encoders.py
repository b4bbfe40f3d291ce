"""Every encoder family, exercised through a tiny checkpoint of the same class saved to a folder."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import (
    BitImageProcessorPil,
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    Dinov2Config,
    Dinov2Model,
    SiglipConfig,
    SiglipModel,
    ViTConfig,
    ViTImageProcessorPil,
    ViTModel,
)

import nearid
from nearid.encoders import Encoder, generic_readout, load_encoder
from nearid.errors import EncoderSpecError, ModelNotAvailableError, UnsafeCheckpointError
from nearid.model import NearIDConfig, NearIDModel

from .conftest import save_processor, small_siglip_config

SMALL_TEXT = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=4)
SMALL_VIT = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8)


def _seeded(build):
    torch.manual_seed(0)
    return build().eval()


@pytest.fixture
def siglip_dir(tmp_path):
    """A full SigLIP checkpoint (text + vision), as google/siglip2-so400m-patch14-384 is."""
    model = _seeded(lambda: SiglipModel(SiglipConfig(text_config=SMALL_TEXT, vision_config=small_siglip_config().to_dict())))
    model.save_pretrained(tmp_path / "siglip")
    save_processor(tmp_path / "siglip", 32)
    return tmp_path / "siglip", model


@pytest.fixture
def clip_dir(tmp_path):
    vision = dict(SMALL_VIT, projection_dim=24)  # real CLIP configs repeat projection_dim in vision_config
    model = _seeded(lambda: CLIPModel(CLIPConfig(text_config=SMALL_TEXT, vision_config=vision, projection_dim=24)))
    model.save_pretrained(tmp_path / "clip")
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(tmp_path / "clip")
    return tmp_path / "clip", model


@pytest.fixture
def dinov2_dir(tmp_path):
    model = _seeded(lambda: Dinov2Model(Dinov2Config(**SMALL_VIT)))
    model.save_pretrained(tmp_path / "dinov2")
    processor = BitImageProcessorPil(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32})
    processor.save_pretrained(tmp_path / "dinov2")
    return tmp_path / "dinov2", model, processor


def _reference(rgb_images, processor, forward):
    pixels = processor(images=[Image.open(p).convert("RGB") for p in rgb_images], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        return F.normalize(forward(pixels), dim=-1)


def test_siglip2_map_is_the_pretrained_head(siglip_dir, rgb_images):
    folder, model = siglip_dir
    encoder = load_encoder(f"siglip2-map:{folder}", device="cpu")
    assert isinstance(encoder, Encoder) and encoder.dim == 32
    expected = _reference(rgb_images, encoder.processor, lambda x: model.get_image_features(pixel_values=x).pooler_output)
    torch.testing.assert_close(nearid.embed(encoder, rgb_images), expected)


def test_siglip2_mean_averages_post_ln_tokens(siglip_dir, rgb_images):
    folder, model = siglip_dir
    encoder = load_encoder(f"siglip2-mean:{folder}", device="cpu")
    expected = _reference(rgb_images, encoder.processor, lambda x: model.vision_model(pixel_values=x).last_hidden_state.mean(1))
    torch.testing.assert_close(nearid.embed(encoder, rgb_images), expected)


def test_clip_is_the_projected_cls(clip_dir, rgb_images):
    folder, model = clip_dir
    encoder = load_encoder(f"clip:{folder}", device="cpu")
    assert encoder.dim == 24
    expected = _reference(rgb_images, encoder.processor, lambda x: model.get_image_features(pixel_values=x).pooler_output)
    torch.testing.assert_close(nearid.embed(encoder, rgb_images), expected)


def test_dinov2_is_the_pooler_output(dinov2_dir, rgb_images):
    folder, model, processor = dinov2_dir
    encoder = load_encoder(f"dinov2:{folder}", device="cpu")
    assert encoder.processor.crop_size == {"height": 32, "width": 32}  # the checkpoint's own processor
    expected = _reference(rgb_images, processor, lambda x: model(pixel_values=x).pooler_output)
    torch.testing.assert_close(nearid.embed(encoder, rgb_images), expected)


def test_hf_generic_uses_get_image_features_then_pooler(clip_dir, dinov2_dir, rgb_images):
    clip_folder, clip_model = clip_dir
    via_hf = nearid.embed(load_encoder(f"hf:{clip_folder}", device="cpu"), rgb_images)
    via_clip = nearid.embed(load_encoder(f"clip:{clip_folder}", device="cpu"), rgb_images)
    torch.testing.assert_close(via_hf, via_clip)
    dino_folder, *_ = dinov2_dir
    torch.testing.assert_close(
        nearid.embed(load_encoder(f"hf:{dino_folder}", device="cpu"), rgb_images),
        nearid.embed(load_encoder(f"dinov2:{dino_folder}", device="cpu"), rgb_images),
    )


def test_hf_generic_with_a_vit(tmp_path, rgb_images):
    model = _seeded(lambda: ViTModel(ViTConfig(**SMALL_VIT)))
    model.save_pretrained(tmp_path / "vit")
    processor = ViTImageProcessorPil(size={"height": 32, "width": 32})
    processor.save_pretrained(tmp_path / "vit")
    encoder = load_encoder(f"hf:{tmp_path / 'vit'}", device="cpu")
    assert encoder.dim == 32  # learned by probing: the rule does not know ViT's width in advance
    expected = _reference(rgb_images, processor, lambda x: model(pixel_values=x).pooler_output)
    torch.testing.assert_close(nearid.embed(encoder, rgb_images), expected)


def test_generic_readout_falls_back_to_token_and_map_means():
    tokens = torch.arange(24.0).reshape(1, 4, 6)
    fmap = torch.arange(16.0).reshape(1, 4, 2, 2)
    for hidden, expected in ((tokens, tokens.mean(1)), (fmap, fmap.mean((2, 3)))):
        stub = lambda pixel_values, hidden=hidden: SimpleNamespace(last_hidden_state=hidden, pooler_output=None)  # noqa: E731
        torch.testing.assert_close(generic_readout(stub, None), expected)


def test_nearid_on_our_own_checkpoint(tmp_path, rgb_images):
    model = _seeded(lambda: NearIDModel(NearIDConfig(vision_config=small_siglip_config())))
    model.save_pretrained(tmp_path / "ours")
    encoder = load_encoder(f"nearid:{tmp_path / 'ours'}", device="cpu")  # no processor file: SigLIP defaults
    expected = _reference(rgb_images, encoder.processor, lambda x: model.get_image_features(x))
    torch.testing.assert_close(nearid.embed(encoder, rgb_images), expected)


def test_tiny_is_deterministic_and_labelled_untrained(rgb_images):
    a, b, c = (load_encoder(spec, device="cpu") for spec in ("tiny", "tiny:0", "tiny:7"))
    assert "untrained" in a.name and a.untrained
    assert torch.equal(nearid.embed(a, rgb_images), nearid.embed(b, rgb_images))
    assert not torch.allclose(nearid.embed(a, rgb_images), nearid.embed(c, rgb_images))


def test_bfloat16_on_cpu_stays_close_to_float32(rgb_images):
    fp32 = nearid.embed(load_encoder("tiny", device="cpu", dtype="float32"), rgb_images)
    bf16 = nearid.embed(load_encoder("tiny", device="cpu", dtype="bf16"), rgb_images)
    assert bf16.dtype == torch.float32
    assert (fp32 * bf16).sum(-1).min() > 0.99


def test_wrong_family_for_a_checkpoint_is_an_error(clip_dir, tmp_path):
    folder, model = clip_dir
    broken = tmp_path / "broken_clip"
    model.save_pretrained(broken)
    config = json.loads((broken / "config.json").read_text())
    config["vision_config"]["projection_dim"] = 16
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelNotAvailableError, match=r"broken_clip': not a CLIPVisionModelWithProjection checkpoint \(weights of the wrong shape\)"):
        load_encoder(f"clip:{broken}", device="cpu")  # shape mismatch: transformers would re-initialise silently
    with pytest.raises(ModelNotAvailableError, match=r"not a NearIDModel checkpoint \(\d+ weights missing, e\.g\. backbone\."):
        load_encoder(f"nearid:{folder}", device="cpu")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("resnet", r"unknown encoder 'resnet'; known: nearid\[:Aleksandar/nearid-siglip2\], siglip2-map"),
        ("hf", r"encoder 'hf' needs an argument"),
        ("tiny:abc", r"tiny encoder takes an integer seed"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(EncoderSpecError, match=message):
        load_encoder(spec, device="cpu")


def test_bad_device_and_dtype():
    if not torch.cuda.is_available():
        with pytest.raises(EncoderSpecError, match="no CUDA device is available here"):
            load_encoder("tiny", device="cuda")
    with pytest.raises(EncoderSpecError, match="unknown dtype 'float8'"):
        load_encoder("tiny", device="cpu", dtype="float8")


def test_hub_id_not_on_this_machine_fails_fast():
    import time

    start = time.monotonic()
    with pytest.raises(ModelNotAvailableError) as info:
        load_encoder("nearid", device="cpu")
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert "Aleksandar/nearid-siglip2" in message and "not on this machine" in message
    assert "--local-dir" in message and "pass the folder" in message


def test_download_failure_is_reported(monkeypatch):
    import huggingface_hub

    calls = []

    def fake_snapshot(repo_id, **kwargs):
        calls.append(kwargs)
        if kwargs.get("local_files_only"):
            raise FileNotFoundError("not cached")
        assert not any(p.endswith(".py") for p in kwargs["allow_patterns"]), "code must never be downloaded"
        raise ConnectionError("network unreachable")

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    with pytest.raises(ModelNotAvailableError, match=r"clip-vit-large-patch14.*download failed: ConnectionError"):
        load_encoder("clip", device="cpu")
    assert len(calls) == 2


def test_missing_local_folder():
    with pytest.raises(ModelNotAvailableError, match=r"model folder 'no/such/folder/here' does not exist"):
        load_encoder("nearid:no/such/folder/here", device="cpu")


def test_pickled_weights_are_refused_unless_allowed(tmp_path, rgb_images):
    model = _seeded(lambda: NearIDModel(NearIDConfig(vision_config=small_siglip_config())))
    folder = tmp_path / "pickled"
    model.save_pretrained(folder)
    state = {f"backbone.vision_model.{k.removeprefix('backbone.')}": v for k, v in model.state_dict().items()}
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(UnsafeCheckpointError, match=r"holds only pickled weights \(pytorch_model\.bin\).*--allow-pickle"):
        load_encoder(f"nearid:{folder}", device="cpu")
    encoder = load_encoder(f"nearid:{folder}", device="cpu", allow_pickle=True)
    expected = _reference(rgb_images, encoder.processor, lambda x: model.get_image_features(x))
    torch.testing.assert_close(nearid.embed(encoder, rgb_images), expected)


def test_histogram_encoder_by_hand():
    encoder = load_encoder("histogram:2", device="cpu")
    assert encoder.dim == 8
    half = np.zeros((4, 4, 3), dtype=np.uint8)
    half[:, :2] = 255  # half white (bin 7), half black (bin 0)
    vector = nearid.embed(encoder, [half])[0]
    expected = torch.zeros(8)
    expected[0] = expected[7] = 2**-0.5
    torch.testing.assert_close(vector, expected)
