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

import colorsys
import dataclasses
import functools
import importlib.util
import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

Colour = tuple[int, int, int]

BODY_SHAPES = ("capsule", "bottle", "box", "jar", "cone", "barrel", "vase", "bell")
TEXTURES = ("solid", "hstripes", "vstripes", "dots", "checker", "diagonal", "waves")
CAP_SHAPES = ("none", "round", "square", "triangle", "knob", "flat", "crown")
SIDE_PARTS = ("none", "ring", "wing", "fin", "spout", "button")
EMBLEM_SHAPES = ("none", "star", "circle", "diamond", "square", "cross", "triangle")
BASES = ("none", "legs", "stand", "wheels", "plinth")
DISTRACTOR_RULES: tuple[str, ...] = ("part", "recolor", "texture", "shape", "instance")
PART_NAMES: tuple[str, ...] = ("cap", "side", "emblem", "texture", "base")
# The fields each part owns: editing a part changes some of these and nothing else.
PART_FIELDS: dict[str, tuple[str, ...]] = {
    "cap": ("cap_shape", "cap_color"),
    "side": ("side_part", "side_color"),
    "emblem": ("emblem_shape", "emblem_color"),
    "texture": ("texture", "texture_color", "texture_scale"),
    "base": ("base", "base_color"),
}
_CHOICES = {
    "cap_shape": CAP_SHAPES,
    "side_part": SIDE_PARTS,
    "emblem_shape": EMBLEM_SHAPES,
    "base": BASES,
    "texture": TEXTURES,
}
# Similar silhouettes, so that a 'shape' distractor stays a near miss rather than another kind of thing.
_SIMILAR = {
    "capsule": ("bottle", "barrel"),
    "bottle": ("capsule", "vase"),
    "box": ("jar", "barrel"),
    "jar": ("box", "barrel"),
    "cone": ("bell", "vase"),
    "barrel": ("capsule", "jar"),
    "vase": ("bottle", "bell"),
    "bell": ("cone", "vase"),
}
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


@dataclass(frozen=True)
class ObjectSpec:
    """One identity: everything that decides its look, nothing about where it is shown.

    Absent parts keep a colour, so that adding a part (a distractor) changes a single field.
    """

    body_shape: str
    body_aspect: float  # body width / body height
    body_color: Colour
    texture: str
    texture_color: Colour
    texture_scale: float  # pattern period, fraction of the body width
    cap_shape: str
    cap_color: Colour
    side_part: str
    side_color: Colour
    emblem_shape: str
    emblem_color: Colour
    base: str
    base_color: Colour

    @property
    def category(self) -> str:
        """The coarse family a person would name; the body shape decides it."""
        return self.body_shape

    def describe(self) -> str:
        """A caption, for prompts and for reading benchmark files by eye."""
        size = "slim " if self.body_aspect < 0.58 else "wide " if self.body_aspect > 0.76 else ""
        text, extras = _a(f"{size}{_name(self.body_color)} {self.body_shape}"), []
        if self.texture != "solid":
            extras.append(_TEXTURE_WORDS[self.texture].format(_name(self.texture_color)))
        for shape, colour, words in (
            (self.cap_shape, self.cap_color, _CAP_WORDS),
            (self.side_part, self.side_color, _SIDE_WORDS),
            (self.emblem_shape, self.emblem_color, _EMBLEM_WORDS),
        ):
            if shape != "none":
                extras.append(_a(words[shape].format(_name(colour))))
        if extras:
            text += " with " + (", ".join(extras[:-1]) + " and " if len(extras) > 1 else "") + extras[-1]
        return text + (f", on {_a(f'{_name(self.base_color)} {self.base}')}" if self.base != "none" else "")


_TEXTURE_WORDS = {
    "hstripes": "{} horizontal stripes",
    "vstripes": "{} vertical stripes",
    "dots": "{} dots",
    "checker": "a {} checker pattern",
    "diagonal": "{} diagonal stripes",
    "waves": "{} wavy stripes",
}
_CAP_WORDS = {
    "round": "round {} cap",
    "square": "square {} cap",
    "triangle": "pointed {} cap",
    "knob": "{} knob on top",
    "flat": "flat {} lid",
    "crown": "{} crown-shaped cap",
}
_SIDE_WORDS = {
    "ring": "{} ring handle",
    "wing": "{} wing",
    "fin": "{} fin",
    "spout": "{} spout",
    "button": "{} side button",
}
_EMBLEM_WORDS = {shape: "{} " + shape + " emblem" for shape in EMBLEM_SHAPES}


