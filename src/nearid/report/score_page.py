"""The score page: what ``nearid score`` measured, for one metric or several, from its summary and pairs file.

A summary holds its metrics in one of two layouts (a one-model run: the top-level fields; several metrics:
a ``metrics`` section each, see :class:`nearid.eval.results.ScoreSummary`). :func:`metric_summaries`
reads either as a list of :class:`MetricSummary`, and :func:`render` shows that list, so one metric is the
case n = 1 of one page: a table of each metric's figures and decisions, the correlations between
metrics, a similarity histogram per metric, the per-subject means, and the lowest-scoring pairs.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nearid.eval.results import ScoreSummary
from nearid.report.kit import COLOURS, GALLERY, card, escape, facts, gallery, grouped_head, hist_bins, note, plot, table

STATISTICS = ("mean", "median", "std", "min", "max")


@dataclass(frozen=True)
class MetricSummary:
    """One metric's figures in a score summary, whichever layout held them."""

    name: str
    column: str  # its similarity column in the pairs file
    same_column: str  # its same/different column there (written when it has a threshold)
    n_pairs: int
    similarity: dict | None  # mean, median, std, min, max (None: no pair scored)
    per_subject: dict[str, dict] = field(default_factory=dict)  # subject -> n, mean, median
    threshold: dict | None = None  # value, source
    decisions: dict | None = None  # same, different
    kind: str = ""  # "encoder" / "pair scorer"; "" where the summary does not say (one model)
    no_answer: int | None = None  # a pair scorer's pairs without an answer; None where not counted


def metric_summaries(summary: ScoreSummary) -> list[MetricSummary]:
    """The metrics of ``summary`` in its order: its ``metrics`` sections, or its top-level fields as the
    one metric of a one-model run (whose pairs file has ``similarity`` / ``same`` columns)."""
    if not summary.metrics:
        return [
            MetricSummary(
                summary.model,
                "similarity",
                "same",
                summary.n_pairs,
                summary.similarity,
                summary.per_subject or {},
                summary.threshold,
                summary.decisions,
                no_answer=summary.no_answer or None,  # written only when some pair had no answer
            )
        ]
    return [
        MetricSummary(
            name,
            m.get("column", f"similarity:{name}"),
            f"same:{name}",
            m.get("n_pairs", 0),
            m.get("similarity"),
            m.get("per_subject") or {},
            m.get("threshold"),
            m.get("decisions"),
            kind=m.get("kind", ""),
            no_answer=m.get("no_answer", 0),
        )
        for name, m in summary.metrics.items()
    ]


def files_read(summary: ScoreSummary) -> list[str | None]:
    """What the page reads beside the summary (the report must never be written over one)."""
    return [summary.pairs_file, summary.errors_file, summary.per_generated_file]


def render(summary: ScoreSummary, path: Path) -> tuple[str, str]:
    """The page's title and body (HTML) for the summary read from ``path``, with one metric or several."""
    metrics = metric_summaries(summary)
    several = len(metrics) > 1
    errors = f"{summary.errors}" + (f" (see {summary.errors_file})" if summary.errors_file else "")
    parts = [
        "<h1>Score report</h1>",
        facts(
            [
                ("metrics" if several else "model", ", ".join(m.name for m in metrics)),
                ("pairing", summary.pairing),
                ("masks", summary.masks),
                ("errors", errors),
                ("summary", path.name),
            ]
        ),
        "<h2>Metrics side by side</h2>" if several else "<h2>Similarity</h2>",
        _figures_table(metrics),
    ]
    if not any(m.similarity for m in metrics):
        parts.append(note("No pair could be scored."))
    if several:
        parts.append(
            '<p class="lead">Each metric on its own scale (cosine for encoders, the judge\'s score / 10 for a '
            "VLM judge): compare their ranking of the pairs (below), not their values. A decision is shown for "
            "each metric that the bench results passed with <code>--calibration</code> calibrated.</p>"
        )
    parts += _correlations(summary.correlations or {})
    pairs, why = (
        read_pairs(path.parent / summary.pairs_file, metrics) if summary.pairs_file else (None, "no pairs file")
    )
    if pairs:
        parts.append(_histograms(pairs, metrics))
    parts += _per_subject(metrics)
    parts.append(f"<h2>Lowest-scoring pairs by {escape(metrics[0].name)}</h2>")
    if pairs is None:
        parts.append(note(f"Gallery unavailable: {why}."))
    else:
        scored = [p for p in pairs if math.isfinite(p["similarity"])]
        lowest = sorted(scored, key=lambda p: p["similarity"])[:GALLERY]
        maps = explanation_maps(path.parent / summary.pairs_file)
        if maps:
            parts.append(
                '<p class="lead">Beside a pair explained by <code>--explain</code>: where it differs in identity '
                "(brighter = the read-out attends there and the patch has no counterpart in the other image; "
                "docs/explain.md).</p>"
            )
        parts.append(gallery([_pair_card(p, maps) for p in lowest]))
    return "Score report", "\n".join(parts)


