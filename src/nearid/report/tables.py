"""Comparison tables (Markdown, CSV, LaTeX) rendered from bench results, never from embeddings.

One row per encoder, as in the paper's Table 1: pooled NearID SSR / PA / PA-pub (the headline group
when all 7 fill sources were run, else all sources), every source's SSR / PA, and the MTG figures when
present. ``PA-pub`` is PA as the paper's tables computed it (spec 12.1, one extra trial per identity: its
mean margin > 0); ``PA`` is the paper's definition (wins / trials).
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

from nearid.eval.results import BenchResults
from nearid.io.atomic import write_text_atomic

PRIMARY_GROUPS = ("all 7 (headline)", "all sources")
#: The column of PA as published (one word: the report splits headers at their last space).
PA_PUBLISHED = "PA-pub"


def _primary(groups: dict):
    for name in PRIMARY_GROUPS:
        if name in groups:
            return name, groups[name].score
    return None, None


def primary_group(results: BenchResults) -> str:
    """The name of the pooled group the tables' first SSR / PA columns show ("" when none)."""
    return next((g for g in PRIMARY_GROUPS for r in results.encoders.values() if g in r.nearid.groups), "")


def table_rows(results: BenchResults) -> tuple[list[str], list[list]]:
    """Header and rows (numbers as floats) for every encoder in ``results``."""
    sources = results.benchmark.sources
    has_mtg = any(r.mtg is not None for r in results.encoders.values())
    group_names = []
    for result in results.encoders.values():
        for name in result.nearid.groups:
            if name not in group_names and name not in PRIMARY_GROUPS:
                group_names.append(name)
    # a judge's unanswered trials (lost, counted in PA's trials) beside its SSR / PA: only when a judge ran
    judges = any(r.judgments is not None for r in results.encoders.values())
    header = ["encoder", "SSR", "PA", PA_PUBLISHED] + (["unanswered"] if judges else [])
    header += [f"{g} {m}" for g in group_names for m in ("SSR", "PA")]
    header += [f"{s} {m}" for s in sources for m in ("SSR", "PA")]
    if has_mtg:
        header += ["MTG M-O", "MTG M-Opair", "MTG SSR", "MTG PA"]
    rows = []
    for name, result in results.encoders.items():
        groups = result.nearid.groups
        _, primary = _primary(groups)
        row = [name + (" (untrained)" if result.untrained and "untrained" not in name else "")]
        row += [primary.ssr, primary.pa, primary.pa_published] if primary else [math.nan] * 3
        if judges:
            row += [primary.n_unanswered if primary and result.judgments is not None else math.nan]
        for g in group_names:
            row += [groups[g].score.ssr, groups[g].score.pa] if g in groups else [math.nan, math.nan]
        for s in sources:
            score = result.nearid.per_source.get(s)
            row += [score.ssr, score.pa] if score else [math.nan, math.nan]
        if has_mtg:
            m = result.mtg
            row += [m.m_o, m.m_opair, m.ssr, m.pa] if m else [math.nan] * 4
        rows.append(row)
    return header, rows


def format_cell(value, column: str, latex: bool = False) -> str:
    """SSR/PA are percentages (1 decimal); M-O / M-Opair are correlations (3 decimals)."""
    if isinstance(value, str):
        return value.replace("_", r"\_") if latex else value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "--" if latex else "–"
    if isinstance(value, int):  # a count (a judge's unanswered trials)
        return str(value)
    return f"{value:.3f}" if "M-O" in column else f"{value:.1f}"


def markdown(results: BenchResults) -> str:
    header, rows = table_rows(results)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(format_cell(v, c) for v, c in zip(row, header)) + " |" for row in rows]
    bench = results.benchmark
    caption = (
        f"NearID-bench on {bench.data} ({bench.split_label}, {bench.identities} identities, "
        f"{bench.condition} images); SSR/PA pooled over {primary_group(results)}, in percent; "
        f"{PA_PUBLISHED}: PA as the paper's tables count it (+1 trial per identity: mean margin > 0)."
    )
    return caption + "\n\n" + "\n".join(lines) + "\n"


def latex(results: BenchResults) -> str:
    header, rows = table_rows(results)
    lines = [
        r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}",
        r"\toprule",
        " & ".join(format_cell(h, h, True) for h in header) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(format_cell(v, c, True) for v, c in zip(row, header)) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def csv_text(results: BenchResults) -> str:
    header, rows = table_rows(results)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows([[("" if isinstance(v, float) and math.isnan(v) else v) for v in row] for row in rows])
    return buffer.getvalue()


def write_tables(results: BenchResults, out: str | os.PathLike) -> None:
    out = Path(out)
    write_text_atomic(out / "results.md", markdown(results))
    write_text_atomic(out / "results.csv", csv_text(results))
    write_text_atomic(out / "results.tex", latex(results))
