"""Score generated images against references: the drop-in replacement for CLIP-I and DINO scores.

Pairing rules (``pairing="auto"`` picks by the shape of the inputs):

``csv``         ``--refs pairs.csv``: columns ``reference,generated`` (optional ``subject``); relative
                paths are relative to the CSV's folder.
``paths``       ``--refs A --gens B``: files matched by relative path without extension
                (``A/dog/1.png`` <-> ``B/dog/1.jpg``).
``subjects``    ``--refs A --gens B`` where both hold one folder per subject: every generated image of a
                subject against every reference of it; per generated image the mean and max are reported.
``dreambench``  ``--refs SAMPLES`` holding DreamBench++'s ``src_image/`` and ``tgt_image/``: matched by
                relative path; the key (relative path, ``/`` -> ``-``) is written so the scores feed
                ``nearid dbpp --scores``.

``auto`` takes a ``.csv`` as ``csv``, a folder with ``src_image/`` and ``tgt_image/`` as ``dreambench``,
two folders of subject folders whose file names differ as ``subjects``, and two folders of files as
``paths``. Two folders of subject folders whose files *share* names fit both ``paths`` and ``subjects``
(which give different numbers of pairs), so ``auto`` refuses them and asks for ``--pairing``; the rule
used is always printed and recorded. Each unique image (with its mask) is embedded once.

Everything that can be checked without a model is checked first, by :func:`check_options` and
:func:`prepare` (a planning pass that opens each image's header without decoding it): every bad input
is listed in one message, so a run never stops after the embedding, or at the first of many bad files.
"""

from __future__ import annotations

import csv
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nearid.eval.results import BenchResults, ScoreSummary, read_results
from nearid.images.decode import MAX_PIXELS
from nearid.io.atomic import atomic_path, write_text_atomic
from nearid.io.errors import NearIDError
from nearid.models.embedding import check_batch_size, embed

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}

#: Per-pair output formats by file extension; ``--format`` must agree with the extension.
OUTPUT_FORMATS = {".csv": "csv", ".jsonl": "jsonl"}

#: Bad inputs quoted in one error message; the total is always given.
LISTED_PROBLEMS = 20


class PairingError(NearIDError):
    """Inputs that cannot be paired: an empty folder, an unmatched file, a bad pairs CSV."""


@dataclass(frozen=True)
class Pair:
    reference: Path
    generated: Path
    subject: str = ""
    key: str = ""  # DreamBench++ key, for the dreambench rule


@dataclass
class PairPlan:
    rule: str
    pairs: list[Pair]
    unmatched: list[tuple[str, str]] = field(default_factory=list)  # (path, why): unpaired or unreadable inputs
    roots: dict[str, Path] = field(default_factory=dict)  # "refs"/"gens" -> folder (for masks)
    how: str = "given"  # "given" (--pairing) or "chosen automatically: <why>"
    masks: Path | None = None  # set by prepare()
    mask_of: dict[tuple[Path, str], Path] = field(default_factory=dict)  # (image, "refs"/"gens") -> mask
    prepared: bool = False

    def inputs(self) -> list[Path]:
        """Every file and folder the plan reads, for :func:`nearid.io.outputs.check_outputs`."""
        # a pairs CSV's folder is not read as a whole (only the files it lists), the other rules' folders are
        folders = [] if self.rule == "csv" else list(self.roots.values())
        found = [*folders, *(p for pair in self.pairs for p in (pair.reference, pair.generated))]
        return found + ([self.masks] if self.masks is not None else [])


