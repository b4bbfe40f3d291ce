"""``nearid synth``: a procedural matched-context benchmark written in exactly the hub schemas.

Every identity is a procedurally drawn object (:mod:`nearid.data.render`) shown in 2-3 views, each on
its own background with its own placement. For every view and every *source* — a distractor rule of
graded difficulty — a near-identical but different object is drawn into exactly that view's
background at exactly that place, as the paper's inpainted distractors are. An MTG-style set edits
one part of an object in two views and records object and part masks.

The output is what the hub serves, so every loader, benchmark and trainer runs on it unchanged::

    OUT/NearID/             positives (save_to_disk DatasetDict 'train', or parquet data/train-*.parquet)
    OUT/NearID-<Source>/    one index-aligned distractor dataset per source (nimg1..3)
    OUT/MTG/                Mind-the-Glitch layout, splits 'train' and 'test'
    OUT/splits/{train,val,test}.json    row positions, like the authors' splits
    OUT/synth.json          the parameters, counts and timing of the run
    OUT/contact_sheet.png   anchors, other views and each source's distractor, for a look
    OUT/.nearid-output.json the marker that lets ``--overwrite`` delete OUT later (:mod:`nearid.io.ownership`)

Everything is a pure function of (seed, identity index, source), so a run is reproducible, any
number of worker processes gives the same bytes, and adding a source does not change the others.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from nearid.data import render
from nearid.data.schema import (
    MTG_COLUMNS,
    distractor_column,
    distractors_features,
    image_column,
    mask_column,
    mtg_features,
    positives_features,
)
from nearid.io.errors import NearIDError
from nearid.io.ownership import check_removable, create_owned, remove_owned, seal_owned

#: Source dataset name -> distractor rule: one part / a region's colour / the texture / the body shape
#: changed (single-attribute edits, MTG-like), or another object of the same kind (the paper's distractors).
SOURCES = {"Part": "part", "Recolor": "recolor", "Texture": "texture", "Shape": "shape", "Instance": "instance"}


@dataclass(frozen=True)
class SynthConfig:
    identities: int = 2000
    sources: tuple[str, ...] = tuple(SOURCES)
    size: int = 128
    seed: int = 0
    three_view_share: float = 1 / 3  # the paper's data: 33 % of identities have 3 views
    val: int | None = None  # default: 5 % of identities, at most 100 (the paper: 100)
    test: int | None = None  # default: 25 % of identities, at most 500 (the paper: 500)
    mtg_train: int = 200
    mtg_test: int = 100
    image_format: str = "jpeg"  # masks are always PNG (lossless)
    output_format: str = "arrow"  # "arrow" (save_to_disk) or "parquet"
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)

    def validate(self) -> None:
        """Refuse impossible settings before anything is rendered, naming the option and the fix.

        Sizes: objects are drawn at a fraction of the side, so below 16 px they are a few pixels and
        masks can come out empty; above 4096 px one identity's images take gigabytes to encode.
        """
        checks = [
            ("--identities", self.identities, 1, None),
            ("--size", self.size, 16, 4096),
            ("--num-workers", self.workers, 1, None),
            ("--val", self.val, 0, None),
            ("--test", self.test, 1, None),
            ("--mtg-train", self.mtg_train, 0, None),
            ("--mtg-test", self.mtg_test, 0, None),
        ]
        for option, value, low, high in checks:
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise NearIDError(f"{option} {value!r}: give a whole number")
            if value < low or (high is not None and value > high):
                span = f"from {low} to {high}" if high is not None else f"of at least {low}"
                raise NearIDError(f"{option} {value}: give a number {span}")
        if not 0 <= self.three_view_share <= 1:
            raise NearIDError(f"three_view_share {self.three_view_share}: give a share from 0 to 1")
        if not self.sources:
            raise NearIDError(f"no distractor source; choose one or more of {', '.join(SOURCES)}")
        self.split_sizes()

    def split_sizes(self) -> tuple[int, int]:
        n = self.identities
        val = self.val if self.val is not None else min(100, max(1, round(0.05 * n)))
        test = self.test if self.test is not None else min(500, max(1, round(0.25 * n)))
        if val + test >= n:
            raise NearIDError(f"--identities {n} leaves no training rows after val={val} and test={test}")
        return val, test


def canonical_sources(names: Sequence[str]) -> tuple[str, ...]:
    """Accept source names in any case; refuse unknown ones with the list of known ones."""
    by_lower = {name.lower(): name for name in SOURCES}
    chosen = []
    for name in names:
        if name.lower() not in by_lower:
            raise NearIDError(f"unknown synthetic source '{name}'; choose from {', '.join(SOURCES)}")
        chosen.append(by_lower[name.lower()])
    return tuple(dict.fromkeys(chosen))


# ------------------------------------------------------------------------------------- encoding
def _encode(array: np.ndarray, kind: str) -> dict:
    buffer = io.BytesIO()
    image = Image.fromarray(array)
    if kind == "png":
        image.save(buffer, "PNG", compress_level=1)
    else:
        image.save(buffer, "JPEG", quality=95)
    return {"bytes": buffer.getvalue(), "path": None}


def _mask(mask: np.ndarray) -> dict:
    return _encode(mask.astype(np.uint8) * 255, "png")


# ------------------------------------------------------------------------------------- identities
def _identity(args) -> dict:
    """All images of one identity: its views, masks and each source's distractors, encoded."""
    config, index = args
    rng = np.random.default_rng([config.seed, index])
    spec = render.sample_object(rng)
    n_views = 3 if rng.random() < config.three_view_share else 2
    scenes = [(render.sample_background(rng, config.size), render.sample_placement(rng)) for _ in range(n_views)]
    images, masks = [], []
    for background, placement in scenes:
        rgb, mask = render.render(spec, placement, background)
        images.append(_encode(rgb, config.image_format))
        masks.append(_mask(mask))
    distractors = {}
    for _number, source in enumerate(config.sources):
        source_rng = np.random.default_rng([config.seed, index, 1000 + list(SOURCES).index(source)])
        other = render.near_identity(spec, SOURCES[source], source_rng)
        distractors[source] = {
            "description": other.describe(),
            "images": [_encode(render.render(other, p, b)[0], config.image_format) for b, p in scenes],
        }
    return {"spec": spec, "images": images, "masks": masks, "distractors": distractors}


