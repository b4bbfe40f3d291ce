"""The DreamBooth metrics (``clip-i``, ``dino-i``), the ``hf:`` no-pooler rule and ``dinov3``, on tiny
checkpoints built from configs.

DINO's recipe is resize 256 (bicubic, shorter side) -> centre crop 224 for a 224 model. The tiny ViT
here takes 56-pixel inputs, so the test scales the recipe by 56/224 and keeps its 8/7 ratio:
resize 64 -> crop 56 (``DinoEvalProcessor.for_image_size``). The expected pixels are computed below
with PIL + numpy following torchvision's rules, never by the processor under test.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import (
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    DINOv3ViTConfig,
    DINOv3ViTModel,
    ViTConfig,
    ViTModel,
)

import nearid
from nearid.images.processors import DinoEvalProcessor
from nearid.io.errors import ModelNotAvailableError
from nearid.models.encoders import load_encoder
from nearid.models.specs import parse_encoder_spec
from tests.tiny_clip import CLIP_MEAN, CLIP_STD, save_clip_processor

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TINY_VIT = {
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": 56,
    "patch_size": 8,
}
SMALL_TEXT = {
    "vocab_size": 64,
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_hidden_layers": 1,
    "num_attention_heads": 4,
}


@pytest.fixture
def images(tmp_path):
    """Different aspect ratios; 56x45 makes the long side 79 after resize 64, an odd margin of 23
    where torchvision's round(11.5) = 12 and ``//`` gives 11."""
    paths = []
    for i, (size, colour) in enumerate(
        [((56, 45), (200, 30, 30)), ((40, 48), (30, 200, 30)), ((70, 50), (30, 30, 200))]
    ):
        rng = np.random.default_rng(i)
        array = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        array[5:20, 5:25] = colour
        path = tmp_path / f"img{i}.png"
        Image.fromarray(array).save(path)
        paths.append(path)
    return paths


def dino_pixels(
    paths, resize: int, crop: int, centre=lambda margin: round(margin / 2.0), mean=IMAGENET_MEAN, std=IMAGENET_STD
) -> torch.Tensor:
    """torchvision's Resize(resize, BICUBIC) + CenterCrop(crop) + ToTensor + Normalize, by hand (DINO's
    eval transform; with resize = crop and CLIP's mean/std, OpenAI ``clip.load``'s ``_transform``)."""
    rows = []
    for path in paths:
        image = Image.open(path).convert("RGB")
        w, h = image.size
        if w <= h:
            size = (resize, int(resize * h / w))
        else:
            size = (int(resize * w / h), resize)
        image = image.resize(size, Image.Resampling.BICUBIC)
        left, top = centre(size[0] - crop), centre(size[1] - crop)
        array = np.asarray(image.crop((left, top, left + crop, top + crop)), dtype=np.float64) / 255.0
        array = (array - np.asarray(mean)) / np.asarray(std)
        rows.append(torch.from_numpy(array.transpose(2, 0, 1).astype(np.float32)))
    return torch.stack(rows)


@pytest.fixture
def dino_dir(tmp_path):
    """A ViT saved as facebook/dino-vits16 is: without pooler weights, with a (non-DINO) square processor."""
    torch.manual_seed(0)
    model = ViTModel(ViTConfig(**TINY_VIT), add_pooling_layer=False).eval()
    model.save_pretrained(tmp_path / "dino")
    (tmp_path / "dino" / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "ViTImageProcessor",
                "size": {"height": 56, "width": 56},
                "do_resize": True,
                "do_rescale": True,
                "do_normalize": True,
                "resample": 2,
                "rescale_factor": 1 / 255,
                "image_mean": list(IMAGENET_MEAN),
                "image_std": list(IMAGENET_STD),
            }
        )
    )
    return tmp_path / "dino", model


def _cls(model, pixels):
    with torch.no_grad():
        return F.normalize(model(pixel_values=pixels).last_hidden_state[:, 0], dim=-1)