def _images(folder: Path) -> dict[str, Path]:
    """Relative path without extension -> file, for every image below ``folder`` as
    :func:`~nearid.images.decode.list_images` finds them (linked subfolders followed, ``._*`` and hidden skipped)."""
    from nearid.images.decode import list_images

    found: dict[str, Path] = {}
    for path in list_images(folder, suffixes=IMAGE_SUFFIXES):
        stem = path.relative_to(folder).with_suffix("").as_posix()
        if stem in found:
            raise PairingError(f"{found[stem]} and {path}: two images with the same name; keep one")
        found[stem] = path
    if not found:
        raise PairingError(f"{folder}: no images inside (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return found


def _match(refs: Path, gens: Path, rule: str) -> PairPlan:
    ref_images, gen_images = _images(refs), _images(gens)
    pairs = [
        Pair(ref_images[s], gen_images[s], subject=s.split("/")[0] if "/" in s else "", key=s.replace("/", "-"))
        for s in sorted(gen_images)
        if s in ref_images
    ]
    unmatched = [(str(gen_images[s]), "no reference with this name") for s in sorted(set(gen_images) - set(ref_images))]
    unmatched += [
        (str(ref_images[s]), "no generated image with this name") for s in sorted(set(ref_images) - set(gen_images))
    ]
    return PairPlan(rule, pairs, unmatched, {"refs": refs, "gens": gens})


def _subjects(refs: Path, gens: Path) -> PairPlan:
    ref_subjects = {p.name: p for p in sorted(refs.iterdir()) if p.is_dir()}
    pairs, unmatched = [], []
    for subject_dir in sorted(p for p in gens.iterdir() if p.is_dir()):
        if subject_dir.name not in ref_subjects:
            unmatched.append((str(subject_dir), "no reference folder for this subject"))
            continue
        references = list(_images(ref_subjects[subject_dir.name]).values())
        for generated in _images(subject_dir).values():
            pairs += [Pair(reference, generated, subject=subject_dir.name) for reference in references]
    if not pairs and not unmatched:
        raise PairingError(f"{gens}: no subject folders with images inside")
    return PairPlan("subjects", pairs, unmatched, {"refs": refs, "gens": gens})


def _csv(path: Path) -> PairPlan:
    # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark, which would glue onto the first column name
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"reference", "generated"} <= set(reader.fieldnames):
                raise PairingError(
                    f"{path}: a pairs CSV needs the columns reference,generated (and optionally subject)"
                )
            rows = list(reader)
    except UnicodeDecodeError as exc:
        raise PairingError(
            f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x}, e.g. Latin-1 or Windows-1252); "
            'save it as UTF-8 (in Excel: "CSV UTF-8")'
        ) from None
    if not rows:
        raise PairingError(f"{path}: no pairs listed")
    base = path.parent
    pairs, unmatched = [], []
    for line, row in enumerate(rows, start=2):
        empty = [name for name in ("reference", "generated") if not (row.get(name) or "").strip()]
        if empty:
            unmatched.append(
                (f"{path}:{line}", f"line {line} has no '{empty[0]}' field; give both columns on every row")
            )
            continue
        reference, generated = (base / row["reference"].strip(), base / row["generated"].strip())
        missing = [p for p in (reference, generated) if not p.is_file()]
        if missing:
            unmatched += [(str(p), f"listed on line {line} of {path.name} but not found") for p in missing]
            continue
        pairs.append(Pair(reference, generated, subject=(row.get("subject") or "").strip()))
    return PairPlan("csv", pairs, unmatched, {"refs": base, "gens": base})


def plan_pairs(refs: str | os.PathLike, gens: str | os.PathLike | None = None, pairing: str = "auto") -> PairPlan:
    """Pair references with generated images by one of the rules in the module docstring."""
    refs = Path(refs)
    gens = Path(gens) if gens is not None else None
    if not refs.exists():
        raise PairingError(f"{refs}: no such file or folder")
    if refs.is_file() and refs.suffix.lower() in IMAGE_SUFFIXES:
        raise PairingError(
            f"{refs}: is an image; --refs takes a folder of references, a pairs CSV or a DreamBench++ folder"
        )
    if gens is not None and not gens.is_dir():
        raise PairingError(f"{gens}: no such folder")
    if gens is not None and refs.is_file():
        raise PairingError(
            f"--gens {gens} cannot go with a pairs CSV ({refs}), which names the generated images itself; drop --gens"
        )
    if pairing == "csv" and not refs.is_file():
        raise PairingError(
            f"--pairing csv needs a pairs CSV file, but {refs} is a folder; give the CSV or another --pairing"
        )
    if pairing in ("paths", "subjects", "dreambench") and not refs.is_dir():
        raise PairingError(f"--pairing {pairing} needs --refs to be a folder, but {refs} is a file")
    how = "given"
    if pairing == "auto":
        pairing, how = _choose(refs, gens)
    plan = _plan(refs, gens, pairing)
    plan.how = how
    return plan


def _choose(refs: Path, gens: Path | None) -> tuple[str, str]:
    """The rule ``auto`` picks, and why; a layout that fits both folder rules is refused."""
    if refs.is_file():
        return "csv", "chosen automatically: --refs is a file"
    if gens is None:
        if (refs / "src_image").is_dir() and (refs / "tgt_image").is_dir():
            return "dreambench", "chosen automatically: --refs holds src_image/ and tgt_image/"
        raise PairingError(f"{refs}: give --gens, a pairs CSV, or a DreamBench++ folder with src_image/ and tgt_image/")
    only_dirs = all(not p.is_file() for p in refs.iterdir()) and all(not p.is_file() for p in gens.iterdir())
    has_dirs = any(p.is_dir() for p in refs.iterdir())
    if not (only_dirs and has_dirs):
        return "paths", "chosen automatically: the folders hold image files"
    if not _same_relative_files(refs, gens):
        return "subjects", "chosen automatically: subject folders whose file names differ"
    by_path, by_subject = len(_plan(refs, gens, "paths").pairs), len(_plan(refs, gens, "subjects").pairs)
    raise PairingError(
        f"{refs} and {gens} hold subject folders with files of the same names, which fits two rules: "
        f"--pairing paths ({by_path} pairs, same name against same name) or --pairing subjects "
        f"({by_subject} pairs, every generated image against every reference of its subject); pass one"
    )


