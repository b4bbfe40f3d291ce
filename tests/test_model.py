"""NearIDConfig / NearIDModel: architecture, freezing, outputs, save/load, AutoModel."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, SiglipVisionModel

import nearid  # noqa: F401  (registers the nearid model type)
from nearid.models.nearid_model import NearIDConfig, NearIDModel
from nearid.tiny.model import build_tiny_model

from .conftest import small_siglip_config


def test_default_config_is_siglip2_so400m():
    vision = NearIDConfig().vision_config
    assert (vision.hidden_size, vision.intermediate_size, vision.num_hidden_layers) == (1152, 4304, 27)
    assert (vision.num_attention_heads, vision.image_size, vision.patch_size) == (16, 384, 14)
    assert vision.hidden_act == "gelu_pytorch_tanh" and vision.layer_norm_eps == 1e-6
    assert NearIDConfig().embed_dim == 1152


def test_full_size_parameter_counts_match_the_paper():
    # Spec section 2.2: head 15,238,352 of 428,225,600 parameters (built on the meta device: no memory).
    with torch.device("meta"):
        model = NearIDModel(NearIDConfig())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    assert trainable == 15_238_352
    assert total == 428_225_600
    assert (model.config.vision_config.image_size // model.config.vision_config.patch_size) ** 2 == 729


def test_only_the_head_is_trainable():
    model = NearIDModel(NearIDConfig(vision_config=small_siglip_config()))
    for name, param in model.named_parameters():
        assert param.requires_grad == name.startswith("backbone.head."), name


def test_outputs_match_siglip_pooler(siglip_config, pixel_batch):
    torch.manual_seed(0)
    siglip = SiglipVisionModel(siglip_config).eval()
    model = NearIDModel.from_siglip(siglip).eval()
    with torch.no_grad():
        expected = siglip(pixel_values=pixel_batch)
        out = model(pixel_batch)
    assert out.image_embeds.shape == (3, 32)
    torch.testing.assert_close(out.pooler_output, expected.pooler_output)
    torch.testing.assert_close(out.last_hidden_state, expected.last_hidden_state)
    torch.testing.assert_close(out.image_embeds, F.normalize(expected.pooler_output, dim=-1))
    torch.testing.assert_close(out.image_embeds.norm(dim=-1), torch.ones(3))
    raw = model.get_image_features(pixel_batch, normalize=False)
    torch.testing.assert_close(raw, expected.pooler_output)


def test_from_siglip_copies_the_pretrained_head(siglip_config):
    siglip = SiglipVisionModel(siglip_config)
    model = NearIDModel.from_siglip(siglip)
    for (name, ours), theirs in zip(model.head.state_dict().items(), siglip.head.state_dict().values()):
        torch.testing.assert_close(ours, theirs, msg=name)
    with torch.no_grad():  # a copy: training NearID's head must not change the caller's SigLIP
        model.head.probe.add_(1.0)
    assert not torch.equal(model.head.probe, siglip.head.probe)


def test_gradients_reach_only_the_head(pixel_batch):
    model = NearIDModel(NearIDConfig(vision_config=small_siglip_config()))
    model.get_image_features(pixel_batch).sum().backward()
    assert all(p.grad is not None for p in model.head.parameters())
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("backbone.head."))


def test_pool_on_cached_tokens_equals_full_forward(pixel_batch):
    model = build_tiny_model(seed=3)
    pixels = torch.nn.functional.interpolate(pixel_batch, size=64)
    with torch.no_grad():
        tokens = model.encode_tokens(pixels)
        assert tokens.shape == (3, 64, 64)
        torch.testing.assert_close(model.pool(tokens), model(pixels).pooler_output)


def test_save_and_load_give_identical_embeddings(tmp_path, pixel_batch):
    model = NearIDModel(NearIDConfig(vision_config=small_siglip_config())).eval()
    model.save_pretrained(tmp_path)
    config_text = (tmp_path / "config.json").read_text()
    assert '"model_type": "nearid"' in config_text and "auto_map" not in config_text
    loaded = NearIDModel.from_pretrained(tmp_path).eval()
    auto = AutoModel.from_pretrained(tmp_path).eval()
    assert type(auto) is NearIDModel
    assert isinstance(AutoConfig.from_pretrained(tmp_path), NearIDConfig)
    with torch.no_grad():
        expected = model.get_image_features(pixel_batch)
        assert torch.equal(loaded.get_image_features(pixel_batch), expected)
        assert torch.equal(auto.get_image_features(pixel_batch), expected)
    assert all(p.requires_grad == n.startswith("backbone.head.") for n, p in loaded.named_parameters())


def test_saved_keys_use_the_release_layout(tmp_path):
    from safetensors import safe_open

    NearIDModel(NearIDConfig(vision_config=small_siglip_config())).save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as handle:
        keys = set(handle.keys())
    assert "backbone.vision_model.head.probe" in keys
    assert "backbone.vision_model.post_layernorm.weight" in keys
    assert all(k.startswith("backbone.vision_model.") for k in keys)


def test_tiny_model_is_deterministic_and_seeded():
    pixels = torch.linspace(-1, 1, 2 * 3 * 64 * 64).reshape(2, 3, 64, 64)
    state = torch.random.get_rng_state()
    a = build_tiny_model(0).get_image_features(pixels)
    assert torch.equal(torch.random.get_rng_state(), state), "building the tiny model must not touch the global RNG"
    b = build_tiny_model(0).get_image_features(pixels)
    c = build_tiny_model(1).get_image_features(pixels)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_embed_dim_other_than_hidden_size_is_refused():
    import pytest

    with pytest.raises(ValueError, match="no projection layer"):
        NearIDConfig(vision_config=small_siglip_config(), embed_dim=16)


def test_from_siglip_can_adopt_the_tower_and_loads_folders_strictly(siglip_config, tmp_path):
    import pytest

    from nearid.io.errors import ModelNotAvailableError

    siglip = SiglipVisionModel(siglip_config)
    adopted = NearIDModel.from_siglip(siglip, copy=False)
    assert adopted.backbone is siglip  # no second copy of a 1.7 GB tower in memory
    assert not any(p.is_meta for p in adopted.parameters()) and not any(b.is_meta for b in adopted.buffers())
    siglip.save_pretrained(tmp_path / "siglip")
    loaded = NearIDModel.from_siglip(tmp_path / "siglip")
    for name, tensor in siglip.state_dict().items():
        torch.testing.assert_close(loaded.backbone.state_dict()[name], tensor, msg=name)
    NearIDModel(NearIDConfig(vision_config=small_siglip_config(hidden_size=48))).save_pretrained(tmp_path / "other")
    with pytest.raises(ModelNotAvailableError, match="not a SiglipVisionModel checkpoint"):
        NearIDModel.from_siglip(tmp_path / "other")  # transformers alone would re-initialise the tower silently