def _mtg_sample(args) -> dict:
    """Two views of one object, each with the same part re-drawn, plus object and part masks."""
    config, split, index = args
    rng = np.random.default_rng([config.seed, 7_000_000 + (0 if split == "train" else 1), index])
    spec = render.sample_object(rng)
    edited, part = render.edit_part(spec, rng)
    row = {}
    for k in (0, 1):
        background, placement = render.sample_background(rng, config.size), render.sample_placement(rng)
        original, object_mask = render.render(spec, placement, background)
        changed, _ = render.render(edited, placement, background)
        part_mask = render.render_part_mask(spec, placement, config.size, part) | render.render_part_mask(
            edited, placement, config.size, part
        )
        row[MTG_COLUMNS["original"][k]] = _encode(original, config.image_format)
        row[MTG_COLUMNS["edited"][k]] = _encode(changed, config.image_format)
        row[MTG_COLUMNS["object_mask"][k]] = _mask(object_mask)
        row[MTG_COLUMNS["part_mask"][k]] = _mask(part_mask)
    return row


# ------------------------------------------------------------------------------------- tables
def _positives_row(config: SynthConfig, identity_id: int, index: int, split: str, item: dict) -> dict:
    spec, n = item["spec"], len(item["images"])
    description = spec.describe()
    row = {
        "id": identity_id,
        "category": spec.category,
        "category_description": description,
        "n_images": n,
        "objaverse_id": f"synth-{config.seed}-{index}",
        "dino_01": None,
        "dino_02": None,
        "dino_12": None,
        "quality": "synthetic",
        "id_safe": True,
        "split": split,
    }
    extension = "png" if config.image_format == "png" else "jpg"
    for j in range(3):
        present = j < n
        row[image_column(j)] = item["images"][j] if present else None
        row[mask_column(j)] = item["masks"][j] if present else None
        row[f"aesthetics{j + 1}"] = None
        row[f"size{j + 1}"] = [config.size, config.size] if present else None
        row[f"prompts{j + 1}"] = description if present else None
        row[f"filenames{j + 1}"] = f"{identity_id}_{j + 1}.{extension}" if present else None
    return row


def _distractor_row(identity_id: int, item: dict, source: str) -> dict:
    spec, n = item["spec"], len(item["images"])
    distractor = item["distractors"][source]
    row = {
        "id": identity_id,
        "category": spec.category,
        "category_description": spec.describe(),
        "n_images": n,
        "objaverse_id": None,
        "quality": "synthetic",
    }
    for j in range(3):
        row[distractor_column(j)] = distractor["images"][j] if j < n else None
        row[f"prompts{j + 1}"] = distractor["description"] if j < n else None
    return row


def _columns(rows: list[dict], features) -> dict:
    return {name: [row[name] for row in rows] for name in features}


def _save(splits: dict, features, folder: Path, output_format: str) -> None:
    from datasets import Dataset, DatasetDict

    tables = {  # an empty split cannot be read back by datasets; leave it out
        name: Dataset.from_dict(_columns(rows, features), features=features) for name, rows in splits.items() if rows
    }
    if output_format == "parquet":
        for name, table in tables.items():
            table.to_parquet(str(folder / "data" / f"{name}-00000-of-00001.parquet"))
    else:
        DatasetDict(tables).save_to_disk(str(folder))


