"""The offline stand-in backbone: augmentations, dense foreground targets, and pretraining that reads only train views."""

from __future__ import annotations

import pytest
import torch
from transformers import SiglipVisionModel

from nearid.data import load_nearid
from nearid.data.synth import SynthConfig, generate
from nearid.models.encoders import load_encoder
from nearid.tiny.standin import StandInConfig, augment, foreground_targets, pretrain_standin


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("standin") / "synth"
    generate(
        root,
        SynthConfig(identities=24, size=32, seed=5, val=2, test=6, mtg_train=0, mtg_test=1, workers=1),
        progress=False,
    )
    return root


def test_augment_keeps_constant_images_constant_and_is_seeded():
    levels = torch.linspace(-0.5, 0.5, 6)
    pixels = levels[:, None, None, None].expand(6, 3, 16, 16).contiguous()
    out = augment(pixels, torch.Generator().manual_seed(1))
    assert out.shape == pixels.shape
    flat = out.reshape(6, -1)
    # a crop of a constant image is constant; brightness/contrast map it to c*x+b with c in [0.8,1.2], b in +-0.15
    assert torch.allclose(flat, flat[:, :1].expand_as(flat), atol=1e-5)
    assert ((flat[:, 0] - levels).abs() <= 0.2 * levels.abs() + 0.15 + 1e-6).all()
    assert torch.equal(out, augment(pixels, torch.Generator().manual_seed(1)))


def test_augment_crops_inside_the_image_and_flips():
    ramp = torch.linspace(-1, 1, 32).expand(1, 3, 32, 32).repeat(64, 1, 1, 1)  # value = x coordinate
    out = augment(ramp, torch.Generator().manual_seed(0), min_area=0.25)
    rows = out[:, 0, 16]  # one row per image: c*x+b along a (possibly mirrored) crop of the ramp
    slopes = rows[:, -1] - rows[:, 0]
    assert (slopes > 0).any() and (slopes < 0).any()  # both orientations occur
    # crops never leave the image (no reflection padding used): every row is monotonic
    steps = rows[:, 1:] - rows[:, :-1]
    assert ((steps >= -1e-5).all(dim=1) | (steps <= 1e-5).all(dim=1)).all()


def test_masks_follow_the_image_geometry_without_jitter():
    generator = torch.Generator().manual_seed(3)
    masks = (torch.rand(16, 1, 32, 32, generator=generator) > 0.5).float()
    pixels = masks.expand(16, 3, 32, 32).contiguous()
    image, moved = augment(pixels, torch.Generator().manual_seed(4), masks=masks)
    assert moved.shape == masks.shape and moved.min() >= 0 and moved.max() <= 1
    # the image is c * (the moved mask) + b per sample: same crop and flip, jitter on the image only
    for img, m in zip(image[:, 0].reshape(16, -1), moved[:, 0].reshape(16, -1)):
        c, b = torch.linalg.lstsq(torch.stack([m, torch.ones_like(m)], 1), img[:, None]).solution[:, 0]
        assert 0.8 - 1e-4 <= c <= 1.2 + 1e-4 and abs(b) <= 0.15 + 1e-4
        assert torch.allclose(c * m + b, img, atol=1e-4)
    alone = augment(pixels, torch.Generator().manual_seed(4))
    assert torch.allclose(alone, image)  # masks change nothing about the image's draws


def test_foreground_targets_are_patch_object_shares_in_token_order():
    mask = torch.zeros(1, 1, 16, 16)
    mask[0, 0, :8, :8] = 1  # token 0: all object
    mask[0, 0, :4, 8:] = 1  # token 1 (top right): half
    mask[0, 0, 8:, :2] = 1  # token 2 (bottom left): a quarter
    assert foreground_targets(mask, 8).tolist() == [[1.0, 0.5, 0.25, 0.0]]


def test_pretraining_reads_only_train_views_and_saves_a_siglip_checkpoint(data, tmp_path, monkeypatch):
    read = []
    import nearid.images.decode as images

    real = images.load_image

    def recording(source, **kw):
        if hasattr(source, "key"):  # an ImageRef (it decodes itself through load_image again, as bytes)
            read.append(source.key)
        return real(source, **kw)

    monkeypatch.setattr(images, "load_image", recording)
    real_mask = images.load_mask

    def recording_mask(source, **kw):
        if hasattr(source, "key"):  # as above: an ImageRef recurses once with its bytes
            read_masks.append(source.key)
        return real_mask(source, **kw)

    read_masks = []
    monkeypatch.setattr(images, "load_mask", recording_mask)
    bench = load_nearid(data, ["Part", "Shape"], split="train")
    config = StandInConfig(
        image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, layers=1, heads=2, epochs=6, batch_size=8
    )
    logged = []
    out = pretrain_standin(bench, tmp_path / "backbone", config, log=logged.append)
    views = {v.image.key for identity in bench for v in identity.views if v is not None}
    assert set(read) == views  # every train view, nothing else: no distractor, no val/test image
    assert not any("Part" in key or "Shape" in key for key in read)
    assert set(read_masks) == {v.mask.key for identity in bench for v in identity.views if v is not None}
    epochs = [line for line in logged if line.strip().startswith("epoch")]
    assert len(epochs) == 6
    bce = [float(line.split("foreground BCE")[1].split()[0]) for line in epochs]
    assert bce[-1] < 0.9 * bce[0]  # the dense term trains: tokens learn where the object is

    model = SiglipVisionModel.from_pretrained(out)
    torch.manual_seed(config.seed)
    initial = SiglipVisionModel(config.vision_config())
    assert not torch.equal(model.head.probe, initial.head.probe)  # trained, not the init
    encoder = load_encoder(f"siglip2-map:{out}", device="cpu")  # enters the pipeline like SigLIP2
    vectors = encoder.embed(encoder.preprocess([v.image for v in bench[0].views if v is not None]))
    assert vectors.shape[-1] == 32 and torch.isfinite(vectors).all()
