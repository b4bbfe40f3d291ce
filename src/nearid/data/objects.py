"""The synthetic benchmark's objects: what an identity is (:class:`ObjectSpec`), where it is shown
(:class:`Placement`), and the rules that make a near-identity distractor (another instance of the same
kind, or one attribute changed) or a part edit. No pixels here: :mod:`nearid.data.render` draws them,
:mod:`nearid.data.backgrounds` makes the matched contexts. Everything random takes a
``numpy.random.Generator``, so a seed fixes a whole benchmark.
"""

from __future__ import annotations

import colorsys
import dataclasses
from dataclasses import dataclass

import numpy as np

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
SIMILAR_SHAPES = {
    "capsule": ("bottle", "barrel"),
    "bottle": ("capsule", "vase"),
    "box": ("jar", "barrel"),
    "jar": ("box", "barrel"),
    "cone": ("bell", "vase"),
    "barrel": ("capsule", "jar"),
    "vase": ("bottle", "bell"),
    "bell": ("cone", "vase"),
}


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


def hsv_colour(h: float, s: float, v: float) -> Colour:
    return tuple(round(c * 255) for c in colorsys.hsv_to_rgb(h % 1.0, s, v))


def _dist(a: Colour, b: Colour) -> float:
    return float(np.linalg.norm(np.subtract(a, b)))


def _sample_colour(rng: np.random.Generator, avoid: tuple[Colour, ...] = (), min_dist: float = 90) -> Colour:
    """Colours keep away from the ones they sit on, so that every part stays visible."""
    for _ in range(64):
        if rng.random() < 0.15:  # neutrals: near black, grey or near white
            value = (rng.uniform(0.12, 0.25), rng.uniform(0.45, 0.6), rng.uniform(0.85, 0.97))[rng.integers(3)]
            colour = hsv_colour(rng.random(), rng.uniform(0, 0.1), value)
        else:
            colour = hsv_colour(rng.random(), rng.uniform(0.4, 0.95), rng.uniform(0.4, 0.95))
        if all(_dist(colour, other) >= min_dist for other in avoid):
            break
    return colour


def _shift_colour(rgb: Colour, rng: np.random.Generator, avoid: tuple[Colour, ...] = ()) -> Colour:
    """A recolour a person notices at once that still keeps the object's look (no inversions)."""
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    for attempt in range(64):
        sign = rng.choice((-1.0, 1.0))
        if s >= 0.3 and attempt < 32:  # a hue step of 40-75 degrees
            new = hsv_colour(h + sign * rng.uniform(40, 75) / 360, s, v)
        else:  # greys, and dark colours whose hue steps are too faint, move in value instead
            step = (sign if 0.3 < v < 0.7 else 1.0 if v <= 0.3 else -1.0) * rng.uniform(0.25, 0.4)
            hue, saturation = (rng.random() if s < 0.3 else h), max(s, 0.3 * (attempt >= 32))
            new = hsv_colour(hue, saturation, float(np.clip(v + step, 0.12, 0.97)))
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
        similar = SIMILAR_SHAPES[spec.body_shape]
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