def _a(phrase: str) -> str:
    if phrase.endswith("s") and not phrase.endswith("ss"):  # plural parts (legs, wheels) take no article
        return phrase
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


@dataclass(frozen=True)
class Placement:
    """Where and how one view shows the object; a distractor reuses its positive's placement."""

    cx: float  # object centre, fraction of the image width
    cy: float  # object centre, fraction of the image height
    scale: float  # object height, fraction of the image size
    rotation: float  # degrees, counter-clockwise
    flip: bool  # mirrored pose


# ---------------------------------------------------------------- colours


def _name(rgb: Colour) -> str:
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    if s < 0.2 or v < 0.2:
        return "black" if v < 0.3 else "grey" if v < 0.75 else "white"
    names = (
        (15, "red"),
        (40, "orange"),
        (68, "yellow"),
        (95, "lime"),
        (155, "green"),
        (185, "teal"),
        (205, "cyan"),
        (250, "blue"),
        (285, "purple"),
        (330, "magenta"),
        (345, "pink"),
        (361, "red"),
    )
    word = next(name for limit, name in names if h * 360 < limit)
    if word in ("orange", "red") and v < 0.6:
        return "brown" if word == "orange" else "dark red"
    return ("dark " if v < 0.5 else "light " if s < 0.45 else "") + word


def _rgb(h: float, s: float, v: float) -> Colour:
    return tuple(round(c * 255) for c in colorsys.hsv_to_rgb(h % 1.0, s, v))


def _dist(a: Colour, b: Colour) -> float:
    return float(np.linalg.norm(np.subtract(a, b)))


def _sample_colour(rng: np.random.Generator, avoid: tuple[Colour, ...] = (), min_dist: float = 90) -> Colour:
    """Colours keep away from the ones they sit on, so that every part stays visible."""
    for _ in range(64):
        if rng.random() < 0.15:  # neutrals: near black, grey or near white
            value = (rng.uniform(0.12, 0.25), rng.uniform(0.45, 0.6), rng.uniform(0.85, 0.97))[rng.integers(3)]
            colour = _rgb(rng.random(), rng.uniform(0, 0.1), value)
        else:
            colour = _rgb(rng.random(), rng.uniform(0.4, 0.95), rng.uniform(0.4, 0.95))
        if all(_dist(colour, other) >= min_dist for other in avoid):
            break
    return colour


def _shift_colour(rgb: Colour, rng: np.random.Generator, avoid: tuple[Colour, ...] = ()) -> Colour:
    """A recolour a person notices at once that still keeps the object's look (no inversions)."""
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    for attempt in range(64):
        sign = rng.choice((-1.0, 1.0))
        if s >= 0.3 and attempt < 32:  # a hue step of 40-75 degrees
            new = _rgb(h + sign * rng.uniform(40, 75) / 360, s, v)
        else:  # greys, and dark colours whose hue steps are too faint, move in value instead
            step = (sign if 0.3 < v < 0.7 else 1.0 if v <= 0.3 else -1.0) * rng.uniform(0.25, 0.4)
            hue, saturation = (rng.random() if s < 0.3 else h), max(s, 0.3 * (attempt >= 32))
            new = _rgb(hue, saturation, float(np.clip(v + step, 0.12, 0.97)))
        if 70 <= _dist(new, rgb) <= 230 and all(_dist(new, other) >= 50 for other in avoid):
            break
    return new


# ---------------------------------------------------------------- identities and distractors


def sample_object(rng: np.random.Generator) -> ObjectSpec:
    """A random identity; continuous colours and proportions make repeats practically impossible."""

    def pick(options, none_p):
        return options[0] if rng.random() < none_p else options[1 + rng.integers(len(options) - 1)]

    body = _sample_colour(rng)
    texture_color = _sample_colour(rng, (body,), 100)
    return ObjectSpec(
        body_shape=BODY_SHAPES[rng.integers(len(BODY_SHAPES))],
        body_aspect=round(float(rng.uniform(0.5, 0.85)), 3),
        body_color=body,
        texture=pick(TEXTURES, 0.25),
        texture_color=texture_color,
        texture_scale=round(float(rng.uniform(0.2, 0.34)), 3),
        cap_shape=pick(CAP_SHAPES, 0.2),
        cap_color=_sample_colour(rng, (body,)),
        side_part=pick(SIDE_PARTS, 0.35),
        side_color=_sample_colour(rng, (body,)),
        emblem_shape=pick(EMBLEM_SHAPES, 0.3),
        emblem_color=_sample_colour(rng, (body, texture_color), 100),
        base=pick(BASES, 0.4),
        base_color=_sample_colour(rng, (body,)),
    )


