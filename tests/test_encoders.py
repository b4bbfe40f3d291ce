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
from nearid.io.errors import EncoderSpecError, ModelNotAvailableError, UnsafeCheckpointError
from nearid.models.encoders import Encoder, generic_readout, load_encoder
from nearid.models.nearid_model import NearIDConfig, NearIDModel
from tests.tiny_clip import CLIP_MEAN, CLIP_STD, save_clip_processor

from .conftest import save_processor, small_siglip_config

# The preprocessing each tiny checkpoint declares, written out here so that the expected pixels below are
# computed from these numbers with PIL + numpy, never by the processor under test.
HALF = (0.5, 0.5, 0.5)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

SMALL_TEXT = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=4)
SMALL_VIT = dict(
    hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8
)


def _seeded(build):
    torch.manual_seed(0)
    return build().eval()


@pytest.fixture
def siglip_dir(tmp_path):
    """A full SigLIP checkpoint (text + vision), as google/siglip2-so400m-patch14-384 is."""
    model = _seeded(
        lambda: SiglipModel(SiglipConfig(text_config=SMALL_TEXT, vision_config=small_siglip_config().to_dict()))
    )
    model.save_pretrained(tmp_path / "siglip")
    save_processor(tmp_path / "siglip", 32)
    return tmp_path / "siglip", model


@pytest.fixture
def clip_dir(tmp_path):
    vision = dict(SMALL_VIT, projection_dim=24)  # real CLIP configs repeat projection_dim in vision_config
    model = _seeded(lambda: CLIPModel(CLIPConfig(text_config=SMALL_TEXT, vision_config=vision, projection_dim=24)))
    model.save_pretrained(tmp_path / "clip")
    save_clip_processor(tmp_path / "clip")
    return tmp_path / "clip", model


@pytest.fixture
def dinov2_dir(tmp_path):
    model = _seeded(lambda: Dinov2Model(Dinov2Config(**SMALL_VIT)))
    model.save_pretrained(tmp_path / "dinov2")
    processor = BitImageProcessorPil(
        size={"shortest_edge": 36},
        crop_size={"height": 32, "width": 32},
        resample=Image.Resampling.BICUBIC,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
    )
    processor.save_pretrained(tmp_path / "dinov2")
    return tmp_path / "dinov2", model


def _normalised(image: Image.Image, mean, std) -> torch.Tensor:
    """x / 255, then (x - mean) / std per channel, as ``[3, H, W]``."""
    array = np.asarray(image, dtype=np.float64) / 255.0
    array = (array - np.asarray(mean)) / np.asarray(std)
    return torch.from_numpy(array.transpose(2, 0, 1).astype(np.float32))


def square_pixels(paths, size: int, mean, std, resample=Image.Resampling.BILINEAR) -> torch.Tensor:
    """SigLIP / ViT preprocessing by hand: squash to ``size`` x ``size``, rescale, normalise."""
    return torch.stack(
        [_normalised(Image.open(p).convert("RGB").resize((size, size), resample), mean, std) for p in paths]
    )


def crop_pixels(paths, shortest: int, crop: int, mean, std, resample=Image.Resampling.BICUBIC) -> torch.Tensor:
    """CLIP / DINOv2 preprocessing by hand: shortest side to ``shortest`` (aspect kept, long side
    truncated), centre crop ``crop`` x ``crop``, rescale, normalise."""
    rows = []
    for path in paths:
        image = Image.open(path).convert("RGB")
        w, h = image.size
        size = (int(shortest * w / h), shortest) if w >= h else (shortest, int(shortest * h / w))
        image = image.resize(size, resample)
        left, top = (size[0] - crop) // 2, (size[1] - crop) // 2
        rows.append(_normalised(image.crop((left, top, left + crop, top + crop)), mean, std))
    return torch.stack(rows)


def _reference(pixels, forward):
    with torch.no_grad():
        return F.normalize(forward(pixels), dim=-1)


def test_reference_preprocessing_is_not_trivially_satisfied(rgb_images):
    """The hand-made references differ from each other, so matching one of them means something."""
    siglip = square_pixels(rgb_images, 32, HALF, HALF)
    assert siglip.shape == (3, 3, 32, 32) and siglip.min() >= -1 and siglip.max() <= 1
    assert not torch.allclose(siglip, square_pixels(rgb_images, 32, HALF, HALF, Image.Resampling.BICUBIC), atol=1e-3)
    assert not torch.allclose(siglip, square_pixels(rgb_images, 32, IMAGENET_MEAN, IMAGENET_STD), atol=1e-3)
    assert not torch.allclose(
        crop_pixels(rgb_images, 32, 32, CLIP_MEAN, CLIP_STD),
        crop_pixels(rgb_images, 36, 32, CLIP_MEAN, CLIP_STD),
        atol=1e-3,
    )


