"""The picture of an identity explanation: the two images side by side with the map over each, one
perceptual colour scale shared by both (so equal colours mean equal mismatch), its legend, and the
similarity (and the same/different verdict when a threshold is known) in the title.

Drawn with matplotlib (imported here only, with the Agg backend) from arrays and images alone, so a
report can draw maps stored beside score results without loading a model.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

CMAP = "inferno"  # perceptually uniform, readable in greyscale, dark = no mismatch


def verdict_text(similarity: float, threshold: dict | None) -> str:
    """``similarity 0.712`` and, with a threshold, ``-> different identity (threshold 0.80, source)``."""
    text = f"similarity {similarity:.3f}"
    if threshold is not None:
        same = similarity >= threshold["value"]
        text += f" -> {'same' if same else 'different'} identity (threshold {threshold['value']:.3f}"
        text += f", {threshold['source']})" if threshold.get("source") else ")"
    return text


def figure_png(
    reference,
    generated,
    reference_map: np.ndarray,
    generated_map: np.ndarray,
    title: str,
    *,
    width: float = 9.0,
    dpi: int = 110,
    names: tuple[str, str] = ("reference", "generated"),
) -> bytes:
    """PNG bytes of the two images (PIL, in their own pixels) with their maps overlaid."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    images = [np.asarray(reference.convert("RGB")), np.asarray(generated.convert("RGB"))]
    maps = [np.asarray(reference_map, dtype=np.float32), np.asarray(generated_map, dtype=np.float32)]
    top = max(float(m.max()) for m in maps) or 1.0
    figure, axes = plt.subplots(1, 2, figsize=(width, width * 0.45), dpi=dpi, layout="constrained")
    shown = None
    for axis, image, mismatch, name in zip(axes, images, maps, names):
        axis.imshow(image.mean(axis=2), cmap="gray", vmin=0, vmax=255)  # grey, so the colours are the map's
        alpha = np.clip(mismatch / top, 0, 1) * 0.75 + 0.15
        shown = axis.imshow(mismatch, cmap=CMAP, vmin=0, vmax=top, alpha=alpha, interpolation="bilinear")
        axis.set_title(name, fontsize=10)
        axis.set_axis_off()
    bar = figure.colorbar(shown, ax=list(axes), shrink=0.85, pad=0.02)
    bar.set_label("identity mismatch (read-out weight x 1 - best patch match)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    figure.suptitle(title, fontsize=11)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def write_figure(path: str | os.PathLike, png: bytes) -> Path:
    """Write the PNG atomically (a crash never leaves half a picture)."""
    from nearid.io.atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(png)
    return path


__all__ = ["CMAP", "figure_png", "verdict_text", "write_figure"]
