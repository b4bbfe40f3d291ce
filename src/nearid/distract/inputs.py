"""The positives ``nearid distract`` works on, from either layout, as plain per-row facts.

* NearID layout — a hub id, a ``save_to_disk``/parquet folder, or a ``nearid synth`` root (its
  ``NearID/``): rows of ``images1..3`` with ``masks1..3``. The output is index-aligned with it.
* The folder layout :func:`nearid.data.load_folder` reads (``ROOT/<identity>/view1.png`` +
  ``view1_mask.png``). Its identities become rows in folder order, and the output is a root holding
  ``NearID/`` (the positives in the hub schema) and ``NearID-<source>/``, which ``bench`` and ``train``
  read as they read ``nearid synth`` output.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from nearid.data.loading import DatasetError, open_table
from nearid.data.nearid_bench import bench_locations
from nearid.data.schema import POSITIVES_REQUIRED, VIEW_SLOTS, image_column, mask_column
from nearid.data.splits import rows_of_split
from nearid.images.decode import ImageRef
from nearid.io.hub import looks_like_local_path

MASK_FIX = 'make masks for your photos with `nearid mask IMAGES --prompt "the object" --out DIR`'


class MissingMasksError(DatasetError):
    """Views without foreground masks: there is no region to inpaint."""


@dataclass
class Inputs:
    kind: str  # "nearid" or "folder"
    location: str  # the positives (a folder root for the folder layout)
    label: str
    ids: list
    categories: list[str]
    descriptions: list[str]
    assets: list[str | None]
    n_images: list[int | None]
    rows: list[int]  # selected rows, in order
    views: dict[int, dict[int, tuple[ImageRef, ImageRef]]] = field(default_factory=dict)  # row -> slot -> refs
    folder_identities: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def default_out(self, source: str) -> Path:
        if self.kind == "folder":
            return Path(f"{self.location.rstrip('/')}-nearid")
        if looks_like_local_path(self.location):
            return Path(f"{self.location.rstrip('/')}-{source}")
        return Path(f"{Path(self.location).name}-{source}")  # a hub id: beside the working directory

    def fingerprint(self, row: int) -> str:
        """Content of a row's views and masks: a changed image invalidates that row's shard only."""
        digest = hashlib.sha256()
        for slot, (image, mask) in sorted(self.views[row].items()):
            for ref in (image, mask):
                data = ref.fetch()
                digest.update(f"{slot}:".encode())
                digest.update(data if isinstance(data, (bytes, bytearray)) else Path(data).read_bytes())
        return digest.hexdigest()


def is_folder_layout(location: str) -> bool:
    path = Path(location).expanduser()
    if not path.is_dir() or (path / "NearID").is_dir():
        return False
    return not (
        (path / "dataset_dict.json").is_file() or (path / "state.json").is_file() or any(path.rglob("*.parquet"))
    )


def open_inputs(data: str | os.PathLike, *, split: str | None = "all", split_file=None) -> Inputs:
    data = os.fspath(data)
    if looks_like_local_path(data) and is_folder_layout(data):
        return _folder_inputs(data, split)
    return _nearid_inputs(data, split, split_file)


def _nearid_inputs(data: str, split, split_file) -> Inputs:
    location, _ = bench_locations(data, [])
    label = Path(location).name if Path(location).expanduser().exists() else location
    table = open_table(location, label=label)
    if not any(table.has(mask_column(j)) for j in VIEW_SLOTS):
        raise MissingMasksError(f"{label}: has no mask columns (masks1..3), so there is nothing to inpaint; {MASK_FIX}")
    table.require(POSITIVES_REQUIRED, "NearID positives")
    rows = rows_of_split(table.values("split"), split, split_file, len(table), label)
    inputs = Inputs(
        kind="nearid",
        location=location,
        label=label,
        ids=table.values("id"),
        categories=[c or "" for c in table.values("category", "")],
        descriptions=[d or "" for d in table.values("category_description", "")],
        assets=table.values("objaverse_id"),
        n_images=table.values("n_images"),
        rows=list(rows),
    )
    present = {j: (table.present(image_column(j)), table.present(mask_column(j))) for j in VIEW_SLOTS}
    for row in rows:
        slots = {}
        for j in VIEW_SLOTS:
            has_view, has_mask = present[j][0][row], present[j][1][row]
            if has_view and not has_mask:
                raise MissingMasksError(f"{label}[row {row}].{mask_column(j)}: view {j + 1} has no mask; {MASK_FIX}")
            if has_view:
                slots[j] = (table.ref(row, image_column(j)), table.ref(row, mask_column(j)))
        inputs.views[row] = slots
    return inputs


def _folder_inputs(root: str, split) -> Inputs:
    from nearid.data.folder import load_folder

    bench = load_folder(root, [], split=None if split in (None, "all") else split)
    identities = list(bench)
    if not identities:
        raise DatasetError(f"{root}: no identity with at least 2 views")
    inputs = Inputs(
        kind="folder",
        location=str(Path(root).expanduser()),
        label=Path(root).name,
        ids=list(range(len(identities))),
        categories=[i.category or "" for i in identities],
        descriptions=[i.description or "" for i in identities],
        assets=[str(i.id) for i in identities],
        n_images=[len(i.view_slots) for i in identities],
        rows=list(range(len(identities))),
        folder_identities=identities,
    )
    for row, identity in enumerate(identities):
        slots = {}
        for j in identity.view_slots:
            view = identity.views[j]
            if view.mask is None:
                raise MissingMasksError(f"{view.image.key}: has no mask (view{j + 1}_mask.png); {MASK_FIX}")
            slots[j] = (view.image, view.mask)
        inputs.views[row] = slots
    return inputs