def _swap(spec: ObjectSpec, field: str, rng: np.random.Generator) -> ObjectSpec:
    rest = [option for option in _CHOICES[field] if option != getattr(spec, field)]
    return dataclasses.replace(spec, **{field: rest[rng.integers(len(rest))]})


def _recolour(spec: ObjectSpec, field: str, rng: np.random.Generator) -> ObjectSpec:
    # a region stays distinct from what is drawn on it, or the edit would erase a pattern
    avoid = (spec.texture_color, spec.emblem_color) if field == "body_color" else (spec.body_color,)
    return dataclasses.replace(spec, **{field: _shift_colour(getattr(spec, field), rng, avoid)})


_LOOK_ALIKE_TEXTURES = {"hstripes": ("waves",), "waves": ("hstripes",)}


def near_identity(spec: ObjectSpec, rule: str, rng: np.random.Generator) -> ObjectSpec:
    """A different object that differs from ``spec`` in exactly what ``rule`` names.

    ``part``, ``recolor``, ``texture`` and ``shape`` change one attribute (graded, MTG-like difficulty).
    ``instance`` is what the paper's distractors are: a different object of the same kind inpainted
    where the original was. The body shape and proportions stay (the category, and the region an
    inpainting mask would cover); colours, texture and parts are drawn anew.
    """
    if rule == "part":
        return _swap(spec, ("cap_shape", "side_part", "emblem_shape", "base")[rng.integers(4)], rng)
    if rule == "recolor":
        regions = ["body_color"] + [
            f for f, shape in (("cap_color", spec.cap_shape), ("side_color", spec.side_part)) if shape != "none"
        ]
        return _recolour(spec, regions[rng.integers(len(regions))], rng)
    if rule == "texture":  # a swap between look-alike patterns would not be visible at 64-128 px
        options = [t for t in TEXTURES if t != spec.texture and t not in _LOOK_ALIKE_TEXTURES.get(spec.texture, ())]
        return dataclasses.replace(spec, texture=options[rng.integers(len(options))])
    if rule == "shape":
        similar = _SIMILAR[spec.body_shape]
        return dataclasses.replace(spec, body_shape=similar[rng.integers(len(similar))])
    if rule == "instance":  # the paper's kind: another object of the same category in the same region
        while (
            other := dataclasses.replace(sample_object(rng), body_shape=spec.body_shape, body_aspect=spec.body_aspect)
        ) == spec:
            pass
        return other
    raise ValueError(f"unknown distractor rule {rule!r}; expected one of {DISTRACTOR_RULES}")


def edit_part(spec: ObjectSpec, rng: np.random.Generator) -> tuple[ObjectSpec, str]:
    """An MTG-style local edit; the parts range from an emblem (small) to the body's texture (large)."""
    part = PART_NAMES[rng.integers(len(PART_NAMES))]
    shape_field, colour_field = PART_FIELDS[part][:2]
    if getattr(spec, shape_field) not in ("none", "solid") and rng.random() < 0.5:
        return _recolour(spec, colour_field, rng), part
    return _swap(spec, shape_field, rng), part


def sample_placement(rng: np.random.Generator) -> Placement:
    """A pose that keeps the object in the frame while varying its size, position and roll."""
    scale = float(rng.uniform(0.45, 0.75))
    margin_x, margin_y = 0.3 * scale + 0.03, 0.5 * scale + 0.02
    return Placement(
        cx=round(float(rng.uniform(margin_x, 1 - margin_x)), 4),
        cy=round(float(rng.uniform(margin_y, 1 - margin_y)), 4),
        scale=round(scale, 4),
        rotation=round(float(rng.uniform(-25, 25)), 2),
        flip=bool(rng.random() < 0.5),
    )


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


# ---------------------------------------------------------------- backgrounds
# Built channels first: numpy broadcasts over a trailing axis of 3 very slowly.

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
    return np.array(_rgb(rng.random(), rng.uniform(0.1, 0.7), rng.uniform(0.3, 0.95)), np.float32)[:, None, None]


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
        boards = (_frac(across) < 0.92) * 0.15 + 0.85
        wall = y < horizon
        return np.where(wall, c0, c1) * np.where(wall, 1.05 - 0.25 * y, (0.7 + 0.4 * y) * boards)
    if kind == 2:  # tiles with grout
        k, grout = np.float32(rng.uniform(3, 9)), rng.uniform(0.04, 0.12)
        tx, ty = x * k + np.float32(rng.random()), y * k + np.float32(rng.random())
        checker = (np.floor(tx) + np.floor(ty)).astype(np.int32) & 1
        in_grout = (_frac(tx) < grout) | (_frac(ty) < grout)
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
