"""``nearid.reward.IdentityReward``: gradients that match finite differences, values that match the
encoder's own similarity, frozen weights, and one-line refusals (tiny NearID and a tiny CLIP from a config)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

import nearid
from nearid.images.processors import DinoEvalProcessor
from nearid.images.tensor_preprocess import TensorPreprocess
from nearid.io.errors import NearIDError
from nearid.models.differentiable import NotDifferentiableError, checkpointed
from nearid.models.encoders import load_encoder
from tests.tiny_clip import save_clip_processor


@pytest.fixture
def clip_folder(tmp_path):
    """A tiny CLIP vision checkpoint with a shortest-edge-32, bicubic, centre-crop-32 processor."""
    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8
    )
    config.projection_dim = 24
    CLIPVisionModelWithProjection(config).eval().save_pretrained(tmp_path / "clip")
    save_clip_processor(tmp_path / "clip")
    return tmp_path / "clip"


def _encoder(kind: str, clip_folder=None, dtype=torch.float32):
    spec = "tiny" if kind == "tiny" else f"clip:{clip_folder}"
    return load_encoder(spec, device="cpu", dtype=dtype)


def _picture(seed: int, width: int, height: int) -> Image.Image:
    """Smooth random colours (upsampled noise) plus a square: something an encoder tells apart."""
    rng = np.random.default_rng(seed)
    coarse = (rng.random((max(2, height // 8), max(2, width // 8), 3)) * 255).astype(np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    image.paste(tuple(int(v) for v in rng.integers(0, 255, 3)), (width // 4, height // 4, width // 2, height // 2))
    return image


def _tensor(image: Image.Image, value_range: str = "0-1") -> torch.Tensor:
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].double() / 255
    return (x if value_range == "0-1" else x * 2 - 1).float()


def test_public_paths_import():
    module = importlib.import_module("nearid.reward")
    from nearid.reward import IdentityReward as short

    from nearid.models.reward import IdentityReward

    assert (
        short is IdentityReward and module.IdentityReward is IdentityReward and nearid.IdentityReward is IdentityReward
    )
    assert "Public short path" in module.__doc__
    assert "nearid.reward" not in nearid.OLD_PATHS  # old paths stay old paths
    # a fresh interpreter: the attribute works without importing the path first
    code = "import nearid; print(nearid.reward.IdentityReward.__module__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "nearid.models.reward"


@pytest.mark.parametrize("kind", ["tiny", "clip"])
def test_gradient_matches_finite_differences(kind, clip_folder):
    """float64 model, a small input that is resized (and for CLIP cropped) to the model's size."""
    encoder = _encoder(kind, clip_folder, dtype=torch.float64)
    reward = nearid.reward.IdentityReward(encoder, [_picture(1, 40, 30)], value_range="0-1")
    x = 0.2 + 0.6 * torch.rand(1, 3, 6, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda pixels: reward(pixels), (x,), eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("kind", ["tiny", "clip"])
@pytest.mark.parametrize("value_range", ["0-1", "-1-1"])
def test_reward_equals_the_encoders_similarity_at_model_size(kind, value_range, clip_folder, tmp_path):
    """No resize: the reward on a tensor is nearid.similarity of the same pixels saved as PNG (<= 1e-5)."""
    encoder = _encoder(kind, clip_folder)
    size = 64 if kind == "tiny" else 32
    references = [_picture(10, 50, 40), _picture(11, 30, 30)]
    generated = [_picture(20, size, size), _picture(21, size, size)]
    files = []
    for i, image in enumerate(generated):
        image.save(tmp_path / f"gen{i}.png")
        files.append(tmp_path / f"gen{i}.png")
    expected = nearid.similarity(nearid.embed(encoder, files), nearid.embed(encoder, references))
    reward = nearid.reward.IdentityReward(encoder, references, value_range=value_range)
    images = torch.cat([_tensor(image, value_range) for image in generated])
    assert torch.allclose(reward.similarities(images), expected, atol=1e-5, rtol=0)
    assert torch.allclose(reward(images), expected.mean(dim=1), atol=1e-5, rtol=0)
    chosen = reward(images, reference_index=torch.tensor([1, 0]))
    assert torch.allclose(chosen, torch.stack([expected[0, 1], expected[1, 0]]), atol=1e-5, rtol=0)
    assert not torch.allclose(expected[:, 0], expected[:, 1], atol=1e-3)  # the references are told apart


def test_a_tensor_reference_scores_one_against_itself():
    encoder = _encoder("tiny")
    image = _tensor(_picture(3, 90, 70))
    reward = nearid.reward.IdentityReward(encoder, image, value_range="0-1")
    assert abs(float(reward(image)) - 1.0) < 1e-6


@pytest.mark.parametrize("kind", ["tiny", "clip"])
def test_weights_are_frozen_and_only_the_input_gets_a_gradient(kind, clip_folder):
    encoder = _encoder(kind, clip_folder)
    reward = nearid.reward.IdentityReward(encoder, [_picture(1, 40, 40)], value_range="-1-1")
    assert list(reward.parameters()) == []
    x = (torch.rand(2, 3, 48, 40, generator=torch.Generator().manual_seed(1)) * 2 - 1).requires_grad_(True)
    reward(x).sum().backward()
    assert all(not p.requires_grad and p.grad is None for p in encoder.model.parameters())
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_reference_masks_mask_only_the_references_and_forward_masks_the_generated(tmp_path):
    """Reference masks black out the references' background (as nearid.embed does); a generated image
    is masked only by the masks given to forward."""
    encoder = _encoder("tiny")
    reference, generated = _picture(5, 64, 48), _picture(6, 64, 64)
    ref_mask = np.zeros((48, 64), dtype=np.uint8)
    ref_mask[10:40, 8:50] = 255
    gen_mask = np.zeros((64, 64), dtype=bool)
    gen_mask[16:60, 4:44] = True
    generated.save(tmp_path / "gen.png")
    Image.fromarray(gen_mask.astype(np.uint8) * 255).save(tmp_path / "gen_mask.png")
    ref_vector = nearid.embed(encoder, [reference], [ref_mask])
    plain = nearid.similarity(nearid.embed(encoder, [tmp_path / "gen.png"]), ref_vector)
    masked = nearid.similarity(nearid.embed(encoder, [tmp_path / "gen.png"], [tmp_path / "gen_mask.png"]), ref_vector)
    reward = nearid.reward.IdentityReward(encoder, [reference], masks=[ref_mask], value_range="0-1")
    image = _tensor(generated)
    assert abs(float(reward(image)) - float(plain)) < 1e-5
    assert abs(float(reward(image, masks=torch.from_numpy(gen_mask)[None])) - float(masked)) < 1e-5
    assert abs(float(plain) - float(masked)) > 1e-3  # the generated mask changes the score


def test_gradient_checkpointing_recomputes_and_gives_the_same_gradient():
    encoder = _encoder("tiny")
    reward = nearid.reward.IdentityReward(encoder, [_picture(1, 64, 64)], value_range="0-1")
    checkpointing = nearid.reward.IdentityReward(
        encoder, [_picture(1, 64, 64)], value_range="0-1", gradient_checkpointing=True
    )
    layer = encoder.model.backbone.encoder.layers[0]
    calls = []
    hook = layer.layer_norm1.register_forward_pre_hook(lambda *_: calls.append(1))
    grads = []
    try:
        for module in (reward, checkpointing):
            calls.clear()
            x = torch.rand(1, 3, 80, 80, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
            module(x).sum().backward()
            grads.append((x.grad, len(calls)))
    finally:
        hook.remove()
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-6)
    assert (grads[0][1], grads[1][1]) == (1, 2)  # the checkpointed block ran again in the backward pass
    assert layer.training is False and "gradient_checkpointing" not in layer.__dict__  # state restored
    with checkpointed(encoder.model) as count:
        assert count == 2  # both blocks of the tiny trunk


@pytest.mark.parametrize(
    ("value_range", "values", "message"),
    [
        ("0-1", torch.full((1, 3, 8, 8), 1.01), "span"),
        ("0-1", torch.full((1, 3, 8, 8), -0.5), "span"),
        ("-1-1", torch.full((1, 3, 8, 8), -1.5), "span"),
        ("0-1", torch.full((1, 3, 8, 8), float("nan")), "NaN"),
        ("0-1", torch.zeros(3, 8, 8), "[B, 3, H, W]"),
        ("0-1", torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "dtype"),
    ],
)
def test_bad_pixels_are_refused_in_one_line(value_range, values, message):
    reward = nearid.reward.IdentityReward(_encoder("tiny"), [_picture(1, 32, 32)], value_range=value_range)
    with pytest.raises(NearIDError, match=message.replace("[", r"\[").replace("]", r"\]")) as error:
        reward(values)
    assert "\n" not in str(error.value)


def test_bad_arguments_are_refused():
    encoder = _encoder("tiny")
    with pytest.raises(NearIDError, match="value_range='0-255'"):
        nearid.reward.IdentityReward(encoder, [_picture(1, 32, 32)], value_range="0-255")
    with pytest.raises(TypeError):  # the range is never guessed
        nearid.reward.IdentityReward(encoder, [_picture(1, 32, 32)])
    with pytest.raises(NearIDError, match="2 references but 1 masks"):
        nearid.reward.IdentityReward(encoder, [_picture(1, 32, 32)] * 2, masks=[None], value_range="0-1")
    with pytest.raises(NotDifferentiableError, match="histogram:8"):
        nearid.reward.IdentityReward(load_encoder("histogram"), [_picture(1, 32, 32)], value_range="0-1")
    reward = nearid.reward.IdentityReward(encoder, [_picture(1, 32, 32)], value_range="0-1")
    with pytest.raises(NearIDError, match="mask is empty"):
        reward(torch.rand(1, 3, 16, 16), masks=torch.zeros(1, 16, 16))
    with pytest.raises(NearIDError, match="mask is 8x8 but its image is 16x16"):
        reward(torch.rand(1, 3, 16, 16), masks=torch.ones(1, 8, 8))
    with pytest.raises(NearIDError, match="reference_index"):
        reward(torch.rand(2, 3, 16, 16), reference_index=torch.tensor([0, 1]))


def _pil_processed(processor, image: Image.Image) -> torch.Tensor:
    return processor(images=[image], return_tensors="pt")["pixel_values"].double()


@pytest.mark.parametrize(
    ("processor", "size"),
    [
        ("siglip", (90, 130)),  # square squash, bilinear
        ("clip", (70, 50)),  # shortest edge + centre crop, bicubic
        ("dino", (77, 100)),  # DINO's recipe: torchvision's crop rounding
    ],
)
def test_torch_preprocessing_follows_the_pil_processor(processor, size, clip_folder):
    """Same crop box and filter: per pixel within ~1.5 levels of 255 (PIL rounds to 8 bits twice)."""
    from nearid.images.processors import load_processor, siglip_processor, split_processor

    built = {
        "siglip": lambda: siglip_processor(32),
        "clip": lambda: load_processor(clip_folder),
        "dino": lambda: DinoEvalProcessor(resize=40, crop=32),
    }[processor]()
    split = split_processor(built)
    preprocess = TensorPreprocess.of(split)
    stark = Image.new("RGB", size, (0, 0, 0))  # saturated sharp edges: where bicubic overshoots and PIL clips
    stark.paste((255, 255, 255), (size[0] // 3, size[1] // 3, 2 * size[0] // 3, 2 * size[1] // 3))
    scale = torch.tensor(preprocess.scale, dtype=torch.float64).view(1, 3, 1, 1)
    for image in (_picture(7, *size), stark):
        expected = _pil_processed(built, image)
        got = preprocess(_tensor(image).double())
        difference = ((got - expected) / scale).abs() * 255  # in 8-bit levels
        assert got.shape == expected.shape
        assert float(difference.max()) < 2.0 and float(difference.mean()) < 0.6
    # a crop one pixel off would be visible: shifting the PIL output by one column exceeds the bound
    shifted = ((got[..., 1:] - expected[..., :-1]) / scale).abs() * 255
    assert float(shifted.mean()) > float(difference.mean()) * 2


def _save_vit_family(kind: str, folder):
    """Tiny checkpoints of the other families, each with its processor: DINOv2 (shortest edge 36, crop
    32, bicubic), DINO (dino-i: no pooler, DINO's own eval recipe) and a SigLIP tower (siglip2-mean)."""
    from transformers import BitImageProcessorPil, Dinov2Config, Dinov2Model, SiglipVisionModel, ViTConfig, ViTModel

    from .conftest import save_processor, small_siglip_config

    torch.manual_seed(0)
    small = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, image_size=32)
    if kind == "dinov2":
        Dinov2Model(Dinov2Config(**small, patch_size=8)).eval().save_pretrained(folder)
        BitImageProcessorPil(
            size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32}, resample=Image.Resampling.BICUBIC
        ).save_pretrained(folder)
    elif kind == "dino-i":
        ViTModel(ViTConfig(**small, patch_size=8), add_pooling_layer=False).eval().save_pretrained(folder)
    else:
        SiglipVisionModel(small_siglip_config()).eval().save_pretrained(folder)
        save_processor(folder, 32)
    return {"dinov2": "dinov2", "dino-i": "dino-i", "siglip2-mean": "siglip2-mean"}[kind] + f":{folder}"


@pytest.mark.parametrize(("kind", "native"), [("dinov2", 36), ("dino-i", 37), ("siglip2-mean", 32)])
def test_other_families_equal_their_similarity_at_native_size(kind, native, tmp_path):
    """DINOv2, DINO (dino-i) and the token-mean read-out: at the size the processor resizes to (only the
    crop left) the reward equals nearid.similarity of the PNG (<= 1e-5); a 56x48 input, resized, stays
    within PIL's 8-bit rounding of it; the gradient reaches the pixels."""
    encoder = load_encoder(_save_vit_family(kind, tmp_path / kind), device="cpu")
    reference = _picture(30, 40, 50)
    reward = nearid.reward.IdentityReward(encoder, [reference], value_range="0-1")
    for generated, tolerance in ((_picture(31, native, native), 1e-5), (_picture(32, 56, 48), 5e-3)):
        generated.save(tmp_path / "gen.png")
        expected = nearid.similarity(nearid.embed(encoder, [tmp_path / "gen.png"]), reward.reference_embeddings)
        image = _tensor(generated).requires_grad_(True)
        value = reward(image)
        value.sum().backward()
        assert abs(float(value.detach()) - float(expected)) <= tolerance
        assert float(image.grad.abs().sum()) > 0