def _plan(refs: Path, gens: Path | None, pairing: str) -> PairPlan:
    if pairing == "csv":
        return _csv(refs)
    if pairing == "dreambench":
        return _match(refs / "src_image", refs / "tgt_image", "dreambench")
    if gens is None:
        raise PairingError(f"pairing '{pairing}' needs --gens")
    if pairing == "paths":
        return _match(refs, gens, "paths")
    if pairing == "subjects":
        return _subjects(refs, gens)
    raise PairingError(f"unknown pairing '{pairing}'; use auto, csv, paths, subjects or dreambench")


def _same_relative_files(refs: Path, gens: Path) -> bool:
    """Subject folders holding files of the same names are the ``paths`` rule, not ``subjects``."""
    try:
        return bool(set(_images(refs)) & set(_images(gens)))
    except PairingError:
        return False


def check_options(
    *,
    threshold: str | None = None,
    calibration: str | os.PathLike | None = None,
    batch_size: int = 32,
    n_models: int = 1,
) -> None:
    """The score options that mean nothing, refused before anything is read or loaded."""
    check_batch_size(batch_size, "--batch-size")
    if n_models > 1 and threshold is not None and threshold != "calibrated":
        raise NearIDError(
            f"--threshold {threshold}: one number cannot cut {n_models} metrics on their different scales; "
            "use --threshold calibrated (each metric's own cut from a bench results.json) or one --model"
        )
    if threshold is not None and threshold != "calibrated":
        try:
            value = float(threshold)
        except ValueError:
            raise NearIDError(f"--threshold {threshold}: give a number or 'calibrated'") from None
        if not np.isfinite(value):
            raise NearIDError(
                f"--threshold {threshold}: not a finite number; give a number such as 0.5, or 'calibrated'"
            )
    if calibration is not None and threshold != "calibrated":
        raise NearIDError(
            f"--calibration {calibration} is only read with --threshold calibrated; add it or drop --calibration"
        )


def output_format(out: str | os.PathLike, fmt: str | None = None) -> str:
    """The per-pair format: from the extension of ``out``; a ``fmt`` that contradicts it is refused."""
    suffix = Path(out).suffix.lower()
    inferred = OUTPUT_FORMATS.get(suffix)
    if fmt is None:
        if inferred is None:
            raise NearIDError(
                f"{out}: cannot tell the output format from '{suffix or '(no extension)'}'; "
                "name the file .csv or .jsonl (or pass --format)"
            )
        return inferred
    if inferred is not None and inferred != fmt:
        raise NearIDError(f"--format {fmt} contradicts the extension of {out}; name the file .{fmt} or drop --format")
    return fmt


def side_file(out: str | os.PathLike, what: str) -> Path:
    """A file that belongs to the per-pair output ``out``, named from its whole name (``s.csv.summary.json``),
    so that ``s.csv`` and ``s.jsonl`` never share one."""
    out = Path(out)
    return out.with_name(f"{out.name}.{what}")


def output_files(out: str | os.PathLike, rule: str, specs: list[str] | None = None) -> list[Path]:
    """Every file a run may write for ``out``, to check them all before the work (``specs``: the
    ``--model`` specs of a several-metric run, which writes one DreamBench++ file per metric)."""
    files = [Path(out), side_file(out, "summary.json"), side_file(out, "errors.csv")]
    if rule == "subjects":
        files.append(side_file(out, "per_generated.csv"))
    if rule == "dreambench":
        several = specs is not None and len(specs) > 1
        files += [dbpp_file(out, spec) for spec in specs] if several else [side_file(out, "dbpp.json")]
    return files


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


@dataclass
class ScoreResult:
    plan: PairPlan
    model: str
    similarities: np.ndarray  # one per pair, NaN where an image failed
    failures: dict[str, str]  # image path -> message
    embedded: int  # unique images embedded
    masked: int = 0  # unique images embedded with a mask
    mask_cleaning: str | None = None  # with masks: "authors" (spec 12.2) or "none"
    mask_dilate: int = 0


