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
#: ``nearid score --explain K`` writes its maps to ``<out>.`` + this, beside the pairs file ``<out>``.
EXPLAIN_SIDE_FILE = "explain.json"


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


def overlay(image, pixel_map: np.ndarray, top: float):
    """A PIL image: ``image`` in grey with ``pixel_map`` (its own pixels) blended over it on :data:`CMAP`,
    ``top`` the value of the brightest colour (shared by a pair's two maps). For gallery thumbnails."""
    from matplotlib import colormaps
    from PIL import Image

    grey = np.asarray(image.convert("L"), dtype=np.float32)[..., None] / 255.0
    level = np.clip(np.asarray(pixel_map, dtype=np.float32) / (top or 1.0), 0, 1)
    colour = colormaps[CMAP](level)[..., :3]
    alpha = level[..., None] * 0.75 + 0.15
    blended = (1 - alpha) * grey + alpha * colour
    return Image.fromarray((blended * 255).round().astype(np.uint8))


def read_side_file(path: Path) -> dict:
    """``nearid score --explain``'s maps by (reference, generated) absolute path; {} when there are none
    or the file cannot be read (a report never fails for a side file)."""
    import json

    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
        return {(entry["reference"], entry["generated"]): entry for entry in payload["pairs"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def map_thumbnails(entry: dict, reference, generated) -> list[tuple[str, object]]:
    """The two overlays of one stored entry (patch maps + geometry) over the pair's images."""
    from nearid.images.geometry import InputGeometry

    out = []
    patches = [np.asarray(entry["reference_patches"]), np.asarray(entry["generated_patches"])]
    top = max(float(p.max()) for p in patches)
    for label, image, grid, geometry in zip(
        ("reference map", "generated map"),
        (reference, generated),
        patches,
        (entry["reference_geometry"], entry["generated_geometry"]),
    ):
        shape = InputGeometry(*(tuple(geometry[k]) for k in ("size", "resized", "crop")))
        out.append((label, overlay(image, shape.to_pixels(grid), top)))
    return out


def write_figure(path: str | os.PathLike, png: bytes) -> Path:
    """Write the PNG atomically (a crash never leaves half a picture)."""
    from nearid.io.atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(png)
    return path


__all__ = [
    "CMAP",
    "EXPLAIN_SIDE_FILE",
    "figure_png",
    "map_thumbnails",
    "overlay",
    "read_side_file",
    "verdict_text",
    "write_figure",
]
