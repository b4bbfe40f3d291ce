"""Procedural objects, near-identity distractors and matched contexts for the synthetic benchmark.

An encoder should only tell a distractor from its positive by looking at the *object*: the
distractor is a slightly different object drawn into exactly the same background, place and pose,
as an inpainting model would produce. So every part has a fixed slot in an object frame (cap on
top, side part on the right, emblem mid-body, base below) and all geometry is mapped into the
image analytically: two specs drawn with one placement share their silhouette except where they
really differ. Polygons are drawn in their final pose at 2x and box-filtered, which is both the
anti-aliasing and the speed trick (no image is ever rotated or resampled). Everything random takes
a ``numpy.random.Generator``, so a seed fixes a whole benchmark.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

# The objects and the backgrounds are drawn here; their names keep this module as their old home.
from nearid.data.backgrounds import photo_backgrounds_available, sample_background  # noqa: F401
from nearid.data.objects import (  # noqa: F401
    BASES,
    BODY_SHAPES,
    CAP_SHAPES,
    DISTRACTOR_RULES,
    EMBLEM_SHAPES,
    PART_FIELDS,
    PART_NAMES,
    SIDE_PARTS,
    TEXTURES,
    Colour,
    ObjectSpec,
    Placement,
    edit_part,
    near_identity,
    sample_object,
    sample_placement,
)

# Half-width of the body (1 = widest) from its top (t=0) to its bottom (t=1).
_PROFILES = {
    "capsule": ((0, 0.35), (0.04, 0.75), (0.1, 0.93), (0.18, 1), (0.82, 1), (0.9, 0.93), (0.96, 0.75), (1, 0.35)),
    "bottle": ((0, 0.42), (0.16, 0.42), (0.26, 0.7), (0.36, 0.95), (0.42, 1), (0.95, 1), (1, 0.9)),
    "box": ((0, 0.94), (0.02, 1), (0.98, 1), (1, 0.94)),
    "jar": ((0, 0.72), (0.07, 0.72), (0.1, 0.92), (0.16, 1), (0.92, 1), (1, 0.85)),
    "cone": ((0, 0.38), (1, 1)),
    "barrel": ((0, 0.68), (0.15, 0.86), (0.35, 0.98), (0.5, 1), (0.65, 0.98), (0.85, 0.86), (1, 0.68)),
    "vase": ((0, 0.62), (0.08, 0.55), (0.22, 0.5), (0.45, 0.85), (0.62, 1), (0.8, 0.9), (1, 0.6)),
    "bell": ((0, 0.25), (0.08, 0.5), (0.25, 0.66), (0.6, 0.8), (0.85, 0.92), (1, 1)),
}
# The object frame: u across (0 on the axis), v down (0 at the top of the object, 1 at its bottom).
BODY_TOP, BODY_BOTTOM, BASE_BOTTOM = 0.20, 0.84, 0.975
_BODY_H, _SHADOW_H = BODY_BOTTOM - BODY_TOP, 0.07
_BG, _BODY, _CAP, _SIDE, _EMBLEM, _BASE, _TEX = range(7)  # region labels; the contour of k is k + _DARK
_DARK = 8
_PART_LABEL = {"cap": _CAP, "side": _SIDE, "emblem": _EMBLEM, "texture": _BODY, "base": _BASE}


# ---------------------------------------------------------------- geometry, in the object frame


@functools.cache
def _profile(shape: str) -> tuple[np.ndarray, np.ndarray]:
    t, points = np.linspace(0, 1, 41), np.array(_PROFILES[shape], dtype=float)
    f = np.interp(t, points[:, 0], points[:, 1])
    for _ in range(2):  # round off the corners the control points leave
        f[1:-1] = (f[:-2] + 2 * f[1:-1] + f[2:]) / 4
    return t, f


def _edge(spec: ObjectSpec, t: float) -> tuple[float, float]:
    """A point just inside the body's right contour at height ``t``, where side parts attach."""
    ts, f = _profile(spec.body_shape)
    return float(np.interp(t, ts, f)) * spec.body_aspect * _BODY_H / 2 - 0.025, BODY_TOP + t * _BODY_H


