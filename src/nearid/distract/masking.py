"""``nearid mask``: foreground masks for your own photos, so they can become a NearID-style benchmark.

text -> box with a zero-shot detector (OWLv2 or Grounding DINO, transformers), box -> mask with SAM
(transformers ``SamModel``), or ``--box`` straight to SAM. Every processor is built with the PIL
backend: torchvision is never imported (SAM 2/3's processors need it; SAM v1's does not).

Masks are written as 8-bit PNGs (255 = object) in one of two layouts:

* ``score`` (default): ``OUT/<relative path of the image>.png`` — pass ``--out MASKS/refs`` (or
  ``MASKS/gens``) and ``nearid score --mask-folder MASKS`` finds them;
* ``folder``: ``OUT/<relative folder>/<stem>_mask.png`` — with ``--out`` the benchmark folder itself,
  each ``view1.png`` gets the ``view1_mask.png`` that :func:`nearid.data.load_folder` reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from nearid.images.decode import load_image
from nearid.io.atomic import atomic_path
from nearid.io.errors import ModelNotAvailableError, NearIDError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
DEFAULT_DETECTOR = "google/owlv2-base-patch16-ensemble"
DEFAULT_SAM = "facebook/sam-vit-base"


class MaskingError(NearIDError):
    """Bad mask-command input: no prompt or box, a malformed box, no image found."""


@dataclass(frozen=True)
class MaskConfig:
    inputs: list[str]
    out: str
    prompt: str | None = None
    box: str | None = None
    detector: str = DEFAULT_DETECTOR
    sam: str = DEFAULT_SAM
    threshold: float = 0.1
    layout: str = "score"
    device: str = "auto"
    overwrite: bool = False


@dataclass
class MaskResult:
    written: list[Path] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)  # image -> why

    def __len__(self) -> int:
        return len(self.written)


def parse_box(text: str) -> tuple[float, float, float, float]:
    try:
        x0, y0, x1, y1 = (float(v) for v in text.split(","))
    except ValueError:
        raise MaskingError(f"--box '{text}': give four numbers x0,y0,x1,y1 in pixels") from None
    if x1 <= x0 or y1 <= y0:
        raise MaskingError(f"--box '{text}': x1 must exceed x0 and y1 must exceed y0")
    return x0, y0, x1, y1


def find_images(inputs: list[str]) -> list[tuple[Path, Path]]:
    """(image, path relative to its input) for files and the images under folders (masks skipped)."""
    found = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_file():
            found.append((path, Path(path.name)))
        elif path.is_dir():
            from nearid.images.decode import list_images  # links followed; hidden and macOS `._*` files skipped

            for file in list_images(path, suffixes=IMAGE_SUFFIXES):
                if not file.stem.endswith("_mask"):
                    found.append((file, file.relative_to(path)))
        else:
            raise MaskingError(f"{path}: no such image or folder")
    if not found:
        raise MaskingError(f"no images found in {', '.join(inputs)} (suffixes {', '.join(sorted(IMAGE_SUFFIXES))})")
    return found


def box_overlaps(box, size: tuple[int, int]) -> bool:
    """Whether ``box`` (x0, y0, x1, y1 in pixels) covers any of an image of ``size`` (width, height):
    SAM returns a mask for any box, so a box wholly outside the image would give a mask of nothing."""
    x0, y0, x1, y1 = box
    return x0 < size[0] and y0 < size[1] and x1 > 0 and y1 > 0


def clip_box(box, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """``box`` clipped to an image of ``size`` (width, height): a box that runs past the edge means the part
    of the picture inside it, and SAM's prompt encoder would otherwise place a corner outside the image."""
    x0, y0, x1, y1 = box
    width, height = size
    return (max(0.0, float(x0)), max(0.0, float(y0)), min(float(width), float(x1)), min(float(height), float(y1)))


def check_mask_outputs(config: MaskConfig, out: Path, images: list[tuple[Path, Path]], targets: list[Path]) -> None:
    """Refuse, before any model loads, a mask that would be written over a photo being read.

    The ``score`` layout writes a tree of its own, so ``--out`` may neither be nor lie inside an input
    folder (``--out photos`` would name each mask like its photo). The ``folder`` layout writes
    ``<stem>_mask.png`` beside each view on purpose, so there only each mask file is checked against
    every image read (links and hard links included): ``--overwrite`` replaces masks, never photos.
    """
    from nearid.io.outputs import check_outputs

    photos = [path for path, _ in images]
    if config.layout == "folder":
        check_outputs(targets, photos)
    else:
        check_outputs(targets, [*config.inputs, *photos], folders=[out])


def mask_path(out: Path, relative: Path, layout: str) -> Path:
    if layout == "folder":
        return out / relative.parent / f"{relative.stem}_mask.png"
    return out / relative.with_suffix(".png")


def _resolve(model: str) -> str:
    from nearid.io.hub import resolve_model_dir

    return str(resolve_model_dir(model))