def score_pairs(
    encoder,
    plan: PairPlan,
    *,
    masks: str | os.PathLike | None = None,
    batch_size: int = 32,
    skip_errors: bool = False,
    progress: bool | None = None,
    mask_cleaning: str = "authors",
    mask_dilate: int = 0,
    num_workers: int | str = 0,
    fast_decode: bool = False,
) -> ScoreResult:
    """Cosine similarity of every planned pair; each unique (image, mask) is embedded once. Masks are
    cleaned as the authors clean them (``mask_cleaning="authors"``, spec 12.2) unless ``"none"``.

    Runs :func:`prepare` (masks, header checks) if the caller has not; pairs with a bad input are NaN
    and their inputs are listed in ``failures`` (without ``skip_errors`` they stop the run first).
    The one-metric case of :func:`score_metrics`, in the one-model layout."""
    return score_metrics(
        [(encoder.name, encoder)],
        plan,
        masks=masks,
        batch_size=batch_size,
        skip_errors=skip_errors,
        progress=progress,
        mask_cleaning=mask_cleaning,
        mask_dilate=mask_dilate,
        num_workers=num_workers,
        fast_decode=fast_decode,
    ).single()


def _unique_inputs(plan: PairPlan) -> tuple[list[tuple[Path, Path | None]], list[tuple[int, int] | None]]:
    """Each unique (image, mask) once, and per pair its (reference row, generated row), ``None`` for a
    pair with a bad input."""
    row_of: dict[tuple[Path, Path | None], int] = {}  # (image, mask) -> row of the embedding matrix
    keys: list[tuple[Path, Path | None]] = []
    index: list[tuple[int, int] | None] = []
    for pair in plan.pairs:
        if not usable(pair, plan):
            index.append(None)
            continue
        rows = []
        for side, image in (("refs", pair.reference), ("gens", pair.generated)):
            key = (image, plan.mask_of.get((image, side)))
            if key not in row_of:
                row_of[key] = len(keys)
                keys.append(key)
            rows.append(row_of[key])
        index.append((rows[0], rows[1]))
    return keys, index


# ------------------------------------------------------------------------ several metrics in one run
#: Pairs per ``score_pairs`` call of a pair scorer when the pairing has no subjects to group by.
JUDGE_BATCH = 32


@dataclass
class MetricScores:
    """One metric's similarities over the plan's pairs (NaN: a bad input, or a judge's non-answer)."""

    spec: str  # as the user gave it: the column and summary key
    name: str  # the loaded metric's name (what bench results key it by)
    kind: str  # "encoder" or "pair scorer"
    similarities: np.ndarray
    embedded: int = 0  # unique images this encoder embedded (0 for a pair scorer)
    no_answer: int = 0  # a pair scorer's pairs with usable inputs but no answer


@dataclass
class MultiScoreResult:
    """Several metrics over one pair plan (``nearid score --model A --model B ...``)."""

    plan: PairPlan
    metrics: list[MetricScores]
    failures: dict[str, str]  # image path -> message (bad inputs, and images an encoder could not read)
    unique_images: int  # unique (image, mask) inputs
    masked: int = 0
    mask_cleaning: str | None = None
    mask_dilate: int = 0

    @property
    def scored_any(self) -> bool:
        return any(np.isfinite(metric.similarities).any() for metric in self.metrics)

    def single(self) -> ScoreResult:
        """The one metric's result in the one-model layout (a single pair scorer goes through here)."""
        (metric,) = self.metrics
        return ScoreResult(
            self.plan,
            metric.name,
            metric.similarities,
            self.failures,
            metric.embedded,
            self.masked,
            mask_cleaning=self.mask_cleaning,
            mask_dilate=self.mask_dilate,
        )


def check_metric_specs(specs: list[str]) -> None:
    """Every ``--model`` spec parses, and none is given twice (its column would be written twice)."""
    from nearid.models.specs import parse_encoder_spec

    for spec in specs:
        parse_encoder_spec(spec)
    twice = sorted({spec for spec in specs if specs.count(spec) > 1})
    if twice:
        raise NearIDError(f"--model {twice[0]} is given twice; give each model once")