def test_dino_eval_preprocessing_is_torchvision_exact(images):
    processor = DinoEvalProcessor.for_image_size(56)
    assert (processor.resize, processor.crop) == (64, 56)
    assert (DinoEvalProcessor.for_image_size(224).resize, DinoEvalProcessor.for_image_size(224).crop) == (256, 224)
    pixels = processor(images=[Image.open(p) for p in images])["pixel_values"]
    torch.testing.assert_close(pixels, dino_pixels(images, 64, 56), rtol=0, atol=1e-5)
    # the rounding matters: the 56x45 image's crop differs from a floor-division crop
    floor = dino_pixels(images[:1], 64, 56, centre=lambda margin: margin // 2)
    assert not torch.allclose(pixels[:1], floor, atol=1e-3)


def test_dino_i_is_the_cls_token_with_dino_preprocessing(dino_dir, images):
    folder, model = dino_dir
    encoder = load_encoder(f"dino-i:{folder}", device="cpu")
    assert encoder.dim == 32 and encoder.name == f"dino-i:{folder}"
    pixels = dino_pixels(images, 64, 56)  # DINO's recipe, not the checkpoint's square processor
    torch.testing.assert_close(encoder.preprocess(images), pixels, rtol=0, atol=1e-5)
    torch.testing.assert_close(nearid.embed(encoder, images), _cls(model, pixels))


def test_hf_reads_a_checkpoint_without_pooler_by_its_cls_token(dino_dir, images):
    folder, model = dino_dir
    encoder = load_encoder(f"hf:{folder}", device="cpu")
    assert encoder.model.pooler is None  # loaded without a (random) pooler
    square = torch.stack(
        [  # the checkpoint's own processor: 56x56 bilinear, ImageNet mean/std
            torch.from_numpy(
                (
                    (
                        np.asarray(
                            Image.open(p).convert("RGB").resize((56, 56), Image.Resampling.BILINEAR), dtype=np.float64
                        )
                        / 255.0
                        - IMAGENET_MEAN
                    )
                    / IMAGENET_STD
                )
                .transpose(2, 0, 1)
                .astype(np.float32)
            )
            for p in images
        ]
    )
    torch.testing.assert_close(encoder.preprocess(images), square, rtol=0, atol=1e-5)
    torch.testing.assert_close(nearid.embed(encoder, images), _cls(model, square))


def test_other_missing_weights_stay_an_error(dino_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    folder, _ = dino_dir
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        (broken / name).write_text((folder / name).read_text())
    weights = load_file(folder / "model.safetensors")
    del weights["layernorm.weight"]
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    for spec in (f"hf:{broken}", f"dino-i:{broken}"):
        with pytest.raises(ModelNotAvailableError, match=r"weights missing, e\.g\. layernorm\.weight"):
            load_encoder(spec, device="cpu")


def test_a_pooler_missing_with_other_weights_is_an_error(dino_dir, tmp_path):
    """The pooler rule only forgives the pooler: pooler + another missing weight is still refused."""
    from safetensors.torch import load_file, save_file

    folder, _ = dino_dir
    broken = tmp_path / "broken2"
    broken.mkdir()
    (broken / "config.json").write_text((folder / "config.json").read_text())
    weights = load_file(folder / "model.safetensors")
    del weights["encoder.layer.0.output.dense.bias"]
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelNotAvailableError, match=r"weights missing"):
        load_encoder(f"hf:{broken}", device="cpu")


def test_hf_with_a_pooler_still_reads_the_pooler(tmp_path, images):
    torch.manual_seed(0)
    model = ViTModel(ViTConfig(**TINY_VIT)).eval()  # with pooler weights: rule 3, pooler_output
    model.save_pretrained(tmp_path / "vit")
    CLIPImageProcessorPil(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56}).save_pretrained(
        tmp_path / "vit"
    )
    encoder = load_encoder(f"hf:{tmp_path / 'vit'}", device="cpu")
    pixels = encoder.preprocess(images)
    with torch.no_grad():
        expected = F.normalize(model(pixel_values=pixels).pooler_output, dim=-1)
    torch.testing.assert_close(nearid.embed(encoder, images), expected)
    assert not torch.allclose(expected, _cls(model, pixels), atol=1e-3)


