"""Safe image and mask loading, and the paper's foreground masking.

Loading is defensive because the inputs of a scorer are other programs' outputs: a file may be
truncated, not an image at all, a decompression bomb, 16-bit, CMYK, palette or transparent. Every
such case either becomes a plain 8-bit RGB image or raises :class:`ImageError` naming the file.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from nearid.io.errors import ImageError, MaskError


@dataclass(frozen=True)
class ImageRef:
    """An image decoded only when needed: a stable ``key`` (what errors and caches call it) and how to
    fetch its encoded bytes or path. Datasets of 19K rows stay on disk; two refs with the same key are
    the same image, which is how a benchmark embeds each unique image once.

    ``version`` tags the content behind the key (a dataset's or a file's fingerprint): ``NearID[row 3]``
    of data regenerated at the same path is another image. Stores and caches use :attr:`cache_key`,
    messages use ``key``."""

    key: str
    fetch: Callable[[], bytes | str | os.PathLike] = field(compare=False, repr=False)
    version: str | None = field(default=None, compare=False)

    @property
    def cache_key(self) -> str:
        """The key stores and caches use: ``key``, plus ``@version`` when the content is versioned."""
        return self.key if self.version is None else f"{self.key}@{self.version}"

    @classmethod
    def of_file(cls, path: str | os.PathLike, key: str | None = None) -> ImageRef:
        """A file's ref, versioned by its resolved path, size and modification time (read now): the key
        stays the path as given (for messages), the cache key names this file's current content."""
        from nearid.io.fingerprint import SHORT, of_files

        return cls(os.fspath(path) if key is None else key, lambda: path, version=of_files([path])[:SHORT])


ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray, bytes, ImageRef]  # noqa: UP007 (a runtime alias on 3.10)

#: Refuse images above this many pixels before decoding them (100 megapixels).
MAX_PIXELS = 100_000_000

#: Transparent pixels are composited over this colour (how viewers usually show a cut-out).
ALPHA_BACKGROUND = (255, 255, 255)


#: File name endings listed as images (compared in lower case).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"})


def is_metadata_name(name: str) -> bool:
    """Names that are never a user's image or folder of images: hidden (``.DS_Store``,
    ``.ipynb_checkpoints``), macOS's AppleDouble ``._*`` files, and ``__MACOSX/`` from zip archives."""
    return name.startswith(".") or name == "__MACOSX"


def list_images(folder: str | os.PathLike, *, recursive: bool = True, suffixes=IMAGE_SUFFIXES) -> list[Path]:
    """The image files below ``folder`` as users keep them, sorted, as paths under ``folder``.

    * Symbolically linked subfolders are followed (people link datasets in rather than copy them);
      a link back to a folder above it is not, so a loop ends.
    * Hidden files and folders (``.ipynb_checkpoints``, ``.DS_Store``), macOS's AppleDouble ``._*``
      files and ``__MACOSX/`` are skipped: they are metadata or copies, never the user's images.
    * Only names ending in one of ``suffixes`` (any case) count; broken links are skipped.

    A ``folder`` that is not a folder has no images: ``[]``.
    """
    found: list[Path] = []
    root = Path(folder)
    if not root.is_dir():
        return found

    def walk(directory: Path, ancestors: frozenset) -> None:
        with os.scandir(directory) as entries:
            entries = sorted(entries, key=lambda entry: entry.name)
        for entry in entries:
            if is_metadata_name(entry.name):
                continue
            path = directory / entry.name
            if entry.is_dir():  # follows symbolic links
                if not recursive:
                    continue
                stat = entry.stat()
                if (stat.st_dev, stat.st_ino) not in ancestors:
                    walk(path, ancestors | {(stat.st_dev, stat.st_ino)})
            elif entry.is_file() and os.path.splitext(entry.name)[1].lower() in suffixes:
                found.append(path)

    start = root.stat()
    walk(root, frozenset({(start.st_dev, start.st_ino)}))
    return sorted(found)


def _name(source: ImageInput) -> str:
    if isinstance(source, ImageRef):
        return source.key
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else f"<{type(source).__name__}>"


def load_image(
    source: ImageInput, *, max_pixels: int = MAX_PIXELS, name: str | None = None, draft: int | None = None
) -> Image.Image:
    """Open ``source`` as an 8-bit RGB PIL image.

    ``source`` is a path, encoded bytes (as stored in a dataset), a PIL image or an HxW[x3|4] uint8
    array; ``name`` is what errors call it (default: the path). ``draft=N`` lets a JPEG file decode
    at 1/2, 1/4 or 1/8 scale (``Image.draft``, DCT scaling: several times faster) when both sides
    stay at least N; other formats and smaller JPEGs decode as usual. Pixels then differ from an
    exact decode followed by a resize: only ``fast_decode`` asks for it.
    """
    if isinstance(source, ImageRef):
        return load_image(source.fetch(), max_pixels=max_pixels, name=source.key, draft=draft)
    if isinstance(source, np.ndarray):
        return to_rgb(Image.fromarray(source))
    if isinstance(source, Image.Image):
        return to_rgb(source)
    return to_rgb(open_checked(source, max_pixels=max_pixels, name=name, draft=draft))


