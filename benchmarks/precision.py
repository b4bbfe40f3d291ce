"""How far fp16 and bf16 embeddings are from fp32: the tiny model and the full-size SO400M architecture.

Why: the release stores fp16 and the authors evaluated in fp16 (spec 12.3), while our CUDA default used
to be bf16. This measures, for the same images and the same (random) weights, the largest absolute
difference of the L2-normalised embeddings and the lowest cosine to the fp32 embedding, for

* ``fp16`` / ``bf16``: the whole model cast to that dtype (what ``--dtype`` does for an encoder);
* ``half trunk fp16 / bf16``: the frozen trunk in half precision, the head in fp32 (what
  ``nearid train --mixed-precision fp16`` runs, as the authors' training does).

The full-size model is built from the spec's ``SiglipVisionConfig`` (hidden 1152, MLP 4304, 27 layers,
16 heads, 384 px, patch 14) with random weights: no download. On the CPU fp16 matmuls are slow; a
batch of 2 is enough (~1-3 min in all on 2 cores). Random weights are not trained ones, so the numbers
say how large the rounding is, not exactly what the released model shows (the spec's tiny-model
figures: bf16 3.4e-3, fp16 3.2e-4).

    python benchmarks/precision.py [--batch 2] [--skip-full] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from nearid.images.processors import preprocess_images, siglip_processor
from nearid.models.nearid_model import NearIDConfig, NearIDModel, siglip2_so400m_vision_config
from nearid.tiny.model import build_tiny_model
from nearid.training.trainer import half_trunk


def so400m(seed: int = 0) -> NearIDModel:
    """The paper's architecture (spec 2.1) with random weights."""
    vision = siglip2_so400m_vision_config()
    torch.manual_seed(seed)
    return NearIDModel(NearIDConfig(vision_config=vision)).eval()


def images(n: int, seed: int = 0) -> list[Image.Image]:
    """Objects on textured backgrounds: some structure, so the tokens are not all alike."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        background = (rng.uniform(0, 255, size=(8, 8, 3))).astype(np.uint8)
        image = Image.fromarray(background).resize((320, 320), Image.Resampling.BICUBIC)
        draw = ImageDraw.Draw(image)
        x, y = rng.integers(40, 160, size=2)
        draw.ellipse([x, y, x + 120, y + 100], fill=tuple(int(c) for c in rng.integers(0, 255, size=3)))
        out.append(image)
    return out


def embed(model: NearIDModel, pixels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return F.normalize(model(pixels, normalize=False).pooler_output.float(), dim=-1)


def compare(name: str, model: NearIDModel, batch: int, device: torch.device) -> list[dict]:
    size = model.config.vision_config.image_size
    pixels = preprocess_images(siglip_processor(size), images(batch)).to(device)
    model = model.to(device)
    reference = embed(model.float(), pixels)
    rows = []
    variants = [
        ("fp16", lambda m: m.half()),
        ("bf16", lambda m: m.bfloat16()),
        ("half trunk fp16", lambda m: (half_trunk(m, "fp16"), m)[1]),
        ("half trunk bf16", lambda m: (half_trunk(m, "bf16"), m)[1]),
    ]
    for label, cast in variants:
        start = time.perf_counter()
        vectors = embed(cast(copy.deepcopy(model)), pixels)
        difference = (vectors - reference).abs().max().item()
        cosine = (vectors * reference).sum(-1).min().item()
        rows.append(
            {
                "model": name,
                "dtype": label,
                "max_abs_diff": difference,
                "min_cosine": cosine,
                "seconds": time.perf_counter() - start,
            }
        )
        print(
            f"{name:8s} {label:16s} max |e - e_fp32| {difference:.2e}   min cosine {cosine:.7f}   "
            f"({rows[-1]['seconds']:.1f} s)",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-full", action="store_true", help="only the tiny model")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, batch {args.batch}")
    compare("tiny", build_tiny_model(0), max(args.batch, 8), device)
    if not args.skip_full:
        start = time.perf_counter()
        model = so400m()
        print(f"SO400M built with random weights in {time.perf_counter() - start:.1f} s", flush=True)
        compare("SO400M", model, args.batch, device)


if __name__ == "__main__":
    main()
