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
two folders of subject folders whose file names differ as ``subjects``, and anything else as ``paths``.
Each unique image (with its mask) is embedded once, however many pairs it is in.
"""

from __future__ import annotations

import csv
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .embedding import embed
from .errors import NearIDError
from .io import atomic_path, write_text_atomic
from .results import BenchResults, ScoreSummary, read_results

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


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
    unmatched: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    roots: dict[str, Path] = field(default_factory=dict)  # "refs"/"gens" -> folder (for masks)


def _images(folder: Path) -> dict[str, Path]:
    """Relative path without extension -> file, for every image below ``folder`` as
    :func:`~nearid.images.list_images` finds them (linked subfolders followed, ``._*`` and hidden skipped)."""
    from .images import list_images

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
    unmatched += [(str(ref_images[s]), "no generated image with this name") for s in sorted(set(ref_images) - set(gen_images))]
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
                raise PairingError(f"{path}: a pairs CSV needs the columns reference,generated (and optionally subject)")
            rows = list(reader)
    except UnicodeDecodeError as exc:
        raise PairingError(
            f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x}, e.g. Latin-1 or Windows-1252); "
            "save it as UTF-8 (in Excel: \"CSV UTF-8\")"
        ) from None
    if not rows:
        raise PairingError(f"{path}: no pairs listed")
    base = path.parent
    pairs, unmatched = [], []
    for line, row in enumerate(rows, start=2):
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
    if gens is not None and not gens.is_dir():
        raise PairingError(f"{gens}: no such folder")
    if pairing == "auto":
        if refs.is_file():
            pairing = "csv"
        elif gens is None and (refs / "src_image").is_dir() and (refs / "tgt_image").is_dir():
            pairing = "dreambench"
        elif gens is not None:
            only_dirs = all(not p.is_file() for p in refs.iterdir()) and all(not p.is_file() for p in gens.iterdir())
            has_dirs = any(p.is_dir() for p in refs.iterdir())
            pairing = "subjects" if only_dirs and has_dirs and not _same_relative_files(refs, gens) else "paths"
        else:
            raise PairingError(f"{refs}: give --gens, a pairs CSV, or a DreamBench++ folder with src_image/ and tgt_image/")
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


def _mask_for(image: Path, roots: dict[str, Path], masks: Path | None) -> Path | None:
    """``MASKS/refs/<relative path>`` for a reference, ``MASKS/gens/<relative path>`` for a generated image,
    any image extension; images without one are used whole."""
    if masks is None:
        return None
    for side in ("refs", "gens"):
        root = roots.get(side)
        if root is None or not image.is_relative_to(root):
            continue
        stem = masks / side / image.relative_to(root).with_suffix("")
        for suffix in sorted(IMAGE_SUFFIXES):
            candidate = stem.with_suffix(suffix)
            if candidate.is_file():
                return candidate
    return None


@dataclass
class ScoreResult:
    plan: PairPlan
    model: str
    similarities: np.ndarray  # one per pair, NaN where an image failed
    failures: dict[str, str]  # image path -> message
    embedded: int  # unique images embedded
    masks: str | None = None  # the masks folder images were cut with
    mask_cleaning: str | None = None  # with masks: "authors" or "none"
    mask_dilate: int = 0


def score_pairs(encoder, plan: PairPlan, *, masks: str | os.PathLike | None = None, batch_size: int = 32,
                skip_errors: bool = False, progress: bool | None = None, mask_cleaning: str = "authors",
                mask_dilate: int = 0) -> ScoreResult:
    """Cosine similarity of every planned pair; each unique (image, mask) is embedded once. Masks are
    cleaned as the authors clean them (``mask_cleaning="authors"``, spec 12.2) unless ``"none"``."""
    from .mask_cleaning import evaluation_mask

    if plan.unmatched and not skip_errors:
        path, why = plan.unmatched[0]
        more = f" (and {len(plan.unmatched) - 1} more)" if len(plan.unmatched) > 1 else ""
        raise PairingError(f"{path}: {why}{more}; fix the inputs or pass --skip-errors")
    if not plan.pairs:
        raise PairingError("no pairs to score")
    mask_root = Path(masks) if masks else None
    evaluation_mask(None, mask_cleaning, mask_dilate)  # a bad setting fails before any image is read
    row_of: dict[Path, int] = {}  # image -> row of the embedding matrix
    keys: list[tuple[Path, Path | None]] = []
    for pair in plan.pairs:
        for image in (pair.reference, pair.generated):
            if image not in row_of:
                row_of[image] = len(keys)
                keys.append((image, evaluation_mask(_mask_for(image, plan.roots, mask_root), mask_cleaning, mask_dilate)))
    failures_by_index: dict[int, str] | None = {} if skip_errors else None
    vectors = embed(encoder, [k[0] for k in keys], [k[1] for k in keys], batch_size=batch_size,
                    progress=progress, failures=failures_by_index)
    refs = vectors[[row_of[p.reference] for p in plan.pairs]]
    gens = vectors[[row_of[p.generated] for p in plan.pairs]]
    similarities = (refs * gens).sum(dim=-1).numpy().astype(np.float64)
    failures = {str(path): why for path, why in plan.unmatched}
    failures.update({str(keys[i][0]): message for i, message in (failures_by_index or {}).items()})
    return ScoreResult(plan, encoder.name, similarities, failures, len(keys), masks=None if masks is None else os.fspath(masks),
                       mask_cleaning=mask_cleaning if masks else None, mask_dilate=mask_dilate if masks else 0)


# ------------------------------------------------------------------------------------- outputs
def summarise(result: ScoreResult, threshold: dict | None) -> ScoreSummary:
    sims = result.similarities[np.isfinite(result.similarities)]
    stats = lambda x: {"mean": float(np.mean(x)), "median": float(np.median(x)), "std": float(np.std(x)),  # noqa: E731
                       "min": float(np.min(x)), "max": float(np.max(x))} if len(x) else None
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
        n_pairs=int(len(sims)),
        unique_images_embedded=result.embedded,
        similarity=stats(sims),
        per_subject={s: {"n": len(v), "mean": float(np.mean(v)), "median": float(np.median(v))} for s, v in sorted(per_subject.items())},
        threshold=threshold,
        decisions=decisions,
        errors=len(result.failures),
        masks=result.masks,
        mask_cleaning=result.mask_cleaning,
        mask_dilate=result.mask_dilate,
    )


def write_outputs(result: ScoreResult, out: str | os.PathLike, *, threshold: dict | None, fmt: str = "csv") -> ScoreSummary:
    """Per-pair file (csv or jsonl), ``<stem>.summary.json``, and for subjects ``<stem>.per_generated.csv``;
    failed pairs go to ``<stem>.errors.csv``. Every file is written atomically."""
    out = Path(out)
    stem = out.with_suffix("")
    rows = []
    for pair, value in zip(result.plan.pairs, result.similarities):
        if not np.isfinite(value):
            continue
        row = {"reference": str(pair.reference), "generated": str(pair.generated), "subject": pair.subject,
               "similarity": round(float(value), 6)}
        if result.plan.rule == "dreambench":
            row["key"] = pair.key
        if threshold is not None:
            row["same"] = int(value > threshold["value"])
        rows.append(row)
    with atomic_path(out) as tmp, open(tmp, "w", newline="") as handle:
        if fmt == "jsonl":
            handle.writelines(json.dumps(row) + "\n" for row in rows)
        else:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["reference", "generated", "similarity"])
            writer.writeheader()
            writer.writerows(rows)
    summary = summarise(result, threshold)
    summary.pairs_file = out.name
    if result.failures:
        errors = Path(f"{stem}.errors.csv")
        with atomic_path(errors) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "error"])
            writer.writerows(sorted(result.failures.items()))
        summary.errors_file = errors.name
    if result.plan.rule == "subjects":
        summary.per_generated_file = _write_per_generated(result, Path(f"{stem}.per_generated.csv"))
    if result.plan.rule == "dreambench":  # DreamBench++ layout: feeds `nearid dbpp --scores DIR --name ...`
        write_text_atomic(f"{stem}.dbpp.json", json.dumps({r["key"]: 100 * r["similarity"] for r in rows}, indent=0))
    summary.write(f"{stem}.summary.json")
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
            writer.writerow([generated, subject, len(values), round(float(np.mean(values)), 6), round(float(np.max(values)), 6)])
    return path.name


def resolve_threshold(threshold: str | None, model: str, calibration: str | os.PathLike | None) -> dict | None:
    """``None``, a number, or ``calibrated`` (from a bench ``results.json`` or a ``{"value": x}`` file)."""
    if threshold is None:
        return None
    if threshold != "calibrated":
        try:
            return {"value": float(threshold), "source": "given"}
        except ValueError:
            raise NearIDError(f"--threshold {threshold}: give a number or 'calibrated'") from None
    if calibration is None:
        raise NearIDError("--threshold calibrated needs --calibration FILE: a `nearid bench` results.json "
                          "(run on a validation split) or a JSON file {\"value\": x}")
    path = Path(calibration)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise NearIDError(f"{path}: cannot read the calibration ({str(exc).splitlines()[0]})") from None
    is_results = isinstance(data, dict) and bool({"kind", "schema_version", "encoders"} & set(data))
    if not is_results:
        if isinstance(data, dict) and isinstance(data.get("value"), (int, float)):
            return {"value": float(data["value"]), "source": path.name}
        raise NearIDError(f"{path}: not a calibration file (expected a bench results.json or {{\"value\": x}})")
    results = read_results(path, (BenchResults,))
    entry = results.encoders.get(model)
    if entry is None or entry.calibration is None:
        known = ", ".join(results.encoders)
        raise NearIDError(f"{path}: has no calibration for '{model}' (it has: {known}); run `nearid bench` with this model")
    return {"value": entry.calibration.threshold.value,
            "source": f"calibrated on {entry.calibration.split_label} ({path.name})",
            "balanced_accuracy": entry.calibration.threshold.balanced_accuracy}
