"""A CLIP image processor as OpenAI's checkpoints ship it (shortest side, centre crop, bicubic, CLIP's
mean and std), saved beside a tiny CLIP model built from a config in the tests that need one."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def save_clip_processor(folder: str | Path, size: int = 32) -> None:
    """Write the processor's ``preprocessor_config.json`` into ``folder`` (the model's folder)."""
    from transformers import CLIPImageProcessorPil

    CLIPImageProcessorPil(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        resample=Image.Resampling.BICUBIC,
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    ).save_pretrained(folder)
