"""Matched contexts for the synthetic benchmark: photographic backgrounds (scikit-image's bundled
photos, cropped at several zooms, when installed) or procedural ones. Built channels first: numpy
broadcasts over a trailing axis of 3 very slowly."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

from nearid.data.objects import hsv_colour


def _wrap(x: np.ndarray) -> np.ndarray:
    """The fractional part of ``x`` (the same expression as the object textures use, so a seed draws the
    same backgrounds as before the split)."""
    return x - np.floor(x)  # several times faster than np.mod on floats


_PHOTO_FILES = ("astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "rocket.jpg")
_ZOOMS = tuple(0.35 ** (i / 7) for i in range(8))  # crop side, fraction of a photo's short side


@functools.cache
def _photo_paths() -> tuple[Path, ...]:
    """scikit-image's bundled colour photographs, read straight from the installed package.

    Nothing is imported or downloaded; without scikit-image every background is procedural.
    """
    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        return ()
    folder = Path(spec.origin).parent / "data"
    return tuple(folder / name for name in _PHOTO_FILES if (folder / name).is_file())


@functools.cache
def _photo_zooms(size: int) -> tuple[tuple[np.ndarray, ...], ...]:
    """Each photo decoded once and pre-scaled to a few zoom levels, so that a crop is a plain slice."""
    zooms = []
    for path in _photo_paths():
        with Image.open(path) as image:
            photo = image.convert("RGB")
        levels = []
        for zoom in _ZOOMS:
            f = size / (zoom * min(photo.size))
            shape = (max(size, round(photo.width * f)), max(size, round(photo.height * f)))
            levels.append(np.asarray(photo.resize(shape, Image.Resampling.LANCZOS)).transpose(2, 0, 1).copy())
        zooms.append(tuple(levels))
    return tuple(zooms)


def _photo(rng: np.random.Generator, size: int) -> np.ndarray:
    photos = _photo_zooms(size)
    levels = photos[rng.integers(len(photos))]
    level = levels[rng.integers(len(levels))]
    y, x = rng.integers(level.shape[1] - size + 1), rng.integers(level.shape[2] - size + 1)
    crop = level[:, y : y + size, x : x + size]
    if rng.random() < 0.5:
        crop = crop[:, :, ::-1]
    return crop * (rng.uniform(0.88, 1.12, 3) * rng.uniform(0.85, 1.1)).astype(np.float32)[:, None, None]


def _muted(rng: np.random.Generator) -> np.ndarray:
    return np.array(hsv_colour(rng.random(), rng.uniform(0.1, 0.7), rng.uniform(0.3, 0.95)), np.float32)[:, None, None]


def _procedural(rng: np.random.Generator, size: int) -> np.ndarray:
    """Five kinds of scene, from 1-D ramps so that little of the work touches every pixel."""
    y, x = np.linspace(0, 1, size, dtype=np.float32)[:, None], np.linspace(0, 1, size, dtype=np.float32)[None, :]
    c0, c1, kind = _muted(rng), _muted(rng), rng.integers(5)
    if kind == 3:  # soft blobs of colour
        small = (rng.uniform(40, 230, (4, 4, 3)) * 0.6 + c0[:, 0, 0] * 0.4).astype(np.uint8)
        return np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)).transpose(2, 0, 1)
    if kind == 4:  # a wall over a floor of receding boards
        horizon = np.float32(rng.uniform(0.35, 0.7))
        across = (x - 0.5) / np.maximum(y - horizon, 0.02) * np.float32(rng.uniform(1.5, 4))
        boards = (_wrap(across) < 0.92) * 0.15 + 0.85
        wall = y < horizon
        return np.where(wall, c0, c1) * np.where(wall, 1.05 - 0.25 * y, (0.7 + 0.4 * y) * boards)
    if kind == 2:  # tiles with grout
        k, grout = np.float32(rng.uniform(3, 9)), rng.uniform(0.04, 0.12)
        tx, ty = x * k + np.float32(rng.random()), y * k + np.float32(rng.random())
        checker = (np.floor(tx) + np.floor(ty)).astype(np.int32) & 1
        in_grout = (_wrap(tx) < grout) | (_wrap(ty) < grout)
        t = np.where(in_grout, np.float32(1.3), checker * np.float32(rng.uniform(0.3, 1)))
    else:
        angle = rng.uniform(0, 2 * np.pi)
        along = x * np.float32(np.cos(angle)) + y * np.float32(np.sin(angle))
        if kind == 0:  # a gradient
            t = (along - along.min()) / (along.max() - along.min())
        else:  # soft stripes
            wave = np.sin(along * np.float32(2 * np.pi * rng.uniform(3, 10)))
            t = np.clip(wave * np.float32(rng.uniform(0.5, 2)) + 0.5, 0, 1)
    return c0 + t * (c1 - c0)


def sample_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A context: half the time a crop of a real photograph, otherwise one of five procedural scenes."""
    image = _photo(rng, size) if _photo_paths() and rng.random() < 0.5 else _procedural(rng, size)
    grain = np.frombuffer(rng.bytes(size * size), np.uint8).reshape(size, size)
    image = image + (grain - np.float32(127.5)) * np.float32(rng.uniform(0.01, 0.08))
    return np.ascontiguousarray(np.clip(image, 0, 255).astype(np.uint8).transpose(1, 2, 0))


def photo_backgrounds_available() -> bool:
    """Whether backgrounds include real photographs here; worth recording next to a generated benchmark."""
    return bool(_photo_paths())
