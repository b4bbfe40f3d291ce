"""``nearid report``: one self-contained HTML page from a bench ``results.json`` or a score summary.

The report reads results files only and never embeds, so it can be re-made at any time from what
``nearid bench`` / ``nearid score`` wrote. Self-contained means no external reference at all (CSS
inline, plots as base64 PNG, images as base64 JPEG thumbnails): the page can be mailed or archived.
Gallery images are read back from the dataset; when it is gone the page says so instead of failing,
because the numbers alone are still worth reading.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import itertools
import json
import math
import os
import re
from pathlib import Path

import numpy as np

from nearid.eval.metrics import VIEW_PAIRS, nearid_margins
from nearid.eval.results import BenchInfo, BenchResults, EncoderResult, ScoreSummary, read_results
from nearid.eval.simtables import read_mtg_csv, read_nearid_csv
from nearid.io.atomic import write_text_atomic
from nearid.io.errors import NearIDError
from nearid.report.tables import format_cell, primary_group, table_rows

GALLERY = 8  # worst failures per encoder / lowest-scoring pairs
THUMB = 160  # longest side of a gallery thumbnail, pixels
DPI = 144  # plots are drawn at 1.5x and shown at 96 dpi, so they stay sharp on dense screens
COLOURS = ("#2b6cb0", "#dd6b20", "#2f855a", "#805ad5", "#c53030", "#319795", "#b7791f", "#4a5568")
NUMBER = re.compile(r"[-+]?[0-9.]*|–")  # table cells right-aligned as numbers (– is a missing number)

CSS = """
body{margin:0;background:#f7f7f8;color:#1f2328;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,"Noto Sans","DejaVu Sans",sans-serif}
main{max-width:1120px;margin:0 auto;padding:24px 28px 48px;background:#fff;min-height:100vh}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:32px 0 8px;border-bottom:1px solid #e3e5e8;padding-bottom:4px}
h3{font-size:16px;margin:20px 0 6px}.lead{color:#57606a;margin:0 0 12px}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:8px 0;font-size:14px}
dl.facts dt{color:#57606a}dl.facts dd{margin:0;word-break:break-all}
.scroll{overflow-x:auto}table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border:1px solid #e3e5e8;padding:4px 8px;text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
th:first-child,td:first-child,td.t{text-align:left}th.group{text-align:center}th{background:#f3f4f6;font-weight:600}
.badge{font-size:11px;padding:0 6px;border-radius:8px;background:#fff3cd;color:#7a5d00;margin-left:6px}
figure{margin:12px 0 20px}figure.plot img{display:block;max-width:100%;height:auto}
figcaption{color:#57606a;font-size:13px;max-width:900px}
.note{background:#fff8e6;border-left:4px solid #d69e2e;padding:8px 12px;font-size:14px}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:14px}
.card{border:1px solid #e3e5e8;border-radius:6px;padding:8px;margin:0;background:#fcfcfd}
.row{display:flex;gap:6px}.row div{flex:1;text-align:center;font-size:11px;color:#57606a}
.row img{width:100%;border-radius:3px;display:block;background:#eee}
.missing{height:100px;display:flex;align-items:center;justify-content:center;background:#eee;border-radius:3px}
.card figcaption{margin-top:6px;font-size:12px;color:#1f2328}.neg{color:#c53030;font-weight:600}
"""


def write_report(results_path: str | os.PathLike, out_path: str | os.PathLike | None = None) -> Path:
    """Write the report for ``results_path`` (default: ``report.html`` beside it) atomically."""
    from nearid.io.outputs import check_outputs

    path = Path(results_path)
    results = read_results(path, (BenchResults, ScoreSummary))
    out = Path(out_path) if out_path is not None else path.parent / "report.html"
    if isinstance(results, ScoreSummary):
        read = [results.pairs_file, results.errors_file, results.per_generated_file]
    else:
        read = [r.sims_folder for r in results.encoders.values()]
    check_outputs([out], [path, *(path.parent / name for name in read if name)])  # never over what it reads
    title, body = (_score_page if isinstance(results, ScoreSummary) else _bench_page)(results, path)
    write_text_atomic(
        out,
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
        f'content="width=device-width, initial-scale=1"><title>{_e(title)}</title><style>{CSS}</style>'
        f'</head><body><main>{body}<p class="lead">Made by <code>nearid report</code> from '
        f"{_e(path.name)}; re-make it at any time, nothing is re-embedded.</p></main></body></html>\n",
    )
    return out


# ------------------------------------------------------------------------------------ HTML pieces
def _e(value) -> str:
    return html.escape(str(value))


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _facts(items) -> str:
    return (
        '<dl class="facts">'
        + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items if v not in (None, ""))
        + "</dl>"
    )


def _table(header, rows, head: str | None = None) -> str:
    """``rows`` hold HTML already (callers escape); the first column is a label, the rest numbers."""
    head = head or "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>"
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{c}</td>" if NUMBER.fullmatch(str(c)) or i == 0 else f'<td class="t">{c}</td>'
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f'<div class="scroll"><table><thead>{head}</thead><tbody>{body}</tbody></table></div>'


def _plot(panels: list, draw, caption: str, alt: str, height: float = 2.7, max_cols: int = 3) -> str:
    """One PNG, a panel per item of ``panels``; matplotlib's object API, so no global backend is set."""
    import matplotlib
    from matplotlib.figure import Figure

    style = {
        "font.size": 8.5,
        "axes.titlesize": 9.5,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "legend.frameon": False,
        "legend.fontsize": 7.5,
    }
    cols = min(len(panels), max_cols)
    with matplotlib.rc_context(style):
        fig = Figure(figsize=(min(11.0, 4.6 * cols), height * math.ceil(len(panels) / cols)), layout="constrained")
        axes = fig.subplots(math.ceil(len(panels) / cols), cols, squeeze=False).ravel()
        for ax, panel in zip(axes, panels):
            draw(ax, panel)
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=DPI)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (
        f'<figure class="plot"><img alt="{_e(alt)}" width="{round(fig.get_figwidth() * 96)}" '
        f'src="data:image/png;base64,{data}"><figcaption>{caption}</figcaption></figure>'
    )


def _thumb(image_input) -> str:
    """A base64 JPEG thumbnail, or a grey box saying why not: one bad image never fails the page."""
    from nearid.images.decode import load_image

    try:
        image = load_image(image_input)
    except Exception as exc:
        return f'<div class="missing" title="{_e(exc)}">image unavailable</div>'
    image.thumbnail((THUMB, THUMB))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=88)
    return f'<img alt="" src="data:image/jpeg;base64,{base64.b64encode(buffer.getvalue()).decode("ascii")}">'


def _card(images: list[tuple[str, object]], caption: str, margin: float | None = None) -> str:
    attr = f' data-margin="{margin!r}"' if margin is not None else ""
    cells = "".join(f"<div>{_thumb(ref)}{_e(label)}</div>" for label, ref in images)
    return f'<figure class="card"{attr}><div class="row">{cells}</div><figcaption>{caption}</figcaption></figure>'


def _hist_bins(values: np.ndarray, n: int = 40, edge: float | None = None) -> np.ndarray:
    """Equal bins over ``values``; with ``edge`` given, that value is a bin edge (0 for margins)."""
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    width = max((hi - lo) / n, 1e-4)
    if edge is None:
        return lo + width * np.arange(n + 1)
    return edge + width * np.arange(math.floor((lo - edge) / width), math.ceil((hi - edge) / width) + 1)


# ------------------------------------------------------------------------------------ bench page
def _bench_page(results: BenchResults, path: Path) -> tuple[str, str]:
    bench = results.benchmark
    sims = {name: _read_sims(path.parent, result, bench) for name, result in results.encoders.items()}
    mtg = bench.mtg and f"{bench.mtg} ({bench.mtg_split} split, {bench.mtg_samples} samples)"
    parts = [
        "<h1>NearID-bench report</h1>",
        _facts(
            [
                ("data", bench.data),
                ("split", bench.split),
                ("split file", bench.split_file),
                ("identities", bench.identities),
                ("sources", ", ".join(bench.sources)),
                ("images", bench.condition),
                ("loaded", bench.load_report),
                (
                    "mask cleaning",
                    bench.mask_cleaning
                    and bench.mask_cleaning + (f", dilate {bench.mask_dilate}" if bench.mask_dilate else ""),
                ),
                ("MTG", mtg),
                ("results", path.name),
            ]
        ),
    ]
    parts += [
        "<h2>Metrics</h2>",
        _metrics_table(results),
        "<h2>Similarities and margins</h2>",
        *_bench_plots(results, sims),
    ]
    parts += ["<h2>Worst failures</h2>", _failures_section(bench, sims)]
    return "NearID-bench report", "\n".join(parts)


def _metrics_table(results: BenchResults) -> str:
    """``tables.table_rows`` (the same numbers as results.md), with a two-row header to stay narrow."""
    header, rows = table_rows(results)
    cells = [
        [_e(row[0].replace(" (untrained)", "")) + ('<span class="badge">untrained</span>' if r.untrained else "")]
        + [_e(format_cell(v, c)) for v, c in zip(row[1:], header[1:])]
        for row, r in zip(rows, results.encoders.values())
    ]
    primary = primary_group(results)
    groups = [(h.rpartition(" ")[0] or f"pooled: {primary}", h.rpartition(" ")[2]) for h in header[1:]]
    head = (
        f'<tr><th rowspan="2">{_e(header[0])}</th>'
        + "".join(
            f'<th colspan="{len(list(g))}" class="group">{_e(name)}</th>'
            for name, g in itertools.groupby(groups, key=lambda g: g[0])
        )
        + "</tr><tr>"
        + "".join(f"<th>{_e(metric)}</th>" for _, metric in groups)
        + "</tr>"
    )
    out = _table(header, cells, head) + (
        '<p class="lead">SSR and PA in percent (SSR: identities whose trials all win; '
        "PA: winning trials; PA-pub: PA as the paper's tables count it, one more trial per "
        "identity, won when its mean margin is &gt; 0). MTG M-O / M-Opair are correlations. Untrained encoders "
        "have random weights: a floor, not a baseline.</p>"
    )
    judged = [
        [_e(name), r.judgments.pairs, r.judgments.full_table, r.judgments.computed, r.judgments.no_answer]
        for name, r in results.encoders.items()
        if r.judgments is not None
    ]
    if judged:
        out += "<h3>Pair scorers (judges)</h3>" + _table(
            ["scorer", "pairs asked", "a full table", "judged in the last run", "no answer"], judged
        )
        out += (
            '<p class="lead">A judge is asked only the pairs the metrics read: the view pairs and each view '
            "against the distractor in its own background (MTG: its five pairs). A pair without an answer is "
            "no trial.</p>"
        )
    keys = (("value", 4), ("balanced_accuracy", 1), ("true_positive_rate", 1), ("true_negative_rate", 1))
    calibration = [
        [_e(name)] + [f"{getattr(r.calibration.threshold, k):.{d}f}" for k, d in keys]
        for name, r in results.encoders.items()
        if r.calibration is not None
    ]
    if calibration:
        out += "<h3>Same/different threshold calibrated on this split</h3>" + _table(
            [
                "encoder",
                "threshold",
                "balanced accuracy %",
                "true pairs called same %",
                "distractors called different %",
            ],
            calibration,
        )
    return out


def _read_sims(folder: Path, result: EncoderResult, bench: BenchInfo) -> dict:
    """Per source: sample ids, ``pair [N, 3]``, ``own [N, 3]`` (view vs own-background distractor), margins."""
    tables, missing, mtg = {}, [], None
    sims = folder / result.sims_folder
    condition = bench.condition
    for source in bench.sources:
        try:
            pair, own = read_nearid_csv(sims / f"{source}_{condition}.csv")
            with open(sims / f"{source}_{condition}.csv", newline="") as handle:
                ids = [row["sample_id"] for row in csv.DictReader(handle)]
            tables[source] = {"ids": ids, "pair": pair, "own": own, "margins": nearid_margins(pair, own)}
        except (NearIDError, OSError) as exc:
            missing.append(str(exc))
    try:
        mtg = read_mtg_csv(sims / f"mtg_{condition}.csv") if result.mtg is not None else None
    except (NearIDError, OSError) as exc:
        missing.append(str(exc))
    return {"tables": tables, "missing": missing, "mtg": mtg, "mtg_score": result.mtg}


def _all_sources(tables: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True-pair similarities (each pair once: sources share views), distractor similarities, margins."""
    pairs = {(i, k): v for t in tables.values() for i, row in zip(t["ids"], t["pair"]) for k, v in enumerate(row)}
    finite = lambda a: a[np.isfinite(a)]
    return (
        finite(np.array(list(pairs.values()), dtype=float)),
        finite(np.concatenate([t["own"].ravel() for t in tables.values()])),
        finite(np.concatenate([t["margins"].ravel() for t in tables.values()])),
    )


def _similarity_panel(ax, item) -> None:
    name, (pos, neg, _) = item
    bins = _hist_bins(np.concatenate([pos, neg]))
    for values, colour, label in ((pos, COLOURS[0], "true pairs"), (neg, COLOURS[4], "distractors")):
        ax.hist(
            values,
            bins,
            weights=np.full(len(values), 1 / max(len(values), 1)),
            histtype="step",
            lw=1.6,
            color=colour,
            label=f"{label} (n={len(values)})",
        )
    ax.set(title=name, xlabel="cosine similarity", ylabel="share")
    ax.legend(loc="upper left")


def _margin_panel(ax, item) -> None:
    name, (_, _, m) = item
    bins = _hist_bins(m, edge=0.0)
    ax.hist(m[m > 0], bins, color=COLOURS[2], label="win (margin > 0)")
    ax.hist(m[m <= 0], bins, color=COLOURS[4], label="loss (margin ≤ 0)")
    ax.axvline(0, color="#1f2328", lw=1, ls="--")
    ax.set(
        title=f"{name}: {100 * np.mean(m > 0):.1f}% of {m.size} trials win", xlabel="directed margin", ylabel="trials"
    )
    ax.legend(loc="best")


def _mtg_panel(ax, item) -> None:
    name, s = item
    sims, (o1, o2) = s["mtg"]
    ax.scatter(
        np.r_[o1, o2],
        np.r_[sims["mtg_sim_1_1p"], sims["mtg_sim_2_2p"]],
        s=12,
        color=COLOURS[0],
        label="same background: s(1, 1′), s(2, 2′)",
    )
    ax.scatter(
        np.r_[o2, o1],
        np.r_[sims["mtg_sim_1_2p"], sims["mtg_sim_2_1p"]],
        s=12,
        color=COLOURS[1],
        marker="^",
        label="other background: s(1, 2′), s(2, 1′)",
    )
    score = s["mtg_score"]
    m_o, m_opair = (score.m_o, score.m_opair) if score is not None else (np.nan, np.nan)
    ax.set(
        title=f"{name}: M-O {m_o:.3f}, M-Opair {m_opair:.3f}",
        xlabel="oracle (share of the object untouched)",
        ylabel="similarity to the edited image",
    )
    ax.legend(loc="best")


def _bench_plots(results: BenchResults, sims: dict) -> list[str]:
    out = [_note(f"{name}: {m}") for name, s in sims.items() for m in s["missing"]]
    have = [(name, _all_sources(s["tables"])) for name, s in sims.items() if s["tables"]]
    if have:
        out.append(
            _plot(
                have,
                _similarity_panel,
                "<b>Similarity distributions</b>, all sources pooled: true pairs (two "
                "views of one object, different backgrounds) against matched-context distractors (a view "
                "against a similar object inpainted into that view's own background). A good encoder puts "
                "true pairs to the right; a context-dominated encoder puts distractors to the right of true "
                "pairs.",
                "similarity histograms",
            )
        )
        out.append(
            _plot(
                have,
                _margin_panel,
                "<b>Directed margins</b> s(p<sub>a</sub>, p<sub>b</sub>) − s(p<sub>a</sub>,"
                " n<sub>a</sub>), every trial of every source. Everything right of the dashed 0 line is a win "
                "(a tie loses); mass far to the left means the background, not the object, drives the score.",
                "margin histograms",
            )
        )
    out.append(_source_bars(results))
    mtg = [(name, s) for name, s in sims.items() if s["mtg"] is not None]
    if mtg:
        out.append(
            _plot(
                mtg,
                _mtg_panel,
                "<b>Mind-the-Glitch</b>: every edited image against its oracle (share of "
                "the object the part edit left untouched). Similarity should rise with the oracle: a small edit "
                "should cost little, a large one a lot. M-O is the Fisher-z mean of these four correlations, "
                "M-Opair of the two same-background ones.",
                "MTG similarity against oracle",
            )
        )
    return out


def _source_bars(results: BenchResults) -> str:
    names, sources = list(results.encoders), results.benchmark.sources

    def draw(ax, metric):
        width = 0.8 / len(names)
        for e, name in enumerate(names):
            per = results.encoders[name].nearid.per_source
            x = np.arange(len(sources)) + (e - (len(names) - 1) / 2) * width
            bars = ax.bar(
                x,
                [getattr(per[s], metric) if s in per else np.nan for s in sources],
                width,
                color=COLOURS[e % len(COLOURS)],
                label=name,
            )
            if len(sources) * len(names) <= 28:
                ax.bar_label(bars, fmt="%.0f", fontsize=6.5, padding=1)
        ax.set(title=f"{metric.upper()} per source", ylabel=f"{metric.upper()} %", ylim=(0, 108))
        ax.set_xticks(np.arange(len(sources)), sources, rotation=30 if len(sources) > 5 else 0)
        ax.legend(loc="upper right", fontsize=7)

    return _plot(
        ["ssr", "pa"],
        draw,
        "<b>Per source</b>: SSR (every trial of an identity wins) and PA (share of "
        "winning trials), one bar per encoder. A source where every encoder is low is a hard kind of "
        "distractor; one encoder lower everywhere is fooled by context.",
        "SSR and PA per source",
        max_cols=2,
    )


def _worst(tables: dict, n: int = GALLERY) -> list[dict]:
    """The ``n`` identities with the most negative directed margins over all sources, each by its worst
    trial: the same object failing on every source would otherwise fill the whole gallery."""
    trials = sorted(
        (float(t["margins"].flat[j]), source, j)
        for source, t in tables.items()
        for j in np.flatnonzero(np.isfinite(t["margins"]))
    )
    found, seen = [], set()
    for margin, source, j in trials:
        t = tables[source]
        i, k, d = np.unravel_index(j, t["margins"].shape)
        if t["ids"][i] in seen:
            continue
        seen.add(t["ids"][i])
        anchor, positive = VIEW_PAIRS[k] if d == 0 else VIEW_PAIRS[k][::-1]
        found.append(
            {
                "margin": margin,
                "source": source,
                "id": t["ids"][i],
                "anchor": anchor,
                "positive": positive,
                "s_pos": float(t["pair"][i, k]),
                "s_neg": float(t["own"][i, anchor]),
            }
        )
        if len(found) == n:
            break
    return found


def _open_identities(bench: BenchInfo) -> tuple[dict | None, str | None]:
    """The benchmark's identities by id, or why the data cannot be opened any more."""
    from nearid.data import load_nearid

    try:
        data = load_nearid(
            bench.data,
            bench.sources,
            split=bench.split,
            split_file=bench.split_file,
            masks=bench.condition == "foreground",
        )
        return {str(identity.id): identity for identity in data}, None
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}".splitlines()[0]


def _failures_section(bench: BenchInfo, sims: dict) -> str:
    worst = {name: _worst(s["tables"]) for name, s in sims.items() if s["tables"]}
    identities, why = _open_identities(bench) if any(worst.values()) else ({}, None)
    parts = [
        '<p class="lead">Per encoder, the identities with the most negative directed margins over all sources, '
        "each by its worst trial: the anchor view, the other view of the same object (it should be closer), and "
        "the distractor in the anchor's own background that beat it.</p>"
    ]
    if identities is None:
        parts.append(
            _note(
                f"Gallery unavailable: the benchmark data at {bench.data} cannot be opened any more "
                f"({why}). The numbers below come from the similarity tables."
            )
        )
    for name, failures in worst.items():
        parts.append(f"<h3>{_e(name)}</h3>")
        if identities is None:
            parts.append(
                _table(
                    [
                        "identity",
                        "source",
                        "anchor → positive",
                        "s(anchor, positive)",
                        "s(anchor, distractor)",
                        "margin",
                    ],
                    [
                        [
                            _e(f["id"]),
                            _e(f["source"]),
                            f"view {f['anchor']} → view {f['positive']}",
                            f"{f['s_pos']:.4f}",
                            f"{f['s_neg']:.4f}",
                            f"{f['margin']:.4f}",
                        ]
                        for f in failures
                    ],
                )
            )
        else:
            parts.append(
                '<div class="gallery">'
                + "".join(_failure_card(f, identities.get(f["id"])) for f in failures)
                + "</div>"
            )
    return "\n".join(parts)


def _failure_card(f: dict, identity) -> str:
    views = identity.views if identity is not None else ()
    image = lambda slot: views[slot].image if slot < len(views) and views[slot] is not None else None
    distractor = identity.distractor(f["source"], f["anchor"]) if identity is not None else None
    caption = (
        f'<b>identity {_e(f["id"])}</b> · {_e(f["source"])} · margin <span class="neg">{f["margin"]:.4f}</span>'
        f"<br>s(anchor, positive) {f['s_pos']:.4f} · s(anchor, distractor) {f['s_neg']:.4f}"
    )
    return _card(
        [
            (f"anchor · view {f['anchor']}", image(f["anchor"])),
            (f"positive · view {f['positive']}", image(f["positive"])),
            (f"distractor · {f['source']}", distractor),
        ],
        caption,
        f["margin"],
    )


# ------------------------------------------------------------------------------------ score page
def _score_page(summary: ScoreSummary, path: Path) -> tuple[str, str]:
    if summary.metrics:
        return _metrics_score_page(summary, path)
    sim, threshold, decisions = summary.similarity, summary.threshold, summary.decisions
    errors = f"{summary.errors}" + (f" (see {summary.errors_file})" if summary.errors_file else "")
    parts = [
        "<h1>Score report</h1>",
        _facts(
            [
                ("model", summary.model),
                ("pairing", summary.pairing),
                ("pairs scored", summary.n_pairs),
                ("threshold", threshold and f"{threshold['value']:.4f} ({threshold.get('source', '')})"),
                (
                    "decisions",
                    decisions and f"{decisions.get('same', 0)} same, {decisions.get('different', 0)} different",
                ),
                ("errors", errors),
                ("summary", path.name),
            ]
        ),
    ]
    parts.append("<h2>Similarity</h2>")
    parts.append(
        _table(
            ["", "mean", "median", "std", "min", "max"],
            [["all pairs"] + [f"{sim[k]:.4f}" for k in ("mean", "median", "std", "min", "max")]],
        )
        if sim
        else _note("No pair could be scored.")
    )
    pairs, why = _read_pairs(path.parent / summary.pairs_file) if summary.pairs_file else (None, "no pairs file")
    if pairs:
        parts.append(_score_histogram(pairs, threshold))
    subjects = sorted((summary.per_subject or {}).items(), key=lambda item: item[1].get("mean", 0))
    if subjects:
        parts += [
            "<h2>Per subject</h2>",
            '<p class="lead">Lowest mean first.</p>',
            _table(
                ["subject", "pairs", "mean", "median"],
                [[_e(s), _e(v.get("n", "")), f"{v['mean']:.4f}", f"{v['median']:.4f}"] for s, v in subjects],
            ),
        ]
    parts.append("<h2>Lowest-scoring pairs</h2>")
    if pairs is None:
        parts.append(_note(f"Gallery unavailable: {why}."))
    else:
        lowest = sorted(pairs, key=lambda p: p["similarity"])[:GALLERY]
        parts.append('<div class="gallery">' + "".join(_pair_card(p) for p in lowest) + "</div>")
    return "Score report", "\n".join(parts)


def _read_pairs(csv_path: Path, columns: dict[str, str] | None = None) -> tuple[list[dict] | None, str | None]:
    """Rows of the pairs file (``.csv``, or ``.jsonl`` from ``--out x.jsonl``) with paths resolved against its
    folder (score writes them absolute since issue 12; older files held paths relative to the working
    directory), or why it cannot be read. With ``columns`` (metric -> column, several metrics) each row
    gets ``scores`` (metric -> value) and ``similarity`` is the first metric's."""
    number = lambda value: float("nan") if value in ("", None) else float(value)
    try:
        with open(csv_path, newline="", encoding="utf-8") as handle:
            if csv_path.suffix.lower() == ".jsonl":
                rows = [json.loads(line) for line in handle if line.strip()]
            else:
                rows = list(csv.DictReader(handle))
        for row in rows:
            if columns:
                row["scores"] = {name: number(row[column]) for name, column in columns.items()}
                row["similarity"] = next(iter(row["scores"].values()))
            row["similarity"] = number(row["similarity"])
            for key in ("reference", "generated"):
                row[key] = csv_path.parent / row[key]  # an absolute path stays as it is
    except (OSError, KeyError, ValueError, TypeError, AttributeError) as exc:
        return None, f"cannot read the pairs file {csv_path} ({type(exc).__name__}: {exc})"
    if columns:
        return [row for row in rows if any(math.isfinite(v) for v in row["scores"].values())], None
    return [row for row in rows if math.isfinite(row["similarity"])], None


def _score_histogram(pairs: list[dict], threshold: dict | None) -> str:
    values = np.array([p["similarity"] for p in pairs])

    def draw(ax, _):
        ax.hist(values, _hist_bins(values, n=min(40, max(5, len(values) // 2))), color=COLOURS[0])
        if threshold:
            ax.axvline(
                threshold["value"], color=COLOURS[4], ls="--", lw=1.2, label=f"threshold {threshold['value']:.3f}"
            )
            ax.legend(loc="best")
        ax.set(xlabel="cosine similarity", ylabel="pairs", title=f"{len(values)} pairs")

    caption = (
        "<b>Similarity of every pair.</b> "
        + ("Pairs left of the dashed threshold are called a different object. " if threshold else "")
        + "A long left tail means some generations lost the subject's identity."
    )
    return _plot([None], draw, caption, "similarity histogram", height=2.6)


def _metrics_score_page(summary: ScoreSummary, path: Path) -> tuple[str, str]:
    """Several metrics of one run side by side: figures, decisions, correlations, histograms, gallery."""
    metrics = summary.metrics
    errors = f"{summary.errors}" + (f" (see {summary.errors_file})" if summary.errors_file else "")
    parts = [
        "<h1>Score report</h1>",
        _facts(
            [
                ("metrics", ", ".join(metrics)),
                ("pairing", summary.pairing),
                ("masks", summary.masks),
                ("errors", errors),
                ("summary", path.name),
            ]
        ),
        "<h2>Metrics side by side</h2>",
    ]
    keys = ("mean", "median", "std", "min", "max")
    rows = []
    for name, m in metrics.items():
        sim, threshold, decisions = m.get("similarity"), m.get("threshold"), m.get("decisions")
        rows.append(
            [_e(name), _e(m.get("kind", "")), m.get("n_pairs", 0), m.get("no_answer", 0)]
            + ([f"{sim[k]:.4f}" for k in keys] if sim else ["–"] * len(keys))
            + (
                [f"{threshold['value']:.4f}", _e(threshold.get("source", ""))]
                if threshold
                else ["–", "no threshold" if summary.threshold is None else "no calibration for this metric"]
            )
            + ([decisions["same"], decisions["different"]] if decisions else ["–", "–"])
        )
    header = ["metric", "kind", "pairs", "no answer", *keys, "threshold", "from", "same", "different"]
    parts.append(_table(header, rows))
    parts.append(
        '<p class="lead">Each metric on its own scale (cosine for encoders, the judge\'s score / 10 for a '
        "VLM judge): compare their ranking of the pairs (below), not their values. A decision is shown for "
        "each metric that the bench results passed with <code>--calibration</code> calibrated.</p>"
    )
    correlations = summary.correlations or {}
    if correlations:
        fmt = lambda v: "–" if v is None else f"{v:.3f}"
        parts += [
            "<h2>Correlation between metrics</h2>",
            _table(
                ["metric", "metric", "pairs", "Pearson r", "Spearman ρ"],
                [
                    [_e(c["a"]), _e(c["b"]), c["n"], fmt(c.get("pearson")), fmt(c.get("spearman"))]
                    for c in correlations.values()
                ],
            ),
            '<p class="lead">Over the pairs both metrics scored. Spearman ranks tied scores by their mean '
            "rank (a judge's integer scores tie often).</p>",
        ]
    columns = {name: m.get("column", f"similarity:{name}") for name, m in metrics.items()}
    pairs, why = (
        _read_pairs(path.parent / summary.pairs_file, columns) if summary.pairs_file else (None, "no pairs file")
    )
    if pairs is not None:
        parts.append(_metric_histograms(pairs, metrics))
    first = next(iter(metrics))
    parts.append(f"<h2>Lowest-scoring pairs by {_e(first)}</h2>")
    if pairs is None:
        parts.append(_note(f"Gallery unavailable: {why}."))
    else:
        scored = [p for p in pairs if math.isfinite(p["similarity"])]
        lowest = sorted(scored, key=lambda p: p["similarity"])[:GALLERY]
        parts.append('<div class="gallery">' + "".join(_pair_card(p) for p in lowest) + "</div>")
    return "Score report", "\n".join(parts)


def _metric_histograms(pairs: list[dict], metrics: dict) -> str:
    panels = []
    for name, m in metrics.items():
        values = np.array([p["scores"][name] for p in pairs])
        panels.append((name, values[np.isfinite(values)], m.get("threshold")))

    def draw(ax, panel):
        name, values, threshold = panel
        ax.hist(values, _hist_bins(values, n=min(40, max(5, len(values) // 2))), color=COLOURS[0])
        if threshold:
            ax.axvline(
                threshold["value"], color=COLOURS[4], ls="--", lw=1.2, label=f"threshold {threshold['value']:.3f}"
            )
            ax.legend(loc="best")
        ax.set(xlabel="similarity", ylabel="pairs", title=f"{name}: {len(values)} pairs")

    caption = "<b>Each metric's similarities over the pairs.</b> Dashed: the metric's calibrated threshold."
    return _plot(panels, draw, caption, "similarity histograms per metric", height=2.6)


def _pair_card(pair: dict) -> str:
    same = "" if pair.get("same") in ("", None) else str(pair["same"])
    verdict = {"": "", "1": " · same"}.get(same, ' · <span class="neg">different</span>')
    subject = f" · {_e(pair['subject'])}" if pair.get("subject") else ""
    caption = f"<b>{pair['similarity']:.4f}</b>{verdict}{subject}<br>{_e(pair['generated'].name)}"
    if pair.get("scores"):
        caption += "<br>" + " · ".join(
            f"{_e(name)} {'–' if not math.isfinite(v) else f'{v:.4f}'}" for name, v in pair["scores"].items()
        )
    return _card([("reference", pair["reference"]), ("generated", pair["generated"])], caption)
