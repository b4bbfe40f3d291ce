"""The files of a ``nearid score`` run, for one metric or several, all named from the per-pair output.

``<out>`` (csv or jsonl, by :func:`output_format`) has a row per pair that any metric scored;
``<out>.summary.json``; ``<out>.errors.csv`` (failed inputs); for the subjects rule
``<out>.per_generated.csv`` (mean and max over a generated image's references); for DreamBench++ the
scores ``nearid dbpp --scores`` reads. Image paths are written absolute, so the files resolve from any
working directory; every file is written atomically.

One metric keeps the one-model layout of before several metrics (``similarity``, ``same``,
``n_references``, ``mean``, ``max``; the ``key`` after the similarity; ``<out>.dbpp.json``). Several get
a column per metric (``similarity:<spec>``, ``same:<spec>`` where the metric has a threshold, empty /
null where it has no value), the key before them, and one ``<out>.<spec>.dbpp.json`` each.
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from nearid.eval.results import ScoreSummary
from nearid.io.atomic import atomic_path, write_text_atomic
from nearid.io.errors import NearIDError
from nearid.io.jsonvalues import dumps
from nearid.score.result import MultiScoreResult, ScoreResult, result_column
from nearid.score.summary import summarise, summarise_metrics

#: Per-pair output formats by file extension; ``--format`` must agree with the extension.
OUTPUT_FORMATS = {".csv": "csv", ".jsonl": "jsonl"}


def output_format(out: str | os.PathLike, fmt: str | None = None) -> str:
    """The per-pair format: from the extension of ``out``; a ``fmt`` that contradicts it is refused."""
    suffix = Path(out).suffix.lower()
    inferred = OUTPUT_FORMATS.get(suffix)
    if fmt is None:
        if inferred is None:
            raise NearIDError(
                f"{out}: cannot tell the output format from '{suffix or '(no extension)'}'; "
                "name the file .csv or .jsonl (or pass --format)"
            )
        return inferred
    if inferred is not None and inferred != fmt:
        raise NearIDError(f"--format {fmt} contradicts the extension of {out}; name the file .{fmt} or drop --format")
    return fmt


def side_file(out: str | os.PathLike, what: str) -> Path:
    """A file that belongs to the per-pair output ``out``, named from its whole name (``s.csv.summary.json``),
    so that ``s.csv`` and ``s.jsonl`` never share one."""
    out = Path(out)
    return out.with_name(f"{out.name}.{what}")


def dbpp_file(out: str | os.PathLike, spec: str) -> Path:
    """``<out>.<spec as a file name>.dbpp.json``: one metric's DreamBench++ scores in a several-metric run."""
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in spec)[:64]
    return side_file(out, f"{slug}.dbpp.json")


def output_files(out: str | os.PathLike, rule: str, specs: list[str] | None = None) -> list[Path]:
    """Every file a run may write for ``out``, to check them all before the work (``specs``: the
    ``--model`` specs of a several-metric run, which writes one DreamBench++ file per metric)."""
    files = [Path(out), side_file(out, "summary.json"), side_file(out, "errors.csv")]
    if rule == "subjects":
        files.append(side_file(out, "per_generated.csv"))
    if rule == "dreambench":
        several = specs is not None and len(specs) > 1
        files += [dbpp_file(out, spec) for spec in specs] if several else [side_file(out, "dbpp.json")]
    return files


def write_outputs(
    result: ScoreResult, out: str | os.PathLike, *, threshold: dict | None, fmt: str | None = None
) -> ScoreSummary:
    """:func:`write_metric_outputs` of a one-metric result with its ``threshold`` (``None``: no decisions)."""
    return write_metric_outputs(result, out, thresholds={result.metrics[0].spec: threshold}, fmt=fmt)