def test_siglip2_map_is_the_pretrained_head(siglip_dir, rgb_images):
    folder, model = siglip_dir
    encoder = load_encoder(f"siglip2-map:{folder}", device="cpu")
    assert isinstance(encoder, Encoder) and encoder.dim == 32
    pixels = square_pixels(rgb_images, 32, HALF, HALF)  # the checkpoint's preprocessor_config.json
    torch.testing.assert_close(encoder.preprocess(rgb_images), pixels, rtol=0, atol=1e-5)
    expected = _reference(pixels, lambda x: model.get_image_features(pixel_values=x).pooler_output)
    torch.testing.assert_close(nearid.embed(encoder, rgb_images), expected)


def test_siglip2_mean_averages_post_ln_tokens(siglip_dir, rgb_images):
    folder, model = siglip_dir
    encoder = load_encoder(f"siglip2-mean:{folder}", device="cpu")
    pixels = square_pixels(rgb_images, 32, HALF, HALF)
    expected = _reference(pixels, lambda x: model.vision_model(pixel_values=x).last_hidden_state.mean(1))
    torch.testing.assert_close(nearid.embed(encoder, rgb_images), expected)


def test_clip_is_the_projected_cls(clip_dir, rgb_images):
    folder, model = clip_dir
    encoder = load_encoder(f"clip:{folder}", device="cpu")
    assert encoder.dim == 24
    pixels = crop_pixels(rgb_images, 32, 32, CLIP_MEAN, CLIP_STD)
    torch.testing.assert_close(encoder.preprocess(rgb_images), pixels, rtol=0, atol=1e-5)
    expected = _reference(pixels, lambda x: model.get_image_features(pixel_values=x).pooler_output)
    torch.testing.assert_close(nearid.embed(encoder, rgb_images), expected)


def test_dinov2_is_the_pooler_output(dinov2_dir, rgb_images):
    folder, model = dinov2_dir
    encoder = load_encoder(f"dinov2:{folder}", device="cpu")
    pixels = crop_pixels(rgb_images, 36, 32, IMAGENET_MEAN, IMAGENET_STD)  # the checkpoint's, not the 256/224 default
    torch.testing.assert_close(encoder.preprocess(rgb_images), pixels, rtol=0, atol=1e-5)
    expected = _reference(pixels, lambda x: model(pixel_values=x).pooler_output)
    torch.testing.assert_close(nearid.embed(encoder, rgb_images), expected)


def test_hf_generic_uses_get_image_features_then_pooler(clip_dir, dinov2_dir, rgb_images):
    clip_folder, _clip_model = clip_dir
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
    processor = ViTImageProcessorPil(
        size={"height": 32, "width": 32},
        resample=Image.Resampling.BILINEAR,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
    )
    processor.save_pretrained(tmp_path / "vit")
    encoder = load_encoder(f"hf:{tmp_path / 'vit'}", device="cpu")
    assert encoder.dim == 32  # learned by probing: the rule does not know ViT's width in advance
    expected = _reference(
        square_pixels(rgb_images, 32, IMAGENET_MEAN, IMAGENET_STD), lambda x: model(pixel_values=x).pooler_output
    )
    torch.testing.assert_close(nearid.embed(encoder, rgb_images), expected)


def test_generic_readout_falls_back_to_token_and_map_means():
    tokens = torch.arange(24.0).reshape(1, 4, 6)
    fmap = torch.arange(16.0).reshape(1, 4, 2, 2)
    for hidden, expected in ((tokens, tokens.mean(1)), (fmap, fmap.mean((2, 3)))):
        stub = lambda pixel_values, hidden=hidden: SimpleNamespace(last_hidden_state=hidden, pooler_output=None)
        torch.testing.assert_close(generic_readout(stub, None), expected)


def test_nearid_on_our_own_checkpoint(tmp_path, rgb_images):
    model = _seeded(lambda: NearIDModel(NearIDConfig(vision_config=small_siglip_config())))
    model.save_pretrained(tmp_path / "ours")
    encoder = load_encoder(f"nearid:{tmp_path / 'ours'}", device="cpu")  # no processor file: SigLIP defaults
    expected = _reference(square_pixels(rgb_images, 32, HALF, HALF), lambda x: model.get_image_features(x))
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
    with pytest.raises(
        ModelNotAvailableError,
        match=r"broken_clip': not a CLIPVisionModelWithProjection checkpoint \(weights of the wrong shape\)",
    ):
        load_encoder(f"clip:{broken}", device="cpu")  # shape mismatch: transformers would re-initialise silently
    with pytest.raises(
        ModelNotAvailableError, match=r"not a NearIDModel checkpoint \(\d+ weights missing, e\.g\. backbone\."
    ):
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
    with pytest.raises(
        UnsafeCheckpointError, match=r"holds only pickled weights \(pytorch_model\.bin\).*--allow-pickle"
    ):
        load_encoder(f"nearid:{folder}", device="cpu")
    encoder = load_encoder(f"nearid:{folder}", device="cpu", allow_pickle=True)
    expected = _reference(square_pixels(rgb_images, 32, HALF, HALF), lambda x: model.get_image_features(x))
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