def score_metrics(
    metrics: list[tuple[str, object]],
    plan: PairPlan,
    *,
    masks: str | os.PathLike | None = None,
    batch_size: int = 32,
    skip_errors: bool = False,
    progress: bool | None = None,
    mask_cleaning: str = "authors",
    mask_dilate: int = 0,
    num_workers: int | str = 0,
    fast_decode: bool = False,
) -> MultiScoreResult:
    """Every planned pair's similarity under each of ``metrics`` (``(spec, Encoder or PairScorer)``).

    The unique (image, mask) inputs are planned once for all metrics; each encoder embeds each of them
    once (its own preprocessing: images are decoded once per encoder), a pair scorer is asked the
    listed pairs only, a subject's pairs in one call (or :data:`JUDGE_BATCH` at a time). Encoders run
    first, so with ``skip_errors`` a pair scorer is not asked about an image an encoder could not read.
    """
    from nearid.images.mask_cleaning import evaluation_mask
    from nearid.models.pair_scorers import ask, is_pair_scorer

    check_batch_size(batch_size)
    evaluation_mask(None, mask_cleaning, mask_dilate)
    prepare(plan, masks)
    check_plan(plan, skip_errors)
    keys, index = _unique_inputs(plan)
    cut_with = [evaluation_mask(mask, mask_cleaning, mask_dilate) for _, mask in keys]
    failed: dict[int, str] = {}
    by_spec: dict[str, MetricScores] = {}
    order = sorted(range(len(metrics)), key=lambda m: is_pair_scorer(metrics[m][1]))  # encoders first
    for m in order:
        spec, metric = metrics[m]
        similarities = np.full(len(plan.pairs), np.nan)
        if is_pair_scorer(metric):
            todo = [i for i, rows in enumerate(index) if rows is not None and not (set(rows) & set(failed))]
            for group in _judge_groups(plan, todo):
                similarities[group] = ask(
                    metric,
                    [(keys[index[i][0]][0], keys[index[i][1]][0]) for i in group],
                    [(cut_with[index[i][0]], cut_with[index[i][1]]) for i in group],
                )
            no_answer = int(np.isnan(similarities[todo]).sum()) if todo else 0
            by_spec[spec] = MetricScores(spec, metric.name, "pair scorer", similarities, 0, no_answer)
            continue
        failures_by_index: dict[int, str] | None = {} if skip_errors else None
        vectors = embed(
            metric,
            [k[0] for k in keys],
            cut_with,
            batch_size=batch_size,
            progress=progress,
            failures=failures_by_index,
            num_workers=num_workers,
            fast_decode=fast_decode,
        )
        failed.update(failures_by_index or {})
        for i, rows in enumerate(index):
            if rows is not None:
                similarities[i] = float((vectors[rows[0]] * vectors[rows[1]]).sum())
        by_spec[spec] = MetricScores(spec, metric.name, "encoder", similarities, len(keys))
    failures = {str(path): why for path, why in plan.unmatched}
    failures.update({str(keys[i][0]): message for i, message in failed.items()})
    masked = len({k for k in keys if k[1] is not None})
    return MultiScoreResult(
        plan,
        [by_spec[spec] for spec, _ in metrics],
        failures,
        len(keys),
        masked,
        mask_cleaning=mask_cleaning if masked else None,
        mask_dilate=mask_dilate if masked else 0,
    )


def _judge_groups(plan: PairPlan, todo: list[int]) -> list[list[int]]:
    """The pairs of one subject together (a judge batches one call), at most JUDGE_BATCH per call."""
    by_subject: dict[str, list[int]] = defaultdict(list)
    for i in todo:
        by_subject[plan.pairs[i].subject].append(i)
    return [group[k : k + JUDGE_BATCH] for group in by_subject.values() for k in range(0, len(group), JUDGE_BATCH)]


def metric_column(spec: str, what: str = "similarity") -> str:
    """The per-pair column of one metric when several are scored: ``similarity:<spec>`` (``same:<spec>``)."""
    return f"{what}:{spec}"


def correlations(result: MultiScoreResult) -> dict[str, dict]:
    """Pearson and Spearman (average ranks) between every two metrics, over the pairs both scored."""
    from nearid.eval.metrics import pearson, spearman

    out = {}
    for a, b in ((a, b) for k, a in enumerate(result.metrics) for b in result.metrics[k + 1 :]):
        both = np.isfinite(a.similarities) & np.isfinite(b.similarities)
        x, y = a.similarities[both], b.similarities[both]
        out[f"{a.spec} | {b.spec}"] = {
            "a": a.spec,
            "b": b.spec,
            "n": int(both.sum()),
            "pearson": _json_float(pearson(x, y)),
            "spearman": _json_float(spearman(x, y)),
        }
    return out


