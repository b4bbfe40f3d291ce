"""Evaluation: metrics (numpy only), evaluation plans and similarity tables, the results schema,
the authors' CSV tables, DreamBench++ M-H and the torchmetrics classes. Names resolve on first use."""

from __future__ import annotations

from nearid.io.lazy import lazy_face

# public name -> the module that defines it
_LAZY = {
    "BenchResults": "nearid.eval.results",
    "DiscriminationScore": "nearid.eval.metrics",
    "ScoreSummary": "nearid.eval.results",
    "read_results": "nearid.eval.results",
    "score_tables": "nearid.eval.simtables",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_face(__name__, globals(), _LAZY)
