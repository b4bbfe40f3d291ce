"""``nearid score``: the whole command as one call (:func:`run_score` with a :class:`ScoreConfig`), and its
parts: the pairing rules (``plan``), the planning pass over the inputs (``inputs``), the scores
(``compute``) in one result type (``result``), the summaries (``summary``), the files (``write``), the
thresholds (``thresholds``) and shards (``shards``). The old module's names keep their path
(``nearid.score.score_pairs``)."""

from __future__ import annotations

from nearid.io.lazy import lazy_face

# public name -> the module that defines it
_LAZY = {
    "IMAGE_SUFFIXES": "nearid.score.plan",
    "JUDGE_BATCH": "nearid.score.compute",
    "LISTED_PROBLEMS": "nearid.score.inputs",
    "MetricScores": "nearid.score.result",
    "MultiScoreResult": "nearid.score.result",
    "OUTPUT_FORMATS": "nearid.score.write",
    "Pair": "nearid.score.plan",
    "PairPlan": "nearid.score.plan",
    "PairingError": "nearid.score.plan",
    "RankConfig": "nearid.score.rank",
    "RankResult": "nearid.score.rank",
    "RankedGeneration": "nearid.score.ranking",
    "ScoreConfig": "nearid.score.command",
    "ScoreOutcome": "nearid.score.command",
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
    "rank_generations": "nearid.score.rank",
    "rank_rows": "nearid.score.ranking",
    "resolve_threshold": "nearid.score.thresholds",
    "resolve_thresholds": "nearid.score.thresholds",
    "run_score": "nearid.score.command",
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

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_face(__name__, globals(), _LAZY)