def test_clip_i_is_get_image_features_with_openai_clip_preprocessing(tmp_path, images):
    """DreamBooth's CLIP-I is OpenAI CLIP's image features with ``clip.load``'s preprocessing:
    Resize(n, BICUBIC) of the shorter side, CenterCrop(n) with torchvision's rounded offset, ToTensor,
    CLIP's mean/std. The 56x45 image resizes to 39x32: margin 7, offset round(3.5) = 4 where the
    checkpoint's CLIPImageProcessor floors it to 3."""
    torch.manual_seed(0)
    vision = dict(TINY_VIT, image_size=32, projection_dim=24)
    model = CLIPModel(CLIPConfig(text_config=SMALL_TEXT, vision_config=vision, projection_dim=24)).eval()
    model.save_pretrained(tmp_path / "clip")
    save_clip_processor(tmp_path / "clip")
    encoder = load_encoder(f"clip-i:{tmp_path / 'clip'}", device="cpu")
    assert encoder.dim == 24 and encoder.name.startswith("clip-i:")
    pixels = dino_pixels(images, 32, 32, mean=CLIP_MEAN, std=CLIP_STD)
    torch.testing.assert_close(encoder.preprocess(images), pixels, rtol=0, atol=1e-5)
    checkpoints = CLIPImageProcessorPil.from_pretrained(tmp_path / "clip")(
        images=[Image.open(p).convert("RGB") for p in images], return_tensors="pt"
    )["pixel_values"]
    assert not torch.allclose(checkpoints[:1], pixels[:1], atol=1e-3)  # one pixel off for this aspect ratio
    with torch.no_grad():
        features = model.get_image_features(pixel_values=pixels)
        features = features if isinstance(features, torch.Tensor) else features.pooler_output
    torch.testing.assert_close(nearid.embed(encoder, images), F.normalize(features, dim=-1))


def test_dinov3_is_the_final_norm_cls_token(tmp_path, images):
    torch.manual_seed(0)
    config = DINOv3ViTConfig(
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        num_register_tokens=2,
    )
    model = DINOv3ViTModel(config).eval()
    model.save_pretrained(tmp_path / "dinov3")
    (tmp_path / "dinov3" / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "DINOv3ViTImageProcessorFast",
                "size": {"height": 32, "width": 32},
                "resample": 2,
                "image_mean": list(IMAGENET_MEAN),
                "image_std": list(IMAGENET_STD),
            }
        )
    )
    encoder = load_encoder(f"dinov3:{tmp_path / 'dinov3'}", device="cpu")
    assert encoder.dim == 32
    square = torch.stack(
        [
            torch.from_numpy(
                (
                    (
                        np.asarray(
                            Image.open(p).convert("RGB").resize((32, 32), Image.Resampling.BILINEAR), dtype=np.float64
                        )
                        / 255.0
                        - IMAGENET_MEAN
                    )
                    / IMAGENET_STD
                )
                .transpose(2, 0, 1)
                .astype(np.float32)
            )
            for p in images
        ]
    )
    torch.testing.assert_close(encoder.preprocess(images), square, rtol=0, atol=1e-5)
    with torch.no_grad():
        out = model(pixel_values=square)
    torch.testing.assert_close(out.pooler_output, out.last_hidden_state[:, 0])  # DINOv3's pooler = CLS token
    torch.testing.assert_close(nearid.embed(encoder, images), F.normalize(out.last_hidden_state[:, 0], dim=-1))


@pytest.mark.parametrize(
    "family, default",
    [
        ("clip-i", "openai/clip-vit-base-patch32"),
        ("dino-i", "facebook/dino-vits16"),
        ("dinov3", "facebook/dinov3-vitl16-pretrain-lvd1689m"),
    ],
)
def test_default_hub_ids_fail_fast_offline(family, default):
    assert parse_encoder_spec(family).argument == default
    with pytest.raises(ModelNotAvailableError, match="not on this machine"):
        load_encoder(family, device="cpu")
