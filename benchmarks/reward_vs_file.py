"""How far is the identity reward on a tensor from ``nearid.similarity`` of the same image saved as PNG?

The reward reproduces the encoder's preprocessing in torch (:mod:`nearid.images.tensor_preprocess`);
the file path decodes 8-bit pixels and runs the checkpoint's PIL processor. The two differ only in the
resize (PIL rounds to 8 bits after each pass; the filters are the same). This prints, for square
inputs of 256, 512 and 1024 px made from scikit-image's bundled photographs (no download; procedural
images when scikit-image is missing):

1. the preprocessed pixels, torch vs PIL, in 8-bit levels (max / mean |difference| per pixel), for
   SigLIP2-so400m's preprocessing (384 px, bilinear) -- the model NearID uses -- and CLIP's
   (224 px shortest side, bicubic, centre crop);
2. |reward - similarity| (max / mean over the images, against one reference photograph) on the tiny
   NearID model (64 px) and, with ``--so400m``, on a SigLIP2-so400m-sized NearID model with random
   weights (428 M parameters; a few minutes on a CPU).

    python benchmarks/reward_vs_file.py [--so400m]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import nearid
from nearid.images.processors import clip_processor, siglip_processor, split_processor
from nearid.images.tensor_preprocess import TensorPreprocess

SIZES = (256, 512, 1024)


def photographs() -> list[Image.Image]:
    """Four photographs bundled with scikit-image (or four procedural images without it)."""
    try:
        import skimage.data as data

        return [
            Image.fromarray(getattr(data, name)()).convert("RGB")
            for name in ("astronaut", "coffee", "chelsea", "rocket")
        ]
    except ImportError:
        rng = np.random.default_rng(0)
        return [
            Image.fromarray((rng.random((48, 64, 3)) * 255).astype(np.uint8)).resize(
                (640, 480), Image.Resampling.BICUBIC
            )
            for _ in range(4)
        ]


def square(image: Image.Image, size: int) -> Image.Image:
    """The central square of ``image`` at ``size`` x ``size`` (what a generator would output)."""
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)


def as_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255


def pixel_difference(processor, images: list[Image.Image]) -> tuple[float, float]:
    """max / mean |torch - PIL| over every preprocessed pixel, in 8-bit levels."""
    preprocess = TensorPreprocess.of(split_processor(processor))
    scale = torch.tensor(preprocess.scale, dtype=torch.float64).view(1, 3, 1, 1)
    worst, means = 0.0, []
    for image in images:
        expected = processor(images=[image], return_tensors="pt")["pixel_values"].double()
        got = preprocess(as_tensor(image).double())
        difference = ((got - expected) / scale).abs() * 255
        worst, means = max(worst, float(difference.max())), [*means, float(difference.mean())]
    return worst, float(np.mean(means))


def reward_difference(encoder, reference: Image.Image, images: list[Image.Image], folder: Path) -> tuple[float, float]:
    """max / mean |IdentityReward(tensor) - nearid.similarity(PNG file)| over ``images``."""
    reward = nearid.reward.IdentityReward(encoder, [reference], value_range="0-1")
    files = []
    for i, image in enumerate(images):
        files.append(folder / f"{i}.png")
        image.save(files[-1])
    expected = nearid.similarity(nearid.embed(encoder, files, batch_size=1), reward.reference_embeddings.cpu())[:, 0]
    with torch.no_grad():
        got = torch.cat([reward(as_tensor(image)) for image in images])
    difference = (got.cpu() - expected).abs()
    return float(difference.max()), float(difference.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--so400m", action="store_true", help="also a SigLIP2-so400m-sized model (random weights)")
    args = parser.parse_args()
    pictures = photographs()
    reference, generated = pictures[0], pictures[1:]
    print("preprocessed pixels, torch vs PIL, |difference| in 8-bit levels (max / mean over pixels and images)")
    for name, processor in (
        ("siglip2 384 bilinear", siglip_processor(384)),
        ("clip 224 bicubic+crop", clip_processor()),
    ):
        for size in SIZES:
            worst, mean = pixel_difference(processor, [square(p, size) for p in pictures])
            print(f"  {name:<22} {size:>4}^2: max {worst:.3f}  mean {mean:.3f}")
    encoders = [("tiny NearID (64 px)", lambda: nearid.load_encoder("tiny", device="cpu"))]
    if args.so400m:
        encoders.append(("so400m-sized NearID, random (384 px)", so400m_encoder))
    print("|reward(tensor) - similarity(PNG)| (max / mean over images)")
    for name, build in encoders:
        start = time.perf_counter()
        encoder = build()
        for size in SIZES:
            with tempfile.TemporaryDirectory() as folder:
                worst, mean = reward_difference(
                    encoder, square(reference, 384), [square(p, size) for p in generated], Path(folder)
                )
            print(f"  {name:<36} {size:>4}^2: max {worst:.2e}  mean {mean:.2e}")
        print(f"  ({name}: {time.perf_counter() - start:.0f} s)")


def so400m_encoder():
    """A NearID model of SigLIP2-so400m's size and preprocessing (random weights, float32, CPU)."""
    from nearid.models.encoders import nearid_encoder
    from nearid.models.nearid_model import seeded_model, siglip2_so400m_vision_config

    model = seeded_model(siglip2_so400m_vision_config(), seed=0)
    return nearid_encoder(model, siglip_processor(384), name="so400m-random", device="cpu", dtype=torch.float32)


if __name__ == "__main__":
    main()