def write_metric_outputs(
    result: MultiScoreResult, out: str | os.PathLike, *, thresholds: dict[str, dict | None], fmt: str | None = None
) -> ScoreSummary:
    """Every file of the run (module docstring) and its summary; ``thresholds``: spec -> threshold (a
    metric without one gets no decisions)."""
    out = Path(out)
    fmt = output_format(out, fmt)
    header, rows = _pair_rows(result, thresholds)
    with atomic_path(out) as tmp, open(tmp, "w", newline="") as handle:
        if fmt == "jsonl":
            handle.writelines(dumps(row) + "\n" for row in rows)
        else:
            writer = csv.DictWriter(handle, fieldnames=header)
            writer.writeheader()
            writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    if result.several:
        summary = summarise_metrics(result, thresholds)
    else:
        summary = summarise(result, thresholds.get(result.metrics[0].spec))
    summary.pairs_file = out.name
    if result.failures:
        summary.errors_file = _write_errors(result, side_file(out, "errors.csv"))
    if result.plan.rule == "subjects":
        summary.per_generated_file = _write_per_generated(result, side_file(out, "per_generated.csv"))
    if result.plan.rule == "dreambench":  # feeds `nearid dbpp --scores DIR --name ...`, one file per metric
        for metric in result.metrics:
            scores = {
                pair.key: 100 * round(float(value), 6)
                for pair, value in zip(result.plan.pairs, metric.similarities)
                if np.isfinite(value)
            }
            path = dbpp_file(out, metric.spec) if result.several else side_file(out, "dbpp.json")
            write_text_atomic(path, dumps(scores, indent=0))
    summary.write(side_file(out, "summary.json"))
    return summary


def _pair_rows(result: MultiScoreResult, thresholds: dict[str, dict | None]) -> tuple[list[str], list[dict]]:
    """The per-pair columns and a row (in column order) per pair that any metric scored; a value is
    rounded to 6 decimals, ``None`` where its metric has none."""
    decided = [(m, thresholds[m.spec]["value"]) for m in result.metrics if thresholds.get(m.spec) is not None]
    key = ["key"] if result.plan.rule == "dreambench" else []
    values = [result_column(result, m) for m in result.metrics]
    decisions = [result_column(result, m, "same") for m, _ in decided]
    if result.several:
        header = ["reference", "generated", "subject", *key, *values, *decisions]
    else:  # the one-model layout: the key after the similarity
        header = ["reference", "generated", "subject", *values, *key, *decisions]
    rows = []
    for i, pair in enumerate(result.plan.pairs):
        if not any(np.isfinite(m.similarities[i]) for m in result.metrics):
            continue
        row = {
            "reference": os.path.abspath(pair.reference),
            "generated": os.path.abspath(pair.generated),
            "subject": pair.subject,
            "key": pair.key,
        }
        for metric, column in zip(result.metrics, values):
            value = metric.similarities[i]
            row[column] = round(float(value), 6) if np.isfinite(value) else None
        for (metric, threshold), column in zip(decided, decisions):
            value = metric.similarities[i]
            row[column] = int(value > threshold) if np.isfinite(value) else None
        rows.append({name: row[name] for name in header})
    if not rows and not result.several:  # the one-model layout's header of an empty output, as before
        header = ["reference", "generated", "similarity"]
    return header, rows


def _write_errors(result: MultiScoreResult, path: Path) -> str:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "error"])
        writer.writerows(sorted(result.failures.items()))
    return path.name


def _write_per_generated(result: MultiScoreResult, path: Path) -> str:
    """Multi-reference aggregation: per generated image and metric, the number of its references that
    metric scored and the mean and max over them; a generated image no metric scored is left out."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, pair in enumerate(result.plan.pairs):
        groups[(pair.subject, str(pair.generated))].append(i)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        header = ["generated", "subject"]
        for metric in result.metrics:
            header += [result_column(result, metric, what) for what in ("n_references", "mean", "max")]
        writer.writerow(header)
        for (subject, generated), members in sorted(groups.items()):
            row = [os.path.abspath(generated), subject]
            for metric in result.metrics:
                values = metric.similarities[members]
                values = values[np.isfinite(values)]
                row += (
                    [len(values), round(float(np.mean(values)), 6), round(float(np.max(values)), 6)]
                    if len(values)
                    else [0, "", ""]
                )
            if any(np.isfinite(m.similarities[members]).any() for m in result.metrics):
                writer.writerow(row)
    return path.name