# ------------------------------------------------------------------------------------- driver
def generate(out: str | os.PathLike, config: SynthConfig, *, overwrite: bool = False, progress: bool = True) -> dict:
    """Write the synthetic benchmark to ``out`` (atomically: into ``out.partial``, then renamed).

    ``overwrite`` replaces an earlier ``nearid synth`` output; a non-empty folder without nearid's
    marker is never deleted (:mod:`nearid.io.ownership`), with or without it.
    """
    from datasets.utils.logging import disable_progress_bar
    from tqdm.auto import tqdm

    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise NearIDError(f"{out}: already exists and is not empty; choose another folder or pass --overwrite")
    config.validate()
    check_removable(out, "synth")  # --overwrite deletes only an earlier nearid output; refuse now, not after rendering
    check_removable(partial, "synth")
    if config.image_format not in {"jpeg", "png"} or config.output_format not in {"arrow", "parquet"}:
        raise NearIDError("image format must be jpeg or png, and output format arrow or parquet")
    sources = canonical_sources(config.sources)
    config = SynthConfig(**{**asdict(config), "sources": sources})
    val, test = config.split_sizes()
    started = time.perf_counter()
    disable_progress_bar()

    rng = np.random.default_rng([config.seed, 99])
    ids = np.cumsum(rng.integers(1, 5, config.identities)) + 100  # sparse ids, never the row number
    split_of = np.array(["train"] * config.identities, dtype=object)
    order = rng.permutation(config.identities)
    split_of[order[:test]] = "test"
    split_of[order[test : test + val]] = "val"

    jobs = [(config, i) for i in range(config.identities)]
    mtg_jobs = [(config, "train", i) for i in range(config.mtg_train)] + [
        (config, "test", i) for i in range(config.mtg_test)
    ]
    chunk = max(1, len(jobs) // (8 * max(1, config.workers)))
    with ProcessPoolExecutor(max_workers=config.workers) if config.workers > 1 else _Inline() as pool:
        items = list(
            tqdm(pool.map(_identity, jobs, chunksize=chunk), total=len(jobs), desc="identities", disable=not progress)
        )
        mtg_rows = list(
            tqdm(
                pool.map(_mtg_sample, mtg_jobs, chunksize=max(1, chunk // 2)),
                total=len(mtg_jobs),
                desc="MTG",
                disable=not progress,
            )
        )
    rendered = time.perf_counter()

    remove_owned(partial, "synth")  # a crashed run's leftovers
    create_owned(partial, "synth")  # the marker travels with the folder when it is renamed to OUT
    positives = [_positives_row(config, int(ids[i]), i, split_of[i], item) for i, item in enumerate(items)]
    _save({"train": positives}, positives_features(), partial / "NearID", config.output_format)
    for source in sources:
        rows = [_distractor_row(int(ids[i]), item, source) for i, item in enumerate(items)]
        _save({"train": rows}, distractors_features(), partial / f"NearID-{source}", config.output_format)
    _save(
        {"train": mtg_rows[: config.mtg_train], "test": mtg_rows[config.mtg_train :]},
        mtg_features(),
        partial / "MTG",
        config.output_format,
    )
    (partial / "splits").mkdir()
    for name in ("train", "val", "test"):
        rows = [int(i) for i in np.flatnonzero(split_of == name)]
        (partial / "splits" / f"{name}.json").write_text(json.dumps(rows))
    summary = {
        "config": {**asdict(config), "sources": list(sources)},
        "identities": config.identities,
        "views": int(sum(len(item["images"]) for item in items)),
        "three_view_identities": int(sum(len(item["images"]) == 3 for item in items)),
        "splits": {name: int((split_of == name).sum()) for name in ("train", "val", "test")},
        "mtg": {"train": config.mtg_train, "test": config.mtg_test},
        "photo_backgrounds": render.photo_backgrounds_available(),
        "seconds": {"render": round(rendered - started, 2), "total": round(time.perf_counter() - started, 2)},
    }
    (partial / "synth.json").write_text(json.dumps(summary, indent=2) + "\n")
    remove_owned(out, "synth")
    partial.rename(out)
    _write_contact_sheet(out, sources)
    seal_owned(out, "synth")  # what it wrote; anything added later is not synth's to delete
    return summary


def _write_contact_sheet(out: Path, sources: Sequence[str]) -> None:
    """``OUT/contact_sheet.png``: the first test identities, read back through the loader."""
    from nearid.data.contact_sheet import contact_sheet
    from nearid.data.nearid_bench import load_nearid

    contact_sheet(load_nearid(out, list(sources), split="test"), out / "contact_sheet.png")


class _Inline:
    """A stand-in for a process pool when one worker is asked for (and in tests)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def map(self, fn, iterable, chunksize=1):
        return map(fn, iterable)
