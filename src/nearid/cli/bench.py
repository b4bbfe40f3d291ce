"""``nearid bench`` (NearID-bench and MTG for one or more models), ``metrics`` (SSR / PA from similarity
tables), ``dbpp`` (DreamBench++ metric-to-human alignment) and ``merge`` (finish a sharded bench or
score run). ``metrics`` and ``dbpp`` need only numpy (tests/test_cli_light.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from nearid.cli.options import (
    add_judge_options,
    add_load_options,
    add_mask_options,
    add_model_option,
    add_option,
    add_read_options,
    add_shard_options,
    judge_options,
)
from nearid.io.errors import NearIDError


def cmd_bench(args) -> int:
    from nearid.bench.run import BenchConfig, run_bench
    from nearid.io.outputs import check_outputs
    from nearid.report.tables import markdown

    values = {
        "encoders": args.model,
        "data": args.data,
        "sources": args.sources,
        "split": args.split,
        "masks": args.masks,
        "mask_cleaning": args.mask_cleaning,
        "mtg": args.mtg,
        "mtg_split": args.mtg_split,
        "trials": args.trials,
        "mtg_mask_cleaning": args.mtg_mask_cleaning,
    }
    if args.preset:
        from nearid.bench.presets import check_available, resolve

        values = resolve(args.preset, values)  # explicit options override the preset's
        check_available(values)  # offline: a missing hub dataset or model fails here, before anything loads
    for option, name in (("--model", "encoders"), ("--data", "data")):
        if not values[name]:
            raise NearIDError(f"{option} is required (or --preset table1 / table7)")
    defaults = {
        "split": "test",
        "masks": False,
        "mask_cleaning": "authors",
        "mtg_split": "test",
        "trials": "slot",
        "mtg_mask_cleaning": "none",
    }
    values = {k: defaults[k] if v is None and k in defaults else v for k, v in values.items()}
    from nearid.models.specs import check_distinct_specs

    check_distinct_specs(list(values["encoders"]))  # `histogram` and `histogram:8` are one metric
    named = [s.split("=", 1)[1] for s in values["sources"] or [] if "=" in s]
    check_outputs([], [values["data"], args.split_file, values["mtg"], *named], folders=[args.out])
    config = BenchConfig(
        **values,
        out=args.out,
        split_file=args.split_file,
        mask_dilate=args.mask_dilate,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        allow_pickle=args.allow_pickle,
        num_shards=args.num_shards,
        shard_index=args.shard_index,
        judge_options=judge_options(args),
        judge_unanswered=args.judge_unanswered,
        num_workers=args.num_workers,
        fast_decode=args.fast_decode,
    )
    results = run_bench(config)
    if results is not None:
        print("\n" + markdown(results))
        print(f"results: {Path(args.out) / 'results.json'} (+ results.md, results.csv, results.tex, sims/)")
        if args.preset:
            from nearid.bench.presets import compare_run, get_preset

            protocol = {**values, "split_file": args.split_file, "mask_dilate": args.mask_dilate}
            written = compare_run(
                results, get_preset(args.preset), {**protocol, "fast_decode": args.fast_decode}, args.out
            )
            if written is not None:
                print(f"comparison with the published values: {written} (+ .csv)")
    return 0


def cmd_metrics(args) -> int:
    from nearid.eval.simtables import score_tables

    kind, score = score_tables(args.tables)
    pooled = f"{len(args.tables)} table{'s' if len(args.tables) > 1 else ''} pooled"
    if args.json:
        extra = {"m_o": score.m_o, "m_opair": score.m_opair} if kind == "mtg" else {}
        print(
            json.dumps(
                {
                    **extra,
                    "ssr": score.ssr,
                    "pa": score.pa,
                    "pa_published": score.pa_published,
                    "n_samples": score.n_samples,
                    "n_trials": score.n_trials,
                    # a judge's unanswered (lost) trials, only when there are some: the layout stays
                    **({"n_unanswered": score.n_unanswered} if getattr(score, "n_unanswered", 0) else {}),
                }
            )
        )
    elif kind == "mtg":
        print(
            f"MTG  M-O {score.m_o:.4f}  M-Opair {score.m_opair:.4f}  SSR {score.ssr:.2f}  PA {score.pa:.2f}  "
            f"PA as published {score.pa_published:.2f}  ({score.n_samples} samples, {score.n_trials} trials, {pooled})"
        )
    else:
        print(
            f"SSR {score.ssr:.2f}  PA {score.pa:.2f}  PA as published {score.pa_published:.2f}  "
            f"({score.n_samples} identities, {score.n_trials} trials, {score.n_unanswered} unanswered, {pooled})"
        )
    return 0


def cmd_dbpp(args) -> int:
    from nearid.eval.dbpp import alignment, alignment_json, format_table

    if args.scores and not args.name:
        raise NearIDError("--scores needs --name: the name your metric gets in the table")
    result = alignment(args.ratings, args.scores, args.name)
    if args.json:
        print(json.dumps(alignment_json(result)))
    else:
        print(format_table(result))
    if args.scores:
        info = result["_details"]["scorers"][args.name]
        print(
            f"{args.name}: {info['keys_paired']} of {info['keys_total']} keys paired with human ratings",
            file=sys.stderr if args.json else sys.stdout,
        )
    return 0


def cmd_merge(args) -> int:
    from nearid.eval.results import BenchResults
    from nearid.io import records

    merged = records.merge(Path(args.out))  # the one merge: bench shards (judges too) or score shards
    if isinstance(merged, BenchResults):
        from nearid.report.tables import markdown

        print("\n" + markdown(merged))
        print(f"results: {Path(args.out) / 'results.json'} (+ results.md, results.csv, results.tex, sims/)")
    else:
        print(f"merged {merged.n_pairs} pairs into {args.out} and its side files")
    return 0


def _bench_data_options(p) -> None:
    """What bench reads: the positives, the distractor sources, which rows, and MTG."""
    add_option(
        p,
        "--data",
        help="positives: hub id, save_to_disk folder, parquet, a `nearid synth` folder, "
        "or a folder of <identity>/view1.png ... (nearid.data.folder); required without --preset",
    )
    add_option(
        p,
        "--sources",
        nargs="+",
        help="distractor sources (<data>-<Source>, or NAME=LOCATION; "
        "default for a folder benchmark: every source in it)",
    )
    add_option(p, "--split", help="value of the split column, or 'all' (default: test)")
    add_option(p, "--split-file", help="JSON list of row positions (overrides --split)")
    add_option(
        p,
        "--foreground",
        old=("--masks",),
        dest="masks",
        action="store_true",
        default=None,
        help="foreground only: black out backgrounds with the views' masks (the paper's Table 7)",
    )
    add_mask_options(p, "--foreground", cleaning_default=None)
    add_option(p, "--mtg", help="MTG dataset (hub id or folder) to add the MTG benchmark")
    add_option(p, "--mtg-split", help="MTG split to score (default: test, the paper's benchmark)")


def _add_bench(commands) -> None:
    p = commands.add_parser("bench", help="NearID-bench (+ MTG) for one or more models")
    add_option(
        p,
        "--preset",
        choices=["table1", "table7"],
        help="the paper's Table 1 (or Table 7, foreground only) in one run, printed beside the published "
        "values; the options below override the preset's",
    )
    add_model_option(
        p,
        "an encoder or pair-scorer (judge) spec to benchmark",
        default=None,
        several="a comparison table",
        old=("--encoder",),
    )
    _bench_data_options(p)
    add_option(
        p,
        "--trials",
        choices=["slot", "authors"],
        help="slot: a view against the distractor in its own background, by slot (default); authors: the "
        "authors' compacted lists, which pair a view with another background's distractor when one is "
        "missing (--preset table1/table7 use it)",
    )
    add_option(
        p,
        "--judge-unanswered",
        choices=["lose", "skip"],
        default="lose",
        help="a judge's pair without an answer (NaN): its trials count and lose, as ties do (lose, default), "
        "or are left out as the authors' NaN-aware metrics do (skip; the entry is named '[unanswered skipped]')",
    )
    add_option(
        p,
        "--mtg-mask-cleaning",
        choices=["none", "authors"],
        help="with --foreground and --mtg: MTG's object masks raw, binarised, as the authors use them "
        "(none, default) or cleaned like the views' (authors)",
    )
    add_option(p, "--out", required=True, help="output folder (embedding store, sims/, results.*)")
    add_load_options(p)
    add_read_options(p)
    add_shard_options(p, "identity")
    add_judge_options(p)
    p.set_defaults(run=cmd_bench)


def register(commands) -> None:
    _add_bench(commands)

    p = commands.add_parser(
        "metrics", help="SSR and PA (MTG: also M-O, M-Opair) from similarity tables in the authors' CSV layout"
    )
    p.add_argument(
        "tables",
        nargs="+",
        help="CSV files: NearID-bench (sample_id, sim_01, sim_02, sim_12, cross_ij) "
        "or MTG (mtg_*.csv of nearid bench --mtg); pooled",
    )
    add_option(
        p,
        "--json",
        action="store_true",
        help='print {"ssr", "pa", "pa_published", "n_samples", "n_trials"} (MTG: also "m_o", "m_opair"; a '
        'judge\'s table with unanswered pairs: also "n_unanswered", lost trials)',
    )
    p.set_defaults(run=cmd_metrics)

    p = commands.add_parser("dbpp", help="DreamBench++ metric-to-human alignment (M-H) per category")
    add_option(p, "--ratings", required=True, help="ratings folder (data_<scorer>_rating/, data_human_rating/)")
    add_option(p, "--scores", help="your metric's scores on the DreamBench++ images: <method>.json files")
    add_option(p, "--name", help="name of your metric in the table (with --scores)")
    add_option(p, "--json", action="store_true", help="print {category: {scorer: r}} as JSON")
    p.set_defaults(run=cmd_dbpp)

    p = commands.add_parser("merge", help="finish a run split with --num-shards: the tables of a one-process run")
    p.add_argument("out", help="the --out of the sharded `nearid bench` (a folder) or `nearid score` (a file)")
    p.set_defaults(run=cmd_merge)


__all__ = ["cmd_bench", "cmd_dbpp", "cmd_merge", "cmd_metrics", "register"]
