"""``nearid score`` (generated images against their references, with one model or several) and
``nearid report`` (a self-contained HTML page from bench or score results). ``report`` needs no torch
(tests/test_cli_light.py)."""

from __future__ import annotations

import sys

from nearid.cli.options import (
    add_judge_options,
    add_load_options,
    add_model_option,
    add_option,
    add_pair_options,
    add_read_options,
    add_shard_options,
    add_verdict_options,
    nonnegative_int,
    pair_options,
)


def cmd_score(args) -> int:
    """Parse, call :func:`nearid.score.run_score` (the whole command, its checks in order), map to an exit code."""
    from nearid.score.command import ScoreConfig, run_score

    config = ScoreConfig(
        **pair_options(args),
        out=args.out,
        models=tuple(args.model or ("nearid",)),
        format=args.format,
        num_shards=args.num_shards,
        shard_index=args.shard_index,
        explain=args.explain,
    )
    if not run_score(config).scored_any:
        print("nearid score: error: no pair could be scored; see the errors file", file=sys.stderr)
        return 2
    return 0


def cmd_report(args) -> int:
    from nearid.report.html import write_report

    print(f"wrote {write_report(args.results, args.out)}")
    return 0


def _add_score(commands) -> None:
    p = commands.add_parser("score", help="score generated images against references (identity preservation)")
    add_pair_options(
        p,
        refs_help="reference folder, a pairs CSV, or a DreamBench++ samples folder",
        pairing_help="how references meet generated images: csv (a pairs file), paths (same relative path), "
        "subjects (every image of a subject folder against its references), dreambench (DreamBench++ samples) "
        "or auto (chosen from the inputs' shape and printed; default)",
        old_masks=("--masks",),
    )
    add_option(
        p,
        "--out",
        default="scores.csv",
        help="per-pair output (.csv or .jsonl); side files are <out>.summary.json, ...",
    )
    add_option(p, "--format", choices=["csv", "jsonl"], help="per-pair format (default: from the --out extension)")
    add_verdict_options(p, "same/different decisions")
    add_option(
        p, "--skip-errors", action="store_true", help="score what can be scored; list failures in <out>.errors.csv"
    )
    add_option(
        p,
        "--explain",
        type=nonnegative_int,
        default=0,
        metavar="K",
        help="identity maps of the K lowest-scoring pairs into <out>.explain.json, shown by nearid report "
        "(default 0: none; one more forward pass per image explained)",
    )
    add_model_option(
        p,
        "an encoder or pair-scorer (judge) spec to score with",
        several="several metrics in one run, a column each",
    )
    add_load_options(p)
    add_read_options(p)
    add_shard_options(p, "pair")
    add_judge_options(p)
    p.set_defaults(run=cmd_score)


def register(commands) -> None:
    _add_score(commands)

    p = commands.add_parser("report", help="a self-contained HTML report from bench or score results")
    p.add_argument("results", help="results.json of `nearid bench`, or <out>.summary.json of `nearid score`")
    add_option(p, "--out", help="output HTML (default: report.html beside the results)")
    p.set_defaults(run=cmd_report)


__all__ = ["cmd_report", "cmd_score", "register"]