def _figures_table(metrics: list[MetricSummary]) -> str:
    """A row per metric: pairs, similarity statistics and, where any metric has one, its threshold and
    decisions. The kind and no-answer columns appear where the summary counts them."""
    show_kind = any(m.kind for m in metrics)
    show_no_answer = any(m.no_answer is not None for m in metrics)
    show_threshold = any(m.threshold for m in metrics)
    header = ["metric", *(["kind"] if show_kind else []), "pairs", *(["no answer"] if show_no_answer else [])]
    header += [*STATISTICS, *(["threshold", "decisions"] if show_threshold else [])]
    rows = []
    for m in metrics:
        row = [escape(m.name), *([escape(m.kind)] if show_kind else []), m.n_pairs]
        row += [m.no_answer or 0] if show_no_answer else []
        row += [f"{m.similarity[k]:.4f}" for k in STATISTICS] if m.similarity else ["–"] * len(STATISTICS)
        if show_threshold:
            t, d = m.threshold, m.decisions
            row.append(escape(f"{t['value']:.4f} ({t.get('source', '')})") if t else "no calibration for this metric")
            row.append(f"{d.get('same', 0)} same, {d.get('different', 0)} different" if d else "–")
        rows.append(row)
    return table(header, rows)


def _correlations(correlations: dict) -> list[str]:
    if not correlations:
        return []
    fmt = lambda v: "–" if v is None else f"{v:.3f}"
    return [
        "<h2>Correlation between metrics</h2>",
        table(
            ["metric", "metric", "pairs", "Pearson r", "Spearman ρ"],
            [
                [escape(c["a"]), escape(c["b"]), c["n"], fmt(c.get("pearson")), fmt(c.get("spearman"))]
                for c in correlations.values()
            ],
        ),
        '<p class="lead">Over the pairs both metrics scored. Spearman ranks tied scores by their mean '
        "rank (a judge's integer scores tie often).</p>",
    ]


def _per_subject(metrics: list[MetricSummary]) -> list[str]:
    """Each subject's pairs, mean and median per metric, the lowest mean (of the first metric) first."""
    first = metrics[0].per_subject
    subjects = sorted({s for m in metrics for s in m.per_subject}, key=lambda s: first.get(s, {}).get("mean", math.inf))
    if not subjects:
        return []
    rows = []
    for subject in subjects:
        row = [escape(subject)]
        for m in metrics:
            v = m.per_subject.get(subject)
            row += [escape(v.get("n", "")), f"{v['mean']:.4f}", f"{v['median']:.4f}"] if v else ["–"] * 3
        rows.append(row)
    labels = ("pairs", "mean", "median")
    head = grouped_head("subject", [(m.name, label) for m in metrics for label in labels]) if len(metrics) > 1 else None
    by = f" of {escape(metrics[0].name)}" if len(metrics) > 1 else ""
    return [
        "<h2>Per subject</h2>",
        f'<p class="lead">Lowest mean{by} first.</p>',
        table(["subject", *labels], rows, head),
    ]


