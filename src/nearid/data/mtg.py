"""The Mind-the-Glitch part-edit dataset (``abdo-eldesokey/mtg-dataset``, spec section 3.4).

Each row: two views of one subject (``image_{1,2}_original``), each with one part re-inpainted
(``image_{1,2}_inpainted``), the subject's object masks and the edited parts' masks. The benchmark
uses the ``test`` split (100 samples); training mixes in ``train``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from nearid.data.loading import Table, open_table
from nearid.data.records import MTGSample
from nearid.data.schema import HUB_MTG, MTG_COLUMNS, MTG_REQUIRED


class MTGBenchmark(Sequence):
    """A lazily materialised sequence of :class:`MTGSample` records."""

    def __init__(self, table: Table):
        self.table = table
        self._present = {column: table.present(column) for column in MTG_REQUIRED}

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        row = index % len(self)

        def pair(kind: str, optional: bool = False):
            return tuple(
                self.table.ref(row, column) if (self._present[column][row] or not optional) else None
                for column in MTG_COLUMNS[kind]
            )

        return MTGSample(
            row=row,
            originals=pair("original"),
            edited=pair("edited"),
            object_masks=pair("object_mask", optional=True),
            part_masks=pair("part_mask", optional=True),
        )


def load_mtg(location: str | os.PathLike = HUB_MTG, split: str = "test") -> MTGBenchmark:
    """The MTG samples of ``split`` from the hub, a ``save_to_disk`` folder or parquet files."""
    location = os.fspath(location)
    table = open_table(location, split, label=f"{os.path.basename(location.rstrip('/')) or location}:{split}")
    table.require(MTG_REQUIRED, "Mind-the-Glitch")
    return MTGBenchmark(table)