def test_masks_black_out_the_background_before_resizing(rgb_images, tmp_path):
    """The paper masks the full-resolution image, then preprocesses; masking after resizing would blur
    the silhouette's edge into the background."""
    mask = np.zeros((40, 48), dtype=np.uint8)
    mask[5:27, 9:33] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    encoder = load_encoder("tiny", device="cpu")  # SigLIP preprocessing at the tiny model's 64 px
    by_hand = []
    for path in rgb_images:
        cut = np.where(mask[..., None] > 0, np.asarray(Image.open(path).convert("RGB")), 0).astype(np.uint8)
        by_hand.append(_normalised(Image.fromarray(cut).resize((64, 64), Image.Resampling.BILINEAR), HALF, HALF))
    expected = torch.stack(by_hand)
    got = encoder.preprocess(rgb_images, [tmp_path / "mask.png"] * 3)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    resized_mask = torch.from_numpy(np.asarray(Image.fromarray(mask).resize((64, 64), Image.Resampling.NEAREST)) > 0)
    masked_after = torch.where(resized_mask, square_pixels(rgb_images, 64, HALF, HALF), torch.tensor(-1.0))
    assert (got - masked_after).abs().max() > 0.05  # the other order is distinguishable


# ------------------------------------------------------------------------------- specs and backbones
def test_backbone_specs_parse_in_one_place():
    from nearid.models.specs import DEFAULT_BACKBONE, RELEASE_MODEL, BackboneSpec, parse_backbone, parse_encoder_spec

    assert parse_backbone("tiny") == BackboneSpec("tiny", "0") and parse_backbone("tiny:7").seed == 7
    assert parse_backbone("nearid") == BackboneSpec("nearid", RELEASE_MODEL)
    assert parse_backbone("nearid:runs/x/model") == BackboneSpec("nearid", "runs/x/model")
    assert parse_backbone(DEFAULT_BACKBONE) == BackboneSpec("siglip", DEFAULT_BACKBONE)
    for folder in ("tinyvit/model", "nearid_runs/model", "./tiny"):  # names that only start like a family
        assert parse_backbone(folder) == BackboneSpec("siglip", folder)
    with pytest.raises(EncoderSpecError, match=r"tiny encoder takes an integer seed, got 'x'"):
        parse_backbone("tiny:x")
    assert parse_encoder_spec("siglip2-mean").argument == DEFAULT_BACKBONE
    assert str(parse_encoder_spec("clip:some/where")) == "clip:some/where"


def test_load_backbone_from_a_siglip_checkpoint(siglip_dir, rgb_images):
    """One factory: the SigLIP tower with its pretrained head as NearID's head, the checkpoint's processor."""
    from nearid.models.backbones import load_backbone
    from nearid.models.encoders import nearid_encoder

    folder, siglip = siglip_dir
    model, processor = load_backbone(str(folder))
    assert isinstance(model, NearIDModel) and model.dtype == torch.float32
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        n for n, _ in model.named_parameters() if n.startswith("backbone.head.")
    ]
    pixels = square_pixels(rgb_images, 32, HALF, HALF)
    torch.testing.assert_close(
        processor(images=[Image.open(p).convert("RGB") for p in rgb_images], return_tensors="pt")["pixel_values"],
        pixels,
        rtol=0,
        atol=1e-5,
    )
    with torch.no_grad():
        torch.testing.assert_close(
            model.get_image_features(pixels, normalize=False),
            siglip.get_image_features(pixel_values=pixels).pooler_output,
        )
    # the siglip2-map encoder is a readout of the very same model
    by_factory = nearid.embed(nearid_encoder(model, processor, name="x", device="cpu"), rgb_images)
    torch.testing.assert_close(
        nearid.embed(load_encoder(f"siglip2-map:{folder}", device="cpu"), rgb_images), by_factory
    )


