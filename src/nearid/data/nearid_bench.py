"""NearID-bench: the positives joined row for row with any distractor sources (spec sections 3.1-3.3).

Distractor datasets are *index-aligned* with the positives: row r of ``NearID-Flux`` holds the
distractors of row r of ``NearID``. We verify that by comparing the ``id`` columns and refuse to go on
if they differ, since a silent shift would pair every view with another identity's distractor.

Where the data are. ``data`` is the positives dataset (hub id, ``save_to_disk`` folder or parquet)
and each source lives beside it as ``<data>-<Source>`` (``Aleksandar/NearID-Flux``,
``out/NearID-Part``); a folder that contains ``NearID/`` is a root holding all of them (what
``nearid synth`` writes). ``NAME=LOCATION`` names a source's location explicitly. A source missing
beside local positives is an error that lists the sources that are there, not a hub download.

Bad rows are skipped and counted, never silently mixed in: a row with fewer than 2 views cannot make a
trial; a distractor whose view is missing has no background partner and is dropped. Loaded for a
foreground-only (``masks``) evaluation, a view without a mask is dropped with its distractors, as the
authors drop it (spec 12.2), and counted; a row left with fewer than 2 masked views is skipped.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nearid.data.loading import DatasetError, Table, open_table
from nearid.data.records import Identity, View
from nearid.data.schema import (
    DISTRACTORS_REQUIRED,
    HUB_POSITIVES,
    POSITIVES_REQUIRED,
    VIEW_SLOTS,
    distractor_column,
    image_column,
    mask_column,
)
from nearid.data.splits import rows_of_split


@dataclass
class LoadReport:
    """What was read and what was left out, and why."""

    rows_selected: int = 0
    identities: int = 0
    skipped_rows: Counter = field(default_factory=Counter)
    dropped_distractors: Counter = field(default_factory=Counter)
    n_images_disagrees: int = 0
    views_without_mask: int = 0  # masks only: views dropped (with their distractors) for want of a mask

    def summary(self) -> str:
        parts = [f"{self.identities} identities from {self.rows_selected} rows"]
        parts += [f"skipped {n} rows ({why})" for why, n in sorted(self.skipped_rows.items())]
        if self.views_without_mask:
            parts.append(f"dropped {self.views_without_mask} views without a mask, with their distractors")
        parts += [
            f"dropped {n} {source} distractors whose view is missing"
            for source, n in sorted(self.dropped_distractors.items())
        ]
        if self.n_images_disagrees:
            parts.append(f"{self.n_images_disagrees} rows whose n_images disagrees with their views (views counted)")
        return "; ".join(parts)


class NearIDBenchmark(Sequence):
    """A lazily materialised sequence of :class:`Identity` records for the selected rows."""

    def __init__(self, positives: Table, sources: dict[str, Table], rows: list[int], *, masks: bool = False):
        self.positives = positives
        self.masks = masks
        self.sources = sources
        self._ids = positives.values("id")
        self._category = positives.values("category", "")
        self._description = positives.values("category_description", "")
        self._split = positives.values("split")
        self._all_views = np.stack([positives.present(image_column(j)) for j in VIEW_SLOTS], axis=1)
        self._masks = np.stack([positives.present(mask_column(j)) for j in VIEW_SLOTS], axis=1)
        self._views = self._all_views & self._masks if masks else self._all_views
        self._distractors = {
            name: np.stack([table.present(distractor_column(j)) for j in VIEW_SLOTS], axis=1) & self._views
            for name, table in sources.items()
        }
        self.report = LoadReport(rows_selected=len(rows))
        self.rows = self._usable(np.asarray(rows, dtype=np.int64))

    def _usable(self, selected: np.ndarray) -> list[int]:
        """The selected rows that can make trials; what is left out is counted in the report."""
        report = self.report
        n_views = self._all_views[selected].sum(axis=1)
        n_usable = self._views[selected].sum(axis=1)
        keep = n_usable >= 2
        report.skipped_rows = Counter(
            {
                "fewer than 2 views": int((n_views < 2).sum()),
                "fewer than 2 views with a mask": int(((n_views >= 2) & ~keep).sum()),
            }
        )
        report.skipped_rows -= Counter()  # no zero counts
        report.views_without_mask = int((self._all_views & ~self._views)[selected].sum())
        n_images = np.asarray(self.positives.values("n_images"), dtype=object)[selected]
        report.n_images_disagrees = int(sum(1 for n, v in zip(n_images, n_views) if n is not None and n != v))
        for name, table in self.sources.items():
            raw = np.stack([table.present(distractor_column(j)) for j in VIEW_SLOTS], axis=1)[selected]
            report.dropped_distractors[name] += int((raw & ~self._all_views[selected]).sum())
        report.dropped_distractors -= Counter()  # no zero counts
        report.identities = int(keep.sum())
        return [int(r) for r in selected[keep]]

    @property
    def source_names(self) -> list[str]:
        return list(self.sources)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        row = self.rows[index]
        views = tuple(
            View(
                self.positives.ref(row, image_column(j)),
                self.positives.ref(row, mask_column(j)) if self._masks[row, j] else None,
            )
            if self._views[row, j]
            else None
            for j in VIEW_SLOTS
        )
        distractors = {
            name: tuple(
                table.ref(row, distractor_column(j)) if self._distractors[name][row, j] else None for j in VIEW_SLOTS
            )
            for name, table in self.sources.items()
        }
        return Identity(
            id=int(self._ids[row]),
            row=row,
            views=views,
            distractors=distractors,
            category=self._category[row] or "",
            description=self._description[row] or "",
            split=self._split[row],
        )


def bench_locations(data: str | os.PathLike, sources: Sequence[str]) -> tuple[str, dict[str, str]]:
    """Where the positives and each named source live (see the module docstring)."""
    data = os.fspath(data)
    root = Path(data).expanduser()
    positives = str(root / "NearID") if (root / "NearID").is_dir() else data
    located = {}
    for source in sources:
        name, sep, location = source.partition("=")
        located[name] = location if sep else f"{positives.rstrip('/')}-{name}"
    return positives, located


def sources_beside(positives: str | os.PathLike) -> list[str]:
    """The distractor sources that exist beside a local positives folder: ``<positives>-<Source>`` folders."""
    path = Path(positives).expanduser()
    if not path.parent.is_dir():
        return []
    prefix = f"{path.name}-"
    return sorted(
        p.name[len(prefix) :]
        for p in path.parent.iterdir()
        if p.name.startswith(prefix) and len(p.name) > len(prefix) and p.is_dir() and not p.name.endswith(".partial")
    )


def check_sources_exist(positives: str, located: dict[str, str], explicit: set[str]) -> None:
    """A source derived as ``<data>-<Source>`` beside *local* positives must be a folder there.

    Otherwise the failure would surface as a hub download of ``data/NearID-Flux`` or a bare "no such
    folder"; the cause is a source name that this data does not have (``nearid train``'s default
    ``Flux`` sources on ``nearid synth`` data), so the error names the sources that do exist.
    """
    if not Path(positives).expanduser().is_dir():
        return  # hub positives: their sources are hub ids too
    missing = [
        name for name, location in located.items() if name not in explicit and not Path(location).expanduser().exists()
    ]
    if not missing:
        return
    first, others = missing[0], missing[1:]
    there = sources_beside(positives)
    message = f"no distractor source '{first}' beside {positives}: {located[first]} does not exist"
    if others:
        message += f" (also missing: {', '.join(others)})"
    if there:
        message += (
            f"; the sources there are {', '.join(there)}: pass --sources {' '.join(there)} "
            "(or NAME=LOCATION for a source kept elsewhere)"
        )
    else:
        message += f"; there is no {Path(positives).name}-<Source> folder beside it (pass NAME=LOCATION for a source kept elsewhere)"
    raise DatasetError(message)


def check_alignment(positives: Table, source: Table) -> None:
    """Distractor rows must be the positives' rows in the same order: same count, same ``id`` per row."""
    if len(source) != len(positives):
        raise DatasetError(
            f"{source.label}: {len(source)} rows but {positives.label} has {len(positives)}; distractor datasets "
            "must be index-aligned with the positives (same rows, same order)"
        )
    ours, theirs = np.asarray(positives.values("id")), np.asarray(source.values("id"))
    mismatch = np.flatnonzero(ours != theirs)
    if mismatch.size:
        row = int(mismatch[0])
        raise DatasetError(
            f"{source.label}[row {row}].id is {theirs[row]} but {positives.label}[row {row}].id is {ours[row]} "
            f"({mismatch.size} rows differ); distractor datasets must be index-aligned with the positives"
        )