class Detector:
    """Zero-shot text -> best box (OWLv2 / OWL-ViT or Grounding DINO), PIL processors only."""

    def __init__(self, model: str, device):
        from transformers import AutoConfig, AutoImageProcessor, AutoModelForZeroShotObjectDetection, AutoTokenizer

        folder = _resolve(model)
        try:
            kind = AutoConfig.from_pretrained(folder).model_type
        except (OSError, ValueError) as exc:
            raise ModelNotAvailableError(f"detector '{model}': not a transformers checkpoint ({exc})") from None
        image_processor = AutoImageProcessor.from_pretrained(folder, backend="pil")
        tokenizer = AutoTokenizer.from_pretrained(folder)
        if kind in {"owlv2", "owlvit"}:
            from transformers import Owlv2Processor, OwlViTProcessor

            self.processor = (Owlv2Processor if kind == "owlv2" else OwlViTProcessor)(image_processor, tokenizer)
        elif kind == "grounding-dino":
            from transformers import GroundingDinoProcessor

            self.processor = GroundingDinoProcessor(image_processor, tokenizer)
        else:
            raise ModelNotAvailableError(
                f"detector '{model}' is a {kind} model; use an OWLv2 or Grounding DINO checkpoint"
            )
        self.kind = kind
        self.model = AutoModelForZeroShotObjectDetection.from_pretrained(folder).to(device).eval()
        self.device = device

    def best_box(self, image: Image.Image, prompt: str, threshold: float):
        import torch

        text = [[prompt]] if self.kind != "grounding-dino" else prompt.rstrip(".").lower() + "."
        inputs = self.processor(images=image, text=text, return_tensors="pt").to(self.device)
        with torch.no_grad():
            outputs = self.model(**inputs)
        sizes = [(image.height, image.width)]
        if self.kind == "grounding-dino":
            result = self.processor.post_process_grounded_object_detection(
                outputs, inputs["input_ids"], threshold=threshold, text_threshold=threshold, target_sizes=sizes
            )[0]
        else:
            result = self.processor.post_process_grounded_object_detection(
                outputs, threshold=threshold, target_sizes=sizes
            )[0]
        if len(result["scores"]) == 0:
            return None
        best = int(torch.argmax(result["scores"]))
        x0, y0, x1, y1 = (float(v) for v in result["boxes"][best])
        x0, y0 = max(0.0, x0), max(0.0, y0)
        x1, y1 = min(float(image.width), x1), min(float(image.height), y1)
        return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


class Segmenter:
    """SAM (v1): box -> the single best mask, at the image's size."""

    def __init__(self, model: str, device):
        from transformers import AutoImageProcessor, SamModel, SamProcessor

        folder = _resolve(model)
        self.processor = SamProcessor(AutoImageProcessor.from_pretrained(folder, backend="pil"))
        self.model = SamModel.from_pretrained(folder).to(device).eval()
        self.device = device

    def mask(self, image: Image.Image, box) -> np.ndarray:
        import torch

        inputs = self.processor(images=image, input_boxes=[[list(box)]], return_tensors="pt").to(self.device)
        with torch.no_grad():
            outputs = self.model(**inputs, multimask_output=False)
        masks = self.processor.image_processor.post_process_masks(
            outputs.pred_masks.cpu(), inputs["original_sizes"].cpu(), inputs["reshaped_input_sizes"].cpu()
        )
        return np.asarray(masks[0][0, 0], dtype=bool)


def make_masks(config: MaskConfig) -> MaskResult:
    """Write one mask per image; images where nothing is found are listed in ``failures``."""
    from tqdm.auto import tqdm

    from nearid.models.encoders import resolve_device

    if (config.prompt is None) == (config.box is None):
        raise MaskingError('give exactly one of --prompt "the object" or --box x0,y0,x1,y1')
    if config.prompt is not None and not config.prompt.strip():
        raise MaskingError('--prompt is empty: name the object to mask (e.g. --prompt "a red mug") or give --box')
    if config.layout not in {"score", "folder"}:
        raise MaskingError(f"--layout {config.layout}: use score or folder")
    box = parse_box(config.box) if config.box else None
    images = find_images(list(config.inputs))
    out = Path(config.out).expanduser()
    targets = [mask_path(out, relative, config.layout) for _, relative in images]
    check_mask_outputs(config, out, images, targets)
    existing = [t for t in targets if t.exists()]
    if existing and not config.overwrite:
        raise MaskingError(f"{existing[0]}: already exists ({len(existing)} masks would be replaced); pass --overwrite")
    device = resolve_device(config.device)
    from nearid.models.backbones import quiet_transformers

    with quiet_transformers():
        detector = Detector(config.detector, device) if config.prompt else None
        segmenter = Segmenter(config.sam, device)
    result = MaskResult()
    for (path, _), target in tqdm(list(zip(images, targets)), desc="masks", unit="image", disable=len(images) < 4):
        image = load_image(path)
        image_box = box if box is not None else detector.best_box(image, config.prompt, config.threshold)
        if box is not None and not box_overlaps(box, image.size):
            result.failures[str(path)] = (
                f"the box {config.box} lies outside the {image.width}x{image.height} image; give a box inside it"
            )
            continue
        if image_box is None:
            result.failures[str(path)] = (
                f"no box for '{config.prompt}' above threshold {config.threshold}; lower --detector-threshold or give --box"
            )
            continue
        mask = segmenter.mask(image, clip_box(image_box, image.size))
        if not mask.any():
            result.failures[str(path)] = "SAM returned an empty mask for the box"
            continue
        with atomic_path(target) as tmp:
            Image.fromarray(mask.astype(np.uint8) * 255).save(tmp, format="PNG")
        result.written.append(target)
    return result