def test_load_backbone_is_strict_and_offline_safe(clip_dir):
    from nearid.models.backbones import load_backbone

    folder, _ = clip_dir
    with pytest.raises(ModelNotAvailableError, match=r"not a NearIDModel checkpoint \(\d+ weights missing"):
        load_backbone(f"nearid:{folder}")
    with pytest.raises(ModelNotAvailableError, match=r"not a SiglipVisionModel checkpoint"):
        load_backbone(str(folder))  # a CLIP folder is no SigLIP backbone: no silent random tower
    with pytest.raises(
        ModelNotAvailableError, match=r"google/siglip2-so400m-patch14-384.*not on this machine.*--local-dir"
    ):
        load_backbone("google/siglip2-so400m-patch14-384")


def test_tiny_backbone_is_the_tiny_encoder(rgb_images):
    from nearid.models.backbones import load_backbone
    from nearid.models.encoders import nearid_encoder

    model, processor = load_backbone("tiny:3")
    assert processor.size == {"height": 64, "width": 64}
    torch.testing.assert_close(
        nearid.embed(nearid_encoder(model, processor, name="t", device="cpu"), rgb_images),
        nearid.embed(load_encoder("tiny:3", device="cpu"), rgb_images),
        rtol=0,
        atol=0,
    )


def _imported_modules(code: str) -> set[str]:
    """The top-level modules a fresh interpreter has imported after running ``code`` (which prints)."""
    import subprocess
    import sys

    probe = code + "\nimport sys\nprint('MODULES', ' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return set(done.stdout.split("MODULES", 1)[1].split())


def test_specs_and_the_encoders_command_import_no_torch():
    """``specs`` and the CLI's ``encoders`` command need neither torch nor transformers. The package's
    ``__init__`` is bypassed here (a bare package object), so this holds whatever it imports."""
    from pathlib import Path

    package = Path(nearid.__file__).parent
    code = (
        "import sys, types\n"
        f"package = types.ModuleType('nearid'); package.__path__ = [{str(package)!r}]; sys.modules['nearid'] = package\n"
        "from nearid.models.specs import available_encoders, parse_backbone, parse_encoder_spec\n"
        "from nearid.cli.app import cmd_encoders\n"
        "cmd_encoders(None)\n"
        "parse_backbone('tiny:1'); parse_encoder_spec('clip')\n"
    )
    modules = _imported_modules(code)
    assert "torch" not in modules and "transformers" not in modules


def test_nearid_encoders_command_imports_no_torch():
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "nearid", "encoders"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "siglip2-map[:google/siglip2-so400m-patch14-384]" in done.stdout
    imported = {
        line.rsplit("|", 1)[-1].strip().split(".")[0]
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "nearid" in imported  # the probe sees the package's own imports
    assert "torch" not in imported and "transformers" not in imported


def test_auto_dtype_is_fp16_on_cuda_for_every_family_the_authors_ran(monkeypatch):
    """The authors evaluated every embedding baseline in fp16: NearID, SigLIP2, CLIP, DINOv2 (spec 12.10);
    families they did not run keep bf16; the CPU fp32."""
    from nearid.models.encoders import resolve_dtype

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    authors = ("nearid", "siglip2-map", "siglip2-mean", "clip", "dinov2", "tiny", None)  # None: a NearID model
    for family in authors:
        assert resolve_dtype("auto", cuda, family) == torch.float16
        assert resolve_dtype("auto", cpu, family) == torch.float32
    assert resolve_dtype("auto", cuda, "dinov3") == resolve_dtype(None, cuda, "hf") == torch.bfloat16
    assert (
        resolve_dtype("bf16", cuda, "nearid") == torch.bfloat16 and resolve_dtype("fp32", cuda, "clip") == torch.float32
    )
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_dtype("auto", cuda, "dinov3") == torch.float32


def test_a_non_finite_embedding_is_a_one_line_error_not_a_silent_nan():
    """fp16 can overflow: an embedding with inf or NaN stops with the fix (another dtype), never a NaN score."""
    from nearid.io.errors import NearIDError
    from nearid.models.encoders import TransformersEncoder

    def overflowing(model, pixels):
        out = torch.ones(len(pixels), 4)
        out[-1, 2] = float("inf")
        return out

    encoder = TransformersEncoder(
        "clip", torch.nn.Identity(), None, overflowing, device="cpu", dtype=torch.float32, dim=4
    )
    with pytest.raises(NearIDError, match=r"clip.*non-finite.*1 of 3.*--dtype fp32"):
        encoder.embed(torch.zeros(3, 3, 8, 8))
    fine = TransformersEncoder(
        "clip", torch.nn.Identity(), None, lambda m, x: torch.ones(len(x), 4), device="cpu", dtype=torch.float32, dim=4
    )
    assert torch.equal(fine.embed(torch.zeros(2, 3, 8, 8)), torch.full((2, 4), 0.5))