def _json_float(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def summarise_metrics(result: MultiScoreResult, thresholds: dict[str, dict | None]) -> ScoreSummary:
    """The summary of several metrics: a section per metric (``metrics``), the correlations between
    them, and at the top level the first metric's figures (what a one-model reader finds there)."""
    sections = {}
    for metric in result.metrics:
        one = summarise(_as_single(result, metric), thresholds.get(metric.spec))
        sections[metric.spec] = {
            "name": metric.name,
            "kind": metric.kind,
            "column": metric_column(metric.spec),
            "n_pairs": one.n_pairs,
            "unique_images_embedded": metric.embedded,
            "no_answer": metric.no_answer,
            "similarity": one.similarity,
            "per_subject": one.per_subject,
            "threshold": one.threshold,
            "decisions": one.decisions,
        }
    first = result.metrics[0]
    summary = summarise(_as_single(result, first), thresholds.get(first.spec))
    summary.no_answer = first.no_answer
    summary.metrics = sections
    summary.correlations = correlations(result)
    return summary


def _as_single(result: MultiScoreResult, metric: MetricScores) -> ScoreResult:
    return ScoreResult(
        result.plan,
        metric.name,
        metric.similarities,
        result.failures,
        metric.embedded,
        result.masked,
        mask_cleaning=result.mask_cleaning,
        mask_dilate=result.mask_dilate,
    )


def write_metric_outputs(
    result: MultiScoreResult, out: str | os.PathLike, *, thresholds: dict[str, dict | None], fmt: str | None = None
) -> ScoreSummary:
    """:func:`write_outputs` for several metrics: one row per pair (written when any metric scored it) with
    a ``similarity:<spec>`` column per metric (empty / null where that metric has no value) and
    ``same:<spec>`` where a metric has a threshold; ``<out>.per_generated.csv`` gets a mean and max
    column per metric, DreamBench++ one ``<out>.<slug>.dbpp.json`` per metric. With one metric this is
    exactly :func:`write_outputs` (the one-model layout)."""
    if len(result.metrics) == 1:
        summary = write_outputs(result.single(), out, threshold=thresholds.get(result.metrics[0].spec), fmt=fmt)
        if result.metrics[0].no_answer:
            summary.no_answer = result.metrics[0].no_answer
            summary.write(side_file(out, "summary.json"))
        return summary
    out = Path(out)
    fmt = output_format(out, fmt)
    rows = []
    for i, pair in enumerate(result.plan.pairs):
        values = [metric.similarities[i] for metric in result.metrics]
        if not any(np.isfinite(values)):
            continue
        row = {
            "reference": os.path.abspath(pair.reference),
            "generated": os.path.abspath(pair.generated),
            "subject": pair.subject,
        }
        if result.plan.rule == "dreambench":
            row["key"] = pair.key
        for metric, value in zip(result.metrics, values):
            row[metric_column(metric.spec)] = round(float(value), 6) if np.isfinite(value) else None
        for metric, value in zip(result.metrics, values):
            threshold = thresholds.get(metric.spec)
            if threshold is not None:
                row[metric_column(metric.spec, "same")] = (
                    int(value > threshold["value"]) if np.isfinite(value) else None
                )
        rows.append(row)
    header = ["reference", "generated", "subject"] + (["key"] if result.plan.rule == "dreambench" else [])
    header += [metric_column(m.spec) for m in result.metrics]
    header += [metric_column(m.spec, "same") for m in result.metrics if thresholds.get(m.spec) is not None]
    with atomic_path(out) as tmp, open(tmp, "w", newline="") as handle:
        if fmt == "jsonl":
            handle.writelines(json.dumps(row) + "\n" for row in rows)
        else:
            writer = csv.DictWriter(handle, fieldnames=header)
            writer.writeheader()
            writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    summary = summarise_metrics(result, thresholds)
    summary.pairs_file = out.name
    if result.failures:
        errors = side_file(out, "errors.csv")
        with atomic_path(errors) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "error"])
            writer.writerows(sorted(result.failures.items()))
        summary.errors_file = errors.name
    if result.plan.rule == "subjects":
        summary.per_generated_file = _write_per_generated_metrics(result, side_file(out, "per_generated.csv"))
    if result.plan.rule == "dreambench":  # one file per metric, each feeds `nearid dbpp --scores`
        for metric in result.metrics:
            scores = {
                pair.key: 100 * round(float(value), 6)
                for pair, value in zip(result.plan.pairs, metric.similarities)
                if np.isfinite(value)
            }
            write_text_atomic(dbpp_file(out, metric.spec), json.dumps(scores, indent=0))
    summary.write(side_file(out, "summary.json"))
    return summary


def dbpp_file(out: str | os.PathLike, spec: str) -> Path:
    """``<out>.<spec as a file name>.dbpp.json``: one metric's DreamBench++ scores in a several-metric run."""
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in spec)[:64]
    return side_file(out, f"{slug}.dbpp.json")