@functools.cache
def _arc(start: float, end: float) -> np.ndarray:
    a = np.radians(np.linspace(start, end, 28))
    return np.stack([np.cos(a), np.sin(a)], 1)


def _ellipse(cu, cv, ru, rv, start=0.0, end=360.0) -> np.ndarray:
    return _arc(start, end) * (ru, rv) + (cu, cv)


def _box(u0, v0, u1, v1) -> np.ndarray:
    return np.array([(u0, v0), (u1, v0), (u1, v1), (u0, v1)], dtype=float)


def _poly(*points) -> np.ndarray:
    return np.array(points, dtype=float)


_STAR_ANGLES = np.radians(np.arange(10) * 36 - 90)
_STAR = np.stack([np.cos(_STAR_ANGLES), np.sin(_STAR_ANGLES)], 1) * np.tile([1.15, 0.48], 5)[:, None]


def _body(spec, kind, wb):
    ts, f = _profile(kind)
    hw, v = f * wb / 2, BODY_TOP + ts * _BODY_H
    return [np.concatenate([np.stack([hw, v], 1), np.stack([-hw, v], 1)[::-1]])]


def _cap(spec, kind, wb):
    w, b = max(_edge(spec, 0.04)[0] * 1.1 + 0.03, 0.27 * wb), BODY_TOP + 0.025  # half-width, bottom
    if kind == "knob":
        return [_box(-w, b - 0.035, w, b), _box(-0.25 * w, b - 0.09, 0.25 * w, b), _ellipse(0, b - 0.11, 0.05, 0.045)]
    return {
        "round": [_ellipse(0, b, w, 0.13, 180, 360)],
        "square": [_box(-w, b - 0.11, w, b)],
        "triangle": [_poly((-w, b), (0, b - 0.16), (w, b))],
        "flat": [_box(-1.2 * w, b - 0.05, 1.2 * w, b)],
        "crown": [
            _poly((-w, b), (-w, b - 0.14), (-w / 2, b - 0.07), (0, b - 0.15), (w / 2, b - 0.07), (w, b - 0.14), (w, b))
        ],
    }.get(kind, [])


def _side(spec, kind, wb):
    if kind == "none":
        return []
    (e2, v2), (e3, v3), (e5, v5), (e6, v6), (e9, v9) = (_edge(spec, t) for t in (0.2, 0.3, 0.5, 0.6, 0.9))
    return {
        "ring": [_ellipse(e5 + 0.05, v5 - 0.04, 0.12, 0.17), _ellipse(e5 + 0.05, v5 - 0.04, 0.075, 0.125)],
        "wing": [_poly((e3, v3), (e3 + 0.22, v3 - 0.14), (e3 + 0.17, v5 + 0.02), (e6, v6))],
        "fin": [_poly((e5, v5), (e5 + 0.16, v9 + 0.03), (e9, v9))],
        "spout": [_poly((e6, v6), (e3, v3), (e2 + 0.2, v2 - 0.04), (e2 + 0.23, v2 + 0.04))],
        "button": [_ellipse(e5 + 0.06, v5, 0.065, 0.065)],
    }[kind]


def _emblem(spec, kind, wb):
    unit = {
        "star": [_STAR],
        "circle": [_ellipse(0, 0, 0.9, 0.9)],
        "square": [_box(-0.8, -0.8, 0.8, 0.8)],
        "diamond": [_poly((0, -1.15), (0.8, 0), (0, 1.15), (-0.8, 0))],
        "cross": [_box(-0.35, -1, 0.35, 1), _box(-1, -0.35, 1, 0.35)],
        "triangle": [_poly((0, -1.05), (1, 0.75), (-1, 0.75))],
    }.get(kind, [])
    return [p * (0.2 * wb) + (0, BODY_TOP + 0.5 * _BODY_H) for p in unit]


