"""The bench page: what ``nearid bench`` measured, read back from its ``results.json`` and similarity tables.

The facts of the run, the metrics table (the numbers of ``results.md``, through ``tables``), similarity /
margin / per-source / MTG figures, and a gallery of each encoder's worst failures. The gallery reopens the
benchmark data; when it is gone the failures are listed as numbers instead, because the numbers alone are
still worth reading.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from nearid.eval.metrics import VIEW_PAIRS, nearid_margins
from nearid.eval.results import BenchInfo, BenchResults, EncoderResult
from nearid.eval.simtables import read_mtg_csv, read_nearid_csv
from nearid.io.errors import NearIDError
from nearid.report.kit import (
    COLOURS,
    GALLERY,
    card,
    escape,
    facts,
    gallery,
    grouped_head,
    hist_bins,
    note,
    plot,
    table,
)
from nearid.report.tables import format_cell, primary_group, table_rows


def files_read(results: BenchResults) -> list[str]:
    """What the page reads beside the results file (the report must never be written over one)."""
    return [r.sims_folder for r in results.encoders.values()]


def render(results: BenchResults, path: Path) -> tuple[str, str]:
    """The page's title and body (HTML) for the bench results read from ``path``."""
    bench = results.benchmark
    sims = {name: _read_sims(path.parent, result, bench) for name, result in results.encoders.items()}
    mtg = bench.mtg and f"{bench.mtg} ({bench.mtg_split} split, {bench.mtg_samples} samples)"
    parts = [
        "<h1>NearID-bench report</h1>",
        facts(
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
        [escape(row[0].replace(" (untrained)", "")) + ('<span class="badge">untrained</span>' if r.untrained else "")]
        + [escape(format_cell(v, c)) for v, c in zip(row[1:], header[1:])]
        for row, r in zip(rows, results.encoders.values())
    ]
    primary = primary_group(results)
    groups = [(h.rpartition(" ")[0] or f"pooled: {primary}", h.rpartition(" ")[2]) for h in header[1:]]
    head = grouped_head(header[0], groups)
    out = table(header, cells, head) + (
        '<p class="lead">SSR and PA in percent (SSR: identities whose trials all win; '
        "PA: winning trials; PA-pub: PA as the paper's tables count it, one more trial per "
        "identity, won when its mean margin is &gt; 0). MTG M-O / M-Opair are correlations. Untrained encoders "
        "have random weights: a floor, not a baseline.</p>"
    )
    judged = [
        [escape(name), r.judgments.pairs, r.judgments.full_table, r.judgments.computed, r.judgments.no_answer]
        for name, r in results.encoders.items()
        if r.judgments is not None
    ]
    if judged:
        out += "<h3>Pair scorers (judges)</h3>" + table(
            ["scorer", "pairs asked", "a full table", "judged in the last run", "no answer"], judged
        )
        out += (
            '<p class="lead">A judge is asked only the pairs the metrics read: the view pairs and each view '
            "against the distractor in its own background (MTG: its five pairs). A pair without an answer is "
            "no trial.</p>"
        )
    keys = (("value", 4), ("balanced_accuracy", 1), ("true_positive_rate", 1), ("true_negative_rate", 1))
    calibration = [
        [escape(name)] + [f"{getattr(r.calibration.threshold, k):.{d}f}" for k, d in keys]
        for name, r in results.encoders.items()
        if r.calibration is not None
    ]
    if calibration:
        out += "<h3>Same/different threshold calibrated on this split</h3>" + table(
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
    bins = hist_bins(np.concatenate([pos, neg]))
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
    bins = hist_bins(m, edge=0.0)
    ax.hist(m[m > 0], bins, color=COLOURS[2], label="win (margin > 0)")
    ax.hist(m[m <= 0], bins, color=COLOURS[4], label="loss (margin ≤ 0)")
    ax.axvline(0, color="#1f2328", lw=1, ls="--")
    # no finite margin (a judge that answered nothing): say so, never the mean of an empty array
    title = f"{name}: {100 * np.mean(m > 0):.1f}% of {m.size} trials win" if m.size else f"{name}: no answered trial"
    ax.set(title=title, xlabel="directed margin", ylabel="trials")
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
    out = [note(f"{name}: {m}") for name, s in sims.items() for m in s["missing"]]
    have = [(name, _all_sources(s["tables"])) for name, s in sims.items() if s["tables"]]
    if have:
        out.append(
            plot(
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
            plot(
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
            plot(
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

    return plot(
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
            note(
                f"Gallery unavailable: the benchmark data at {bench.data} cannot be opened any more "
                f"({why}). The numbers below come from the similarity tables."
            )
        )
    for name, failures in worst.items():
        parts.append(f"<h3>{escape(name)}</h3>")
        if identities is None:
            parts.append(
                table(
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
                            escape(f["id"]),
                            escape(f["source"]),
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
            parts.append(gallery([_failure_card(f, identities.get(f["id"])) for f in failures]))
    return "\n".join(parts)


def _failure_card(f: dict, identity) -> str:
    views = identity.views if identity is not None else ()
    image = lambda slot: views[slot].image if slot < len(views) and views[slot] is not None else None
    distractor = identity.distractor(f["source"], f["anchor"]) if identity is not None else None
    caption = (
        f'<b>identity {escape(f["id"])}</b> · {escape(f["source"])} · margin <span class="neg">{f["margin"]:.4f}</span>'
        f"<br>s(anchor, positive) {f['s_pos']:.4f} · s(anchor, distractor) {f['s_neg']:.4f}"
    )
    return card(
        [
            (f"anchor · view {f['anchor']}", image(f["anchor"])),
            (f"positive · view {f['positive']}", image(f["positive"])),
            (f"distractor · {f['source']}", distractor),
        ],
        caption,
        f["margin"],
    )
