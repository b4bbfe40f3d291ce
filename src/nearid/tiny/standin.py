"""A small SigLIP tower pretrained offline, standing in for SigLIP2 where the real one cannot be downloaded.

NearID's claim is about the *head*: a generic backbone's tokens already describe the objects in an
image, but its pooled embedding describes the whole scene, so a different object on the same
background looks like a match; retraining only the MAP head with near-identity distractors makes the
embedding follow the object. Offline we have no generic backbone, so the demo pretrains a small one on
the synthetic *train* views, with objectives that never see a distractor and never pair two views
of one identity — nothing about identity is taught:

* instance discrimination (SimCLR): symmetric InfoNCE between two augmentations of the *same image*,
  the other images in the batch as negatives, read from the pooled (MAP) output. Like a CLIP/SigLIP
  embedding of a whole scene, this pooled output is dominated by context: the frozen baseline;
* dense foreground prediction: a linear probe on every output token predicts how much of its patch
  is object (the views' masks, which the NearID data ship), as SigLIP 2's dense objectives (LocCa
  grounding, masked prediction, self-distillation) make its tokens object-aware. The MAP head's
  attention needs tokens that say where the object is: without this term (``foreground_weight=0``)
  the demo's trained head reaches 44.7 SSR on the Instance source instead of 79.3 (docs/demo.md).

The result is saved as a plain ``SiglipVisionModel`` folder (the probe and projection are dropped), so
it enters the pipeline exactly where ``google/siglip2-so400m-patch14-384`` would (``siglip2-map:DIR``,
``siglip2-mean:DIR``, ``nearid train --backbone DIR``).

Augmentations (batched, torch only — no torchvision): a random crop of 25-100 % of the area with a
mild aspect change and a horizontal flip, applied to image and mask alike, then brightness and
contrast jitter on the image.
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
    epochs: int = 8
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    temperature: float = 0.1
    min_crop_area: float = 0.25
    foreground_weight: float = 10.0  # the dense term's weight; its BCE is ~10x smaller than InfoNCE
    seed: int = 0

    def vision_config(self):
        from transformers import SiglipVisionConfig

        return SiglipVisionConfig(
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.layers,
            num_attention_heads=self.heads,
            image_size=self.image_size,
            patch_size=self.patch_size,
            hidden_act="gelu_pytorch_tanh",
            layer_norm_eps=1e-6,
        )


def augment(
    pixels: torch.Tensor, generator: torch.Generator, min_area: float = 0.25, masks: torch.Tensor | None = None
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Random resized crop + flip (one affine resampling per image), then brightness/contrast jitter.

    ``masks`` ``[N, 1, H, W]`` (optional) follow the same crop and flip, without jitter; then
    ``(pixels, masks)`` is returned.
    """
    n = pixels.shape[0]
    u = lambda lo, hi: torch.empty(n).uniform_(lo, hi, generator=generator)
    side = u(min_area, 1.0).sqrt()
    aspect = torch.exp(u(-0.2, 0.2))
    sx, sy = (side * aspect).clamp(max=1.0), side
    flip = (torch.rand(n, generator=generator) < 0.5).float() * 2 - 1
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = sx * flip, sy
    theta[:, 0, 2], theta[:, 1, 2] = (1 - sx) * u(-1, 1), (1 - sy) * u(-1, 1)
    stacked = pixels if masks is None else torch.cat([pixels, masks.to(pixels.dtype)], 1)
    grid = F.affine_grid(theta, list(stacked.shape), align_corners=False)
    out = F.grid_sample(stacked, grid, align_corners=False, padding_mode="reflection")
    image = out[:, : pixels.shape[1]] * u(0.8, 1.2)[:, None, None, None] + u(-0.15, 0.15)[:, None, None, None]
    return image if masks is None else (image, out[:, pixels.shape[1] :])


