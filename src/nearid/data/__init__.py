"""Benchmark and training data: records, hub loaders, the synthetic generator, folder layouts.

Names are resolved on first use (PEP 562), so importing one light submodule such as
:mod:`nearid.data.schema` or :mod:`nearid.data.records` does not import the loaders (and through
them ``datasets``) as well.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nearid.io.lazy import lazy_face

# public name -> the submodule that defines it
_LAZY = {
    "DatasetError": ".loading",
    "FolderBenchmark": ".folder",
    "Identity": ".records",
    "LoadReport": ".nearid_bench",
    "MTGBenchmark": ".mtg",
    "MTGSample": ".records",
    "NearIDBenchmark": ".nearid_bench",
    "View": ".records",
    "bench_locations": ".nearid_bench",
    "edit_oracle": ".records",
    "load_folder": ".folder",
    "load_mtg": ".mtg",
    "load_nearid": ".nearid_bench",
    "open_table": ".loading",
    "read_split_file": ".splits",
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:
    from nearid.data.folder import FolderBenchmark, load_folder
    from nearid.data.loading import DatasetError, open_table
    from nearid.data.mtg import MTGBenchmark, load_mtg
    from nearid.data.nearid_bench import LoadReport, NearIDBenchmark, bench_locations, load_nearid
    from nearid.data.records import Identity, MTGSample, View, edit_oracle
    from nearid.data.splits import read_split_file


__getattr__, __dir__ = lazy_face(__name__, globals(), _LAZY)