def _write_per_generated_metrics(result: MultiScoreResult, path: Path) -> str:
    """Multi-reference aggregation per metric: ``mean:<spec>``, ``max:<spec>`` over the references."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, pair in enumerate(result.plan.pairs):
        groups[(pair.subject, str(pair.generated))].append(i)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        header = ["generated", "subject"]
        for metric in result.metrics:
            header += [f"n_references:{metric.spec}", f"mean:{metric.spec}", f"max:{metric.spec}"]
        writer.writerow(header)
        for (subject, generated), members in sorted(groups.items()):
            row = [os.path.abspath(generated), subject]
            for metric in result.metrics:
                values = metric.similarities[members]
                values = values[np.isfinite(values)]
                row += (
                    [len(values), round(float(np.mean(values)), 6), round(float(np.max(values)), 6)]
                    if len(values)
                    else [0, "", ""]
                )
            if any(np.isfinite(m.similarities[members]).any() for m in result.metrics):
                writer.writerow(row)
    return path.name


# ------------------------------------------------------------------------------------- outputs
def summarise(result: ScoreResult, threshold: dict | None) -> ScoreSummary:
    sims = result.similarities[np.isfinite(result.similarities)]
    stats = lambda x: (
        {
            "mean": float(np.mean(x)),
            "median": float(np.median(x)),
            "std": float(np.std(x)),
            "min": float(np.min(x)),
            "max": float(np.max(x)),
        }
        if len(x)
        else None
    )
    per_subject = defaultdict(list)
    for pair, value in zip(result.plan.pairs, result.similarities):
        if pair.subject and np.isfinite(value):
            per_subject[pair.subject].append(value)
    decisions = None
    if threshold is not None:
        same = int((sims > threshold["value"]).sum())
        decisions = {"same": same, "different": int(len(sims) - same)}
    return ScoreSummary(
        model=result.model,
        pairing=result.plan.rule,
        n_pairs=len(sims),
        unique_images_embedded=result.embedded,
        similarity=stats(sims),
        per_subject={
            s: {"n": len(v), "mean": float(np.mean(v)), "median": float(np.median(v))}
            for s, v in sorted(per_subject.items())
        },
        threshold=threshold,
        decisions=decisions,
        errors=len(result.failures),
        pairing_how=result.plan.how,
        masks=str(Path(result.plan.masks).absolute()) if result.plan.masks is not None else None,
        masked_images=result.masked,
        mask_cleaning=result.mask_cleaning,
        mask_dilate=result.mask_dilate,
    )


def write_outputs(
    result: ScoreResult, out: str | os.PathLike, *, threshold: dict | None, fmt: str | None = None
) -> ScoreSummary:
    """Per-pair file (csv or jsonl, by :func:`output_format`) and its side files, named from the whole
    output name: ``<out>.summary.json``, for subjects ``<out>.per_generated.csv``, for DreamBench++
    ``<out>.dbpp.json``; failed inputs go to ``<out>.errors.csv``. Image paths are written absolute, so
    the files resolve from any working directory. Every file is written atomically."""
    out = Path(out)
    fmt = output_format(out, fmt)
    rows = []
    for pair, value in zip(result.plan.pairs, result.similarities):
        if not np.isfinite(value):
            continue
        row = {
            "reference": os.path.abspath(pair.reference),
            "generated": os.path.abspath(pair.generated),
            "subject": pair.subject,
            "similarity": round(float(value), 6),
        }
        if result.plan.rule == "dreambench":
            row["key"] = pair.key
        if threshold is not None:
            row["same"] = int(value > threshold["value"])
        rows.append(row)
    with atomic_path(out) as tmp, open(tmp, "w", newline="") as handle:
        if fmt == "jsonl":
            handle.writelines(json.dumps(row) + "\n" for row in rows)
        else:
            writer = csv.DictWriter(
                handle, fieldnames=list(rows[0]) if rows else ["reference", "generated", "similarity"]
            )
            writer.writeheader()
            writer.writerows(rows)
    summary = summarise(result, threshold)
    summary.pairs_file = out.name
    if result.failures:
        errors = side_file(out, "errors.csv")
        with atomic_path(errors) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "error"])
            writer.writerows(sorted(result.failures.items()))
        summary.errors_file = errors.name
    if result.plan.rule == "subjects":
        summary.per_generated_file = _write_per_generated(result, side_file(out, "per_generated.csv"))
    if result.plan.rule == "dreambench":  # DreamBench++ layout: feeds `nearid dbpp --scores DIR --name ...`
        write_text_atomic(
            side_file(out, "dbpp.json"), json.dumps({r["key"]: 100 * r["similarity"] for r in rows}, indent=0)
        )
    summary.write(side_file(out, "summary.json"))
    return summary


def _write_per_generated(result: ScoreResult, path: Path) -> str:
    """Multi-reference aggregation: each generated image against all references of its subject."""
    groups = defaultdict(list)
    for pair, value in zip(result.plan.pairs, result.similarities):
        if np.isfinite(value):
            groups[(pair.subject, str(pair.generated))].append(value)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["generated", "subject", "n_references", "mean", "max"])
        for (subject, generated), values in sorted(groups.items()):
            writer.writerow(
                [
                    os.path.abspath(generated),
                    subject,
                    len(values),
                    round(float(np.mean(values)), 6),
                    round(float(np.max(values)), 6),
                ]
            )
    return path.name


def resolve_thresholds(
    threshold: str | None, metrics: list[tuple[str, object]], calibration: str | os.PathLike | None
) -> tuple[dict[str, dict | None], list[str]]:
    """Each metric's threshold (:func:`resolve_threshold`, by its fingerprint) and the problems of those
    that have none. With several metrics, ``calibrated`` decides for those the results file calibrated
    and says why not for the others; when it has none of them (or with one metric) the error stands."""
    thresholds: dict[str, dict | None] = {}
    problems: list[NearIDError] = []
    for spec, metric in metrics:
        try:
            thresholds[spec] = resolve_threshold(threshold, metric, calibration)
        except NearIDError as exc:
            if len(metrics) == 1:
                raise
            thresholds[spec] = None
            problems.append(exc)
    if problems and len(problems) == len(metrics):
        raise problems[0]
    return thresholds, [str(p) for p in problems]


def resolve_threshold(threshold: str | None, encoder, calibration: str | os.PathLike | None) -> dict | None:
    """``None``, a number, or ``calibrated`` (from a bench ``results.json`` or a ``{"value": x}`` file).

    In a results file the threshold is found by the loaded ``encoder``'s content fingerprint, not by
    its spec text: ``nearid:./m`` finds what bench recorded for ``nearid:m``, and weights re-exported to
    the same path do not find the old model's threshold (a one-line error says so)."""
    if threshold is None:
        return None
    if threshold != "calibrated":
        try:
            return {"value": float(threshold), "source": "given"}
        except ValueError:
            raise NearIDError(f"--threshold {threshold}: give a number or 'calibrated'") from None
    if calibration is None:
        raise NearIDError(
            "--threshold calibrated needs --calibration FILE: a `nearid bench` results.json "
            '(run on a validation split) or a JSON file {"value": x}'
        )
    path = Path(calibration)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise NearIDError(f"{path}: cannot read the calibration ({str(exc).splitlines()[0]})") from None
    is_results = isinstance(data, dict) and bool({"kind", "schema_version", "encoders"} & set(data))
    if not is_results:
        if isinstance(data, dict) and isinstance(data.get("value"), (int, float)):
            return {"value": float(data["value"]), "source": path.name}
        raise NearIDError(f'{path}: not a calibration file (expected a bench results.json or {{"value": x}})')
    results = read_results(path, (BenchResults,))
    entry = _calibrated_entry(results, encoder, path)
    return {
        "value": entry.calibration.threshold.value,
        "source": f"calibrated on {entry.calibration.split_label} ({path.name})",
        "balanced_accuracy": entry.calibration.threshold.balanced_accuracy,
    }