def read_pairs(path: Path, metrics: list[MetricSummary]) -> tuple[list[dict] | None, str | None]:
    """Rows of the pairs file (``.csv``, or ``.jsonl`` from ``--out x.jsonl``) that some metric scored, or
    why it cannot be read. Each row gets ``scores`` (metric -> value, NaN where none), ``similarity`` and
    ``same`` (the first metric's), and paths resolved against the file's folder (score writes them
    absolute since issue 12; older files held paths relative to the working directory)."""
    number = lambda value: float("nan") if value in ("", None) else float(value)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            if path.suffix.lower() == ".jsonl":
                rows = [json.loads(line) for line in handle if line.strip()]
            else:
                rows = list(csv.DictReader(handle))
        for row in rows:
            row["scores"] = {m.name: number(row[m.column]) for m in metrics}
            row["similarity"] = row["scores"][metrics[0].name]
            row["same"] = row.get(metrics[0].same_column)
            for key in ("reference", "generated"):
                row[key] = path.parent / row[key]  # an absolute path stays as it is
    except (OSError, KeyError, ValueError, TypeError, AttributeError) as exc:
        return None, f"cannot read the pairs file {path} ({type(exc).__name__}: {exc})"
    return [row for row in rows if any(math.isfinite(v) for v in row["scores"].values())], None


def _histograms(pairs: list[dict], metrics: list[MetricSummary]) -> str:
    """A panel per metric: its similarities over the pairs, its threshold dashed."""
    panels = []
    for m in metrics:
        values = np.array([p["scores"][m.name] for p in pairs])
        panels.append((m.name, values[np.isfinite(values)], m.threshold))

    def draw(ax, panel):
        name, values, threshold = panel
        ax.hist(values, hist_bins(values, n=min(40, max(5, len(values) // 2))), color=COLOURS[0])
        if threshold:
            ax.axvline(
                threshold["value"], color=COLOURS[4], ls="--", lw=1.2, label=f"threshold {threshold['value']:.3f}"
            )
            ax.legend(loc="best")
        ax.set(xlabel="similarity", ylabel="pairs", title=f"{name}: {len(values)} pairs")

    caption = (
        "<b>Similarity of every pair</b>"
        + (", a panel per metric. " if len(metrics) > 1 else ". ")
        + (
            "Pairs left of a dashed threshold are called a different object. "
            if any(m.threshold for m in metrics)
            else ""
        )
        + "A long left tail means some generations lost the subject's identity."
    )
    return plot(panels, draw, caption, "similarity histograms", height=2.6)


def explanation_maps(pairs_file: Path) -> dict:
    """``nearid score --explain``'s maps stored beside the pairs file (``<out>.explain.json``), if any."""
    from nearid.report.explain_figure import EXPLAIN_SIDE_FILE, read_side_file

    return read_side_file(pairs_file.with_name(f"{pairs_file.name}.{EXPLAIN_SIDE_FILE}"))


def _pair_card(pair: dict, maps: dict | None = None) -> str:
    """Reference and generated image; the first metric's score and decision, then every metric's score."""
    same = "" if pair.get("same") in ("", None) else str(pair["same"])
    verdict = {"": "", "1": " · same"}.get(same, ' · <span class="neg">different</span>')
    subject = f" · {escape(pair['subject'])}" if pair.get("subject") else ""
    caption = f"<b>{pair['similarity']:.4f}</b>{verdict}{subject}<br>{escape(pair['generated'].name)}"
    if len(pair["scores"]) > 1:
        caption += "<br>" + " · ".join(
            f"{escape(name)} {'–' if not math.isfinite(v) else f'{v:.4f}'}" for name, v in pair["scores"].items()
        )
    images = [("reference", pair["reference"]), ("generated", pair["generated"])]
    entry = (maps or {}).get((str(Path(pair["reference"]).resolve()), str(Path(pair["generated"]).resolve())))
    if entry is not None:
        from nearid.images.decode import load_image
        from nearid.report.explain_figure import map_thumbnails

        try:
            images += map_thumbnails(entry, load_image(pair["reference"]), load_image(pair["generated"]))
        except Exception as exc:  # one bad image or entry never fails the page
            caption += f"<br>map unavailable: {escape(exc)}"
    return card(images, caption)
