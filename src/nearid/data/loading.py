"""Open a dataset alike from the hub, a ``save_to_disk`` folder or parquet files, without decoding it.

Images stay encoded in the memory-mapped Arrow table; :meth:`Table.ref` hands out an
:class:`~nearid.images.decode.ImageRef` whose bytes are read only when the image is used, and decoded by
nearid's safe loader. 19K rows of six images never sit in memory at once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nearid.images.decode import ImageRef
from nearid.io.errors import NearIDError
from nearid.io.hub import local_hint_for_hub_id, looks_like_local_path, missing_path_hint


class DatasetError(NearIDError):
    """A dataset that cannot be found, read, or does not have the expected schema."""


class Table:
    """One split of one dataset: column checks, presence masks and lazy image references."""

    def __init__(self, dataset, label: str, *, sources: Sequence[str | os.PathLike] = ()):
        if getattr(dataset, "_indices", None) is not None:
            dataset = dataset.flatten_indices()  # refs address rows of the underlying Arrow table
        self.dataset = dataset
        self.label = label
        self.arrow = dataset.data
        self.sources = [os.fspath(s) for s in sources]  # files it was built from (parquet), if any
        self._fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        """SHA-256 of what backs the rows: the Arrow files (``dataset.cache_files``) and the parquet
        files they were built from, by path, size and mtime (:func:`nearid.io.fingerprint.of_files`);
        for an in-memory dataset, its ``datasets`` fingerprint. Regenerating the data at the same
        path changes it; reading unchanged data again does not. Computed once per table."""
        if self._fingerprint is None:
            from nearid.io.fingerprint import of_files, of_json

            files = [entry["filename"] for entry in self.dataset.cache_files] + self.sources
            if files:
                self._fingerprint = of_json({"files": of_files(files), "rows": len(self)})
            else:
                self._fingerprint = of_json({"datasets": self.dataset._fingerprint, "rows": len(self)})
        return self._fingerprint

    def __len__(self) -> int:
        return self.arrow.num_rows

    @property
    def columns(self) -> list[str]:
        return list(self.arrow.column_names)

    def require(self, columns: Sequence[str], what: str) -> None:
        """Fail on the first missing column, naming the dataset and the schema it should have."""
        for column in columns:
            if column not in self.arrow.column_names:
                raise DatasetError(
                    f"{self.label}: missing column '{column}' (a {what} dataset needs {', '.join(columns)}); "
                    f"its columns are {', '.join(self.arrow.column_names)}"
                )

    def has(self, column: str) -> bool:
        return column in self.arrow.column_names

    def present(self, column: str) -> np.ndarray:
        """Boolean per row: the cell is not null (an image that exists)."""
        if column not in self.arrow.column_names:
            return np.zeros(len(self), dtype=bool)
        return self.arrow.column(column).is_valid().to_numpy(zero_copy_only=False)

    def values(self, column: str, default=None) -> list:
        """A whole non-image column as Python values (``default`` for every row if it is absent)."""
        if column not in self.arrow.column_names:
            return [default] * len(self)
        return self.arrow.column(column).to_pylist()

    def ref(self, row: int, column: str) -> ImageRef:
        """A lazy reference to the image in ``row``/``column``; its key names dataset, row and column."""
        from nearid.io.fingerprint import SHORT

        return ImageRef(
            f"{self.label}[row {row}].{column}", lambda: self._encoded(row, column), version=self.fingerprint[:SHORT]
        )

    def _encoded(self, row: int, column: str):
        cell = self.arrow.column(column)[row].as_py()
        if cell is None:
            raise DatasetError(f"{self.label}[row {row}].{column}: the image is missing (null)")
        if cell.get("bytes"):
            return cell["bytes"]
        if cell.get("path"):
            return cell["path"]
        raise DatasetError(f"{self.label}[row {row}].{column}: the cell holds neither image bytes nor a path")


def open_table(location: str | os.PathLike, split: str = "train", *, label: str | None = None) -> Table:
    """Open ``split`` of a dataset given as a hub id, a ``save_to_disk`` folder or parquet file(s).

    What is local and what is a hub id is :func:`~nearid.io.hub.looks_like_local_path`'s rule: a missing
    local folder is reported as missing (with close names), never as a download to make.
    """
    location = os.fspath(location)
    label = label or location
    if looks_like_local_path(location):
        dataset, sources = _open_local(Path(location).expanduser(), split)
        return Table(dataset, label, sources=sources)
    return Table(_open_hub(location, split), label)


def _open_local(path: Path, split: str):
    import datasets

    if not path.exists():
        raise DatasetError(f"{path}: no such dataset folder or file{missing_path_hint(path)}")
    if path.is_dir() and (path / "dataset_dict.json").is_file():
        splits = datasets.load_from_disk(str(path))
        if split not in splits:
            raise DatasetError(f"{path}: has no split '{split}' (it has {', '.join(splits)})")
        return splits[split], ()
    if path.is_dir() and (path / "state.json").is_file():
        return datasets.load_from_disk(str(path)), ()
    files = [path] if path.suffix == ".parquet" else sorted(path.rglob("*.parquet"))
    if not files:
        raise DatasetError(
            f"{path}: not a dataset (expected a save_to_disk folder or parquet files such as data/{split}-*.parquet)"
        )
    chosen = [f for f in files if f.name.startswith(f"{split}-") or f.parent.name == split] or files
    return datasets.load_dataset("parquet", data_files=[str(f) for f in chosen], split="train"), chosen


def _open_hub(repo_id: str, split: str):
    import datasets

    try:
        return datasets.load_dataset(repo_id, split=split)
    except Exception as exc:  # offline, not cached, unknown or gated repo
        from nearid.io.hub import offline

        hint = missing_path_hint(repo_id)
        if hint and (offline() or "/" not in repo_id):
            # a name beside a close local folder is most likely a typo of that folder (and offline the hub
            # was never asked): lead with the local miss, then keep the download fix for a real hub id
            raise DatasetError(
                f"{repo_id}: no such local folder{hint} As a hub dataset id it is not on this machine either "
                f"({'offline' if offline() else type(exc).__name__}): download it where there is network "
                f"(`hf download {repo_id} --repo-type dataset --local-dir DIR`) and pass DIR."
            ) from None
        raise DatasetError(
            f"dataset '{repo_id}' is not available on this machine ({type(exc).__name__}). Download it where "
            f"there is network (`hf download {repo_id} --repo-type dataset --local-dir DIR`), copy DIR here "
            f"and pass the folder instead of the hub id.{local_hint_for_hub_id(repo_id)}"
        ) from None