def foreground_targets(masks: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``[N, tokens]``: the object share of each patch, in the tower's row-major token order."""
    return F.avg_pool2d(masks, patch_size).flatten(1)


def train_views(bench) -> tuple[list, list]:
    """Every view of ``bench`` with its mask (``None`` where a view has none): the only inputs read."""
    images, masks = [], []
    for identity in bench:
        for view in identity.views:
            if view is not None:
                images.append(view.image)
                masks.append(view.mask)
    return images, masks


def pretrain_standin(bench, out: str | os.PathLike, config: StandInConfig = StandInConfig(), *, log=print) -> Path:
    """Pretrain on the views of ``bench`` (a train split; distractors are never read) and save to ``out``."""
    from transformers import SiglipVisionModel, get_scheduler

    from nearid.images.decode import load_image, load_mask
    from nearid.images.processors import siglip_processor

    processor = siglip_processor(config.image_size)
    refs, mask_refs = train_views(bench)
    pixels = processor([load_image(ref) for ref in refs], return_tensors="pt")["pixel_values"]
    # masks at model resolution; a view without a mask gives no dense target (weight 0)
    masks = torch.zeros(len(refs), 1, config.image_size, config.image_size)
    has_mask = torch.tensor([ref is not None for ref in mask_refs])
    for i, ref in enumerate(mask_refs):
        if ref is not None:
            mask = torch.from_numpy(load_mask(ref)).float()[None, None]
            masks[i] = F.interpolate(mask, size=(config.image_size,) * 2, mode="area")[0]

    with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the caller's RNG
        torch.manual_seed(config.seed)
        model = SiglipVisionModel(config.vision_config())
        projection = torch.nn.Sequential(
            torch.nn.Linear(config.hidden_size, 2 * config.hidden_size),
            torch.nn.GELU(),
            torch.nn.Linear(2 * config.hidden_size, config.hidden_size // 2),
        )
        foreground_probe = torch.nn.Linear(config.hidden_size, 1)
    params = [*model.parameters(), *projection.parameters(), *foreground_probe.parameters()]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    per_epoch = math.ceil(len(refs) / config.batch_size)
    total = config.epochs * per_epoch
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=max(1, total // 10), num_training_steps=total)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    log(
        f"pretraining the stand-in backbone: {len(refs)} train views, {config.epochs} epochs x {per_epoch} steps "
        f"(instance discrimination + foreground tokens; no distractor, no pairing of an identity's views)"
    )
    model.train()
    started = time.perf_counter()
    for epoch in range(config.epochs):
        order = rng.permutation(len(refs))
        contrastive, dense = [], []
        for start in range(0, len(order), config.batch_size):
            chosen = order[start : start + config.batch_size]
            n = len(chosen)
            if n < 2:
                continue
            twice = np.concatenate([chosen, chosen])  # two augmentations of each image
            batch, batch_masks = augment(pixels[twice], generator, config.min_crop_area, masks=masks[twice])
            output = model(pixel_values=batch)
            z = F.normalize(projection(output.pooler_output), dim=-1)
            logits = z[:n] @ z[n:].T / config.temperature
            target = torch.arange(n)
            info_nce = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
            weight = has_mask[twice].float()[:, None].expand(-1, output.last_hidden_state.shape[1])
            foreground = (
                F.binary_cross_entropy_with_logits(
                    foreground_probe(output.last_hidden_state).squeeze(-1),
                    foreground_targets(batch_masks, config.patch_size),
                    weight=weight,
                )
                if has_mask.any()
                else info_nce.new_zeros(())
            )
            loss = info_nce + config.foreground_weight * foreground
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            contrastive.append(info_nce.item())
            dense.append(foreground.item())
        log(
            f"  epoch {epoch + 1}/{config.epochs}: InfoNCE {np.mean(contrastive):.3f}  foreground BCE "
            f"{np.mean(dense):.3f} ({time.perf_counter() - started:.0f} s)"
        )
    model.eval()
    out = Path(out)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
