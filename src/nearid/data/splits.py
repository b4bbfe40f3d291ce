"""Official splits: the ``split`` column, or a JSON list of 0-based row positions (spec section 3.3).

The authors' ``splits/{train,val,test}.json`` index rows of the unshuffled ``train`` split
(18,786 / 100 / 500 rows); they are positions, not ``id`` values, and apply to every distractor
dataset as well because those are index-aligned.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from nearid.data.loading import DatasetError


def read_split_file(path: str | os.PathLike, n_rows: int) -> list[int]:
    """Row positions from ``[...]`` or ``{"indices": [...]}``; duplicates and out-of-range rows are errors."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the split file ({exc})") from None
    indices = data.get("indices") if isinstance(data, dict) else data
    if not isinstance(indices, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
        raise DatasetError(f'{path}: a split file is a JSON list of row positions or {{"indices": [...]}}')
    if not indices:
        raise DatasetError(f"{path}: the split file lists no rows; list the 0-based row positions of the split")
    repeated = [index for index, count in Counter(indices).items() if count > 1]
    if repeated:
        raise DatasetError(f"{path}: row {repeated[0]} appears more than once; a split lists each row once")
    bad = [i for i in indices if not 0 <= i < n_rows]
    if bad:
        raise DatasetError(f"{path}: row {bad[0]} is outside the dataset's {n_rows} rows (positions are 0-based)")
    return indices


def rows_of_split(split_values: list, split: str | None, split_file: str | os.PathLike | None, n_rows: int, label: str):
    """The row positions to use: from ``split_file`` if given, else where the ``split`` column equals ``split``."""
    if split_file is not None:
        return read_split_file(split_file, n_rows)
    if split is None or split == "all":
        return list(range(n_rows))
    if all(value is None for value in split_values):
        raise DatasetError(f"{label}: has no 'split' column; pass a split file (--split-file) or --split all")
    rows = [row for row, value in enumerate(split_values) if value == split]
    if not rows:
        names = sorted({str(v) for v in split_values if v is not None})
        raise DatasetError(f"{label}: no row has split '{split}' (splits present: {', '.join(names)})")
    return rows