def _base(spec, kind, wb):
    top, b, x = BODY_BOTTOM - 0.08, BASE_BOTTOM, 0.3 * wb
    return {
        "legs": [
            _poly((s * x - 0.03, top), (s * x + 0.03, top), (s * x + 0.03 + 0.03 * s, b), (s * x - 0.03 + 0.03 * s, b))
            for s in (-1, 1)
        ],
        "stand": [
            _poly(
                (-0.12 * wb, top),
                (0.12 * wb, top),
                (0.12 * wb, b - 0.04),
                (0.42 * wb, b - 0.02),
                (0.42 * wb, b),
                (-0.42 * wb, b),
                (-0.42 * wb, b - 0.02),
                (-0.12 * wb, b - 0.04),
            )
        ],
        "wheels": [_ellipse(s * x, b - 0.065, 0.065, 0.065) for s in (-1, 1)],
        "plinth": [_poly((-0.58 * wb, top + 0.07), (0.58 * wb, top + 0.07), (0.52 * wb, b), (-0.52 * wb, b))],
    }.get(kind, [])


@dataclass(frozen=True)
class _Geometry:
    """All polygons of a spec in one array, so that a pose maps them in one step."""

    labels: tuple[int, ...]  # per polygon, in drawing order: parts drawn before the body sit behind it
    spans: tuple[tuple[int, int], ...]  # each polygon's rows of ``points``
    points: np.ndarray  # polygon vertices, then the contact shadow's outline (for bounds, not drawn)
    body: tuple[int, int]
    ground: float  # the contact shadow's centre height and half-width: the same whatever the cap,
    shadow_width: float  # side part or emblem, so that editing those leaves the shadow alone


@functools.lru_cache(maxsize=4096)  # a spec is drawn for several views and edits
def _geometry(spec: ObjectSpec) -> _Geometry:
    wb, layers = spec.body_aspect * _BODY_H, []
    for label, make, kind in (
        (_SIDE, _side, spec.side_part),
        (_BASE, _base, spec.base),
        (_BODY, _body, spec.body_shape),
        (_CAP, _cap, spec.cap_shape),
        (_EMBLEM, _emblem, spec.emblem_shape),
    ):
        # a ring's second polygon is its hole
        layers += [(_BG if label == _SIDE and i else label, p) for i, p in enumerate(make(spec, kind, wb))]
    ground, width = (BASE_BOTTOM if spec.base != "none" else BODY_BOTTOM + 0.01), 0.75 * wb + 0.04
    ends = np.cumsum([0] + [len(p) for _, p in layers]).tolist()
    spans = tuple(itertools.pairwise(ends))
    points = np.concatenate([p for _, p in layers] + [_ellipse(0, ground, width, _SHADOW_H)])
    body = spans[[label for label, _ in layers].index(_BODY)]
    return _Geometry(tuple(label for label, _ in layers), spans, points, body, ground, width)


# ---------------------------------------------------------------- rasterising


