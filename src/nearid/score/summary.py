"""The figures of a ``nearid score`` run as :class:`~nearid.eval.results.ScoreSummary`: per metric the
statistics of its similarities, per subject, and its decisions under a threshold; with several metrics
a section each and the correlations between them."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from nearid.eval.results import ScoreSummary
from nearid.score.result import MetricScores, MultiScoreResult, metric_column


def summarise(result: MultiScoreResult, threshold: dict | None) -> ScoreSummary:
    """The summary of a one-metric result (of a several-metric one: its first metric's figures)."""
    return _metric_summary(result, result.metrics[0], threshold)


def summarise_metrics(result: MultiScoreResult, thresholds: dict[str, dict | None]) -> ScoreSummary:
    """The summary of several metrics: a section per metric (``metrics``), the correlations between
    them, and at the top level the first metric's figures (what a one-model reader finds there)."""
    sections = {}
    for metric in result.metrics:
        one = _metric_summary(result, metric, thresholds.get(metric.spec))
        sections[metric.spec] = {
            "name": metric.name,
            "kind": metric.kind,
            "column": metric_column(metric.spec),
            "n_pairs": one.n_pairs,
            "unique_images_embedded": metric.embedded,
            "no_answer": metric.no_answer,
            "similarity": one.similarity,
            "per_subject": one.per_subject,
            "threshold": one.threshold,
            "decisions": one.decisions,
        }
    summary = summarise(result, thresholds.get(result.metrics[0].spec))
    summary.metrics = sections
    summary.correlations = correlations(result)
    return summary


def _metric_summary(result: MultiScoreResult, metric: MetricScores, threshold: dict | None) -> ScoreSummary:
    sims = metric.similarities[np.isfinite(metric.similarities)]
    per_subject = defaultdict(list)
    for pair, value in zip(result.plan.pairs, metric.similarities):
        if pair.subject and np.isfinite(value):
            per_subject[pair.subject].append(value)
    decisions = None
    if threshold is not None:
        same = int((sims > threshold["value"]).sum())
        decisions = {"same": same, "different": int(len(sims) - same)}
    return ScoreSummary(
        model=metric.name,
        pairing=result.plan.rule,
        n_pairs=len(sims),
        unique_images_embedded=metric.embedded,
        similarity=_statistics(sims),
        per_subject={
            s: {"n": len(v), "mean": float(np.mean(v)), "median": float(np.median(v))}
            for s, v in sorted(per_subject.items())
        },
        threshold=threshold,
        decisions=decisions,
        errors=len(result.failures),
        pairing_how=result.plan.how,
        masks=str(Path(result.plan.masks).absolute()) if result.plan.masks is not None else None,
        masked_images=result.masked,
        mask_cleaning=result.mask_cleaning,
        mask_dilate=result.mask_dilate,
        no_answer=metric.no_answer,  # 0 is not written: a one-model summary keeps its layout
    )


def _statistics(values: np.ndarray) -> dict | None:
    if not len(values):
        return None
    return {
        "mean": float(np.mean(values)),
        "median": float(np.median(values)),
        "std": float(np.std(values)),
        "min": float(np.min(values)),
        "max": float(np.max(values)),
    }


def correlations(result: MultiScoreResult) -> dict[str, dict]:
    """Pearson and Spearman (average ranks) between every two metrics, over the pairs both scored."""
    from nearid.eval.metrics import pearson, spearman

    out = {}
    for a, b in ((a, b) for k, a in enumerate(result.metrics) for b in result.metrics[k + 1 :]):
        both = np.isfinite(a.similarities) & np.isfinite(b.similarities)
        x, y = a.similarities[both], b.similarities[both]
        out[f"{a.spec} | {b.spec}"] = {
            "a": a.spec,
            "b": b.spec,
            "n": int(both.sum()),
            "pearson": _json_float(pearson(x, y)),
            "spearman": _json_float(spearman(x, y)),
        }
    return out


def _json_float(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
