"""Benchmark and training data: records, hub loaders, the synthetic generator, folder layouts."""

from .folder import FolderBenchmark, load_folder
from .loading import DatasetError, open_table
from .mtg import MTGBenchmark, load_mtg
from .nearid_bench import LoadReport, NearIDBenchmark, bench_locations, load_nearid
from .records import Identity, MTGSample, View, edit_oracle
from .splits import read_split_file

__all__ = [
    "DatasetError",
    "FolderBenchmark",
    "Identity",
    "LoadReport",
    "MTGBenchmark",
    "MTGSample",
    "NearIDBenchmark",
    "View",
    "bench_locations",
    "edit_oracle",
    "load_folder",
    "load_mtg",
    "load_nearid",
    "open_table",
    "read_split_file",
]