@dataclass(frozen=True)
class _Pose:
    """A placement as a map from the object frame to image coordinates at 2x."""

    px: float  # object height, 2x pixels
    x: float  # where the frame's centre (0, 0.5) lands, 2x pixels
    y: float
    cos: float
    sin: float
    mirror: float

    @classmethod
    def of(cls, placement: Placement, height: int, width: int) -> _Pose:
        a = np.radians(placement.rotation)
        return cls(
            2 * placement.scale * min(height, width),
            2 * placement.cx * width,
            2 * placement.cy * height,
            float(np.cos(a)),
            float(np.sin(a)),
            -1.0 if placement.flip else 1.0,
        )

    def apply(self, pts: np.ndarray) -> np.ndarray:
        u, b = pts[:, 0] * self.mirror, pts[:, 1] - 0.5
        return np.stack(
            [self.x + self.px * (u * self.cos + b * self.sin), self.y + self.px * (b * self.cos - u * self.sin)], 1
        )

    def grid(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frame coordinates (u as seen, so unmirrored; v) of the 2x image points ``xs`` x ``ys``."""
        x = (xs.astype(np.float32)[None, :] - np.float32(self.x)) * np.float32(1 / self.px)
        y = (ys.astype(np.float32)[:, None] - np.float32(self.y)) * np.float32(1 / self.px)
        return x * self.cos - y * self.sin, x * self.sin + y * self.cos + 0.5


def _labels(spec: ObjectSpec, pose: _Pose, height: int, width: int):
    """Region labels at 2x over the object's box, clipped to the image, and the box (x0, y0, x1, y1).

    None when nothing is visible. Contours are labelled as darker regions of their own.
    """
    geometry = _geometry(spec)
    xy = pose.apply(geometry.points)
    (lx, ly), (hx, hy) = xy.min(0), xy.max(0)
    x0, y0 = max(int(lx // 2) - 1, 0), max(int(ly // 2) - 1, 0)
    x1, y1 = min(int(hx // 2) + 2, width), min(int(hy // 2) + 2, height)
    if x1 <= x0 or y1 <= y0:
        return None
    xy -= (2 * x0, 2 * y0)
    canvas = Image.new("L", (2 * (x1 - x0), 2 * (y1 - y0)), _BG)
    draw, flat = ImageDraw.Draw(canvas), xy.tolist()
    for label, (start, end) in zip(geometry.labels, geometry.spans):
        draw.polygon(flat[start:end], fill=label)
    labels = np.array(canvas)
    edge = _contour(labels)
    if spec.texture != "solid":
        _paint_texture(spec, pose, labels, xy[slice(*geometry.body)], (2 * x0, 2 * y0))
    contour = labels[edge]
    contour[contour == _TEX] = _BODY  # the pattern has no contour of its own
    labels[edge] = contour + _DARK
    return labels, (x0, y0, x1, y1)


def _contour(labels: np.ndarray) -> np.ndarray:
    """Pixels of a region that touch another region: a dark line there makes parts legible."""
    edge = np.zeros(labels.shape, bool)
    np.not_equal(labels[1:], labels[:-1], out=edge[1:])
    edge[:-1] |= edge[1:]
    across = labels[:, 1:] != labels[:, :-1]
    edge[:, 1:] |= across
    edge[:, :-1] |= across
    return edge & (labels > 0)


def _paint_texture(spec, pose, labels, body, origin) -> None:
    (bx0, by0), (bx1, by1) = np.maximum(body.min(0).astype(int), 0), body.max(0).astype(int) + 2
    window = labels[by0:by1, bx0:bx1]  # only the body's box: the pattern is the costliest field
    u, v = pose.grid(
        np.arange(window.shape[1]) + (bx0 + 0.5 + origin[0]), np.arange(window.shape[0]) + (by0 + 0.5 + origin[1])
    )
    pattern = _texture(spec.texture, u * pose.mirror, v, spec.texture_scale * spec.body_aspect * _BODY_H)
    window[(window == _BODY) & pattern] = _TEX


def _frac(x: np.ndarray) -> np.ndarray:
    return x - np.floor(x)  # several times faster than np.mod on floats


def _texture(kind: str, u: np.ndarray, v: np.ndarray, period: float) -> np.ndarray:
    u, v = u * np.float32(1 / period), (v - np.float32(BODY_TOP)) * np.float32(1 / period)
    if kind == "dots":
        column = np.floor(u)
        du, dv = u - column - 0.5, _frac(v + 0.5 * column) - 0.5
        return du * du + dv * dv < 0.09
    if kind == "checker":
        return (np.floor(u + 0.5) + np.floor(v)).astype(np.int32) & 1 == 0
    phase = {
        "hstripes": lambda: v,
        "vstripes": lambda: u + 0.25,
        "diagonal": lambda: u + v,
        "waves": lambda: v + 0.25 * np.sin(np.float32(2 * np.pi) * u),
    }[kind]()
    return _frac(phase) < 0.5


def _reduce(a: np.ndarray) -> np.ndarray:
    """The coverage of each 1x pixel by a 2x boolean layer: the supersampling's box filter."""
    total = a[0::2, 0::2].astype(np.uint8) + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2]
    return total.astype(np.float32) * 0.25


