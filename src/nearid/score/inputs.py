"""The planning pass of ``nearid score``: masks attached to a :class:`~nearid.score.plan.PairPlan`, every
image and mask header opened (not decoded), and every bad input listed in one message.

Everything that can be checked without a model is checked here, so a run never stops after the
embedding, or at the first of many bad files.
"""

from __future__ import annotations

import os
from pathlib import Path

from nearid.images.decode import MAX_PIXELS
from nearid.io.errors import NearIDError
from nearid.score.plan import IMAGE_SUFFIXES, Pair, PairingError, PairPlan

#: Bad inputs quoted in one error message; the total is always given.
LISTED_PROBLEMS = 20


def _find_mask(masks: Path, side: str, image: Path, root: Path) -> Path | None:
    stem = masks / side / image.relative_to(root).with_suffix("")
    for suffix in sorted(IMAGE_SUFFIXES):
        candidate = stem.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


def _attach_masks(plan: PairPlan, masks: Path) -> None:
    """``MASKS/refs/<relative path>`` for a reference, ``MASKS/gens/<relative path>`` for a generated
    image, any image extension. A side whose folder exists needs a mask for every image of that side
    (a missing one is a bad input); a side without a folder is used whole."""
    if not masks.is_dir():
        raise PairingError(f"--mask-folder {masks}: no such folder; give the folder holding refs/ and gens/ masks")
    sides = [side for side in ("refs", "gens") if (masks / side).is_dir()]
    unknown = sorted(
        p.name for p in masks.iterdir() if p.is_dir() and p.name not in {"refs", "gens"} and not p.name.startswith(".")
    )
    if unknown:
        # `references/` beside `gens/` would leave the references unmasked without a word
        raise PairingError(
            f"--mask-folder {masks}: holds {', '.join(f'{u}/' for u in unknown)}, which is neither of the "
            "expected refs/ and gens/; rename it (masks of references go to refs/, of generated images to gens/)"
        )
    if not sides:
        raise PairingError(
            f"--mask-folder {masks}: holds no refs/ or gens/ folder; masks go to "
            f"{masks}/refs/<relative path> and {masks}/gens/<relative path>"
        )
    plan.masks = masks
    missing: dict[str, str] = {}
    for pair in plan.pairs:
        for side, image in (("refs", pair.reference), ("gens", pair.generated)):
            root = plan.roots.get(side)
            if side not in sides or root is None or (image, side) in plan.mask_of or str(image) in missing:
                continue
            if not image.is_relative_to(root):
                missing[str(image)] = f"not below {root}, so it has no place in {masks}/{side}/"
                continue
            mask = _find_mask(masks, side, image, root)
            if mask is None:
                where = masks / side / image.relative_to(root).with_suffix("")
                missing[str(image)] = f"no mask at {where}.* although {masks / side} holds masks"
            else:
                plan.mask_of[(image, side)] = mask
    plan.unmatched += sorted(missing.items())


def _header_problem(path: Path) -> str | None:
    """Why ``path`` cannot be an image, from its header alone (no decoding: the planning pass is cheap)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
    except FileNotFoundError:
        return "no such file"
    except UnidentifiedImageError:
        return "not an image file (unrecognised format); replace or remove it"
    except Image.DecompressionBombError:
        return "image is too large to decode safely; downscale it"
    except (OSError, SyntaxError, ValueError) as exc:
        return f"corrupt or unreadable image ({exc}); re-export or remove it"
    if width * height > MAX_PIXELS:
        return f"{width}x{height} pixels is above the limit of {MAX_PIXELS:,}; downscale the image"
    if width == 0 or height == 0:
        return "image has no pixels; re-export or remove it"
    return None


def prepare(plan: PairPlan, masks: str | os.PathLike | None = None) -> PairPlan:
    """The planning pass: attach masks and check every image and mask header, adding every problem
    to ``plan.unmatched`` (so all of them can be listed at once). Idempotent."""
    if plan.prepared:
        if masks and (plan.masks is None or Path(masks) != plan.masks):
            raise NearIDError(
                f"masks {masks}: the plan was prepared with masks {plan.masks}; prepare it once, with the masks"
            )
        return plan
    if masks:
        _attach_masks(plan, Path(masks))
    bad = {path for path, _ in plan.unmatched}
    files = {p: None for pair in plan.pairs for p in (pair.reference, pair.generated)}
    files.update(dict.fromkeys(plan.mask_of.values()))
    for path in files:
        if str(path) not in bad and (why := _header_problem(path)) is not None:
            plan.unmatched.append((str(path), why))
            bad.add(str(path))
    plan.prepared = True
    return plan


def check_plan(plan: PairPlan, skip_errors: bool = False) -> None:
    """Without ``skip_errors``, refuse a plan with bad inputs, listing up to :data:`LISTED_PROBLEMS` of them."""
    problems = plan.unmatched
    listed = "; ".join(f"{path}: {why}" for path, why in problems[:LISTED_PROBLEMS])
    more = f" (and {len(problems) - LISTED_PROBLEMS} more)" if len(problems) > LISTED_PROBLEMS else ""
    if problems and not skip_errors:
        if len(problems) == 1:
            path, why = problems[0]
            raise PairingError(f"{path}: {why}; fix the inputs or pass --skip-errors")
        raise PairingError(
            f"{len(problems)} bad inputs: {listed}{more}; fix them or pass --skip-errors to score the rest"
        )
    if not any(usable(pair, plan) for pair in plan.pairs):
        raise PairingError(
            "no pairs to score"
            + (f": every pair has a bad input ({len(problems)}: {listed}{more})" if plan.pairs else "")
        )


def usable(pair: Pair, plan: PairPlan) -> bool:
    bad = {path for path, _ in plan.unmatched}
    return str(pair.reference) not in bad and str(pair.generated) not in bad


def same_files(plan: PairPlan) -> int:
    """Pairs whose reference and generated image are the same file: a mistake in --refs / --gens."""

    def same(a: Path, b: Path) -> bool:
        try:
            return os.path.samefile(a, b)
        except OSError:
            return False

    return sum(same(pair.reference, pair.generated) for pair in plan.pairs)
