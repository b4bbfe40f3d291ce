"""A plain folder layout for your own matched-context benchmark, read into the same records.

::

    ROOT/
      <identity>/                      one folder per identity; its name is the identity id
        view1.png  view2.jpg  view3.png    2-3 views of the same object on different backgrounds
        view1_mask.png ...                 optional foreground masks (pixel > 0 = object)
        meta.json                          optional: {"category": ..., "description": ..., "split": ...}
        distractors/<source>/view1.png     a different, similar object in view 1's background (same
                                           place), one folder per distractor source

Slots come from the digit in the file name, so ``distractors/flux/view2.png`` always pairs with
``view2``. Identities with fewer than 2 views and distractors whose view is missing are skipped and
counted in the load report.

Folders are read as users keep them (:func:`~nearid.images.decode.list_images`): symbolically linked
identity and source folders are followed; hidden files and folders (``.ipynb_checkpoints``), macOS's
``._*`` files and ``__MACOSX/`` are neither identities, sources nor views.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from nearid.data.loading import DatasetError
from nearid.data.nearid_bench import LoadReport
from nearid.data.records import Identity, View
from nearid.images.decode import IMAGE_SUFFIXES, ImageRef, is_metadata_name, list_images

_VIEW = re.compile(r"^view([123])(_mask)?$")


class FolderBenchmark(list):
    """Identities read from a folder; ``source_names`` and ``report`` as for the hub loader."""

    def __init__(self, identities, source_names: list[str], report: LoadReport, root: Path):
        super().__init__(identities)
        self.source_names = source_names
        self.report = report
        self.root = root


def _file_ref(path: Path) -> ImageRef:
    return ImageRef.of_file(path)  # versioned: a rewritten file is another image to every store


def _subfolders(folder: Path) -> list[Path]:
    """Visible subfolders (links followed), sorted: what can be an identity or a source."""
    if not folder.is_dir():
        return []
    return [p for p in sorted(folder.iterdir()) if p.is_dir() and not is_metadata_name(p.name)]


def _slots(folder: Path, *, masks: bool) -> dict[int, Path]:
    found: dict[int, Path] = {}
    for path in list_images(folder, recursive=False, suffixes=IMAGE_SUFFIXES):
        match = _VIEW.match(path.stem)
        if not match or bool(match[2]) != masks:
            continue
        slot = int(match[1]) - 1
        if slot in found:
            raise DatasetError(f"{found[slot]} and {path}: two files for the same slot; keep one")
        found[slot] = path
    return found


def is_folder_benchmark(location: str | os.PathLike) -> bool:
    """Whether ``location`` is a local folder in this layout (identity folders holding ``view1.*``
    files) rather than a dataset (``save_to_disk``, parquet, or a ``nearid synth`` root), so that
    ``nearid bench --data`` can take either."""
    root = Path(location).expanduser()
    if not root.is_dir() or any((root / name).exists() for name in ("dataset_dict.json", "state.json", "NearID")):
        return False
    try:
        return any(_slots(folder, masks=False) for folder in _subfolders(root))
    except DatasetError:  # two files for one slot: this layout, with a problem load_folder will name
        return True


def load_folder(
    root: str | os.PathLike, sources: list[str] | None = None, *, split: str | None = None
) -> FolderBenchmark:
    """Read ``root`` (see the module docstring); ``sources=None`` takes every source found."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root}: no such benchmark folder")
    folders = _subfolders(root)
    if not folders:
        raise DatasetError(f"{root}: no identity folders inside (expected ROOT/<identity>/view1.png ...)")
    found_sources = sorted({p.name for f in folders for p in _subfolders(f / "distractors")})
    wanted = found_sources if sources is None else list(sources)
    unknown = [name for name in wanted if name not in found_sources]
    if unknown:
        there = (
            f"the sources there are {', '.join(found_sources)}"
            if found_sources
            else "it has no <identity>/distractors/<source>/ folder"
        )
        raise DatasetError(
            f"{root}: no distractor source '{unknown[0]}' in any <identity>/distractors/ folder; {there}"
        )
    report = LoadReport()
    identities = []
    for folder in folders:
        meta = _meta(folder)
        if split is not None and split != "all" and meta.get("split", "test") != split:
            continue
        report.rows_selected += 1
        images, masks = _slots(folder, masks=False), _slots(folder, masks=True)
        if len(images) < 2:
            report.skipped_rows["fewer than 2 views"] += 1
            continue
        views = tuple(
            View(_file_ref(images[j]), _file_ref(masks[j]) if j in masks else None) if j in images else None
            for j in range(3)
        )
        distractors = {}
        for source in wanted:
            found = (
                _slots(folder / "distractors" / source, masks=False)
                if (folder / "distractors" / source).is_dir()
                else {}
            )
            report.dropped_distractors[source] += sum(1 for j in found if j not in images)
            distractors[source] = tuple(_file_ref(found[j]) if j in found and j in images else None for j in range(3))
        identities.append(
            Identity(
                id=folder.name,
                row=len(identities),
                views=views,
                distractors=distractors,
                category=meta.get("category", ""),
                description=meta.get("description", ""),
                split=meta.get("split"),
            )
        )
    report.dropped_distractors = +report.dropped_distractors
    report.identities = len(identities)
    return FolderBenchmark(identities, wanted, report, root)


def _meta(folder: Path) -> dict:
    path = folder / "meta.json"
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise DatasetError(f'{path}: must be a JSON object like {{"split": "test"}}')
    return meta