def load_nearid(
    data: str | os.PathLike = HUB_POSITIVES,
    sources: Sequence[str] = (),
    *,
    split: str | None = "test",
    split_file: str | os.PathLike | None = None,
    masks: bool = False,
) -> NearIDBenchmark:
    """The NearID benchmark rows of ``split`` with the given distractor sources, validated. ``masks``:
    for a foreground-only evaluation (views without a mask are dropped and counted)."""
    positives_location, source_locations = bench_locations(data, sources)
    positives = open_table(positives_location, label=_label(positives_location))
    positives.require(POSITIVES_REQUIRED, "NearID positives")
    check_sources_exist(positives_location, source_locations, {s.partition("=")[0] for s in sources if "=" in s})
    tables = {}
    for name, location in source_locations.items():
        table = open_table(location, label=_label(location))
        table.require(DISTRACTORS_REQUIRED, f"NearID distractor ({name})")
        check_alignment(positives, table)
        tables[name] = table
    rows = rows_of_split(positives.values("split"), split, split_file, len(positives), positives.label)
    return NearIDBenchmark(positives, tables, rows, masks=masks)


def _label(location: str) -> str:
    """Keys name the dataset as given: a hub id, or a folder's own name for local data."""
    path = Path(location).expanduser()
    return path.name if path.exists() else location
