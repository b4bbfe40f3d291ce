"""Which reference goes with which generated image: the pairing rules of ``nearid score``.

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
(which usually give different pairs), so ``auto`` refuses them and asks for ``--pairing``, unless
both rules give exactly the same pairs (then there is nothing to choose); the rule used is always
printed and recorded. The plan only names files: :mod:`nearid.score.inputs` attaches
masks and checks every image before a model loads.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from nearid.io.errors import NearIDError

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
    unmatched: list[tuple[str, str]] = field(default_factory=list)  # (path, why): unpaired or unreadable inputs
    roots: dict[str, Path] = field(default_factory=dict)  # "refs"/"gens" -> folder (for masks)
    how: str = "given"  # "given" (--pairing) or "chosen automatically: <why>"
    masks: Path | None = None  # set by prepare()
    # references (paths rule) and subject folders (subjects rule) with no generated image: `nearid rank`
    # reports them as empty groups; score lists the references among `unmatched` as before
    empty: list[str] = field(default_factory=list)
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
    lonely = [str(ref_images[s]) for s in sorted(set(ref_images) - set(gen_images))]
    return PairPlan(rule, pairs, unmatched, {"refs": refs, "gens": gens}, empty=lonely)


def _loose_images(folder: Path) -> list[str]:
    """Image files directly in ``folder``, where the subjects rule reads only subject folders."""
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _subjects(refs: Path, gens: Path) -> PairPlan:
    for option, folder in (("--refs", refs), ("--gens", gens)):
        loose = _loose_images(folder)
        if loose:  # they would be ignored without a word: no subject to pair them in
            raise PairingError(
                f"{option} {folder}: holds images beside its subject folders ({', '.join(loose[:3])}"
                f"{' …' if len(loose) > 3 else ''}), which --pairing subjects would ignore; move them into a "
                "subject folder or use --pairing paths"
            )
    ref_subjects = {p.name: p for p in sorted(refs.iterdir()) if p.is_dir()}
    gen_subjects = {p.name: p for p in sorted(gens.iterdir()) if p.is_dir()}
    pairs, unmatched = [], []
    empty = [str(ref_subjects[name]) for name in ref_subjects if name not in gen_subjects]
    for name, subject_dir in gen_subjects.items():
        if name not in ref_subjects:
            unmatched.append((str(subject_dir), "no reference folder for this subject"))
            continue
        references = list(_images(ref_subjects[name]).values())
        if not _has_images(subject_dir):  # a bad input of score; an empty group of rank
            unmatched.append((str(subject_dir), "no generated images in this subject folder"))
            empty.append(str(subject_dir))
            continue
        for generated in _images(subject_dir).values():
            pairs += [Pair(reference, generated, subject=name) for reference in references]
    if not pairs and not unmatched:
        raise PairingError(f"{gens}: no subject folders with images inside")
    return PairPlan("subjects", pairs, unmatched, {"refs": refs, "gens": gens}, empty=empty)


def _has_images(folder: Path) -> bool:
    from nearid.images.decode import list_images

    return bool(list_images(folder, suffixes=IMAGE_SUFFIXES))


def _csv(path: Path) -> PairPlan:
    # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark, which would glue onto the first column name
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"reference", "generated"} <= set(reader.fieldnames):
                handle.seek(0)
                raise PairingError(_header_refusal(path, handle.readline()))
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


def _header_refusal(path: Path, header: str) -> str:
    """Why a pairs CSV's header is not ``reference,generated``: the columns found, split by the
    delimiter the header seems to use (``;`` from a European Excel, a tab from a ``.tsv``)."""
    header = header.lstrip("\ufeff").rstrip("\r\n")
    delimiter = max(",;\t|", key=header.count) if any(c in header for c in ",;\t|") else ","
    columns = next(csv.reader([header], delimiter=delimiter), [])
    shown = ", ".join(c.strip() for c in columns) or "(none)"
    name = "tab" if delimiter == "\t" else delimiter
    return (
        f"{path}: a pairs CSV needs the columns reference,generated (and optionally subject), comma-separated "
        f"and lower case; found: {shown} (delimiter {name!r}); rename the columns or save it comma-separated"
    )


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
    if gens is not None and gens.is_file():
        raise PairingError(
            f"--gens {gens}: is a file; --gens takes the folder of generated images (a pairs CSV goes to --refs)"
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
    by_path, by_subject = _plan(refs, gens, "paths").pairs, _plan(refs, gens, "subjects").pairs
    if {(p.reference, p.generated) for p in by_path} == {(p.reference, p.generated) for p in by_subject}:
        return "subjects", f"chosen automatically: paths and subjects give the same {len(by_subject)} pairs"
    by_path, by_subject = len(by_path), len(by_subject)
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