def open_checked(source, *, max_pixels: int, name: str | None = None, draft: int | None = None) -> Image.Image:
    """Open a path or encoded bytes, refusing non-images, truncated files and oversized images."""
    if isinstance(source, (bytes, bytearray)):
        name = name or "<bytes>"
        handle = io.BytesIO(source)
    else:
        path = Path(source)
        name = name or str(path)
        if not path.is_file():
            raise ImageError(f"{name}: no such file")
        handle = path
    try:
        with warnings.catch_warnings():
            # Our own limit (max_pixels) is checked below; PIL still refuses > 2x its own limit.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(handle)
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(
                    f"{name}: {width}x{height} pixels is above the limit of {max_pixels:,}; "
                    "downscale the image or raise max_pixels if it is trusted"
                )
            if draft and image.format == "JPEG":
                image.draft("RGB", (draft, draft))  # a no-op unless both sides are at least 2 * draft
            image.load()  # decode now, so truncation is reported here and not later
            return ImageOps.exif_transpose(image)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file (unrecognised format); replace or remove it") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{name}: image is too large to decode safely; downscale it") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{name}: corrupt or truncated image ({exc}); re-export or remove it") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB: 16-bit and float are rescaled, alpha is composited."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode in {"I", "F"}:
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
        if mode == "F":
            top = 1.0 if array.max(initial=0) <= 1.0 else top
        gray = np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if mode in {"RGBA", "LA", "PA", "La", "RGBa"} or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def load_mask(source: ImageInput, *, max_pixels: int = MAX_PIXELS, name: str | None = None) -> np.ndarray:
    """A foreground mask as a boolean HxW array.

    The rule: when the mask has an alpha channel that is not constant (RGBA, LA, a palette with a
    transparent index; HxWx4 and HxWx2 arrays), the alpha is the mask and alpha > 0 is foreground —
    that is how editors export cut-outs, whose colour is often constant white or black. Otherwise
    (no alpha, or a constant one) any colour channel > 0 is foreground, as in the paper.
    """
    if isinstance(source, ImageRef):
        return load_mask(source.fetch(), max_pixels=max_pixels, name=source.key)
    if isinstance(source, np.ndarray):
        array = np.asarray(source)
        alpha = array[..., -1] if array.ndim == 3 and array.shape[-1] in (2, 4) else None
        colour = array[..., :-1] if alpha is not None else array
    else:
        image = source if isinstance(source, Image.Image) else open_checked(source, max_pixels=max_pixels, name=name)
        alpha = _alpha(image)
        single_channel = image.mode in {"L", "1", "I", "I;16", "F"}
        colour = np.asarray(image if single_channel else image.convert("RGB"))
    if alpha is not None and alpha.size and alpha.min() != alpha.max():
        return alpha > 0
    if colour.ndim == 3:
        colour = colour.max(axis=-1)
    return np.asarray(colour) > 0


def _alpha(image: Image.Image) -> np.ndarray | None:
    """The alpha channel of an image that has one (RGBA, LA, PA, premultiplied, palette transparency)."""
    if image.mode in {"RGBA", "LA", "La", "RGBa", "PA"}:
        return np.asarray(image.getchannel("A"))
    if image.mode == "P" and "transparency" in image.info:
        return np.asarray(image.convert("RGBA").getchannel("A"))
    return None


def apply_mask(image: Image.Image, mask: ImageInput, *, name: str = "mask") -> Image.Image:
    """Black out everything outside the foreground, as the paper does for masked views and distractors.

    A mask of another size is resized to the image with nearest-neighbour sampling, as the paper
    does, but only if it has the same aspect ratio; a different shape or an empty mask is an error,
    because either would silently score the wrong pixels.
    """
    fg = load_mask(mask, name=name)
    height, width = fg.shape
    if (width, height) != image.size:
        if abs(width / height - image.width / image.height) > 0.01 and not _draft_scaled((width, height), image.size):
            raise MaskError(
                f"{name}: mask is {width}x{height} but its image is {image.width}x{image.height}; "
                "masks must have the image's size or aspect ratio"
            )
        fg = np.asarray(Image.fromarray(fg).resize(image.size, Image.Resampling.NEAREST))
    if not fg.any():
        raise MaskError(f"{name}: mask is empty (no foreground pixel); fix the mask or drop it")
    pixels = np.asarray(image.convert("RGB")).copy()
    pixels[~fg] = 0
    return Image.fromarray(pixels)


def _draft_scaled(full: tuple[int, int], scaled: tuple[int, int]) -> bool:
    """Whether ``scaled`` is ``full`` decoded in JPEG draft mode (each side divided by 2, 4 or 8,
    rounded up): a full-resolution mask fits such an image even where rounding bends the aspect ratio."""
    return any(all(-(-f // s) == d for f, d in zip(full, scaled)) for s in (2, 4, 8))


def load_masked(image: ImageInput, mask: ImageInput | None, *, draft: int | None = None) -> Image.Image:
    """Load ``image`` and, when a mask is given, black out its background (``draft``: :func:`load_image`;
    the mask is then applied at the decoded resolution)."""
    rgb = load_image(image, draft=draft)
    return rgb if mask is None else apply_mask(rgb, mask, name=_name(mask))
