"""``nearid score``: pair planning, the run, outputs, thresholds and shards. The old module's names
keep their path (``nearid.score.score_pairs``)."""

from __future__ import annotations

from nearid.io.lazy import lazy_face

# public name -> the module that defines it
_LAZY = {
    "IMAGE_SUFFIXES": "nearid.score.run",
    "JUDGE_BATCH": "nearid.score.run",
    "LISTED_PROBLEMS": "nearid.score.run",
    "MetricScores": "nearid.score.run",
    "MultiScoreResult": "nearid.score.run",
    "OUTPUT_FORMATS": "nearid.score.run",
    "Pair": "nearid.score.run",
    "PairPlan": "nearid.score.run",
    "PairingError": "nearid.score.run",
    "ScoreResult": "nearid.score.run",
    "check_metric_specs": "nearid.score.run",
    "check_options": "nearid.score.run",
    "check_plan": "nearid.score.run",
    "correlations": "nearid.score.run",
    "dbpp_file": "nearid.score.run",
    "metric_column": "nearid.score.run",
    "output_files": "nearid.score.run",
    "output_format": "nearid.score.run",
    "plan_pairs": "nearid.score.run",
    "prepare": "nearid.score.run",
    "resolve_threshold": "nearid.score.run",
    "resolve_thresholds": "nearid.score.run",
    "same_files": "nearid.score.run",
    "score_metrics": "nearid.score.run",
    "score_pairs": "nearid.score.run",
    "side_file": "nearid.score.run",
    "summarise": "nearid.score.run",
    "summarise_metrics": "nearid.score.run",
    "write_metric_outputs": "nearid.score.run",
    "write_outputs": "nearid.score.run",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_face(__name__, globals(), _LAZY)
