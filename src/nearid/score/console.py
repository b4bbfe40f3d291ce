"""The lines ``nearid score`` prints after a run, through a ``log`` callable (``print`` on the command line).

One encoder gets the one-model lines (its statistics, up to 20 subjects, its decisions); several
metrics, or one pair scorer, a line per metric and the correlations between them."""

from __future__ import annotations

import os
from collections.abc import Callable

from nearid.eval.results import ScoreSummary
from nearid.score.result import MultiScoreResult
from nearid.score.write import side_file

#: Subjects listed by the one-model lines.
LISTED_SUBJECTS = 20

Log = Callable[[str], None]


def report_one(result: MultiScoreResult, summary: ScoreSummary, out: str | os.PathLike, log: Log) -> None:
    """The lines of a one-encoder run."""
    metric, plan = result.metrics[0], result.plan
    log(
        f"scored {summary.n_pairs} pairs ({plan.rule} pairing) with {metric.name}; "
        f"{metric.embedded} unique images embedded" + (f", {result.masked} with a mask" if plan.masks else "")
    )
    if summary.similarity:
        log("similarity: " + "  ".join(f"{k} {v:.4f}" for k, v in summary.similarity.items()))
    for subject, values in list(summary.per_subject.items())[:LISTED_SUBJECTS]:
        log(f"  {subject:30s} n={values['n']:4d}  mean {values['mean']:.4f}  median {values['median']:.4f}")
    if summary.decisions:
        d, t = summary.decisions, summary.threshold
        log(f"threshold {t['value']:.4f} ({t['source']}): same {d['same']}, different {d['different']}")
    _report_files(summary, out, log)


def report_metrics(
    result: MultiScoreResult, summary: ScoreSummary, loaded: dict[str, object], out: str | os.PathLike, log: Log
) -> None:
    """The lines of a run with several metrics or a pair scorer: per metric its pairs, statistics,
    non-answers, a judge's time per pair and its decisions; then every two metrics' correlations.
    ``loaded``: spec -> the loaded metric (a VLM judge times itself in ``stats``)."""
    log(f"scored {len(result.plan.pairs)} pairs ({result.plan.rule} pairing) with {len(result.metrics)} metric(s)")
    for metric in result.metrics:
        section = (summary.metrics or {}).get(metric.spec) or {
            "n_pairs": summary.n_pairs,
            "similarity": summary.similarity,
            "decisions": summary.decisions,
        }
        stats = section["similarity"] or {}
        line = f"  {metric.spec}: {section['n_pairs']} pairs" + (
            "  " + "  ".join(f"{k} {v:.4f}" for k, v in stats.items()) if stats else ""
        )
        if metric.no_answer:
            line += f"  no answer {metric.no_answer}"
        judge_stats = getattr(loaded.get(metric.spec), "stats", None)
        if judge_stats is not None and judge_stats.pairs:
            line += f"  {judge_stats.seconds_per_pair:.3g} s per pair"
        if section.get("decisions"):
            line += f"  same {section['decisions']['same']}, different {section['decisions']['different']}"
        log(line)
    for values in (summary.correlations or {}).values():
        r, rho = values["pearson"], values["spearman"]
        log(
            f"  {values['a']} vs {values['b']}: Pearson {'n/a' if r is None else f'{r:.3f}'}, "
            f"Spearman {'n/a' if rho is None else f'{rho:.3f}'} ({values['n']} pairs)"
        )
    _report_files(summary, out, log)


def _report_files(summary: ScoreSummary, out: str | os.PathLike, log: Log) -> None:
    if summary.errors:
        log(f"skipped {summary.errors} failures, listed in {summary.errors_file}")
    log(f"wrote {out} and {side_file(out, 'summary.json').name}")
