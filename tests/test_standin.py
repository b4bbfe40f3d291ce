"""The offline stand-in backbone: augmentations, view pairing, and pretraining that reads only train views."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import SiglipVisionModel

from nearid.data import load_nearid
from nearid.data.synth import SynthConfig, generate
from nearid.encoders import load_encoder
from nearid.training.standin import StandInConfig, augment, pretrain_standin, view_pairs


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("standin") / "synth"
    generate(root, SynthConfig(identities=24, size=32, seed=5, val=2, test=6, mtg_train=0, mtg_test=1, workers=1), progress=False)
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


def test_view_pairs_cover_every_view_once_with_a_partner_of_the_same_identity():
    owners = np.array([0, 0, 1, 1, 1, 2, 2])
    anchors, partners = view_pairs(owners, np.random.default_rng(0))
    assert sorted(anchors) == list(range(7))
    assert (owners[anchors] == owners[partners]).all()
    rng = np.random.default_rng(1)
    draws = np.concatenate([view_pairs(owners, rng)[1] for _ in range(200)])
    assert set(draws) == set(range(7))  # partners are drawn over all views, the anchor included


def test_pretraining_reads_only_train_views_and_saves_a_siglip_checkpoint(data, tmp_path, monkeypatch):
    read = []
    import nearid.images as images

    real = images.load_image
    def recording(source, **kw):
        if hasattr(source, "key"):  # an ImageRef (it decodes itself through load_image again, as bytes)
            read.append(source.key)
        return real(source, **kw)

    monkeypatch.setattr(images, "load_image", recording)
    bench = load_nearid(data, ["Part", "Shape"], split="train")
    config = StandInConfig(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, layers=1, heads=2,
                           epochs=2, batch_size=8)
    logged = []
    out = pretrain_standin(bench, tmp_path / "backbone", config, log=logged.append)
    views = {v.image.key for identity in bench for v in identity.views if v is not None}
    assert set(read) == views  # every train view, nothing else: no distractor, no val/test image
    assert not any("Part" in key or "Shape" in key for key in read)
    assert sum(line.strip().startswith("epoch") for line in logged) == 2

    model = SiglipVisionModel.from_pretrained(out)
    torch.manual_seed(config.seed)
    initial = SiglipVisionModel(config.vision_config())
    assert not torch.equal(model.head.probe, initial.head.probe)  # trained, not the init
    encoder = load_encoder(f"siglip2-map:{out}", device="cpu")  # enters the pipeline like SigLIP2
    vectors = encoder.embed(encoder.preprocess([v.image for v in bench[0].views if v is not None]))
    assert vectors.shape[-1] == 32 and torch.isfinite(vectors).all()