def _sprite(spec: ObjectSpec, pose: _Pose, labels: np.ndarray, box) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Premultiplied colour, alpha (object and shadow) and object coverage of the box, at 1x.

    Sharp edges are resolved at 2x (PIL's palette lookup and box filter do that work in C); the
    smooth shading and shadow are computed afterwards, on a quarter of the pixels.
    """
    colours = np.array(
        [
            (0, 0, 0),
            spec.body_color,
            spec.cap_color,
            spec.side_color,
            spec.emblem_color,
            spec.base_color,
            spec.texture_color,
            (0, 0, 0),
        ],
        np.uint8,
    )
    image = Image.fromarray(labels)
    image.putpalette(np.concatenate([colours, colours // 2]).tobytes())
    rgb, cover = np.asarray(image.convert("RGB").reduce(2), np.float32), _reduce(labels > 0)
    x0, y0, x1, y1 = box
    u, v = pose.grid(np.arange(x0, x1) * 2 + 1.0, np.arange(y0, y1) * 2 + 1.0)
    un = np.clip(u * np.float32(2 / (spec.body_aspect * _BODY_H)), -1.2, 1.2)  # lit from the upper left
    shade = (0.8 + 0.32 * np.exp(-(((un + 0.35) * 2) ** 2)) - 0.14 * un * un) * (1.05 - 0.14 * np.clip(v, 0, 1))
    rgb *= shade[..., None]
    geometry = _geometry(spec)
    du, dv = u * np.float32(1 / geometry.shadow_width), (v - np.float32(geometry.ground)) * np.float32(1 / _SHADOW_H)
    shadow = np.maximum(1 - du * du - dv * dv, 0) * 0.6
    return rgb, cover + (1 - cover) * shadow, cover


def render(spec: ObjectSpec, placement: Placement, background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The object over a copy of ``background``, and its mask (pixels at least half covered).

    Only the object and its soft contact shadow touch the background; every other pixel is kept
    exactly, so a distractor differs from its positive nowhere else.
    """
    height, width = background.shape[:2]
    out, mask = np.array(background, dtype=np.uint8, copy=True), np.zeros((height, width), bool)
    pose = _Pose.of(placement, height, width)
    drawn = _labels(spec, pose, height, width)
    if drawn is not None:
        labels, (x0, y0, x1, y1) = drawn
        rgb, alpha, cover = _sprite(spec, pose, labels, (x0, y0, x1, y1))
        region = rgb + out[y0:y1, x0:x1] * (1 - alpha)[..., None]
        out[y0:y1, x0:x1] = np.clip(region + 0.5, 0, 255).astype(np.uint8)
        mask[y0:y1, x0:x1] = cover >= 0.5
    return out, mask


def render_part_mask(spec: ObjectSpec, placement: Placement, size: int, part: str) -> np.ndarray:
    """Where ``part`` lands in this placement ('texture': the body that carries, or would carry, it)."""
    if part not in _PART_LABEL:
        raise ValueError(f"unknown part {part!r}; expected one of {PART_NAMES}")
    ids = [_PART_LABEL[part], _PART_LABEL[part] + _DARK] + ([_TEX] if part == "texture" else [])
    mask = np.zeros((size, size), bool)
    drawn = _labels(spec, _Pose.of(placement, size, size), size, size)
    if drawn is not None:
        labels, (x0, y0, x1, y1) = drawn
        mask[y0:y1, x0:x1] = _reduce(np.isin(labels, ids)) >= 0.5
    return mask
