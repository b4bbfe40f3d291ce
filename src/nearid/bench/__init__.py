"""``nearid bench``: config and plan, the run over processes, the embedding and judgment stores,
shards, the merge and the paper's presets. ``BenchConfig`` / ``run_bench`` keep their old path."""

from __future__ import annotations

from nearid.io.lazy import lazy_face

# public name -> the module that defines it
_LAZY = {
    "BenchConfig": "nearid.bench.run",
    "CHUNK": "nearid.bench.run",
    "FLUSH_SECONDS": "nearid.bench.run",
    "JUDGE_CHUNK": "nearid.bench.run",
    "RunContext": "nearid.bench.run",
    "check_config": "nearid.bench.run",
    "load_data": "nearid.bench.run",
    "plan_benchmark": "nearid.bench.run",
    "run_bench": "nearid.bench.run",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_face(__name__, globals(), _LAZY)
