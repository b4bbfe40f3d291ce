"""The module ``nearid score`` lived in before it was split (``nearid.score.run``): every name it had
resolves, on first use, in the module that holds it now, so code importing from here keeps working.
New code imports from the package (``from nearid.score import run_score``) or the module named below.
"""

from __future__ import annotations

from nearid.io.lazy import lazy_face

# public name -> the module that defines it now
_MOVED = {
    "IMAGE_SUFFIXES": "nearid.score.plan",
    "JUDGE_BATCH": "nearid.score.compute",
    "LISTED_PROBLEMS": "nearid.score.inputs",
    "MetricScores": "nearid.score.result",
    "MultiScoreResult": "nearid.score.result",
    "OUTPUT_FORMATS": "nearid.score.write",
    "Pair": "nearid.score.plan",
    "PairPlan": "nearid.score.plan",
    "PairingError": "nearid.score.plan",
    "ScoreResult": "nearid.score.result",
    "check_metric_specs": "nearid.score.checks",
    "check_options": "nearid.score.checks",
    "check_plan": "nearid.score.inputs",
    "correlations": "nearid.score.summary",
    "dbpp_file": "nearid.score.write",
    "metric_column": "nearid.score.result",
    "output_files": "nearid.score.write",
    "output_format": "nearid.score.write",
    "plan_pairs": "nearid.score.plan",
    "prepare": "nearid.score.inputs",
    "resolve_threshold": "nearid.score.thresholds",
    "resolve_thresholds": "nearid.score.thresholds",
    "same_files": "nearid.score.inputs",
    "score_metrics": "nearid.score.compute",
    "score_pairs": "nearid.score.compute",
    "side_file": "nearid.score.write",
    "summarise": "nearid.score.summary",
    "summarise_metrics": "nearid.score.summary",
    "usable": "nearid.score.inputs",
    "write_metric_outputs": "nearid.score.write",
    "write_outputs": "nearid.score.write",
}

__all__ = sorted(_MOVED)

__getattr__, __dir__ = lazy_face(__name__, globals(), _MOVED)