def _calibrated_entry(results, encoder, path: Path):
    """The bench entry made with ``encoder``'s exact weights and preprocessing (its fingerprint)."""
    name, fingerprint = encoder.name, getattr(encoder, "fingerprint", None)
    rerun = f"run `nearid bench --model {name}` to calibrate this model"
    matches = [e for e in results.encoders.values() if fingerprint and e.fingerprint == fingerprint]
    calibrated = [e for e in matches if e.calibration is not None]
    if calibrated:
        return calibrated[0]
    if matches:
        raise NearIDError(f"{path}: records '{matches[0].spec}' (this model) without a calibration; {rerun}")
    same_name = results.encoders.get(name)
    if same_name is not None and same_name.fingerprint is None:
        raise NearIDError(
            f"{path}: records no model fingerprints (written by an older nearid), so it cannot "
            f"show that '{name}' is the model it calibrated; {rerun}"
        )
    if same_name is not None:
        raise NearIDError(
            f"{path}: '{name}' was calibrated with other weights or preprocessing than the model "
            f"loaded now (fingerprint {same_name.fingerprint[:12]}, now {str(fingerprint)[:12]}); {rerun}"
        )
    known = ", ".join(results.encoders) or "none"
    raise NearIDError(f"{path}: has no calibration for '{name}' (it has: {known}); {rerun}")
