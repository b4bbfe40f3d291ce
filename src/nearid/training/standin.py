"""A small SigLIP tower pretrained offline, standing in for SigLIP2 where the real one cannot be downloaded.

NearID's claim is about the *head*: on a frozen, generically pretrained backbone, retraining only the
MAP head with near-identity distractors makes identity beat context. Offline we have no generic
backbone, and a randomly initialised trunk gives the head nothing to work with. So the demo pretrains
a small tower first, on the synthetic *train* split only, with a generic objective that never sees a
distractor: symmetric InfoNCE between two augmented views of the same identity (different
backgrounds), the other identities in the batch as negatives — the "InfoNCE, no distractors" family,
trunk and head trained together, like an ordinary contrastive image encoder. The result is saved as a
plain ``SiglipVisionModel`` folder, so it enters the rest of the pipeline exactly where
``google/siglip2-so400m-patch14-384`` would (``siglip2-map:DIR``, ``siglip2-mean:DIR``,
``nearid train --backbone DIR``).

Augmentations (batched, torch only — no torchvision): a random crop of 25-100 % of the area with a
mild aspect change, horizontal flip, brightness and contrast jitter.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class StandInConfig:
    image_size: int = 64
    patch_size: int = 8
    hidden_size: int = 128
    intermediate_size: int = 512
    layers: int = 4
    heads: int = 4
    epochs: int = 12
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    temperature: float = 0.1
    min_crop_area: float = 0.25
    seed: int = 0

    def vision_config(self):
        from transformers import SiglipVisionConfig

        return SiglipVisionConfig(
            hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
            num_hidden_layers=self.layers, num_attention_heads=self.heads,
            image_size=self.image_size, patch_size=self.patch_size,
            hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6,
        )


def augment(pixels: torch.Tensor, generator: torch.Generator, min_area: float = 0.25) -> torch.Tensor:
    """Random resized crop + flip (one affine resampling per image), then brightness/contrast jitter."""
    n = pixels.shape[0]
    u = lambda lo, hi: torch.empty(n).uniform_(lo, hi, generator=generator)  # noqa: E731
    side = u(min_area, 1.0).sqrt()
    aspect = torch.exp(u(-0.2, 0.2))
    sx, sy = (side * aspect).clamp(max=1.0), side
    flip = (torch.rand(n, generator=generator) < 0.5).float() * 2 - 1
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = sx * flip, sy
    theta[:, 0, 2], theta[:, 1, 2] = (1 - sx) * u(-1, 1), (1 - sy) * u(-1, 1)
    grid = F.affine_grid(theta, list(pixels.shape), align_corners=False)
    out = F.grid_sample(pixels, grid, align_corners=False, padding_mode="reflection")
    return out * u(0.8, 1.2)[:, None, None, None] + u(-0.15, 0.15)[:, None, None, None]


def view_pairs(owners: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Every view once as an anchor (shuffled), each with a random view of its own identity as partner.

    The partner is drawn with replacement, so it is sometimes the anchor itself (then the pair is two
    augmentations of one image, SimCLR's instance discrimination) and otherwise the object on another
    background. The easy same-image pairs keep the early steps from collapsing to a constant embedding,
    which pure cross-background pairs did in a trial (InfoNCE stuck at log(batch)).
    """
    anchors = rng.permutation(len(owners))
    partners = np.empty_like(anchors)
    for identity in np.unique(owners):
        rows = np.flatnonzero(owners == identity)
        chosen = np.flatnonzero(owners[anchors] == identity)
        partners[chosen] = rng.choice(rows, size=len(chosen), replace=True)
    return anchors, partners


def pretrain_standin(bench, out: str | os.PathLike, config: StandInConfig = StandInConfig(), *, log=print) -> Path:
    """Pretrain on the identities of ``bench`` (a train split; only views are read) and save to ``out``."""
    from transformers import SiglipVisionModel, get_scheduler

    from ..images import load_image
    from ..processors import siglip_processor

    processor = siglip_processor(config.image_size)
    refs, owners = [], []
    for index, identity in enumerate(bench):
        for view in identity.views:
            if view is not None:
                refs.append(view.image)
                owners.append(index)
    pixels = processor([load_image(ref) for ref in refs], return_tensors="pt")["pixel_values"]
    owners = np.asarray(owners)

    with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the caller's RNG
        torch.manual_seed(config.seed)
        model = SiglipVisionModel(config.vision_config())
        projection = torch.nn.Sequential(
            torch.nn.Linear(config.hidden_size, 2 * config.hidden_size), torch.nn.GELU(),
            torch.nn.Linear(2 * config.hidden_size, config.hidden_size // 2),
        )
    params = list(model.parameters()) + list(projection.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    per_epoch = math.ceil(len(refs) / config.batch_size)
    total = config.epochs * per_epoch
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=max(1, total // 10), num_training_steps=total)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    log(f"pretraining the stand-in backbone: {len(refs)} views of {len(bench)} identities, "
        f"{config.epochs} epochs x {per_epoch} steps, no distractors")
    model.train()
    started = time.perf_counter()
    for epoch in range(config.epochs):
        first, second = view_pairs(owners, rng)
        losses = []
        for start in range(0, len(first), config.batch_size):
            chosen = slice(start, start + config.batch_size)
            n = len(first[chosen])
            if n < 2:
                continue
            batch = torch.cat([augment(pixels[first[chosen]], generator, config.min_crop_area),
                               augment(pixels[second[chosen]], generator, config.min_crop_area)])
            z = F.normalize(projection(model(pixel_values=batch).pooler_output), dim=-1)
            logits = z[:n] @ z[n:].T / config.temperature
            target = torch.arange(n)
            loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        log(f"  epoch {epoch + 1}/{config.epochs}: InfoNCE {np.mean(losses):.3f} "
            f"({time.perf_counter() - started:.0f} s)")
    model.eval()
    out = Path(out)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
