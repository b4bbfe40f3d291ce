"""``nearid bench``: config and plan, the run over processes, the embedding and judgment stores,
the one scoring function, shards, the bench kind of record and its merge, and the paper's presets.
``BenchConfig`` / ``run_bench`` keep their old path."""

from __future__ import annotations

from nearid.io.lazy import lazy_face

# public name -> the module that defines it
_LAZY = {
    "BenchConfig": "nearid.bench.planning",
    "CHUNK": "nearid.bench.run",
    "FLUSH_SECONDS": "nearid.bench.run",
    "JUDGE_CHUNK": "nearid.bench.run",
    "MetricInfo": "nearid.bench.scoring",
    "PlannedBench": "nearid.bench.planning",
    "RunContext": "nearid.bench.run",
    "check_config": "nearid.bench.run",
    "load_data": "nearid.bench.planning",
    "plan_benchmark": "nearid.bench.planning",
    "plan_fingerprint": "nearid.bench.planning",
    "planned": "nearid.bench.planning",
    "run_bench": "nearid.bench.run",
    "score_metric": "nearid.bench.scoring",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_face(__name__, globals(), _LAZY)
